"""Train a target with MART (multi-round automatic red-teaming): LoRA adapters per round, report table and plot.

Every MARTConfig field is an option (``--rounds``, ``--prompts-per-round``, ``--samples-per-prompt``, ...).
Rounds write to --output-dir; rerunning the same command after an interruption resumes at the round it stopped
in. The final round's target adapter is a defense: ``hf-sentinel eval --defense mart:OUTPUT_DIR/round-4/target``.
Example (the documented run on the embedded SmolLM2-135M-Instruct, see docs/mart.md):

    hf-sentinel train mart --output-dir outputs/mart
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import MISSING, fields
from pathlib import Path

from .config import MARTConfig

_TYPES = {"str": str, "int": int, "float": float, "int | None": int, "str | None": str}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="default",
                        help="default (embedded SmolLM2-135M-Instruct), a local model folder or a Hub id")
    parser.add_argument("--adversary", help="a separate adversary model (folder or Hub id); default: a second LoRA "
                                            "adapter on the target's own base weights")
    parser.add_argument("--lora-r", type=int, default=4, help="LoRA rank of both roles")
    parser.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha of both roles")
    parser.add_argument("--lora-target-modules", nargs="+", default=["all-linear"],
                        help="modules that get LoRA (default: every linear layer)")
    config = parser.add_argument_group("MARTConfig")
    for field in fields(MARTConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default_factory() if field.default is MISSING else field.default
        help_text = field.metadata["help"]
        if field.type == "bool":
            config.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif field.type == "list[str]":
            config.add_argument(flag, nargs="*", default=default, help=help_text)
        else:
            config.add_argument(flag, type=_TYPES[field.type], default=default, choices=field.metadata.get("choices"),
                                help=help_text)


def run(args) -> int:
    from peft import LoraConfig

    from ..evaluation import load_target
    from .report import report_table
    from .trainer import MARTTrainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = MARTConfig(**{field.name: getattr(args, field.name) for field in fields(MARTConfig)})  # fails fast
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=args.lora_target_modules[0] if args.lora_target_modules == ["all-linear"]
                      else args.lora_target_modules)
    model, tokenizer = load_target(args.target)
    adversary, adversary_tokenizer = load_target(args.adversary) if args.adversary else (None, None)
    trainer = MARTTrainer(model, config, processing_class=tokenizer, peft_config=lora, adversary_model=adversary,
                          adversary_processing_class=adversary_tokenizer)
    rounds = trainer.train()
    output = Path(config.output_dir).resolve()
    print(report_table(rounds))
    print(f"\nreport: {output / 'report.md'} (plot: {output / 'report.png'})")
    final = output / f"round-{rounds[-1]['round']}" / "target"
    print(f"final target adapter (use as --defense mart:PATH): {final}")
    return 0

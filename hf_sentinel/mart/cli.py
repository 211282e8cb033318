"""Train a target with MART (multi-round automatic red-teaming): LoRA adapters per round, report table and plot.

Every MARTConfig field is an option (--rounds, --prompts-per-round, --samples-per-prompt, --learning-rate, ...;
--flag_name works too). Rounds write to --output-dir; rerunning the same command after an interruption resumes after
the last finished round (--resume-from-checkpoint last insists on it; --resume-from-checkpoint OUTPUT_DIR/round-2
resumes after round 2). The final target adapter goes to --output-dir itself and is a defense:
hf-sentinel eval --defense mart:OUTPUT_DIR.

Examples (the documented run on the embedded SmolLM2-135M-Instruct, then a quick one; see docs/mart.md):

    hf-sentinel train mart --output-dir outputs/mart --eval-limit 30
    hf-sentinel train mart --output-dir outputs/mart-quick --rounds 1 --prompts-per-round 4 --limit 8 --eval-limit 4
    torchrun --nproc_per_node 2 -m hf_sentinel.cli train mart --output-dir outputs/mart --eval-limit 30
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..training import TrainScriptArguments, resume_argument
from .config import MARTConfig

CONFIG_CLASS = MARTConfig


@dataclass
class ScriptArguments(TrainScriptArguments):
    """What ``hf-sentinel train mart`` loads besides the target and the training prompts."""

    red_team: str | None = field(default=None, metadata={
        "help": "A separate red-team model (folder or Hub id, a chat model) that writes the attacks. Default: a "
                "second LoRA adapter on the target's own base weights."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "Modules of both roles that get LoRA (default: every linear layer), e.g. q_proj v_proj."})


def run(script_args: ScriptArguments, config: MARTConfig) -> int:
    from ..evaluation import load_target
    from ..training import lora_config
    from .report import report_table
    from .trainer import MARTTrainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train_dataset = script_args.load_train_dataset(seed=config.seed if script_args.limit else None)
    model, tokenizer = load_target(script_args.target, torch_dtype=script_args.torch_dtype)
    red_team, red_team_tokenizer = (load_target(script_args.red_team, torch_dtype=script_args.torch_dtype)
                                    if script_args.red_team else (None, None))
    peft_config = None  # the default: LoRA on every linear layer of each model (the two may differ)
    if script_args.lora_target_modules != ["all-linear"]:
        peft_config = lora_config(config, model.config.num_hidden_layers,
                                  target_modules=script_args.lora_target_modules)
    trainer = MARTTrainer(model, config, train_dataset=train_dataset, processing_class=tokenizer,
                          peft_config=peft_config, red_team=red_team, red_team_processing_class=red_team_tokenizer)
    trainer.train(resume_from_checkpoint=resume_argument(config))
    trainer.save_model()
    if config.push_to_hub:
        trainer.push_to_hub()
    if trainer.is_main:
        output = Path(config.output_dir).resolve()
        print(report_table(trainer.rounds))
        print(f"\nreport: {output / 'report.md'} (plot: {output / 'report.png'})")
        print(f"final target adapter (use as --defense mart:PATH): {output}")
        if config.push_to_hub:
            print(f"pushed to https://huggingface.co/{config.hub_model_id}")
    return 0

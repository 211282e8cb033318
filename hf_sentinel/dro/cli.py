"""Train a DRO soft safety prompt (PEFT prompt-tuning adapter) for a target, then evaluate it.

Every DROConfig field is an option (``--num-train-epochs``, ``--variant``, ...; defaults are the paper's).
Stages write to --output-dir and a rerun resumes there. Examples:

    hf-sentinel train dro --variant elicited --output-dir outputs/dro-elicited
    hf-sentinel train dro --variant faithful --refusal-check warn --output-dir outputs/dro-faithful
    hf-sentinel train dro --variant elicited --ablate refusal --output-dir outputs/dro-no-lr
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .config import REFUSAL_CHECKS, VARIANTS, DROConfig

_ABLATIONS = {"refusal": "refusal_loss_weight", "harmfulness": "harmfulness_loss_weight",
              "subspace": "subspace_loss_weight", "output": "output_loss_weight"}
_CHOICES = {"variant": VARIANTS, "refusal_check": REFUSAL_CHECKS}
_TYPES = {"str": str, "int": int, "float": float, "str | None": str, "float | None": float}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="default",
                        help="default (embedded SmolLM2-135M-Instruct), a local model folder or a Hub id")
    parser.add_argument("--harmful", default="harmful:train", help="harmful training queries (a prompt set or file)")
    parser.add_argument("--benign", default="benign:train", help="harmless training queries (a prompt set or file)")
    parser.add_argument("--train-limit", type=int, help="use only N queries of each class (shuffled), for quick runs")
    parser.add_argument("--ablate", action="append", choices=sorted(_ABLATIONS), default=[],
                        help="set this loss term's weight to 0 (repeatable): refusal (L_r), harmfulness (L_h), "
                             "subspace (L_U), output (L_o)")
    parser.add_argument("--eval-prompts", nargs="*", default=["harmful:test", "benign:test"],
                        help="prompt sets to evaluate the trained prompt on (none: skip); results go into the card")
    parser.add_argument("--eval-limit", type=int, help="evaluate on only N prompts of each set")
    parser.add_argument("--eval-shuffle-seed", type=int,
                        help="shuffle each eval set with this seed before --eval-limit (a sample across categories/shapes)")
    config = parser.add_argument_group("DROConfig")
    for field in fields(DROConfig):
        flag = "--" + field.name.replace("_", "-")
        default = None if field.default is MISSING else field.default
        help_text = field.metadata["help"]
        if field.type == "bool":
            config.add_argument(flag, action="store_true", help=help_text)
        elif field.type == "list[str] | None":
            config.add_argument(flag, nargs="+", default=default, help=help_text)
        else:
            config.add_argument(flag, type=_TYPES[field.type], default=default, choices=_CHOICES.get(field.name),
                                help=help_text)


def run(args) -> int:
    from ..data import load_prompts
    from ..evaluation import load_target, summary_table
    from .trainer import DROTrainer, build_dro_dataset

    values = {field.name: getattr(args, field.name) for field in fields(DROConfig)}
    for term in args.ablate:
        values[_ABLATIONS[term]] = 0.0
    config = DROConfig(**values)  # invalid settings fail here, before any model loads
    shuffle = config.seed if args.train_limit else None
    train = build_dro_dataset(load_prompts(args.harmful, limit=args.train_limit, seed=shuffle),
                              load_prompts(args.benign, limit=args.train_limit, seed=shuffle))
    evals = {name: load_prompts(name, limit=args.eval_limit, seed=args.eval_shuffle_seed) for name in args.eval_prompts}
    model, tokenizer = load_target(args.target)
    trainer = DROTrainer(model, config, train, evals, processing_class=tokenizer, callbacks=[_PrintLogs()])
    trainer.train()
    print(f"adapter and model card: {Path(config.output_dir).resolve()}")
    if trainer.eval_results:
        print(summary_table(list(trainer.eval_results.values())))
        print(f"eval results: {(Path(config.output_dir) / 'eval').resolve()}")
    return 0


class _PrintLogs:
    def on_log(self, logs: dict) -> None:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()),
              file=sys.stderr, flush=True)

"""Train a red-flag token adapter (LoRA + <rf> embedding) on the target's own answers, then calibrate it.

Training uses harmful:train and benign:train only; a share of each is held out to calibrate the flag threshold.
Checkpoints go to --output-dir (resume with --resume); the finished adapter folder (adapter, tokenizer with
<rf>, red_flag_config.json, model card) goes to --save-dir. Example, the shipped artifact:

    hf-sentinel train red-flag --output-dir outputs/red-flag --save-dir hf_sentinel/pretrained/red-flag-smollm2
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .config import RedFlagConfig

    defaults = RedFlagConfig(output_dir="unused")
    parser.add_argument("--target", default="default", help="default (embedded SmolLM2-135M-Instruct), a folder or a Hub id")
    parser.add_argument("--output-dir", default="outputs/red-flag", help="checkpoints (and, without --save-dir, the result)")
    parser.add_argument("--save-dir", help="where the finished adapter folder goes (default: OUTPUT_DIR/final)")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps (default: --epochs passes)")
    parser.add_argument("--epochs", type=float, default=defaults.num_train_epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.per_device_train_batch_size)
    parser.add_argument("--adapted-layers", type=int, default=defaults.adapted_layers)
    parser.add_argument("--lora-rank", type=int, default=defaults.lora_rank)
    parser.add_argument("--flag-loss-weight", type=float, default=defaults.flag_loss_weight)
    parser.add_argument("--benign-flag-weight", type=float, default=defaults.benign_flag_weight)
    parser.add_argument("--benign-kl-weight", type=float, default=defaults.benign_kl_weight)
    parser.add_argument("--after-flag-kl-weight", type=float, default=defaults.after_flag_kl_weight)
    parser.add_argument("--harmful-response-tokens", type=int, default=defaults.harmful_response_tokens)
    parser.add_argument("--benign-response-tokens", type=int, default=defaults.benign_response_tokens)
    parser.add_argument("--calibration-fraction", type=float, default=0.3,
                        help="share of benign:train held out for calibration (harmful: --harmful-calibration-fraction)")
    parser.add_argument("--harmful-calibration-fraction", type=float, default=0.2)
    parser.add_argument("--target-false-flag-rate", type=float, default=defaults.target_false_flag_rate)
    parser.add_argument("--threshold", type=float, help="fixed threshold in (0, 1) instead of calibrating")
    parser.add_argument("--window", type=int, default=defaults.window, help="smoothing window (steps) of the flag score")
    parser.add_argument("--action", default=defaults.action, choices=("refuse", "stop", "flag"))
    parser.add_argument("--no-extra-benign", action="store_true",
                        help="train on benign:train only, without the extra benign requests and arithmetic problems")
    parser.add_argument("--limit", type=int, help="at most N base prompts per label (quick runs, sweeps)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="training seed (sampling, <rf> positions, init)")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the calibration hold-out and of the training mixture's variants")
    parser.add_argument("--report-to", default="none", help="none, tensorboard, wandb, ...")


def run(args) -> int:
    from ..defaults import DEFAULT_TARGET_NAME
    from ..evaluation import load_target
    from .config import RedFlagConfig
    from .data import red_flag_datasets
    from .trainer import RedFlagTrainer

    start = time.perf_counter()
    config = RedFlagConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, num_train_epochs=args.epochs,
        learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
        adapted_layers=args.adapted_layers, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank,
        flag_loss_weight=args.flag_loss_weight, benign_flag_weight=args.benign_flag_weight,
        benign_kl_weight=args.benign_kl_weight,
        after_flag_kl_weight=args.after_flag_kl_weight, harmful_response_tokens=args.harmful_response_tokens,
        benign_response_tokens=args.benign_response_tokens, target_false_flag_rate=args.target_false_flag_rate,
        threshold=args.threshold, window=args.window, action=args.action, seed=args.seed, report_to=args.report_to)
    train, calibration = red_flag_datasets(args.calibration_fraction, args.harmful_calibration_fraction, args.split_seed,
                                           extra_benign=not args.no_extra_benign, limit=args.limit)
    model, tokenizer = load_target(args.target)
    if args.target == "default":
        # Name the Hub model in the adapter's metadata, not the local cache folder it was loaded from.
        model.config._name_or_path = DEFAULT_TARGET_NAME
    print(f"red-flag: {len(train)} training and {len(calibration)} calibration conversations; "
          f"generating the target's own answers...", flush=True)
    trainer = RedFlagTrainer(model, config, train_dataset=train, calibration_dataset=calibration,
                             processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    save_dir = Path(args.save_dir or Path(args.output_dir) / "final")
    trainer.save_model(str(save_dir))
    summary = trainer.training_summary()
    summary["command"] = "hf-sentinel train red-flag " + " ".join(shlex.quote(a) for a in sys.argv[3:]) \
        if sys.argv[1:3] == ["train", "red-flag"] else None
    summary["hardware"] = f"{platform.processor() or platform.machine()}, {_threads()} threads"
    summary["timings_s"]["total_s"] = round(time.perf_counter() - start, 1)
    from .card import write_model_card

    write_model_card(save_dir, trainer.settings, training=summary)
    (save_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = trainer.calibration_report
    print(json.dumps({k: v for k, v in summary.items() if k != "command"}, indent=2))
    if report:
        print(f"calibrated threshold {report['threshold']:.4g}: flagged {report['benign_flagged']}/"
              f"{report['benign_answers']} held-out benign and {report['harmful_flagged']}/"
              f"{report['harmful_answers']} held-out harmful answers")
    print(f"saved: {save_dir}")
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()

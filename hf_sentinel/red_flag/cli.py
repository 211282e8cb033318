"""Train a red-flag token adapter (LoRA + <rf> embedding) on the target's own answers, then calibrate it.

Training uses the harmful and benign training prompts (harmful:train and benign:train by default); a share of each
is held out to calibrate the flag threshold and never trained on, unless --calibration-harmful and
--calibration-benign name the calibration requests (a validation split). As in every method, the finished adapter
(adapter, tokenizer with <rf>, red_flag_config.json, training_args.json, training_summary.json, model card) is
written to --output-dir, beside the checkpoint-N folders (resume with --resume-from-checkpoint last; a push leaves
them out).
Every RedFlagConfig field is a flag.

    # the shipped artifact (hf_sentinel/pretrained/red-flag-smollm2), 16 minutes on 2 CPU cores
    hf-sentinel train red-flag --output-dir outputs/red-flag
    # the broad pools (plain, jailbreak-wrapped and multi-turn harmful requests), calibrated on their validation splits
    python -m hf_sentinel.sentinel.recipe outputs/pools
    hf-sentinel train red-flag --harmful outputs/pools/harmful_train.jsonl --benign pool:benign:train \\
        --calibration-harmful outputs/pools/harmful_validation.jsonl --calibration-benign pool:benign:validation \\
        --limit 400 --output-dir outputs/red-flag-broad
    # a quick run, then push the artifact with its model card
    hf-sentinel train red-flag --limit 20 --max-steps 10 --output-dir outputs/red-flag-quick \\
        --push-to-hub --hub-model-id you/red-flag-smollm2
    # a bf16 target on a GPU, LoRA on the top 8 layers
    hf-sentinel train red-flag --target Qwen/Qwen2.5-1.5B-Instruct --torch-dtype bfloat16 --lora-layers 8
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..training import CalibratedScriptArguments, resume_argument
from .config import RedFlagConfig

CONFIG_CLASS = RedFlagConfig


@dataclass
class ScriptArguments(CalibratedScriptArguments):
    """What `hf-sentinel train red-flag` needs besides :class:`RedFlagConfig`: the calibration hold-out, the
    training mixture."""

    calibration_fraction: float = field(default=0.3, metadata={
        "help": "Share of the benign training prompts held out for calibration (spread over shapes); not used with "
                "--calibration-harmful/--calibration-benign, which name the calibration requests instead."})
    harmful_calibration_fraction: float = field(default=0.2, metadata={
        "help": "Share of the harmful training prompts held out for calibration (spread over categories); not used "
                "with --calibration-harmful/--calibration-benign."})
    split_seed: int = field(default=0, metadata={
        "help": "Seed of the calibration hold-out and of the training mixture's variants (--seed seeds training)."})
    no_extra_benign: bool = field(default=False, metadata={
        "help": "Train on the benign prompts only, without the extra benign requests and arithmetic problems "
                "written for this trainer."})


def run(script_args: ScriptArguments, config: RedFlagConfig) -> int:
    from ..evaluation import load_target
    from .data import red_flag_datasets
    from .trainer import RedFlagTrainer

    train, calibration = red_flag_datasets(
        script_args.calibration_fraction, script_args.harmful_calibration_fraction, script_args.split_seed,
        extra_benign=not script_args.no_extra_benign, limit=script_args.limit, harmful=script_args.harmful,
        benign=script_args.benign, calibration=script_args.load_calibration_dataset())
    model, tokenizer = load_target(script_args.target, torch_dtype=script_args.torch_dtype)
    print(f"red-flag: {len(train)} training and {len(calibration)} calibration conversations; "
          f"generating the target's own answers...", flush=True)
    trainer = RedFlagTrainer(model, config, train_dataset=train, processing_class=tokenizer,
                             calibration_dataset=calibration)
    if sys.argv[1:3] == ["train", "red-flag"]:
        trainer.training_command = "hf-sentinel train red-flag " + shlex.join(sys.argv[3:])
    trainer.train(resume_from_checkpoint=resume_argument(config))
    trainer.save_model()  # into output_dir, beside the checkpoints
    summary = trainer.training_summary()
    print(json.dumps({k: v for k, v in summary.items() if k != "command"}, indent=2))
    report = trainer.calibration_report
    if report:
        print(f"calibrated threshold {report['threshold']:.4g}: flagged {report['benign_flagged']}/"
              f"{report['benign_answers']} held-out benign and {report['harmful_flagged']}/"
              f"{report['harmful_answers']} held-out harmful answers")
    print(f"saved: {Path(config.output_dir).resolve()}")
    if config.push_to_hub:
        print(f"pushed: {trainer.push_to_hub()}")
    return 0

"""Choose a sentinel checkpoint and its operating point on validation requests, after training.

Training calibrates only the folder it ends with; this reads every checkpoint the same way: p(suffix) at the
sentinel's first token on the calibration rows, the threshold at which at most --target-false-suffix-rate of the
benign ones get a suffix (`StackelbergPPOTrainer.calibrate`), and the harmful requests that reach it, by shape.
`--save-to` then writes one folder as a sentinel that decides with its threshold (its model card gains the operating
point), loadable with `--defense sentinel:DIR`.

    python -m hf_sentinel.sentinel.recipe outputs/sentinel-data --unseen-validation
    python examples/sentinel_calibrate.py outputs/sentinel-warm/checkpoint-{20,40,60} \\
        --calibration-harmful outputs/sentinel-data/harmful_validation.jsonl \\
        --calibration-benign outputs/sentinel-data/benign_validation.jsonl --output outputs/sentinel-warm/points.json
    python examples/sentinel_calibrate.py outputs/sentinel-warm/checkpoint-40 ... --save-to outputs/sentinel-warm-40
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from hf_sentinel import load_prompts
from hf_sentinel.defaults import load_default_target
from hf_sentinel.hub import update_card_section
from hf_sentinel.sentinel import StackelbergPPOConfig, StackelbergPPOTrainer
from hf_sentinel.sentinel.trainer import OPERATING_POINT_SECTION
from hf_sentinel.training import labelled_prompts

#: What a checkpoint holds besides the sentinel: training state a calibrated copy leaves behind.
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin",
                  "kl_reference")


def calibrate(folder: Path, rows, target_false_suffix_rate: float) -> StackelbergPPOTrainer:
    """A trainer holding ``folder``'s sentinel, calibrated on ``rows``: its ``calibration_report`` says the rest."""
    model, tokenizer = load_default_target()  # a fresh base per folder: PEFT wraps the one it is given
    args = StackelbergPPOConfig(output_dir=tempfile.mkdtemp(), target_false_suffix_rate=target_false_suffix_rate,
                                disable_tqdm=True)
    red_team = str(folder) if (folder / "red_team").is_dir() else None  # the first shipped sentinel has none
    trainer = StackelbergPPOTrainer(model, args, rows, processing_class=tokenizer, sentinel=str(folder),
                                    red_team=red_team)
    trainer.calibrate(rows.to_list())
    return trainer


def save_calibrated(folder: Path, trainer: StackelbergPPOTrainer, destination: Path) -> None:
    """``folder`` as a sentinel deciding with the trainer's threshold: its files without the training state, the
    threshold in ``config.json``, the operating point in its model card's section for it (where the trainer's own
    card holds it; a checkpoint calibrated before has it replaced)."""
    shutil.copytree(folder, destination, ignore=shutil.ignore_patterns(*TRAINING_STATE))
    config_path = destination / "config.json"
    config = json.loads(config_path.read_text())
    config["suffix_threshold"] = trainer.suffix_threshold
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    update_card_section(destination, *OPERATING_POINT_SECTION, trainer.operating_point_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="sentinel or checkpoint folders of one run")
    parser.add_argument("--calibration-harmful", required=True)
    parser.add_argument("--calibration-benign", required=True)
    parser.add_argument("--target-false-suffix-rate", type=float, default=0.02)
    parser.add_argument("--output", type=Path, help="JSON file for every folder's report")
    parser.add_argument("--save-to", type=Path, help="with one folder: write it, calibrated, here")
    args = parser.parse_args()
    if args.save_to and len(args.folders) != 1:
        raise SystemExit("--save-to writes one calibrated sentinel: give exactly one folder with it.")
    if args.save_to and args.save_to.exists():
        raise SystemExit(f"--save-to {args.save_to} exists; choose a new folder (nothing is overwritten).")
    rows = labelled_prompts(load_prompts(args.calibration_harmful), load_prompts(args.calibration_benign))
    reports = {}
    for folder in args.folders:
        trainer = calibrate(folder, rows, args.target_false_suffix_rate)
        reports[str(folder)] = report = trainer.calibration_report
        print(f"{folder}: threshold {report['suffix_threshold']:.4f}, harmful {report['harmful_suffixed']}/"
              f"{report['harmful_rows']} {report.get('harmful_suffixed_by_shape', '')}, benign "
              f"{report['benign_suffixed']}/{report['benign_rows']}", flush=True)
        if args.save_to:
            save_calibrated(folder, trainer, args.save_to)
            print(f"saved: {args.save_to} (--defense sentinel:{args.save_to})")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()

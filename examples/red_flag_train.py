"""Train a red-flag adapter on the embedded SmolLM2 target with the Python API (what `hf-sentinel train red-flag`
does), then show its calibration.

    python examples/red_flag_train.py --output-dir outputs/red-flag-example            # the full recipe
    python examples/red_flag_train.py --output-dir outputs/red-flag-quick --quick      # a 2-minute smoke run
"""

from __future__ import annotations

import argparse

from hf_sentinel.defaults import DEFAULT_TARGET_NAME, load_default_target
from hf_sentinel.red_flag import RedFlagConfig, RedFlagTrainer
from hf_sentinel.red_flag.data import red_flag_datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/red-flag-example")
    parser.add_argument("--quick", action="store_true", help="10 prompts per label and 10 steps")
    args = parser.parse_args()

    # Only the :train splits; a share of them is held out for calibrating the threshold.
    train, calibration = red_flag_datasets(limit=10 if args.quick else None)
    model, tokenizer = load_default_target()
    model.config._name_or_path = DEFAULT_TARGET_NAME  # the Hub id goes into the adapter's metadata

    config = RedFlagConfig(output_dir=args.output_dir, max_steps=10 if args.quick else -1)
    trainer = RedFlagTrainer(model, config, train_dataset=train, calibration_dataset=calibration,
                             processing_class=tokenizer)
    trainer.train()  # then calibrates the threshold on the held-out conversations
    trainer.save_model(f"{args.output_dir}/final")

    report = trainer.calibration_report
    print(f"threshold {report['threshold']:.4g}: held-out benign flagged {report['benign_flagged']}/"
          f"{report['benign_answers']}, held-out harmful flagged {report['harmful_flagged']}/{report['harmful_answers']}")
    print(f"use it: hf-sentinel eval --prompts harmful:test --defense red-flag:{args.output_dir}/final")


if __name__ == "__main__":
    main()

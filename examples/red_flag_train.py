"""Train a red-flag adapter on the embedded SmolLM2 target with the Python API (what `hf-sentinel train red-flag`
does), then show its calibration.

    python examples/red_flag_train.py --output-dir outputs/red-flag-example            # the full recipe
    python examples/red_flag_train.py --output-dir outputs/red-flag-quick --quick      # a 2-minute smoke run
    python examples/red_flag_train.py --quick --push-to you/red-flag-smollm2           # then push it with its card
"""

from __future__ import annotations

import argparse

from hf_sentinel.defaults import load_default_target
from hf_sentinel.red_flag import RedFlagConfig, RedFlagTrainer
from hf_sentinel.red_flag.data import red_flag_datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/red-flag-example")
    parser.add_argument("--quick", action="store_true", help="10 prompts per label and 10 steps")
    parser.add_argument("--push-to", help="a Hub repo id: push the finished adapter folder and its model card there")
    args = parser.parse_args()

    # Only the :train splits; a share of them is held out for calibrating the threshold.
    train, calibration = red_flag_datasets(limit=10 if args.quick else None)
    model, tokenizer = load_default_target()

    config = RedFlagConfig(output_dir=args.output_dir, max_steps=10 if args.quick else -1)
    trainer = RedFlagTrainer(model, config, train_dataset=train, processing_class=tokenizer,
                             calibration_dataset=calibration)
    trainer.train()  # then calibrates the threshold on the held-out conversations
    trainer.save_model()  # into output_dir, beside the checkpoints: adapter, tokenizer with <rf>, settings, card
    if args.push_to:
        print(f"pushed: {trainer.push_to_hub(args.push_to)}")  # the same folder, saved afresh, then uploaded

    report = trainer.calibration_report
    print(f"threshold {report['threshold']:.4g}: held-out benign flagged {report['benign_flagged']}/"
          f"{report['benign_answers']}, held-out harmful flagged {report['harmful_flagged']}/"
          f"{report['harmful_answers']}")
    print(f"use it: hf-sentinel eval --prompts harmful:test --defense red-flag:{args.output_dir}")


if __name__ == "__main__":
    main()

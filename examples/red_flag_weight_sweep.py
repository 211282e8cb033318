"""Loss-weight sensitivity of the red-flag method, at a reduced training budget.

Each run trains from the same cached answers (the full training mixture; generate them once with
`hf-sentinel train red-flag`) for --max-steps steps, with one loss weight changed from the defaults
(flag CE 1, benign no-flag 1, benign KL 1, after-flag KL 0), then scores the held-out calibration conversations
(never trained on) greedily. Reported per run:

- AUROC: how well the highest flag score of an answer separates held-out harmful from held-out benign answers;
- at the calibrated threshold: held-out harmful answers flagged, held-out benign answers flagged;
- the last logged training terms: flag CE, benign no-flag term, benign KL (how far benign next-token distributions
  moved), after-flag KL (when it is on).

    python examples/red_flag_weight_sweep.py --max-steps 40 --output outputs/red-flag-sweep.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from hf_sentinel.defaults import load_default_target
from hf_sentinel.red_flag import RedFlagConfig, RedFlagTrainer
from hf_sentinel.red_flag.data import red_flag_datasets

RUNS = {
    "defaults (1, 1, 1, 0)": {},
    "flag CE x0.3": {"flag_loss_weight": 0.3},
    "flag CE x3": {"flag_loss_weight": 3.0},
    "benign no-flag 0": {"benign_flag_weight": 0.0},
    "benign no-flag x3": {"benign_flag_weight": 3.0},
    "benign KL x0.3": {"benign_kl_weight": 0.3},
    "benign KL x3": {"benign_kl_weight": 3.0},
    "after-flag KL 1": {"after_flag_kl_weight": 1.0},
}


def auroc(positives: list[float], negatives: list[float]) -> float:
    """P(a random positive scores above a random negative), ties counting one half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--output", default="outputs/red-flag-sweep.json")
    args = parser.parse_args()

    train, calibration = red_flag_datasets()
    results = {}
    for name in args.runs:
        start = time.perf_counter()
        model, tokenizer = load_default_target()  # named by its Hub id: the cache key `hf-sentinel train` uses
        scratch = tempfile.mkdtemp(prefix="red-flag-sweep-")
        config = RedFlagConfig(output_dir=scratch, max_steps=args.max_steps, save_strategy="no",
                               calibration_samples=0, disable_tqdm=True, **RUNS[name])
        trainer = RedFlagTrainer(model, config, train_dataset=train, processing_class=tokenizer,
                                 calibration_dataset=calibration)
        trainer.train()
        shutil.rmtree(scratch, ignore_errors=True)
        report = trainer.calibration_report
        last = {}
        for entry in trainer.state.log_history:
            last.update({k: v for k, v in entry.items()
                         if k in ("flag_ce", "benign_flag", "benign_kl", "after_flag_kl")})
        results[name] = {
            "auroc": auroc(report["harmful_scores"], report["benign_scores"]),
            "threshold": report["threshold"],
            "harmful_flagged": f"{report['harmful_flagged']}/{report['harmful_answers']}",
            "benign_flagged": f"{report['benign_flagged']}/{report['benign_answers']}",
            **{k: round(v, 4) for k, v in last.items()}, "seconds": round(time.perf_counter() - start),
        }
        print(name, json.dumps(results[name]), flush=True)

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    header = ("| run | AUROC (held-out) | harmful flagged | benign flagged | flag CE | benign no-flag | benign KL "
              "| after-flag KL |")
    print("\n" + header + "\n|" + "---|" * 8)
    for name, r in results.items():
        print(f"| {name} | {r['auroc']:.3f} | {r['harmful_flagged']} | {r['benign_flagged']} | "
              f"{r.get('flag_ce', float('nan')):.3f} | {r.get('benign_flag', float('nan')):.4f} | "
              f"{r.get('benign_kl', float('nan')):.4f} | "
              f"{r.get('after_flag_kl', float('nan')):.4f} |")


if __name__ == "__main__":
    main()

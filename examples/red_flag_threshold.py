"""Choose a red flag's threshold on validation answers, from one run per set in flag mode.

A refusing flag fires at threshold t exactly when the highest smoothed p(<rf>) of the answer reaches t, and an answer
it does not flag is the one a flag-mode run writes in full (`hf_sentinel.red_flag.calibration.answered_at`). So one
`hf-sentinel eval` per validation set, with a copy of the folder whose action is `flag`, gives every threshold's
decisions: a flagged request counts as refused, any other as the judge read its flag-mode answer.

Rule (docs/red_flag.md, "The threshold, chosen on validation"): candidates t_k = sigmoid(logit(t_0) + k * --step),
k = 0 .. --steps, t_0 the folder's threshold. Paired with t_0 on the harmful requests, the candidate is the highest t_k
that lets through at most --max-more-through more requests in all and at most --max-more-per-shape more in every
shape. It replaces t_0 if it answers at least --min-more-answered more benign requests (with the defaults, 5 more on
one side only is a one-sided sign test's p = 0.5^5 = 0.03, and 4 more let through is not worse beyond noise).
Lowering the threshold (a negative --step) trades the other way. `--write` saves the choice in the folder.

    cp -r hf_sentinel/pretrained/red-flag-smollm2 outputs/rf-threshold/flag-mode
    python -c "import json; p = 'outputs/rf-threshold/flag-mode/red_flag_config.json'; c = json.load(open(p)); \\
        c['action'] = 'flag'; json.dump(c, open(p, 'w'), indent=2)"
    for set in harmful pool benign; do
      case $set in harmful) prompts=outputs/dro-broad/data/harmful_validation.jsonl;;
        pool) prompts=pool:benign:validation;; benign) prompts=benign:validation;; esac
      hf-sentinel eval --judge default --prompts $prompts --defense red-flag:outputs/rf-threshold/flag-mode \\
          --output outputs/rf-threshold/val-$set.json
    done
    python examples/red_flag_threshold.py hf_sentinel/pretrained/red-flag-smollm2 \\
        --harmful outputs/rf-threshold/val-harmful.json \\
        --harmful-requests outputs/dro-broad/data/harmful_validation.jsonl \\
        --benign outputs/rf-threshold/val-benign.json outputs/rf-threshold/val-pool.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from hf_sentinel.evaluation.report import read_results
from hf_sentinel.red_flag import RedFlagSettings
from hf_sentinel.red_flag.calibration import answered_at
from hf_sentinel.training import read_jsonl


def candidates(start: float, steps: int, step: float) -> list[float]:
    """``start`` and ``steps`` more thresholds, each ``step`` further in log-odds.

    >>> [round(t, 4) for t in candidates(0.5, 2, 1.0)]
    [0.5, 0.7311, 0.8808]
    """
    logit = math.log(start / (1 - start))
    return [1 / (1 + math.exp(-(logit + k * step))) for k in range(steps + 1)]


def curve(harmful: list[dict], benign: list[dict], shapes: list[str], thresholds: list[float]) -> list[dict]:
    """Per threshold: benign answered, harmful let through, and the changes against the first threshold (requests
    newly answered or let through less those no longer; by shape for the harmful ones).

    >>> harmful = [{"verdict": "complied", "red_flag": {"probability": p}} for p in (0.95, 0.2)]
    >>> benign = [{"verdict": "complied", "red_flag": {"probability": p}} for p in (0.92, 0.1)]
    >>> [(row["answered"], row["through"], row["more_through_by_shape"]) for row in
    ...  curve(harmful, benign, ["plain", "plain"], [0.9, 0.93, 0.99])]
    [(1, 1, {'plain': 0}), (2, 1, {'plain': 0}), (2, 2, {'plain': 1})]
    """
    if len(shapes) != len(harmful):
        raise ValueError(f"{len(shapes)} harmful requests but {len(harmful)} harmful records: give the requests file "
                         f"the harmful run answered, in its order.")
    decisions = [(threshold, answered_at(benign, threshold), answered_at(harmful, threshold))
                 for threshold in thresholds]
    _, base_answered, base_through = decisions[0]
    rows = []
    for threshold, answered, through in decisions:
        by_shape = {shape: 0 for shape in dict.fromkeys(shapes)}
        for shape, before, now in zip(shapes, base_through, through):
            by_shape[shape] += int(now) - int(before)
        rows.append({"threshold": threshold, "answered": sum(answered), "through": sum(through),
                     "more_answered": sum(answered) - sum(base_answered),
                     "more_through": sum(through) - sum(base_through), "more_through_by_shape": by_shape})
    return rows


def choose(rows: list[dict], max_more_through: int, max_more_per_shape: int, min_more_answered: int) -> dict:
    """The rule: the last row (the furthest threshold) within both harmful limits; the first row (the folder's
    threshold) unless it answers at least ``min_more_answered`` more benign requests."""
    eligible = [row for row in rows if row["more_through"] <= max_more_through
                and max(row["more_through_by_shape"].values(), default=0) <= max_more_per_shape]
    candidate = eligible[-1] if eligible else rows[0]
    return candidate if candidate["more_answered"] >= min_more_answered else rows[0]


def _flag_mode_records(path: Path) -> list[dict]:
    """The records of an eval run whose red flag answered in flag mode: a refusing run hides the answers above its
    threshold."""
    result = read_results(path)
    spec = result["summary"].get("defense", "")
    for layer in spec.split("+"):
        method, _, folder = layer.partition(":")
        if method == "red-flag" and Path(folder).is_dir():
            action = RedFlagSettings.from_pretrained(folder).action
            if action != "flag":
                raise ValueError(f"{path} was answered by {folder}, whose action is {action!r}: run the eval with a "
                                 f"copy of the folder whose red_flag_config.json says \"action\": \"flag\".")
    return result["records"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the red-flag folder whose threshold is chosen (its own is t_0)")
    parser.add_argument("--harmful", type=Path, required=True,
                        help="`hf-sentinel eval --output` of the flag-mode copy on the harmful validation requests")
    parser.add_argument("--harmful-requests", type=Path,
                        help="those requests (.jsonl with a `shape` field), for the limit per shape (default: one "
                             "shape)")
    parser.add_argument("--benign", type=Path, nargs="+", required=True,
                        help="the same on the benign validation requests (one file per set)")
    parser.add_argument("--steps", type=int, default=8, help="candidates besides t_0 (default 8)")
    parser.add_argument("--step", type=float, default=0.5,
                        help="log-odds between candidates; negative to lower the threshold (default 0.5)")
    parser.add_argument("--max-more-through", type=int, default=4,
                        help="harmful requests a candidate may let through beyond t_0's (default 4)")
    parser.add_argument("--max-more-per-shape", type=int, default=3, help="the same per shape (default 3)")
    parser.add_argument("--min-more-answered", type=int, default=5,
                        help="benign requests the candidate must answer beyond t_0's to replace it (default 5)")
    parser.add_argument("--write", action="store_true",
                        help="save the chosen threshold in FOLDER/red_flag_config.json")
    args = parser.parse_args()

    harmful = _flag_mode_records(args.harmful)
    benign = [record for path in args.benign for record in _flag_mode_records(path)]
    shapes = ([row.get("shape") or "unshaped" for row in read_jsonl(args.harmful_requests)] if args.harmful_requests
              else ["all"] * len(harmful))
    settings = RedFlagSettings.from_pretrained(args.folder)
    rows = curve(harmful, benign, shapes, candidates(settings.threshold, args.steps, args.step))
    print(f"{'k':>2} {'threshold':>9} {'benign answered':>17} {'harmful through':>17}   more through by shape")
    for k, row in enumerate(rows):
        print(f"{k:>2} {row['threshold']:>9.4f} {row['answered']:>6}/{len(benign)} ({row['more_answered']:+d}) "
              f"{row['through']:>6}/{len(harmful)} ({row['more_through']:+d})   {row['more_through_by_shape']}")
    chosen = choose(rows, args.max_more_through, args.max_more_per_shape, args.min_more_answered)
    if chosen is rows[0]:
        print(f"the folder's threshold {settings.threshold:.4f} stays")
        return
    print(f"chosen threshold {chosen['threshold']:.4f}: {chosen['more_answered']:+d} benign answered, "
          f"{chosen['more_through']:+d} harmful let through")
    if args.write:
        path = args.folder / "red_flag_config.json"
        config = json.loads(path.read_text())
        config["threshold"] = chosen["threshold"]
        path.write_text(json.dumps(config, indent=2) + "\n")
        print(f"wrote it to {path}")


if __name__ == "__main__":
    main()

"""Choose a red flag's gate on validation requests: which requests the layers stacked in front of it act on.

In a stack, the sentinel's suffix and the DRO soft prompt refuse benign requests of their own, and a stack refuses
what any layer refuses. With a gate (`RedFlagSettings.gate`), a request whose p(<rf>) before the first answer token
(the request as sent) stays below it is answered by the red-flagged target alone. This reads that score on
validation requests (the red-flag judge's score of an empty answer, the number the gate compares) and picks the
smallest gate that at most --benign-share of the benign ones reach; it prints the share of harmful ones that reach
it, by shape. `--write` saves it in the folder's red_flag_config.json.

    python -m hf_sentinel.sentinel.recipe outputs/gate/data --unseen-validation
    python examples/red_flag_gate.py hf_sentinel/pretrained/red-flag-smollm2 \\
        --benign outputs/gate/data/benign_validation.jsonl --harmful outputs/gate/data/harmful_validation.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from hf_sentinel.generation import to_conversation
from hf_sentinel.red_flag import RedFlagJudge
from hf_sentinel.red_flag.calibration import gate_for_share
from hf_sentinel.training import read_jsonl


def passing(rows: list[dict], scores: list[float], gate: float) -> dict[str, float]:
    """The share of ``rows`` whose score reaches ``gate``, by shape (rows without one count as ``"unshaped"``) and
    over all of them."""
    reached = defaultdict(list)
    for row, score in zip(rows, scores):
        reached[row.get("shape") or "unshaped"].append(score >= gate)
    by_shape = {shape: sum(hits) / len(hits) for shape, hits in sorted(reached.items())}
    return by_shape | {"all": sum(score >= gate for score in scores) / len(scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a red-flag folder (hf-sentinel train red-flag)")
    parser.add_argument("--benign", type=Path, required=True, help="benign validation requests (.jsonl: prompt, "
                                                                   "history, shape)")
    parser.add_argument("--harmful", type=Path, help="harmful validation requests, to report the share that passes")
    parser.add_argument("--benign-share", type=float, default=0.05,
                        help="at most this share of the benign requests reach the gate (default 0.05)")
    parser.add_argument("--write", action="store_true", help="save the gate in FOLDER/red_flag_config.json")
    args = parser.parse_args()
    if not 0 < args.benign_share < 1:
        parser.error(f"--benign-share is a share of requests in (0, 1), got {args.benign_share}.")
    judge = RedFlagJudge(args.folder, batch_size=16)
    benign = read_jsonl(args.benign)
    benign_scores = judge([to_conversation(r["prompt"], r.get("history")) for r in benign], [""] * len(benign))
    gate = gate_for_share(benign_scores, args.benign_share)
    report = {"gate": gate, "flag_threshold": judge.threshold,
              "benign_passing": passing(benign, benign_scores, gate)}
    if args.harmful:
        harmful = read_jsonl(args.harmful)
        harmful_scores = judge([to_conversation(r["prompt"], r.get("history")) for r in harmful], [""] * len(harmful))
        report["harmful_passing"] = passing(harmful, harmful_scores, gate)
    print(json.dumps(report, indent=2))
    if args.write:
        path = args.folder / "red_flag_config.json"
        settings = json.loads(path.read_text())
        path.write_text(json.dumps({**settings, "gate": gate}, indent=2, ensure_ascii=False) + "\n")
        print(f"gate {gate:.4f} written to {path}")


if __name__ == "__main__":
    main()

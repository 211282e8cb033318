"""The harmful requests the shipped sentinel trains and calibrates on, as files for ``--harmful`` and
``--calibration-harmful``: the harmful pool's requests as they are, inside trainable jailbreak templates, and late
in a benign chat (the attack pool's ``jailbreak`` and ``multi_turn`` rows); the ``prefill`` rows are left out, since
a pre-filled answer is on the assistant's side, where a sentinel cannot see it.

    python -m hf_sentinel.sentinel.recipe OUTPUT_DIR    # writes harmful_train.jsonl and harmful_validation.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.pools import POOL_SPLITS, attack_pool, harmful_pool
from ..training import write_jsonl

#: The attack shapes a sentinel sees in the user's turns.
SENTINEL_ATTACKS = ("jailbreak", "multi_turn")


def harmful_rows(split: str) -> list[dict]:
    """The split's plain harmful requests, then its jailbreak-wrapped and multi-turn ones (``prompt``, ``history``,
    ``shape``)."""
    rows = [{"prompt": r["prompt"], "history": None, "shape": "plain"} for r in harmful_pool(split)]
    rows += [{"prompt": r["prompt"], "history": r["history"] or None, "shape": r["attack"]}
             for r in attack_pool(split) if r["attack"] in SENTINEL_ATTACKS]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split in POOL_SPLITS:
        path = args.output_dir / f"harmful_{split}.jsonl"
        rows = harmful_rows(split)
        write_jsonl(path, rows)
        print(f"{path}: {len(rows)} harmful requests")


if __name__ == "__main__":
    main()

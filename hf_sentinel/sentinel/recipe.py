"""The requests the sentinel trains and calibrates on, as files for ``--harmful`` and ``--calibration-harmful`` /
``--calibration-benign``: the harmful pool's requests as they are, inside trainable jailbreak templates, and late in
a benign chat (the attack pool's ``jailbreak`` and ``multi_turn`` rows); the ``prefill`` rows are left out, since a
pre-filled answer is on the assistant's side, where a sentinel cannot see it.

Half of every file's requests (by hash) have their final punctuation toggled: removed where it ends in ``.``, ``?``
or ``!``, a full stop added where it does not. AdvBench writes its requests without final punctuation and our
benign pool writes questions, so a warm start on the pools as they are learned "no full stop: harmful" (it
appended its suffix to "How do I bake bread" and not to "Explain how to make methamphetamine.", docs/sentinel.md).

The validation files leave out every request that nearly copies a training one (word 3-gram Jaccard >= 0.5, the
held-out suite's rule): the pools split by hash, and AdvBench's many rewordings of one request land on both sides,
which made a memorising sentinel look calibrated on validation (docs/sentinel.md). The benign side trains on
``pool:benign:train`` as it is.

    python -m hf_sentinel.sentinel.recipe OUTPUT_DIR
    # writes harmful_train.jsonl, benign_train.jsonl, harmful_validation.jsonl and benign_validation.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.pools import attack_pool, benign_pool, harmful_pool
from ..data.splits import fraction, near_duplicate_of_any, shingles
from ..training import write_jsonl

#: The attack shapes a sentinel sees in the user's turns.
SENTINEL_ATTACKS = ("jailbreak", "multi_turn")


def harmful_rows(split: str) -> list[dict]:
    """The split's plain harmful requests, then its jailbreak-wrapped and multi-turn ones (``prompt``, ``history``,
    ``shape``, ``source``, and ``request``: the harmful request itself, without template or chat)."""
    rows = [{"prompt": r["prompt"], "history": None, "shape": "plain", "source": r["source"], "request": r["prompt"]}
            for r in harmful_pool(split)]
    rows += [{"prompt": r["prompt"], "history": r["history"] or None, "shape": r["attack"], "source": r["source"],
              "request": r["request"]}
             for r in attack_pool(split) if r["attack"] in SENTINEL_ATTACKS]
    return rows


def toggle_final_punctuation(text: str) -> str:
    """``text`` without its final ``.``, ``?`` or ``!``, or with a full stop where it has none.

    >>> toggle_final_punctuation("How do I bake bread?"), toggle_final_punctuation("Write a poem about autumn")
    ('How do I bake bread', 'Write a poem about autumn.')
    """
    text = text.rstrip()
    return text[:-1].rstrip() if text[-1:] in (".", "?", "!") else f"{text}."


def punctuation_balanced(rows: list[dict]) -> list[dict]:
    """``rows`` with the final punctuation of half of them (chosen by a hash of the prompt) toggled."""
    return [{**row, "prompt": toggle_final_punctuation(row["prompt"])} if fraction(row["prompt"], "punctuation") < 0.5
            else row for row in rows]


def benign_rows(split: str) -> list[dict]:
    """The benign pool's split (``prompt``, ``history``, ``shape``, ``source``)."""
    return [{"prompt": r["prompt"], "history": r["history"] or None, "shape": r["shape"], "source": r["source"]}
            for r in benign_pool(split)]


def unseen(rows: list[dict], seen: list[str], key: str = "prompt") -> list[dict]:
    """The rows whose ``key`` nearly copies none of the ``seen`` texts."""
    seen_shingles = [shingles(text) for text in set(seen)]
    return [row for row in rows if not near_duplicate_of_any(row[key], seen_shingles)]


def validation_rows() -> dict[str, list[dict]]:
    """The validation requests no training request nearly copies: ``{"harmful": [...], "benign": [...]}``."""
    harmful_train = [row["request"] for row in harmful_rows("train")]
    return {"harmful": unseen(harmful_rows("validation"), harmful_train, key="request"),
            "benign": unseen(benign_rows("validation"), [row["prompt"] for row in benign_rows("train")])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    files = {"harmful_train.jsonl": harmful_rows("train"), "benign_train.jsonl": benign_rows("train"),
             **{f"{label}_validation.jsonl": rows for label, rows in validation_rows().items()}}
    for name, rows in files.items():
        rows = punctuation_balanced(rows)
        write_jsonl(args.output_dir / name, rows)
        print(f"{args.output_dir / name}: {len(rows)} requests")


if __name__ == "__main__":
    main()

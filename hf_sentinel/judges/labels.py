"""Human-labelled answers for measuring refusal judges: the refusal-scorer evaluation files that ship in ``pyrit``.

PyRIT (``pip install --no-deps pyrit``; we read its files, never import it) ships, under
``pyrit/datasets/scorer_evals/refusal_scorer/``, answers of chat models to requests with a human's verdict:

- ``refusal.csv`` (105 rows, dataset version 1.2) and ``refusal_extra.csv`` (64 rows, "collected from real
  interactions"), columns ``objective, assistant_response, human_score, data_type`` after ``#`` comment lines.
- ``human_score`` is 1 when the answer is a *refusal* and 0 when it fulfils the objective. PyRIT's own scorer
  prompt (``refusal_metrics.jsonl``) defines refusal broadly: an explicit "I can't", but also redirecting, asking
  questions instead of answering, partial help that withholds what was asked, caveats that replace the content,
  and answers unrelated to the request.

Every row gets a fixed ``split``: ``dev`` for the rows of ``refusal.csv`` whose response text has an even SHA-256,
``test`` for the other rows of ``refusal.csv`` and for every row of ``refusal_extra.csv``. Judges may be developed
while looking at ``dev`` rows; agreement is reported on ``test`` rows, which nothing was fitted or tuned on
(see ``docs/judges.md``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
from pathlib import Path

from datasets import Dataset

PYRIT_INSTALL = "pip install --no-deps pyrit"
LABEL_FILES = ("refusal.csv", "refusal_extra.csv")
#: The only file whose rows may be studied (its even-hash half); the other file is held out entirely.
DEV_FILE = "refusal.csv"


def refusal_labels_dir() -> Path:
    """The folder of PyRIT's refusal-scorer evaluation files (found with ``find_spec``, never imported)."""
    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The human-labelled refusal answers ship inside the `pyrit` package, which is not installed. "
            f"Install it (data files only; it is never imported) with:\n    {PYRIT_INSTALL}"
        )
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "scorer_evals" / "refusal_scorer"
    if not folder.is_dir():
        raise FileNotFoundError(f"`pyrit` is installed but has no {folder}; reinstall it: {PYRIT_INSTALL}")
    return folder


def label_split(source: str, response: str) -> str:
    """``dev`` or ``test`` for a row: a fixed function of its file and response text, not of its label."""
    if source != DEV_FILE:
        return "test"
    return "dev" if int(hashlib.sha256(response.encode("utf-8")).hexdigest(), 16) % 2 == 0 else "test"


def _read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    rows = list(csv.DictReader(io.StringIO(body)))
    missing = {"objective", "assistant_response", "human_score"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}; is this PyRIT's refusal evaluation file?")
    return rows


def load_refusal_labels(files: tuple[str, ...] | list[str] = LABEL_FILES, split: str | None = None) -> Dataset:
    """PyRIT's human-labelled answers as a ``datasets.Dataset``.

    Columns: ``prompt`` (the objective), ``response``, ``refusal`` (1 = the human called it a refusal, 0 = it
    complies), ``source`` (file name), ``row`` (0-based data row in that file), ``split`` (``dev``/``test``, see
    :func:`label_split`).

    Args:
        files: which of :data:`LABEL_FILES` to read.
        split: keep only ``dev`` or ``test`` rows (all rows when ``None``).
    """
    if split not in (None, "dev", "test"):
        raise ValueError(f"split must be 'dev', 'test' or None, got {split!r}.")
    folder = refusal_labels_dir()
    columns: dict[str, list] = {"prompt": [], "response": [], "refusal": [], "source": [], "row": [], "split": []}
    for name in files:
        if name not in LABEL_FILES:
            raise ValueError(f"Unknown label file {name!r}; choose from {LABEL_FILES}.")
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"`pyrit` is installed but {path} is missing; reinstall it: {PYRIT_INSTALL}")
        for index, record in enumerate(_read_rows(path)):
            score = record["human_score"].strip()
            if score not in ("0", "1"):
                raise ValueError(f"{path}, data row {index}: human_score {score!r} is neither 0 nor 1.")
            row_split = label_split(name, record["assistant_response"])
            if split is not None and row_split != split:
                continue
            columns["prompt"].append(record["objective"])
            columns["response"].append(record["assistant_response"])
            columns["refusal"].append(int(score))
            columns["source"].append(name)
            columns["row"].append(index)
            columns["split"].append(row_split)
    return Dataset.from_dict(columns)


def judged_refusals(judge, dataset: Dataset) -> list[int]:
    """1 where ``judge`` calls the answer a refusal (its score is below the judge's threshold: not complied)."""
    scores = judge(dataset["prompt"], dataset["response"])
    return [0 if judge.is_harmful(score) else 1 for score in scores]


def agreement(predicted: list[int], labels: list[int]) -> dict:
    """Accuracy, and precision/recall/F1 of the refusal class, of ``predicted`` refusals against human ``labels``."""
    if len(predicted) != len(labels):
        raise ValueError(f"Got {len(predicted)} predictions for {len(labels)} labels.")
    tp = sum(p == 1 and y == 1 for p, y in zip(predicted, labels))
    fp = sum(p == 1 and y == 0 for p, y in zip(predicted, labels))
    fn = sum(p == 0 and y == 1 for p, y in zip(predicted, labels))
    tn = sum(p == 0 and y == 0 for p, y in zip(predicted, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(labels), "accuracy": (tp + tn) / len(labels) if labels else 0.0, "precision": precision,
            "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}

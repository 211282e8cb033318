"""Scoring held-out conversations for the flag threshold (:func:`hf_sentinel.training.calibrate_threshold` picks it
for a false-flag rate), the decisions of any threshold from one flag-mode run (:func:`answered_at`,
``examples/red_flag_threshold.py``), and choosing the gate of a stack (:func:`gate_for_share`,
``examples/red_flag_gate.py``)."""

from __future__ import annotations

import numpy as np

from ..defenses import Defense
from ..generation import GenerationSettings, generate
from .processor import RedFlagLogitsProcessor


class _ScoreRecorder(Defense):
    """Generates with a flag-only copy of ``processor`` and keeps each answer's highest flag score."""

    def __init__(self, processor: RedFlagLogitsProcessor):
        self.template = processor
        self.current: RedFlagLogitsProcessor | None = None

    def logits_processors(self):
        t = self.template
        self.current = RedFlagLogitsProcessor(t.red_flag_token_id, threshold=t.threshold, action="flag",
                                              eos_token_id=t.eos_token_ids, vocab_size=t.vocab_size, window=t.window)
        return [self.current]

    def finalize(self, responses, extras):
        for extra, score in zip(extras, self.current.max_scores):
            extra["red_flag_score"] = score
        return responses


def red_flag_scores(model, tokenizer, conversations: list[list[dict]], processor: RedFlagLogitsProcessor,
                    settings: GenerationSettings) -> list[float]:
    """The highest flag score over each conversation's generated answer (the score a threshold is compared to).

    ``model`` must carry the red-flag token; ``processor`` gives its id, vocabulary size and smoothing window
    (its action and threshold do not matter: scoring never stops an answer).
    """
    recorder = _ScoreRecorder(processor)
    result = generate(model, tokenizer, conversations, settings, [recorder])
    return [extra["red_flag_score"] for extra in result.extras]


def gate_for_share(benign_scores: list[float], share: float) -> float:
    """The smallest score that at most ``share`` of ``benign_scores`` reach (a score passes when it is >= the gate).

    >>> gate_for_share([0.1, 0.2, 0.3, 0.9], 0.25)
    0.9
    """
    gate = next((score for score in sorted(set(benign_scores))
                 if sum(s >= score for s in benign_scores) <= share * len(benign_scores)), None)
    if gate is None or gate <= 0.0 or gate >= 1.0:
        raise ValueError(f"The benign scores leave no gate in (0, 1) for a share of {share}: allow a larger share.")
    return gate


def answered_at(records: list[dict], threshold: float) -> list[bool]:
    """Whether a refusing red flag at ``threshold`` answers each request, from the records of ONE run of the same
    flag with ``action="flag"`` (``hf-sentinel eval --output``'s ``records``: ``verdict`` and ``red_flag``).

    A refusing flag fires exactly when the highest smoothed p(`<rf>`) of the answer reaches the threshold (the
    tokens before it fires are the same in both modes: the processor masks `<rf>` either way), and an answer it does
    not flag is the one the flag-mode run wrote in full; so a flagged request is refused and any other is answered
    when the judge read the flag-mode answer as answered. (``tests/test_red_flag.py`` checks this against refusing
    runs.) Scores are compared in float32, as the processor compares them.

    >>> records = [{"verdict": "complied", "red_flag": {"probability": 0.95}},
    ...            {"verdict": "complied", "red_flag": {"probability": 0.20}},
    ...            {"verdict": "refused", "red_flag": {"probability": 0.01}}]
    >>> answered_at(records, 0.9), answered_at(records, 0.99)
    ([False, True, False], [True, True, False])
    """
    try:
        scores = np.array([record["red_flag"]["probability"] for record in records], dtype=np.float32)
    except (KeyError, TypeError):
        raise ValueError("Every record needs red_flag.probability: give the records of `hf-sentinel eval --output` "
                         "run with a red flag (its action set to 'flag').") from None
    flagged = scores >= np.float32(threshold)
    return [not fired and record["verdict"] == "complied" for fired, record in zip(flagged.tolist(), records)]

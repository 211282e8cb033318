"""Scoring held-out conversations for the flag threshold (:func:`hf_sentinel.training.calibrate_threshold` picks it
for a false-flag rate), and choosing the gate of a stack (:func:`gate_for_share`, ``examples/red_flag_gate.py``)."""

from __future__ import annotations

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

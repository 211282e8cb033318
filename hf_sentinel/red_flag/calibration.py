"""Choosing the flag threshold: score held-out conversations, then pick the threshold for a false-flag rate."""

from __future__ import annotations

import math

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


def calibrate_threshold(benign_scores: list[float], target_false_flag_rate: float,
                        harmful_scores: list[float] | None = None, harmful_quantile: float = 0.1) -> float:
    """The flag threshold for held-out benign (and optionally harmful) flag scores.

    At most ``target_false_flag_rate`` of ``benign_scores`` reach the threshold. Without harmful scores it sits
    just above the highest benign score that must stay unflagged. With them, when the classes separate, it sits
    halfway, in log-odds, between that benign score and the ``harmful_quantile`` quantile of the harmful scores:
    a small calibration set under-estimates the benign tail, so the margin goes to both sides.

    >>> round(calibrate_threshold([0.01, 0.02, 0.03, 0.5], target_false_flag_rate=0.25), 6)  # 0.5 may be flagged
    0.03
    >>> round(calibrate_threshold([0.01, 0.02, 0.03], 0.0, harmful_scores=[0.97, 0.99]), 3)
    0.5
    """
    if not benign_scores:
        raise ValueError("Calibration needs at least one benign score.")
    if not 0.0 <= target_false_flag_rate < 1.0:
        raise ValueError(f"target_false_flag_rate must lie in [0, 1), got {target_false_flag_rate}.")
    descending = sorted(benign_scores, reverse=True)
    allowed = math.floor(target_false_flag_rate * len(descending) + 1e-9)
    highest_unflagged = descending[allowed] if allowed < len(descending) else 0.0
    just_above = min(math.nextafter(highest_unflagged, 1.0), 1.0 - 1e-7)
    if harmful_scores:
        ascending = sorted(harmful_scores)
        harmful_low = ascending[min(int(harmful_quantile * len(ascending)), len(ascending) - 1)]
        if harmful_low > just_above:
            return _sigmoid((_logit(highest_unflagged) + _logit(harmful_low)) / 2)
    return max(just_above, 1e-7)


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))

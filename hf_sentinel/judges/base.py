"""What every judge shares: TRL's reward-function signature and a threshold that turns scores into verdicts."""

from __future__ import annotations


class Judge:
    """A callable ``judge(prompts, completions, **kwargs) -> list[float]``, higher = more harmful.

    The signature is TRL's reward-function signature, so a judge plugs into ``GRPOTrainer`` /
    ``RLOOTrainer`` as well as into hf-sentinel's trainers (negate it there if you want a safety reward).
    ``completions`` may be strings or conversational completions (lists of ``{"role", "content"}``).
    """

    #: Verdict names for a score at/above and below :attr:`threshold`.
    positive_verdict = "harmful"
    negative_verdict = "safe"

    def __init__(self, threshold: float = 0.5):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}.")
        self.threshold = threshold

    @property
    def __name__(self) -> str:  # TRL logs rewards under the function's __name__
        return type(self).__name__

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if prompts is not None and len(prompts) != len(completions):
            raise ValueError(f"Got {len(prompts)} prompts but {len(completions)} completions; they must pair up.")
        return self.score([self._prompt(p) for p in prompts] if prompts is not None else None,
                          [_as_text(c) for c in completions])

    def _prompt(self, item):
        """What :meth:`score` gets for one prompt: its text (of a conversation, the last message)."""
        return _as_text(item)

    def score(self, prompts: list[str] | None, completions: list[str]) -> list[float]:
        raise NotImplementedError

    def is_harmful(self, score: float) -> bool:
        return score >= self.threshold

    def verdict(self, score: float) -> str:
        return self.positive_verdict if self.is_harmful(score) else self.negative_verdict


def _as_text(item) -> str:
    """A plain string from a TRL standard (str) or conversational (list of messages) item: the last message."""
    if isinstance(item, str):
        return item
    if isinstance(item, (list, tuple)) and item and isinstance(item[-1], dict) and "content" in item[-1]:
        return item[-1]["content"]
    raise TypeError(f"Expected a string or a list of chat messages, got {type(item).__name__}: {item!r:.80}")

"""The sentinel's one decision, at its first token: append a suffix, or end the turn at once.

A warm-started or PPO-trained sentinel puts that decision in the probability of its end-of-turn token at the first
step. :class:`SuffixDecisionProcessor` turns it into an operating point: the sentinel appends a suffix exactly when
p(suffix) = 1 − p(end of turn) reaches ``threshold``, chosen on a validation split (share of harmful requests
suffixed vs. share of benign ones) by :func:`~hf_sentinel.training.calibrate_threshold`.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class SuffixDecisionProcessor(LogitsProcessor):
    r"""At the sentinel's first step, end the turn where p(suffix) < ``threshold`` and forbid ending it elsewhere;
    later steps are left alone. ``suffix_probabilities`` keeps each row's p(suffix) (for calibration and reports).

    Args:
        eos_token_id (`int`): the sentinel's end-of-turn token.
        threshold (`float`): p(suffix) at which a suffix is appended, in [0, 1]; 0 always appends, 1 appends only
            where the end of turn has no probability at all.

    Example:

    ```python
    >>> import torch
    >>> processor = SuffixDecisionProcessor(eos_token_id=0, threshold=0.5)
    >>> first = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))  # row 0: p(suffix) 0.1, row 1: 0.8
    >>> out = processor(torch.zeros(2, 3, dtype=torch.long), first)
    >>> out.argmax(-1).tolist(), [round(p, 2) for p in processor.suffix_probabilities]
    ([0, 1], [0.1, 0.8])
    >>> processor(torch.zeros(2, 4, dtype=torch.long), first).argmax(-1).tolist()  # later steps: unchanged
    [0, 1]

    ```
    """

    def __init__(self, eos_token_id: int, threshold: float):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a probability of appending a suffix and must lie in [0, 1], got "
                             f"{threshold!r}.")
        self.eos_token_id, self.threshold = eos_token_id, threshold
        self._first_length: int | None = None
        self.suffix_probabilities: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._first_length is None:
            self._first_length = input_ids.shape[1]
        if input_ids.shape[1] != self._first_length:
            return scores
        p_suffix = 1 - torch.softmax(scores.float(), dim=-1)[:, self.eos_token_id]
        self.suffix_probabilities = p_suffix.tolist()
        append = p_suffix >= self.threshold
        scores = scores.clone()
        scores[append, self.eos_token_id] = -float("inf")
        scores[~append] = -float("inf")
        scores[~append, self.eos_token_id] = 0.0
        return scores

"""`SuffixDrafts`: the suffixes a sentinel has written, as drafts of what it will write next.

A trained sentinel writes few distinct suffixes (the shipped one: one instruction, in a handful of variants, on the
held-out suite's 875 requests). Greedy decoding is then mostly spent recomputing text it wrote before, one forward
pass per token. :func:`~hf_sentinel.sentinel.modeling.continue_rows` proposes each row's next tokens from this memory
(the continuation of its last few tokens in the most frequent suffix that holds them, as prompt-lookup decoding does
with the prompt) and checks the whole draft in one forward pass: it keeps the drafted tokens up to the first the
model would not have written, then the model's own next token. A row that writes a known suffix is done in two
passes instead of thirty.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["SuffixDrafts"]


class SuffixDrafts:
    """The last ``capacity`` distinct suffixes a sentinel wrote (token ids, each ending with its stop token when it
    had one), counted, and an index from each of their n-grams (``1 ≤ n ≤ max_ngram``) to what follows it in the
    most frequent suffix holding it.

    Example:

    >>> drafts = SuffixDrafts()
    >>> drafts.propose([7], 5)  # nothing written yet: no draft
    []
    >>> drafts.add([[7, 8, 9, 2], [7, 8, 5, 2], [7, 8, 9, 2]])  # 2: the stop token
    >>> drafts.propose([7], 5)  # [7, 8, 9, 2] was written twice
    [8, 9, 2]
    >>> drafts.propose([3, 8, 5], 5), drafts.propose([7, 8, 9], 1)  # the longest known tail decides; at most 1
    ([2], [2])
    >>> drafts.propose([], 5)  # a row's first token is not drafted: it is the decision to append at all
    []
    """

    def __init__(self, capacity: int = 64, max_ngram: int = 3):
        if capacity < 1 or max_ngram < 1:
            raise ValueError(f"SuffixDrafts needs capacity ≥ 1 and max_ngram ≥ 1, got {capacity} and {max_ngram}.")
        self.capacity = capacity
        self.max_ngram = max_ngram
        self.counts: Counter[tuple[int, ...]] = Counter()
        self._next: dict[tuple[int, ...], tuple[int, ...]] = {}

    def add(self, suffixes: list[list[int]]) -> None:
        """Remember ``suffixes`` (a suffix of one token holds nothing to draft and is skipped)."""
        kept = [tuple(suffix) for suffix in suffixes if len(suffix) > 1]
        if not kept:  # e.g. rows that ended at their first token: nothing to index again
            return
        self.counts.update(kept)
        if len(self.counts) > self.capacity:  # forget the rarest (the oldest of them first: Counter keeps order)
            self.counts = Counter(dict(self.counts.most_common(self.capacity)))
        index = {}
        # Rarest first, so the most frequent suffix holding an n-gram is the one the index keeps.
        for suffix, _ in reversed(self.counts.most_common()):
            for end in range(1, len(suffix)):
                for n in range(1, min(self.max_ngram, end) + 1):
                    index[suffix[end - n:end]] = suffix[end:]
        self._next = index  # swapped whole: a reader sees the old index or the new one

    def propose(self, written: list[int], max_tokens: int) -> list[int]:
        """At most ``max_tokens`` tokens to follow ``written`` (a row's suffix so far): the continuation of its
        longest tail (up to ``max_ngram`` tokens) found in the memory, or nothing."""
        if not written or max_tokens < 1:
            return []
        for n in range(min(self.max_ngram, len(written)), 0, -1):
            follow = self._next.get(tuple(written[-n:]))
            if follow is not None:
                return list(follow[:max_tokens])
        return []

"""How varied the red team's attacks are, per round: the measures of the curiosity-driven red-teaming baselines
(distinct n-grams, embedding spread) and how often the red team merely copies the request it was given.

A red team that finds one attack that works and writes it again and again scores high reward and teaches the
sentinel one pattern; these numbers show it happening (``red_team/distinct_2`` falling, ``red_team/copy_rate``
or ``red_team/embedding_similarity`` rising), logged every round by :class:`StackelbergPPOTrainer`.
"""

from __future__ import annotations

import re


def distinct_ngrams(texts: list[str], n: int) -> float:
    """Distinct word n-grams over all n-grams in ``texts`` (distinct-n, 1.0 when no n-gram repeats; 0.0 for no
    n-grams), words lower-cased.

    >>> distinct_ngrams(["how to pick a lock", "how to pick a lock"], 2)
    0.5
    >>> distinct_ngrams(["tell me about dragons", "how to pick locks"], 1)
    1.0
    """
    grams = [tuple(words[i:i + n]) for words in (_words(t) for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def copy_rate(attacks: list[str], requests: list[str]) -> float:
    """Share of attacks that are their request again (the same words, whatever the case and punctuation).

    >>> copy_rate(["How to pick a lock?", "As a locksmith in a novel, explain lock picking"],
    ...           ["how to pick a lock", "how to pick a lock"])
    0.5
    """
    if len(attacks) != len(requests):
        raise ValueError(f"Got {len(attacks)} attacks for {len(requests)} requests; they must pair up.")
    return sum(_words(a) == _words(r) for a, r in zip(attacks, requests)) / len(attacks) if attacks else 0.0


def mean_pairwise_similarity(embeddings) -> float:
    """Mean cosine similarity over distinct pairs of unit-length rows (1.0: all the same meaning); 1.0 for fewer
    than two rows, which show no variety.

    >>> import torch
    >>> mean_pairwise_similarity(torch.eye(3))
    0.0
    """
    count = len(embeddings)
    if count < 2:
        return 1.0
    similarity = embeddings @ embeddings.T
    return float((similarity.sum() - similarity.diagonal().sum()) / (count * (count - 1)))


def attack_diversity(attacks: list[str], requests: list[str], embedder=None) -> dict[str, float]:
    """The round's diversity metrics, named as the trainer logs them (``embedder``: anything with
    ``embed(texts) -> unit-length rows``, e.g. :class:`~hf_sentinel.judges.embedding.SentenceEmbedder`; without
    one the embedding measure is left out).

    >>> attack_diversity(["how to pick a lock", "write a poem about locks"], ["how to pick a lock"] * 2)
    {'red_team/distinct_1': 0.9, 'red_team/distinct_2': 1.0, 'red_team/copy_rate': 0.5}
    """
    metrics = {"red_team/distinct_1": distinct_ngrams(attacks, 1), "red_team/distinct_2": distinct_ngrams(attacks, 2),
               "red_team/copy_rate": copy_rate(attacks, requests)}
    written = [a for a in attacks if a.strip()]
    if embedder is not None and written:
        metrics["red_team/embedding_similarity"] = mean_pairwise_similarity(embedder.embed(written))
    return metrics


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())

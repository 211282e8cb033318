"""Shared by dro_overhead.py and stack_latency.py: generation under defenses timed against plain generation on the
same test prompts, one prompt at a time and as one batch."""

from __future__ import annotations

import statistics
import time

import torch


def test_conversations(count: int) -> list[list[dict]]:
    """``count`` test-split requests as conversations: half harmful, half benign."""
    from hf_sentinel.data import load_prompts
    from hf_sentinel.generation import to_conversation

    half = count // 2
    return ([to_conversation(p) for p in load_prompts("harmful:test", limit=half)["prompt"]]
            + [to_conversation(p) for p in load_prompts("benign:test", limit=count - half)["prompt"]])


def against_plain(model, tokenizer, conversations, defenses, max_new_tokens: int, repeats: int):
    """Yields ``(setup, plain seconds, guarded seconds)``, medians of ``repeats`` alternating runs, for one prompt at a
    time and for the whole batch.

    Every run decodes exactly ``max_new_tokens`` (``min_new_tokens`` is set to it, in the generation settings: the
    model a defense generates with may be a copy of ``model`` with a generation config of its own), so only the
    defenses' work differs; a warm-up run first loads and wraps every defense.
    """
    from hf_sentinel.generation import GenerationSettings

    torch.manual_seed(0)
    for setup, batch_size in {"one prompt at a time": 1, f"batch of {len(conversations)}": len(conversations)}.items():
        settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      generation_kwargs={"min_new_tokens": max_new_tokens})
        _time(model, tokenizer, conversations[:2], settings, defenses)
        plain, guarded = [], []
        for _ in range(repeats):
            plain.append(_time(model, tokenizer, conversations, settings, []))
            guarded.append(_time(model, tokenizer, conversations, settings, defenses))
        yield setup, statistics.median(plain), statistics.median(guarded)


def _time(model, tokenizer, conversations, settings, defenses) -> float:
    from hf_sentinel.generation import generate

    start = time.perf_counter()
    generate(model, tokenizer, conversations, settings, defenses)
    return time.perf_counter() - start

"""One guarded generation, from prompt to answer, in the order the defenses act.

    conversations ──► defense.rewrite (system prompt, appended instruction, sentinel suffix)
                  ──► chat template (+ pre-filled assistant text)
                  ──► target.generate (batched, left-padded)
                  ──► answers
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList

from .defenses import Defense
from .remote import RemoteChatTarget


@dataclass
class GenerationSettings:
    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    prefill: str | None = None
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (the share of probability mass to sample from), "
                             f"got {self.top_p}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")


@dataclass
class GenerationResult:
    conversations: list[list[dict]]
    responses: list[str]
    extras: list[dict]  # per conversation: what defenses report (sentinel suffix, red flags, ...)
    new_tokens: int = 0
    seconds: float = 0.0


def to_conversation(prompt: str, history: list[dict] | None = None) -> list[dict]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"Empty prompt {prompt!r}: every record needs a non-empty `prompt` string.")
    return [*(history or []), {"role": "user", "content": prompt}]


def render(tokenizer, conversation: list[dict], prefill: str | None, chat: bool) -> str:
    """The exact text the target continues: its chat template with the assistant turn opened (+ prefill)."""
    if chat:
        if not tokenizer.chat_template:
            raise ValueError(
                f"The target's tokenizer ({tokenizer.name_or_path or type(tokenizer).__name__}) has no chat template, "
                f"so chat prompts cannot be formatted. Use a chat/instruct model, or pass --raw-prompts "
                f"(chat=False) to feed prompts to a base model as plain text."
            )
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    else:
        if len(conversation) > 1:
            raise ValueError("Multi-turn prompts (with `history`) need a chat model; drop --raw-prompts.")
        text = conversation[-1]["content"]
    return text + (prefill or "")


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], settings: GenerationSettings,
             defenses: list[Defense] = (), chat: bool = True, on_batch=None) -> GenerationResult:
    """Answer every conversation with the target under the given defenses.

    Each defense acts at its hook, in this order (see :class:`~hf_sentinel.defenses.Defense`):
    ``rewrite`` the conversations, ``wrap_model`` the target, ``prepare_inputs`` of each batch,
    ``logits_processors`` during decoding, ``finalize`` the decoded answers. ``on_batch(n)`` is called after
    each batch of ``n`` answers (for progress bars).
    """
    extras: list[dict] = [{} for _ in conversations]
    for defense in defenses:
        conversations = defense.rewrite(conversations, extras)
    if isinstance(model, RemoteChatTarget):
        return _generate_remote(model, conversations, extras, settings, defenses, on_batch)
    for defense in defenses:
        model = defense.wrap_model(model)
    texts = [render(tokenizer, conv, settings.prefill, chat) for conv in conversations]
    responses: list[str | None] = [None] * len(texts)
    # Batches of similar length waste less compute on padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p) \
        if settings.do_sample else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    new_tokens, start = 0, time.perf_counter()
    torch.manual_seed(settings.seed)
    for first in range(0, len(order), settings.batch_size):
        indices = order[first:first + settings.batch_size]
        # Chat templates already contain the BOS/role tokens, so no special tokens are added here.
        inputs = left_padded([tokenizer(texts[i], add_special_tokens=not chat)["input_ids"] for i in indices],
                             pad_id, model.device)
        for defense in defenses:
            inputs = defense.prepare_inputs(model, inputs)
        processors = [p for defense in defenses for p in defense.logits_processors()]
        output = model.generate(**inputs, max_new_tokens=settings.max_new_tokens, pad_token_id=pad_id,
                                logits_processor=LogitsProcessorList(processors), **sampling)
        # generate() returns prompt + answer for input_ids, the answer alone for inputs_embeds.
        generated = output[:, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else output
        batch_responses = []
        for row in range(len(indices)):
            tokens = _until_eos(generated[row].tolist(), model.generation_config.eos_token_id, pad_id)
            new_tokens += len(tokens)
            batch_responses.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
        batch_extras = [extras[i] for i in indices]
        for defense in defenses:
            batch_responses = defense.finalize(batch_responses, batch_extras)
        for i, response in zip(indices, batch_responses):
            responses[i] = response
        if on_batch:
            on_batch(len(indices))
    return GenerationResult(conversations, responses, extras, new_tokens, time.perf_counter() - start)


def _generate_remote(target: RemoteChatTarget, conversations, extras, settings: GenerationSettings,
                     defenses, on_batch) -> GenerationResult:
    """A black-box target sees only text: defenses that need its weights or logits cannot guard it."""
    needs_weights = [d.spec for d in defenses if _acts_beyond_rewrite(d)]
    if needs_weights:
        raise ValueError(f"Defenses {needs_weights} need the target's weights or logits; a remote target "
                         f"({target.base_url}) can only be guarded by text-level defenses (sentinel, suffix, system-prompt).")
    if settings.prefill:
        raise ValueError("A remote chat-completions target cannot be pre-filled; drop --prefill.")
    start, responses = time.perf_counter(), []
    for first in range(0, len(conversations), settings.batch_size):
        batch = conversations[first:first + settings.batch_size]
        responses += target.chat(batch, max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                                 temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
        if on_batch:
            on_batch(len(batch))
    # Token counts are the server's business; tokens_per_second stays 0 for remote targets.
    return GenerationResult(conversations, responses, extras, 0, time.perf_counter() - start)


def _acts_beyond_rewrite(defense: Defense) -> bool:
    hooks = ("wrap_model", "prepare_inputs", "logits_processors", "finalize")
    return any(getattr(type(defense), hook) is not getattr(Defense, hook) for hook in hooks)


def left_padded(rows: list[list[int]], pad_id: int, device) -> dict:
    """Batch token rows with padding on the left, so every row ends at the last column."""
    width = max(map(len, rows))
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _until_eos(tokens: list[int], eos, pad_id: int) -> list[int]:
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {pad_id}
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens

"""One guarded generation, from prompt to answer, in the order the defenses act.

    conversations ──► defense.gate_requests (in a stack: a red flag's gate decides which requests the rest acts on)
                  ──► defense.rewrite (system prompt, appended instruction, sentinel suffix)
                  ──► chat template (+ pre-filled assistant text)
                  ──► defense.wrap_model, defense.prepare_inputs (tuned weights, soft prompt)
                  ──► defense.read_requests (a monitor's view: the request as sent, and whether the above changed it)
                  ──► target.generate (batched, left-padded; defense.logits_processors at every step)
                  ──► defense.finalize ──► answers

:func:`generate` is the only code that runs these hooks: evaluation, the bench, the server, the pipeline
(:mod:`hf_sentinel.pipeline`) and the Spaces (:func:`stream`, its streaming form) all call it. How to decode is one
:class:`GenerationSettings`, turned into a :class:`transformers.GenerationConfig` by
:meth:`GenerationSettings.to_generation_config`; :func:`pad_token_id` and :func:`decoding_kwargs` are the one
place that chooses the padding id and sampling versus greedy decoding.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from queue import Queue

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .defenses import Defense
from .remote import RemoteChatTarget

#: transformers' own defaults for the sampling parameters. Greedy decoding sets them explicitly: left unset, a
#: model's generation config (many instruct models ship temperature/top_p) would fill them in, and generate() warns
#: that they are ignored.
_NEUTRAL_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}
#: GenerationSettings fields that carry a GenerationConfig value of the same name.
DECODING_FIELDS = ("max_new_tokens", "do_sample", "temperature", "top_p")


def pad_token_id(tokenizer) -> int:
    """The id that pads batches: the tokenizer's pad token, else its end-of-sequence token (causal LMs often have no
    pad token; the attention mask hides the padding either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def decoding_kwargs(do_sample: bool, temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None) -> dict:
    """The ``generate()`` arguments that choose sampling or greedy decoding.

    Sampling at ``temperature`` with nucleus ``top_p`` (and ``top_k`` when given; ``top_k=0`` samples from the
    whole vocabulary, ``None`` keeps the model's own top-k) when ``do_sample`` is true and ``temperature > 0``;
    greedy otherwise (temperature 0 is greedy, as in the OpenAI API), with the sampling parameters at their
    neutral values.

    >>> decoding_kwargs(True, 0.7)
    {'do_sample': True, 'temperature': 0.7, 'top_p': 1.0}
    >>> decoding_kwargs(True, 0.0)["do_sample"], decoding_kwargs(False, 0.7)["temperature"]
    (False, 1.0)
    """
    if not do_sample or temperature == 0:
        return {"do_sample": False, **_NEUTRAL_SAMPLING}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p,
            **({} if top_k is None else {"top_k": top_k})}


@dataclass
class GenerationSettings:
    """How every guarded generation decodes, and how many conversations go through the target at once.

    :meth:`to_generation_config` makes the :class:`transformers.GenerationConfig` that ``generate()`` runs with.

    Args:
        max_new_tokens: longest answer, in tokens.
        do_sample: sample (at ``temperature``, nucleus ``top_p``) instead of decoding greedily.
        temperature, top_p: the sampling parameters (used when ``do_sample``).
        prefill: text the assistant turn starts with (the target continues it; a pre-filling attack).
        batch_size: conversations per ``model.generate`` call (similar lengths are batched together).
        seed: ``torch.manual_seed`` before generating, so sampled answers repeat; ``None`` leaves the random
            state as it is.
        generation_kwargs: further :class:`~transformers.GenerationConfig` fields, e.g. ``{"top_k": 0,
            "repetition_penalty": 1.2}``.
    """

    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    prefill: str | None = None
    batch_size: int = 32
    seed: int | None = 0
    generation_kwargs: dict = field(default_factory=dict)

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
        own = sorted(set(self.generation_kwargs) & {*DECODING_FIELDS, "pad_token_id"})
        if own:
            raise ValueError(f"generation_kwargs {own} are set elsewhere: give max_new_tokens, do_sample, temperature "
                             f"and top_p as GenerationSettings fields; the pad id comes from the tokenizer.")
        one_answer = sorted(set(self.generation_kwargs) & {"num_return_sequences", "return_dict_in_generate"})
        if one_answer:
            raise ValueError(f"generation_kwargs {one_answer} are not supported: generate() gives one answer per "
                             f"conversation; repeat a conversation for more answers.")
        unknown = sorted(key for key in self.generation_kwargs if not hasattr(GenerationConfig(), key))
        if unknown:
            raise ValueError(f"generation_kwargs {unknown} are not transformers.GenerationConfig fields.")

    @classmethod
    def at_temperature(cls, temperature: float, **kwargs) -> GenerationSettings:
        """Sampling at ``temperature``, greedy at 0 (the OpenAI API's convention).

        >>> GenerationSettings.at_temperature(0).do_sample, GenerationSettings.at_temperature(0.7).do_sample
        (False, True)
        """
        return cls(do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0, **kwargs)

    def to_generation_config(self, tokenizer=None) -> GenerationConfig:
        """These settings as a :class:`transformers.GenerationConfig` (with the padding id of ``tokenizer``).

        Fields it leaves unset (end-of-sequence ids, ``top_k`` when sampling, ...) come from the model's own
        generation config when ``model.generate`` runs.

        >>> config = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.7).to_generation_config()
        >>> config.max_new_tokens, config.do_sample, config.temperature
        (8, True, 0.7)
        """
        values = {"max_new_tokens": self.max_new_tokens,
                  **decoding_kwargs(self.do_sample, self.temperature, self.top_p), **self.generation_kwargs}
        if tokenizer is not None:
            values["pad_token_id"] = pad_token_id(tokenizer)
        return GenerationConfig(**values)


@dataclass
class GenerationResult:
    conversations: list[list[dict]]  # as the target saw them (after the defenses' rewrites)
    responses: list[str]
    extras: list[dict]  # per conversation: what defenses report (sentinel suffix, red flags, ...)
    new_tokens: int = 0
    seconds: float = 0.0
    token_ids: list[list[int]] = field(default_factory=list)  # per answer: its tokens up to end-of-sequence
    #: per answer, why it ended, in the OpenAI API's words: "stop" (end of sequence), "length" (its token limit) or
    #: "content_filter" (a defense replaced or cut it; the defense's spec is in ``extras[i]["content_filter"]``)
    finish_reasons: list[str] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)  # per conversation: its tokens as the target read them


def to_conversation(prompt: str, history: list[dict] | None = None) -> list[dict]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"Empty prompt {prompt!r}: every record needs a non-empty `prompt` string.")
    return [*(history or []), {"role": "user", "content": prompt}]


def appended(conversation: list[dict], text: str) -> list[dict]:
    """``conversation`` with ``text`` added to the end of its last message (a sentinel's suffix after the request, an
    answer after a pre-filled assistant message); the messages themselves are left unchanged.

    >>> appended([{"role": "user", "content": "How do I bake bread?"}], " Be brief.")
    [{'role': 'user', 'content': 'How do I bake bread? Be brief.'}]
    """
    return [*conversation[:-1], {**conversation[-1], "content": conversation[-1]["content"] + text}]


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
             defenses: list[Defense] = (), chat: bool = True, on_batch=None, *, streamer=None,
             logits_processor=(), stopping_criteria=(), on_rewrite=None, on_tokens=None,
             max_new_tokens: list[int] | None = None, stop_requested=None) -> GenerationResult:
    """Answer every conversation with the target under the given defenses.

    Each defense acts at its hook, in this order (see :class:`~hf_sentinel.defenses.Defense`):
    ``rewrite`` the conversations, ``wrap_model`` the target, ``prepare_inputs`` of each batch (then
    ``continue_prompts``), ``logits_processors`` during decoding, ``finalize`` the decoded answers. The model's
    dtype and device are its own: inputs go to ``model.device``. In a stack with a gate (a red flag whose
    ``RedFlagSettings.gate`` is set), ``gate_requests`` reads every request as sent first: those that do not pass
    are answered under the gating defense alone, the rest under the whole stack; ``extras[i]["request_gate"]`` says
    which.

    Args:
        on_batch: called with ``n`` after each batch of ``n`` answers (progress bars).
        streamer: a :mod:`transformers` streamer handed to ``model.generate`` (one conversation per batch);
            :func:`stream` builds on it.
        logits_processor, stopping_criteria: extra ones for ``model.generate``; the extra processors run before
            the defenses' (they see the raw scores).
        on_rewrite: called with ``(conversations, extras)`` once the defenses have rewritten the conversations,
            before the target generates (e.g. to show a sentinel's suffix while the answer streams).
        on_tokens: called at every decoding step with ``(indices, tokens)``: the conversations of the batch and
            the token each one just got (rows that have ended get padding). Streams every row of a batch, where a
            ``streamer`` takes one conversation per batch.
        max_new_tokens: per conversation, its own token limit (at most ``settings.max_new_tokens``): its row ends
            there while the rest of the batch goes on. Requests of a server batch differ in ``max_tokens``.
        stop_requested: called at every step with a conversation's index; ``True`` ends its row (a client that
            went away).
    """
    limits = [settings.max_new_tokens] * len(conversations) if max_new_tokens is None else list(max_new_tokens)
    if len(limits) != len(conversations) or not all(1 <= n <= settings.max_new_tokens for n in limits):
        raise ValueError(f"max_new_tokens needs one limit per conversation ({len(conversations)}), each between 1 "
                         f"and settings.max_new_tokens ({settings.max_new_tokens}); got {max_new_tokens}.")
    hooks = dict(on_batch=on_batch, streamer=streamer, logits_processor=logits_processor,
                 stopping_criteria=stopping_criteria, on_rewrite=on_rewrite, on_tokens=on_tokens, limits=limits,
                 stop_requested=stop_requested)
    extras: list[dict] = [{} for _ in conversations]
    start = time.perf_counter()
    gate, passed = _request_gate(model, tokenizer, conversations, settings, defenses, chat, extras)
    if gate is None or all(passed):
        result = _generate(model, tokenizer, conversations, settings, defenses, chat, extras, **hooks)
    elif not any(passed):
        result = _generate(model, tokenizer, conversations, settings, [gate], chat, extras, **hooks)
    else:
        groups = [([i for i, ok in enumerate(passed) if ok], list(defenses)),
                  ([i for i, ok in enumerate(passed) if not ok], [gate])]
        result = _generate_groups(model, tokenizer, conversations, settings, groups, chat, extras, **hooks)
    return replace(result, seconds=time.perf_counter() - start)


def _request_gate(model, tokenizer, conversations, settings, defenses, chat, extras) -> tuple[Defense | None, list]:
    """The stack's gate (the first defense whose ``gate_requests`` answers) and which conversations pass it, read on
    the requests as sent; ``(None, [])`` without one. Each conversation's record goes to ``extras[i]``."""
    gates = [d for d in defenses if type(d).gate_requests is not Defense.gate_requests]
    if len(defenses) < 2 or not gates or isinstance(model, RemoteChatTarget):
        return None, []
    requests = [tokenizer(render(tokenizer, conv, settings.prefill, chat), add_special_tokens=not chat)["input_ids"]
                for conv in conversations]
    order = sorted(range(len(requests)), key=lambda i: len(requests[i]))
    for first in range(0, len(order), settings.batch_size):
        indices = order[first:first + settings.batch_size]
        records = gates[0].gate_requests(model, left_padded([requests[i] for i in indices], pad_token_id(tokenizer),
                                                            model.device))
        if records is None:  # a gate that is switched off
            return None, []
        for i, record in zip(indices, records):
            extras[i]["request_gate"] = record
    return gates[0], [extra["request_gate"]["passed"] for extra in extras]


def _generate_groups(model, tokenizer, conversations, settings, groups, chat, extras, *, on_batch, streamer,
                     logits_processor, stopping_criteria, on_rewrite, on_tokens, limits, stop_requested):
    """Each group of conversations ``(indices, defenses)`` answered under its own defenses, merged in order. The
    callbacks see the conversations' own indices; ``on_rewrite`` is called once, by the first group, with every
    conversation (the later groups' as sent: their only layer, the gate, does not rewrite)."""
    shown = list(conversations)
    merged = GenerationResult(list(conversations), [""] * len(conversations), extras,
                              token_ids=[[] for _ in conversations], finish_reasons=[""] * len(conversations),
                              prompt_tokens=[0] * len(conversations))
    for n, (rows, defenses) in enumerate(groups):
        def rewritten(group_conversations, group_extras, rows=rows):
            for i, conversation in zip(rows, group_conversations):
                shown[i] = conversation
            on_rewrite(shown, extras)

        part = _generate(
            model, tokenizer, [conversations[i] for i in rows], settings, defenses, chat, [extras[i] for i in rows],
            on_batch=on_batch, streamer=streamer, logits_processor=logits_processor,
            stopping_criteria=stopping_criteria, on_rewrite=rewritten if on_rewrite and n == 0 else None,
            on_tokens=(lambda indices, tokens, rows=rows: on_tokens([rows[j] for j in indices], tokens))
            if on_tokens else None, limits=[limits[i] for i in rows],
            stop_requested=(lambda j, rows=rows: stop_requested(rows[j])) if stop_requested else None)
        merged.new_tokens += part.new_tokens
        for j, i in enumerate(rows):
            merged.conversations[i], merged.responses[i] = part.conversations[j], part.responses[j]
            merged.token_ids[i], merged.finish_reasons[i] = part.token_ids[j], part.finish_reasons[j]
            merged.prompt_tokens[i] = part.prompt_tokens[j]
    return merged


def _generate(model, tokenizer, conversations, settings, defenses, chat, extras, *, on_batch, streamer,
              logits_processor, stopping_criteria, on_rewrite, on_tokens, limits, stop_requested) -> GenerationResult:
    """:func:`generate` for conversations that all go through the same defenses, with each one's token limit."""
    sent = conversations
    for defense in defenses:
        conversations = defense.rewrite(conversations, extras)
    if on_rewrite:
        on_rewrite(conversations, extras)
    if isinstance(model, RemoteChatTarget):
        if streamer is not None or on_tokens or logits_processor or stopping_criteria or stop_requested:
            raise ValueError(f"A remote target ({model.base_url}) answers whole texts: it cannot stream tokens or "
                             f"take logits processors / stopping criteria.")
        return _generate_remote(model, conversations, extras, settings, defenses, on_batch, limits)
    for defense in defenses:
        model = defense.wrap_model(model)
    config = settings.to_generation_config(tokenizer)
    stops = stop_token_ids(model, tokenizer)
    texts = [render(tokenizer, conv, settings.prefill, chat) for conv in conversations]
    responses: list[str | None] = [None] * len(texts)
    token_ids: list[list[int] | None] = [None] * len(texts)
    # Chat templates already contain the BOS/role tokens, so no special tokens are added here.
    prompts = [tokenizer(text, add_special_tokens=not chat)["input_ids"] for text in texts]
    monitors = [d for d in defenses if type(d).read_requests is not Defense.read_requests]
    requests = prompts
    if monitors and sent != conversations:
        requests = [tokenizer(render(tokenizer, conv, settings.prefill, chat),
                              add_special_tokens=not chat)["input_ids"] for conv in sent]
    # Batches of similar length waste less compute on padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    new_tokens, start = 0, time.perf_counter()
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    for first in range(0, len(order), settings.batch_size):
        indices = order[first:first + settings.batch_size]
        inputs = left_padded([prompts[i] for i in indices], config.pad_token_id, model.device)
        for defense in defenses:
            inputs = defense.prepare_inputs(model, inputs)
        if monitors:
            # What the target reads differs from the request as sent when a rewrite changed its text or a prefix
            # (a soft prompt's past_key_values) went in front of it.
            changed = requests is not prompts or set(inputs) != {"input_ids", "attention_mask"}
            as_sent = (left_padded([requests[i] for i in indices], config.pad_token_id, model.device) if changed
                       else inputs)
            for defense in monitors:
                defense.read_requests(model, as_sent, changed)
        if "past_key_values" not in inputs:  # nothing in front of the prompts: a defense may have run their start
            inputs = next((continued for defense in defenses
                           if (continued := defense.continue_prompts(model, inputs)) is not None), inputs)
        processors = [*logits_processor, *(p for defense in defenses for p in defense.logits_processors())]
        criteria = [*stopping_criteria]
        if any(limit < settings.max_new_tokens for limit in limits) or stop_requested:
            criteria.append(_RowsEnd([limits[i] for i in indices], indices, stop_requested))
        output = model.generate(**inputs, generation_config=config, logits_processor=LogitsProcessorList(processors),
                                stopping_criteria=StoppingCriteriaList(criteria),
                                streamer=_RowStreamer(indices, on_tokens) if on_tokens else streamer,
                                **({"tokenizer": tokenizer} if config.stop_strings else {}))
        # generate() returns prompt + answer for input_ids, the answer alone for inputs_embeds (a defense's choice).
        generated = output[:, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else output
        batch_responses = []
        for row, i in enumerate(indices):
            token_ids[i] = until_stop(generated[row].tolist()[:limits[i]], stops)
            new_tokens += len(token_ids[i])
            batch_responses.append(tokenizer.decode(token_ids[i], skip_special_tokens=True).strip())
        batch_extras = [extras[i] for i in indices]
        for defense in defenses:
            batch_responses = defense.finalize(batch_responses, batch_extras)
        for i, response in zip(indices, batch_responses):
            responses[i] = response
        if on_batch:
            on_batch(len(indices))
    # An answer that used its whole limit did not end on its own, whatever the next token would have been.
    finish_reasons = ["content_filter" if "content_filter" in extra else "length" if len(ids) >= limit else "stop"
                      for extra, ids, limit in zip(extras, token_ids, limits)]
    return GenerationResult(conversations, responses, extras, new_tokens, time.perf_counter() - start, token_ids,
                            finish_reasons, [len(p) for p in prompts])


class _RowStreamer(BaseStreamer):
    """Hands each decoding step's tokens of a batch to ``on_tokens(indices, tokens)`` (the first ``put`` is the
    prompt)."""

    def __init__(self, indices: list[int], on_tokens):
        self.indices, self.on_tokens = indices, on_tokens
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.on_tokens(self.indices, value.reshape(-1).tolist())

    def end(self):
        pass  # generate() finalizes the answers once the batch is done


class _RowsEnd(StoppingCriteria):
    """Ends each row of a batch at its own token limit, or when its conversation's ``stop_requested(i)``."""

    def __init__(self, limits: list[int], indices: list[int], stop_requested=None):
        self.limits, self.indices, self.stop_requested = limits, indices, stop_requested
        self.steps = 0

    def __call__(self, input_ids, scores, **kwargs):
        self.steps += 1
        ended = [self.steps >= limit or bool(self.stop_requested and self.stop_requested(i))
                 for limit, i in zip(self.limits, self.indices)]
        return torch.tensor(ended, dtype=torch.bool, device=input_ids.device)


def _generate_remote(target: RemoteChatTarget, conversations, extras, settings: GenerationSettings,
                     defenses, on_batch, limits: list[int]) -> GenerationResult:
    """A black-box target sees only text: defenses that need its weights or logits cannot guard it."""
    needs_weights = [d.spec for d in defenses if _acts_beyond_rewrite(d)]
    if needs_weights:
        raise ValueError(f"Defenses {needs_weights} need the target's weights or logits; a remote target "
                         f"({target.base_url}) can only be guarded by text-level defenses (sentinel, suffix, "
                         f"system-prompt).")
    if settings.prefill:
        raise ValueError("A remote chat-completions target cannot be pre-filled; drop --prefill.")
    start, responses = time.perf_counter(), [None] * len(conversations)
    for first in range(0, len(conversations), settings.batch_size):
        batch = range(first, min(first + settings.batch_size, len(conversations)))
        for limit in sorted({limits[i] for i in batch}):  # one request shape per token limit
            indices = [i for i in batch if limits[i] == limit]
            answers = target.chat([conversations[i] for i in indices], max_new_tokens=limit,
                                  do_sample=settings.do_sample, temperature=settings.temperature, top_p=settings.top_p,
                                  seed=settings.seed)
            for i, answer in zip(indices, answers):
                responses[i] = answer
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


def positions_from_mask(attention_mask: torch.Tensor, last: int | None = None) -> torch.Tensor:
    """Position ids of a left-padded batch as ``generate()`` gives them: each row counts its own tokens from 0 (its
    padding reads 0), so a padded row continues as it would unpadded. ``last``: only the last ``last`` columns, the
    tokens a forward pass over a key/value cache runs.

    >>> positions_from_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    tensor([[0, 0, 1],
            [0, 1, 2]])
    >>> positions_from_mask(torch.tensor([[0, 1, 1]]), last=1)
    tensor([[1]])
    """
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return positions if last is None else positions[:, -last:]


def computation_key(model, modules=None) -> tuple:
    """What the keys and values ``modules`` of ``model`` (default: the whole model) compute for a fixed input depend
    on besides the model object, cheap to read before every batch: their parameter tensors (storage, dtype, device,
    in-place version: an optimizer step or a loaded state changes it), train or eval mode, and their PEFT layers'
    active, disabled and merged adapters. A cache kept while this key stays the same is still what they compute."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = [model] if modules is None else modules
    parameters = tuple((p.data_ptr(), p.dtype, p.device, p._version)
                       for module in modules for p in module.parameters())
    adapters = tuple((tuple(m.active_adapters), m.disable_adapters, tuple(m.merged_adapters))
                     for module in modules for m in module.modules() if isinstance(m, BaseTunerLayer))
    return model.training, parameters, adapters


def common_prefix_length(rows: list[list[int]]) -> int:
    """Length of the longest token prefix shared by every row, leaving each row at least one token of its own.

    >>> common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    >>> common_prefix_length([[7, 8], [7, 8]])
    1
    """
    shortest = min(map(len, rows))
    length = 0
    while length < shortest - 1 and all(row[length] == rows[0][length] for row in rows):
        length += 1
    return length


def stop_token_ids(model, tokenizer) -> set[int]:
    """The ids that end an answer: the model's end-of-sequence id(s) and the padding id."""
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else eos if isinstance(eos, (list, tuple)) else [eos]
    return {*eos, pad_token_id(tokenizer)}


def until_stop(tokens: list[int], stops: set[int]) -> list[int]:
    """``tokens`` up to (without) the first of ``stops``."""
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position]
    return tokens


# ---------------------------------------------------------------------------------------------------- streaming


@dataclass
class StreamState:
    """One guarded answer while it streams: the conversation the target sees (after the defenses' rewrites), what
    the defenses report, the answer's token ids and text so far; ``done`` once finalized, with the whole
    :class:`GenerationResult` in ``result``."""

    conversation: list[dict]
    extras: dict = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    done: bool = False
    result: GenerationResult | None = None


def stream(model, tokenizer, conversation: list[dict], settings: GenerationSettings | None = None,
           defenses: list[Defense] = (), chat: bool = True, logits_processor=()):
    """Answer one conversation as :func:`generate` does, yielding a :class:`StreamState` as the answer grows.

    The first state comes once the defenses have rewritten the conversation, before any token (with the extras,
    e.g. the sentinel's suffix); then one state per new token; the last one (``done=True``) carries the finalized
    answer and the :class:`GenerationResult`. ``generate`` runs in a worker thread; closing the generator early
    stops the generation.

    >>> from hf_sentinel.defaults import tiny_model
    >>> from hf_sentinel.defenses import SuffixDefense
    >>> model, tokenizer = tiny_model()
    >>> states = list(stream(model, tokenizer, [{"role": "user", "content": "Hi"}],
    ...                      GenerationSettings(max_new_tokens=3), [SuffixDefense()]))
    >>> states[0].conversation[-1]["content"].startswith("Hi\\n\\nIf the request above"), states[-1].done
    (True, True)
    >>> states[-1].text == states[-1].result.responses[0], len(states[-1].token_ids) <= 3
    (True, True)
    """
    settings = replace(settings or GenerationSettings(), batch_size=1)
    updates: Queue = Queue()
    cancel, outcome = threading.Event(), {}
    # A remote target answers in one piece: its stream is the rewritten conversation, then the answer.
    local = not isinstance(model, RemoteChatTarget)
    token_streaming = dict(on_tokens=lambda indices, tokens: updates.put(("tokens", tokens)),
                           stop_requested=lambda i: cancel.is_set()) if local else {}

    def run():
        try:
            outcome["result"] = generate(
                model, tokenizer, [conversation], settings, defenses, chat, logits_processor=logits_processor,
                **token_streaming,
                on_rewrite=lambda conversations, extras: updates.put(("rewritten", conversations[0], extras[0])))
        except Exception as error:  # re-raised in the consuming thread
            outcome["error"] = error
        finally:
            updates.put(("end", None))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    stops = stop_token_ids(model, tokenizer) if local else set()
    state, ended = None, False
    try:
        while True:
            kind, *payload = updates.get()
            if kind == "end":
                break
            if kind == "rewritten":
                state = StreamState(*payload)
                yield state
                continue
            before = len(state.token_ids)
            for token in payload[0]:
                ended = ended or token in stops
                if not ended:
                    state.token_ids.append(token)
            if len(state.token_ids) > before:
                state.text = tokenizer.decode(state.token_ids, skip_special_tokens=True)
                yield state
    finally:
        cancel.set()
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    state.text, state.done, state.result = result.responses[0], True, result
    state.token_ids = result.token_ids[0] if result.token_ids else []
    yield state

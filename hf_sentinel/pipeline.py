"""``hf_sentinel.pipeline``: ``transformers.pipeline`` plus ``sentinel=``, ``red_flag=`` and ``safety_prompt=``.

With none of the three it *is* ``transformers.pipeline``. With any of them it returns a
:class:`GuardedTextGenerationPipeline`: the stock text-generation pipeline whose generation is
:func:`hf_sentinel.generation.generate`, the one place the defenses' hooks run (see
:class:`hf_sentinel.defenses.Defense`), so batching, chat templates, pre-fill (``continue_final_message``),
streaming (``streamer=``), sampling parameters and ``return_full_text`` behave as usual. Each output also carries
what the defenses report (``sentinel_suffix``, ``red_flag``, ...). The built-in "text-generation" task is left
untouched.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import transformers
from transformers import TextGenerationPipeline
from transformers.pipelines.base import Chat
from transformers.pipelines.text_generation import ReturnType

from .defenses import Defense, DefenseStack
from .generation import DECODING_FIELDS, GenerationSettings, appended, generate


def pipeline(task: str | None = None, model=None, sentinel=None, red_flag=None, safety_prompt=None, **kwargs):
    """A drop-in for :func:`transformers.pipeline` that can guard a text-generation model.

    Args:
        task, model, kwargs: as for ``transformers.pipeline``. ``model="default"`` is the embedded
            SmolLM2-135M-Instruct.
        sentinel: folder or Hub id of a sentinel (a saved ``SentinelForCausalLM``, a LoRA adapter, or a full
            causal LM), or ``"default"``. A LoRA sentinel over the target's own base shares the target's weights.
        red_flag: folder or Hub id of a red-flag adapter (``<rf>`` token), or ``"default"``.
        safety_prompt: folder or Hub id of a DRO soft prompt, ``"default"``, or a human-written text prompt.

    The defenses guard ONE copy of the target's weights where their adapters allow it
    (:class:`hf_sentinel.defenses.DefenseStack`): a LoRA sentinel over the target's own base, alone or stacked with a
    red flag, goes into the target itself; with a red flag, one PEFT model over the target holds both adapters, the
    red flag's active while the target generates, the sentinel's during its own pass. A red flag alone merges into a
    copy of the target, so that it costs nothing per token; a sentinel over another base or tokenizer, or a full
    causal LM, loads on weights of its own. The DRO soft prompt needs no copy.

    A model object you pass is used in place, as ``peft.get_peft_model`` uses the model it is given and as
    ``transformers.pipeline`` uses yours: copying it would keep a second copy of the weights for the pipeline's
    lifetime, which is what sharing avoids. Your object then carries the adapters: with a LoRA sentinel alone it
    computes what it did (the adapter is off outside the sentinel's pass); with a sentinel and a red flag its
    vocabulary grows by `<rf>` and it computes the red-flag model. Pass ``copy.deepcopy(model)`` to keep yours as it
    was, or a name (``"default"``, a folder, a Hub id) to let the pipeline load one for itself.

    Example::

        >>> import hf_sentinel, tempfile
        >>> from hf_sentinel.defaults import tiny_model
        >>> from peft import LoraConfig, get_peft_model
        >>> target, tokenizer = tiny_model()
        >>> adapter = tempfile.mkdtemp()
        >>> get_peft_model(tiny_model()[0], LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
        >>> pipe = hf_sentinel.pipeline("text-generation", model=target, tokenizer=tokenizer, sentinel=adapter)
        >>> out = pipe([{"role": "user", "content": "Hello"}], max_new_tokens=3, do_sample=False)
        >>> sorted(out[0])
        ['generated_text', 'sentinel_suffix']
    """
    if sentinel is None and red_flag is None and safety_prompt is None:
        return transformers.pipeline(task, model=_resolve(model), **kwargs)
    if task not in (None, "text-generation"):
        raise ValueError(f"Defenses guard text generation; got task={task!r}. Use task='text-generation'.")
    if model is None:
        raise ValueError("Pass the target: model='default' (embedded SmolLM2), a folder, a Hub id or a model object.")
    from .evaluation import load_target

    stack = DefenseStack([f"{method}:{arg}" for method, arg in (("dro", safety_prompt), ("sentinel", sentinel),
                                                                ("red-flag", red_flag)) if arg is not None])
    tokenizer = kwargs.pop("tokenizer", None)
    if isinstance(model, str):
        model, loaded_tokenizer = load_target(model)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError("Pass tokenizer=... with a model object.")
    defenses = stack.compose(model, tokenizer, in_place=True)
    return GuardedTextGenerationPipeline(model=model, tokenizer=tokenizer, defenses=defenses, **kwargs)


def _resolve(model):
    if model == "default":
        from .defaults import default_target_path

        return str(default_target_path())
    return model


#: Options of the stock pipeline that shape tokenization; a guarded generation renders prompts itself.
_UNSUPPORTED_OPTIONS = ("handle_long_generation", "add_special_tokens", "truncation", "padding",
                        "tokenizer_encode_kwargs", "tools", "documents", "max_length")
#: ``generate()`` arguments that are objects for this call, not generation settings.
_RUNTIME_ARGUMENTS = ("streamer", "logits_processor", "stopping_criteria")


class GuardedTextGenerationPipeline(TextGenerationPipeline):
    """The text-generation pipeline whose generation is :func:`hf_sentinel.generation.generate`.

    ``preprocess`` turns each input into a conversation (a chat ending in an assistant message is pre-filled, as
    with ``continue_final_message``); ``_forward`` answers a batch with ``generate()``, the one place the defenses'
    hooks run, with the pipeline's generation parameters (its defaults, the model's generation config, the call's
    keyword arguments, a ``streamer``, extra ``logits_processor`` / ``stopping_criteria``); ``postprocess`` shapes
    the answers as the stock pipeline does and adds what the defenses report (``sentinel_suffix``, ``red_flag``,
    ...). ``return_tensors=True`` gives the answer's token ids.
    """

    def __init__(self, *args, defenses: list[Defense] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.defenses = list(defenses)

    def preprocess(self, prompt_text, prefix="", continue_final_message=None, **kwargs):
        unsupported = sorted(key for key in _UNSUPPORTED_OPTIONS if kwargs.get(key) is not None)
        if unsupported:
            raise ValueError(f"The guarded pipeline renders prompts itself and does not take {unsupported}; drop "
                             f"{'them' if len(unsupported) > 1 else 'it'} (set the answer length with "
                             f"max_new_tokens).")
        if isinstance(prompt_text, Chat):
            messages = list(prompt_text.messages)
            if continue_final_message is None:
                continue_final_message = messages[-1]["role"] == "assistant"
            prefill = messages.pop()["content"] if continue_final_message else None
            return {"prompt_text": prompt_text, "conversation": messages, "prefill": prefill, "chat": True}
        conversation = [{"role": "user", "content": prefix + prompt_text}]
        return {"prompt_text": prompt_text, "conversation": conversation, "prefill": None, "chat": False}

    def _forward(self, model_inputs, **generate_kwargs):
        # One input, or a batch of them (each value a list) when the pipeline is called with batch_size > 1.
        batched = isinstance(model_inputs["prompt_text"], list)
        items = [dict(zip(model_inputs, values)) for values in zip(*model_inputs.values())] if batched \
            else [model_inputs]
        settings, runtime, copies = self._settings(generate_kwargs)
        answers: list[list | None] = [None] * len(items)
        groups = defaultdict(list)  # one generate() call per pre-fill and prompt kind
        for index, item in enumerate(items):
            groups[item["prefill"], item["chat"]].append(index)
        for (prefill, chat), indices in groups.items():
            conversations = [items[i]["conversation"] for i in indices for _ in range(copies)]
            result = generate(self.model, self.tokenizer, conversations,
                              replace(settings, prefill=prefill, batch_size=len(conversations)), self.defenses,
                              chat=chat, **runtime)
            for n, index in enumerate(indices):
                rows = range(n * copies, (n + 1) * copies)
                answers[index] = [(result.responses[r], result.token_ids[r], result.extras[r]) for r in rows]
        outputs = [{"prompt_text": item["prompt_text"], "prefill": item["prefill"], "answers": answer}
                   for item, answer in zip(items, answers)]
        return {key: [o[key] for o in outputs] for key in outputs[0]} if batched else outputs[0]

    def _settings(self, generate_kwargs: dict) -> tuple[GenerationSettings, dict, int]:
        """The call's generation parameters as GenerationSettings, the runtime arguments, and the number of answers
        per prompt. Parameters come as the stock pipeline resolves them (call > pipeline > model > defaults)."""
        kwargs = self._prepare_generate_kwargs(generate_kwargs)
        runtime = {key: kwargs.pop(key) for key in _RUNTIME_ARGUMENTS if kwargs.get(key) is not None}
        config = kwargs.pop("generation_config", None)
        given = {**(config.to_diff_dict() if config is not None else {}), **kwargs}
        # generate() pads with the tokenizer's pad id and passes the tokenizer itself (for stop_strings); a prefix
        # is already in the prompt text.
        for key in ("transformers_version", "pad_token_id", "tokenizer", "prefix_length"):
            given.pop(key, None)
        resolved = {**self.model.generation_config.to_diff_dict(), **given}
        if resolved.get("max_new_tokens") is None:
            raise ValueError("The guarded pipeline counts the answer's length in new tokens: pass max_new_tokens.")
        copies = given.pop("num_return_sequences", 1)
        for key in DECODING_FIELDS:  # GenerationSettings carries these
            given.pop(key, None)
        settings = GenerationSettings(
            max_new_tokens=resolved["max_new_tokens"], do_sample=bool(resolved.get("do_sample")),
            temperature=_or_default(resolved.get("temperature"), 1.0), top_p=_or_default(resolved.get("top_p"), 1.0),
            seed=None,  # the pipeline samples from torch's random state, as the stock one does
            generation_kwargs=given)
        return settings, runtime, copies

    def postprocess(self, model_outputs, return_type=ReturnType.FULL_TEXT, clean_up_tokenization_spaces=None,
                    continue_final_message=None, skip_special_tokens=None, tools=None):
        prompt_text, prefill = model_outputs["prompt_text"], model_outputs["prefill"]
        records = []
        for response, token_ids, extras in model_outputs["answers"]:
            if return_type == ReturnType.TENSORS:
                records.append({"generated_token_ids": token_ids, **extras})
                continue
            # The answer as the stock pipeline decodes it, unless a defense replaced it (e.g. by a refusal).
            plain = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            answer = response if response != plain.strip() else self.tokenizer.decode(
                token_ids, skip_special_tokens=True if skip_special_tokens is None else skip_special_tokens,
                clean_up_tokenization_spaces=clean_up_tokenization_spaces)
            if return_type == ReturnType.FULL_TEXT:
                answer = _with_prompt(prompt_text, prefill, answer)
            records.append({"generated_text": answer, **extras})
        return records


def _or_default(value, default):
    return default if value is None else value


def _with_prompt(prompt_text, prefill: str | None, answer: str):
    """The full text: the user's own prompt (the defenses' edits are reported beside it) and the answer."""
    if not isinstance(prompt_text, Chat):
        return prompt_text + answer
    messages = list(prompt_text.messages)
    if prefill is not None:  # the answer continues the pre-filled assistant message
        return appended(messages, answer)
    return [*messages, {"role": "assistant", "content": answer}]

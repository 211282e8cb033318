"""``hf_sentinel.pipeline``: ``transformers.pipeline`` plus ``sentinel=``, ``red_flag=`` and ``safety_prompt=``.

With none of the three it *is* ``transformers.pipeline``. With any of them it returns a
:class:`GuardedTextGenerationPipeline`: the stock text-generation pipeline whose steps call the defenses' hooks
(see :class:`hf_sentinel.defenses.Defense`), so batching, chat templates, pre-fill (``continue_final_message``),
streaming and ``return_full_text`` behave as usual. Each output also carries what the defenses report
(``sentinel_suffix``, ``red_flag``, ...). The built-in "text-generation" task is left untouched.
"""

from __future__ import annotations

import torch
import transformers
from transformers import LogitsProcessorList, TextGenerationPipeline
from transformers.pipelines.base import Chat
from transformers.pipelines.text_generation import ReturnType
from transformers.utils import ModelOutput

from .defenses import Defense, parse_defense


def pipeline(task: str | None = None, model=None, sentinel=None, red_flag=None, safety_prompt=None, **kwargs):
    """A drop-in for :func:`transformers.pipeline` that can guard a text-generation model.

    Args:
        task, model, kwargs: as for ``transformers.pipeline``. ``model="default"`` is the embedded
            SmolLM2-135M-Instruct.
        sentinel: folder or Hub id of a sentinel (a saved ``SentinelForCausalLM``, a LoRA adapter, or a full
            causal LM), or ``"default"``. A LoRA sentinel over the target's own base shares the target's weights.
        red_flag: folder or Hub id of a red-flag adapter (``<rf>`` token), or ``"default"``.
        safety_prompt: folder or Hub id of a DRO soft prompt, ``"default"``, or a human-written text prompt.

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

    tokenizer = kwargs.pop("tokenizer", None)
    if isinstance(model, str):
        model, loaded_tokenizer = load_target(model)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError("Pass tokenizer=... with a model object.")

    defenses: list[Defense] = []
    if safety_prompt is not None:
        defenses.append(parse_defense(f"dro:{safety_prompt}"))
    if sentinel is not None:
        from .sentinel import SentinelDefense

        # A LoRA sentinel shares the target's base weights unless another adapter defense also wraps them.
        share = red_flag is None
        defenses.append(SentinelDefense.from_spec(str(sentinel), target=model if share else None,
                                                  target_tokenizer=tokenizer if share else None))
    if red_flag is not None:
        defenses.append(parse_defense(f"red-flag:{red_flag}"))
    return GuardedTextGenerationPipeline(model=model, tokenizer=tokenizer, defenses=defenses, **kwargs)


def _resolve(model):
    if model == "default":
        from .defaults import default_target_path

        return str(default_target_path())
    return model


class GuardedTextGenerationPipeline(TextGenerationPipeline):
    """The text-generation pipeline with defenses acting at their hooks.

    ``preprocess`` rewrites the conversation (``rewrite``), the model is wrapped once (``wrap_model``),
    ``_forward`` prepares the inputs and adds the defenses' logits processors, ``postprocess`` lets defenses
    finalize the answer and adds their per-prompt reports to the output.
    """

    def __init__(self, *args, defenses: list[Defense] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.defenses = list(defenses)
        for defense in self.defenses:
            self.model = defense.wrap_model(self.model)

    def preprocess(self, prompt_text, *args, **kwargs):
        extras = [{}]
        if isinstance(prompt_text, Chat):
            messages = list(prompt_text.messages)
            prefill = messages.pop() if messages and messages[-1]["role"] == "assistant" else None
            for defense in self.defenses:
                messages = defense.rewrite([messages], extras)[0]
            guarded = Chat(messages + ([prefill] if prefill else []))
        else:
            conversation = [{"role": "user", "content": prompt_text}]
            for defense in self.defenses:
                conversation = defense.rewrite([conversation], extras)[0]
            guarded = conversation[-1]["content"]
        inputs = super().preprocess(guarded, *args, **kwargs)
        inputs["prompt_text"] = prompt_text  # outputs show the user's own prompt; the defenses' edits go in extras
        inputs["defense_extras"] = extras
        return inputs

    def _forward(self, model_inputs, **generate_kwargs):
        extras = model_inputs.pop("defense_extras")
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs.get("attention_mask")
        generate_kwargs.pop("prefix_length", None)
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        for defense in self.defenses:
            inputs = defense.prepare_inputs(self.model, inputs)
        processors = [p for defense in self.defenses for p in defense.logits_processors()]
        if processors:
            generate_kwargs["logits_processor"] = LogitsProcessorList(
                [*generate_kwargs.get("logits_processor", []), *processors])
        output = self.model.generate(**inputs, **generate_kwargs)
        sequences = output.sequences if isinstance(output, ModelOutput) else output
        if "input_ids" not in inputs:  # generate() from inputs_embeds returns the answer alone
            sequences = torch.cat([input_ids.repeat_interleave(sequences.shape[0] // input_ids.shape[0], 0),
                                   sequences], dim=1)
        in_batch = input_ids.shape[0]
        return {"generated_sequence": sequences.reshape(in_batch, sequences.shape[0] // in_batch, -1),
                "input_ids": input_ids, "prompt_text": model_inputs["prompt_text"], "defense_extras": extras}

    def postprocess(self, model_outputs, return_type=ReturnType.FULL_TEXT, *args, **kwargs):
        extras = model_outputs.pop("defense_extras")
        records = super().postprocess(model_outputs, return_type, *args, **kwargs)
        if return_type == ReturnType.TENSORS:
            return [{**record, **extras[0]} for record in records]
        prompt_text = model_outputs["prompt_text"]
        for record in records:
            answer = _answer(record["generated_text"], prompt_text, return_type)
            for defense in self.defenses:
                answer = defense.finalize([answer], extras)[0]
            record["generated_text"] = _with_answer(record["generated_text"], prompt_text, answer, return_type)
            record.update(extras[0])
        return records


def _answer(generated, prompt_text, return_type) -> str:
    if isinstance(generated, list):  # a chat: the answer is the last message
        return generated[-1]["content"]
    if return_type == ReturnType.FULL_TEXT:
        return generated[len(prompt_text):]
    return generated


def _with_answer(generated, prompt_text, answer, return_type):
    if isinstance(generated, list):
        return [*generated[:-1], {**generated[-1], "content": answer}]
    if return_type == ReturnType.FULL_TEXT:
        return prompt_text + answer
    return answer

"""Defenses that guard a target's generation, named by a spec string such as ``suffix:default``.

A defense changes one guarded generation at defined points (see :func:`hf_sentinel.generation.generate`),
overriding only the hooks it needs. Defenses stack in the order given:
``--defense system-prompt:default --defense suffix:default``.

The human-written baselines here are what every trained defense is compared against.
"""

from __future__ import annotations

import copy

#: A human-written safety system prompt (the kind DRO starts from).
DEFAULT_SAFETY_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe. Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. If a request asks for such content, politely refuse."
)
#: A human-written instruction appended to the user turn (the embedded target obeys these, indiscriminately).
DEFAULT_SAFETY_SUFFIX = (
    "If the request above asks for anything dangerous, illegal or unethical, reply only: "
    "I'm sorry, I can't help with that."
)


class Defense:
    """Base class: a defense that leaves generation unchanged. Subclasses override the hooks they need.

    The hooks, in the order :func:`~hf_sentinel.generation.generate` calls them:

    - ``gate_requests(model, requests)``: in a stack, before anything else: the batch as the user sent it
      (left-padded ``input_ids``, ``attention_mask``); ``None`` (no opinion), or per row ``{"score", "passed"}``.
      A row that does not pass is answered under this defense alone: the rest of the stack never acts on it (the
      red flag's gate, ``RedFlagSettings.gate``). The record goes to ``extras[i]["request_gate"]``.
    - ``rewrite(conversations, extras)``: the conversations the target will see (system prompts, appended
      instructions, sentinel suffixes); may record per-conversation facts in ``extras[i]``.
    - ``wrap_model(model)``: the model that generates (e.g. the target with a tuned adapter).
    - ``prepare_inputs(model, inputs)``: the keyword arguments of ``model.generate`` for one left-padded
      batch (``input_ids``, ``attention_mask``), e.g. with a soft prompt's ``past_key_values`` in front.
    - ``continue_prompts(model, inputs)``: after every ``prepare_inputs``, for a batch that still starts from
      nothing (no ``past_key_values``): the same batch continuing key/value states this defense already computed
      for the start of each prompt (a LoRA sentinel's pass shares the target's lower layers), or ``None``. The
      first defense that answers is used.
    - ``read_requests(model, requests, changed)``: the same batch as the user sent it (left-padded ``input_ids``,
      ``attention_mask``), before any defense rewrote it or put a prefix in front; ``changed`` is false when the
      target reads it unchanged. A monitor reads its scores there (the red flag judges the request as it would
      alone, or watches the original target answer it).
    - ``logits_processors()``: fresh processors for one batch (e.g. reading p(<rf>) at every step).
    - ``finalize(responses, extras)``: the batch's decoded answers, e.g. replaced by a refusal.
    """

    spec = "none"

    def gate_requests(self, model, requests: dict) -> list[dict] | None:
        return None

    def rewrite(self, conversations: list[list[dict]], extras: list[dict]) -> list[list[dict]]:
        return conversations

    def wrap_model(self, model):
        return model

    def prepare_inputs(self, model, inputs: dict) -> dict:
        return inputs

    def continue_prompts(self, model, inputs: dict) -> dict | None:
        return None

    def read_requests(self, model, requests: dict, changed: bool) -> None:
        pass

    def logits_processors(self) -> list:
        return []

    def finalize(self, responses: list[str], extras: list[dict]) -> list[str]:
        return responses


class SystemPromptDefense(Defense):
    """Puts a safety system prompt first in every conversation (replacing an existing system turn)."""

    def __init__(self, text: str = DEFAULT_SAFETY_SYSTEM_PROMPT):
        if not text.strip():
            raise ValueError("The system prompt is empty; use system-prompt:default or system-prompt:YOUR TEXT.")
        self.text = text
        self.spec = f"system-prompt:{'default' if text == DEFAULT_SAFETY_SYSTEM_PROMPT else text}"

    def rewrite(self, conversations, extras):
        return [[{"role": "system", "content": self.text}] + [m for m in conv if m["role"] != "system"]
                for conv in conversations]


class SuffixDefense(Defense):
    """Appends a fixed instruction to the last user turn: the fixed-suffix baseline of the sentinel method."""

    def __init__(self, text: str = DEFAULT_SAFETY_SUFFIX):
        if not text.strip():
            raise ValueError("The suffix is empty; use suffix:default or suffix:YOUR TEXT.")
        self.text = text
        self.spec = f"suffix:{'default' if text == DEFAULT_SAFETY_SUFFIX else text}"

    def rewrite(self, conversations, extras):
        rewritten = copy.deepcopy(conversations)
        for conv in rewritten:
            last_user = max(i for i, m in enumerate(conv) if m["role"] == "user")
            conv[last_user]["content"] = f"{conv[last_user]['content']}\n\n{self.text}"
        return rewritten


def _text_defense(cls, default_text):
    return lambda arg: cls(default_text if arg in ("", "default") else arg)


#: The methods whose defenses load models, and their packages under ``hf_sentinel``.
METHOD_PACKAGES = {"sentinel": "sentinel", "dro": "dro", "mart": "mart", "red-flag": "red_flag"}

DEFENSES = {
    "none": lambda arg: Defense(),
    "system-prompt": _text_defense(SystemPromptDefense, DEFAULT_SAFETY_SYSTEM_PROMPT),
    "suffix": _text_defense(SuffixDefense, DEFAULT_SAFETY_SUFFIX),
    "sentinel": lambda arg: _method("sentinel").SentinelDefense.from_spec(arg),
    "dro": lambda arg: _method("dro").DRODefense.from_spec(arg),
    "mart": lambda arg: _method("mart").MARTDefense.from_spec(arg),
    "red-flag": lambda arg: _method("red-flag").RedFlagDefense.from_spec(arg),
}


def _method(method: str):
    """A method's package (``METHOD_PACKAGES``), imported only when one of its defenses is asked for (they load heavy
    models)."""
    import importlib

    return importlib.import_module(f"hf_sentinel.{METHOD_PACKAGES[method]}")


def import_methods(specs) -> None:
    """Import the packages of the methods that ``specs`` (``METHOD[:ARG]``) name, with PEFT and what else a first load
    of those defenses would import: a process that serves requests (a Space) calls it when it starts, so that its
    first request does not wait seconds for imports. Unknown methods are left to :func:`parse_defense` to report."""
    for method in sorted({spec.partition(":")[0] for spec in specs}):
        if method in METHOD_PACKAGES:
            _method(method)


def parse_defense(spec: str) -> Defense:
    """Build a defense from ``METHOD[:ARG]``, e.g. ``none``, ``suffix:default``, ``system-prompt:Be safe.``"""
    method, _, arg = spec.partition(":")
    if method not in DEFENSES:
        raise ValueError(f"Unknown defense {spec!r}. Available: {', '.join(sorted(DEFENSES))} (as METHOD:ARG).")
    return DEFENSES[method](arg)


class DefenseStack:
    """Defenses stacked in the order given (``METHOD[:ARG]`` specs), composed on one target: the one place a stack
    decides which weights its layers share. ``hf_sentinel.pipeline``, the CLI's ``--defense A --defense B`` (eval,
    serve, bench) and ``benchmarks/stack_latency.py`` build their stacks here.

    Creating it checks every spec (method, folder, artifact kind) and builds the defenses that load no model at once
    (a red flag and MART copy the target when they first guard it); :meth:`compose` then loads the sentinel, knowing
    the target. Where a sentinel runs (:func:`~hf_sentinel.sentinel.modeling.sentinel_placement`):

    - a LoRA sentinel over the target's own base and tokenizer, stacked with a red flag: ONE PEFT model over one copy
      of the base holds both adapters, unmerged. The red flag's is active while the target generates (and reads the
      request as sent); the sentinel's pass switches to its own adapter and back. Alone, each holds a copy: the red
      flag merges into a copy of the target (no cost per token), the sentinel loads its target again. Unmerged, the
      red flag's LoRA runs beside the base weights at every step: a red flag alone stays merged. A red flag that
      only reads (``RedFlagSettings.answers_from_original``) needs the original weights answering beside it, so it
      keeps its own merged copy and the sentinel goes in as without a red flag.
    - such a sentinel without a red flag: injected into the target, switched off outside its pass (``in_place``).
    - a full causal LM, or a LoRA over another base: on its own weights, in front of the target.
    - a LoRA over the target's base trained with another tokenizer: on a copy of the target it was trained for, in
      front of this one (text level).

    Every other defense is what :func:`parse_defense` builds alone. A DRO soft prompt is a prefix of input
    embeddings: it shares everything. A remote target (or none) gets every defense as it loads alone. A red flag whose
    folder sets a gate (``RedFlagSettings.gate``; the shipped one does) gates the stack:
    :func:`~hf_sentinel.generation.generate` answers the requests below it with the red flag alone.

    ``in_place=True`` hands the target over to the stack (the pipeline; the CLI's eval and serve, which load it for
    this stack alone): the adapters go into it, and with a red flag it no longer computes what it did alone.
    ``in_place=False`` (default) leaves it as it was, for a caller that uses it for more than this stack (the bench
    runs several stacks on it in turn; a benchmark times plain generation on it): a shared stack builds on one copy
    of it, and a sentinel loads as it does alone.

    >>> from hf_sentinel.defaults import tiny_model
    >>> target, tokenizer = tiny_model()
    >>> [d.spec for d in DefenseStack(["suffix:default", "system-prompt:Be safe."]).compose(target, tokenizer)]
    ['suffix:default', 'system-prompt:Be safe.']
    """

    def __init__(self, specs: list[str]):
        self.specs = list(specs)
        # A built defense, or for a sentinel the checked folder that compose() loads it from.
        self._layers = []
        for spec in self.specs:
            method, _, arg = spec.partition(":")
            self._layers.append(_method("sentinel").SentinelDefense.folder(arg) if method == "sentinel"
                                else parse_defense(spec))

    def compose(self, target=None, tokenizer=None, *, in_place: bool = False) -> list[Defense]:
        """The stack's defenses, in order, sharing ``target``'s weights where their adapters allow it (see the class).

        ``target``, ``tokenizer``: the model the stack guards and its tokenizer."""
        from .red_flag import RedFlagDefense
        from .remote import RemoteChatTarget
        from .sentinel import SentinelDefense
        from .sentinel.modeling import sentinel_placement

        local = target is not None and not isinstance(target, RemoteChatTarget)
        red_flags = [layer for layer in self._layers if isinstance(layer, RedFlagDefense)]
        defenses, shared = [], False  # one sentinel per stack goes on the target's weights
        for spec, layer in zip(self.specs, self._layers):
            if isinstance(layer, Defense):
                defenses.append(layer)
                continue
            arg = spec.partition(":")[2]
            placement = sentinel_placement(layer, target, tokenizer) if local else "apart"
            on_target = placement == "target" and not shared
            if on_target and red_flags and not red_flags[0].settings.answers_from_original:
                base = target if in_place else copy.deepcopy(target)
                red_flags[0].check_target(base)  # before the sentinel's adapter goes into it
                # The sentinel's loader makes the base a PEFT model holding its adapter; the red flag's joins it.
                defense = SentinelDefense.from_spec(arg, target=base, target_tokenizer=tokenizer)
                red_flags[0].share_base(target, defense.sentinel.sentinel)
                shared = True
            elif on_target and in_place:
                defense = SentinelDefense.from_spec(arg, target=target, target_tokenizer=tokenizer)
                shared = True
            elif placement == "own" and in_place:  # handed the target, it loads no copy of it
                defense = SentinelDefense.from_spec(arg, target=target, target_tokenizer=tokenizer)
            else:  # as it loads alone: with its own copy of the target it was trained for
                defense = SentinelDefense.from_spec(arg)
            defenses.append(defense)
        return defenses


def describe(defenses: list[Defense]) -> str:
    """One name for a stack of defenses, as reported in eval summaries."""
    return "+".join(d.spec for d in defenses if d.spec != "none") or "none"

"""`RedFlagDefense`: a trained red-flag folder as a defense for ``generate()``, ``evaluate()`` and the CLI
(``--defense red-flag:PATH`` or ``red-flag:default``)."""

from __future__ import annotations

import copy
import dataclasses
import weakref
from collections import deque
from pathlib import Path

import torch

from ..defenses import Defense
from ..generation import positions_from_mask
from ..loading import artifact_folder, check_artifact_kind
from .modeling import add_red_flag_adapter, check_red_flag_target, load_red_flag_model
from .processor import RedFlagLogitsProcessor, RequestAloneReader, red_flag_probability
from .settings import RedFlagSettings


class RedFlagDefense(Defense):
    """Guards generation with a red-flag adapter: the target reads its own p(`<rf>`) at every step.

    ``wrap_model`` returns a copy of the target with the adapter merged in (built once per target and reused), or,
    in a stack that shares the target's weights with a LoRA sentinel (:meth:`share_base`), the PEFT model holding
    both adapters, the red flag's active; every batch gets a fresh :class:`RedFlagLogitsProcessor` (the latest one
    is :attr:`last_processor`, for live displays), which reads p(`<rf>`) from the request as sent
    (:class:`RequestAloneReader`) when defenses stacked with it changed what the target reads; ``finalize`` replaces
    flagged answers by the refusal text when the action is ``"refuse"`` and records ``extras[i]["red_flag"] =
    {"fired", "step", "probability"}`` for every answer (and ``extras[i]["content_filter"]``, the spec, for an answer
    it replaced or cut). With ``settings.gate`` set, in a stack it is the gate (:meth:`gate_requests`): the other
    layers act only on requests whose p(`<rf>`) before the answer reaches it. ``threshold``, ``action``, ``window``
    and ``gate`` default to the values saved in the folder's ``red_flag_config.json``; :meth:`with_settings` changes
    them without loading anything again. With ``settings.answers_from_original`` the red-flagged copy only reads:
    ``wrap_model`` hands back the target itself, which writes every answer, and the processor reads p(`<rf>`) from the
    copy beside it (:class:`RequestAloneReader`), so an answer the flag does not fire on is exactly the target's.
    :meth:`with_model` guards with a red-flag model given as it is (one an attacker fine-tuned,
    :mod:`hf_sentinel.red_flag.attack`).

    >>> from hf_sentinel.defaults import pretrained_path
    >>> defense = RedFlagDefense(pretrained_path("red-flag"), action="flag")
    >>> defense.spec, defense.settings.action, defense.with_settings(threshold=0.9).settings.threshold
    ('red-flag:default', 'flag', 0.9)
    """

    def __init__(self, path, threshold: float | None = None, action: str | None = None, window: int | None = None,
                 answers_from_original: bool | None = None):
        self.path = Path(path)
        check_artifact_kind(self.path, "red-flag")
        overrides = {k: v for k, v in dict(threshold=threshold, action=action, window=window,
                                           answers_from_original=answers_from_original).items() if v is not None}
        self.settings = RedFlagSettings.from_pretrained(self.path, **overrides)
        self.spec = f"red-flag:{_spec_argument(self.path)}"
        # Shared with the copies made by with_settings: the guarded models and the red-flag tokenizer load once.
        self._wrapped: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._loaded: dict = {}
        self._model = None  # set by with_model: the red-flag model that generates, whatever the target
        self._start_batches()

    def _start_batches(self) -> None:
        # Processors handed out for generations not finalized yet, and their flags in generation order: one
        # generate() call finalizes each batch after generating it.
        self._pending: deque[RedFlagLogitsProcessor] = deque()
        self._flags: deque[dict] = deque()
        self._reader: RequestAloneReader | None = None  # the next batch's, set by read_requests
        self._reading_model = None  # with answers_from_original: the red-flagged copy that reads, set by wrap_model
        self.last_processor: RedFlagLogitsProcessor | None = None

    def with_settings(self, **overrides) -> RedFlagDefense:
        """This defense with other settings (e.g. ``threshold=0.9, action="flag"``), sharing the guarded models
        already built: a Space can change the threshold per request without copying the target again."""
        other = copy.copy(self)
        other.settings = dataclasses.replace(self.settings, **overrides)
        other._start_batches()
        return other

    def with_model(self, model, label: str) -> RedFlagDefense:
        """This defense generating with ``model``, a red-flag model (`<rf>` in its vocabulary, e.g. the one
        :meth:`wrap_model` built, then changed), instead of applying the folder to the target it is handed;
        ``label`` says what changed it and goes into the spec (``red-flag:default+LABEL``)."""
        other = copy.copy(self)
        other.spec = f"{self.spec}+{label}"
        other._model = model
        other._loaded = {"tokenizer": self.tokenizer, "eos_ids": _eos_ids(model, self.tokenizer)}
        other._start_batches()
        return other

    @property
    def tokenizer(self):
        """The red-flag tokenizer (the target's vocabulary plus `<rf>`), loaded on first use."""
        if "tokenizer" not in self._loaded:
            from transformers import AutoTokenizer

            self._loaded["tokenizer"] = AutoTokenizer.from_pretrained(self.path)
        return self._loaded["tokenizer"]

    @classmethod
    def from_spec(cls, arg: str) -> RedFlagDefense:
        """``red-flag:PATH`` or ``red-flag:default`` (the shipped artifact); threshold and action come from the
        folder's saved settings (override them through the Python API)."""
        from ..defaults import pretrained_path

        if arg in ("", "default"):
            return cls(pretrained_path("red-flag"))
        return cls(artifact_folder(arg, "red-flag"))

    def wrap_model(self, model):
        guarded = self.red_flag_model(model)
        if not self.settings.answers_from_original:
            return guarded
        self._reading_model = guarded
        return model

    def red_flag_model(self, model):
        """``model`` with the red flag merged in (a copy, built once per target and reused): the model that answers,
        or with ``answers_from_original`` the one that reads beside ``model``."""
        if self._model is not None:
            return self._model
        if model in self._wrapped:
            return self._wrapped[model]
        if model in self._wrapped.values():  # already the guarded model (a second pass through the hooks)
            return model
        guarded, self._loaded["tokenizer"] = load_red_flag_model(copy.deepcopy(model), self.path)
        self._loaded["eos_ids"] = _eos_ids(guarded, self.tokenizer)
        self._wrapped[model] = guarded
        return guarded

    def check_target(self, model) -> None:
        """Raise, changing nothing, unless this red flag was trained for ``model`` (its vocabulary size)."""
        check_red_flag_target(model, self.path)

    def share_base(self, target, peft_model) -> None:
        """Guard ``target`` with this red flag as one more adapter of ``peft_model``, a PEFT model over ``target``'s
        weights (or one copy of them) that holds another adapter already (a LoRA sentinel's): the red flag's goes in
        unmerged and active (:func:`~hf_sentinel.red_flag.modeling.add_red_flag_adapter`), and ``wrap_model(target)``
        returns ``peft_model``. :class:`~hf_sentinel.defenses.DefenseStack` composes stacks this way."""
        if self.settings.answers_from_original:
            raise ValueError("A red flag with answers_from_original reads from its own copy of the target, so it "
                             "cannot share the target's weights with a sentinel's adapter; compose the stack without "
                             "sharing (DefenseStack does), or set answers_from_original=False.")
        self._loaded["tokenizer"] = add_red_flag_adapter(peft_model, self.path)
        self._loaded["eos_ids"] = _eos_ids(peft_model, self.tokenizer)
        self._wrapped[target] = peft_model

    @torch.no_grad()
    def gate_requests(self, model, requests):
        """With ``settings.gate`` set, each request's p(`<rf>`) before the first answer token (read on the request as
        sent, as the processor reads its first step) and whether it reaches the gate; ``None`` without a gate. In a
        stack, a request below the gate is answered by the red-flagged target alone: the layers in front of it, which
        refuse benign requests of their own, act only where the flag already suspects harm (``docs/red_flag.md``)."""
        if self.settings.gate is None:
            return None
        guarded = self.red_flag_model(model)
        logits = guarded(**requests, position_ids=positions_from_mask(requests["attention_mask"]),
                         logits_to_keep=1).logits[:, -1]
        token_id = self.tokenizer.convert_tokens_to_ids(self.settings.token)
        scores = red_flag_probability(logits, token_id, len(self.tokenizer)).tolist()
        return [{"score": score, "passed": score >= self.settings.gate} for score in scores]

    def read_requests(self, model, requests, changed):
        if self.settings.answers_from_original:  # the original target answers; the red-flagged copy reads beside it
            self._reader = RequestAloneReader(self._reading_model, requests)
        else:  # stacked behind defenses that change what the target reads, the flag reads the request as sent instead
            self._reader = RequestAloneReader(model, requests) if changed else None

    def logits_processors(self):
        if "eos_ids" not in self._loaded:
            raise RuntimeError("RedFlagDefense.wrap_model(model) must run before logits_processors(): the processor "
                               "needs the red-flag model's vocabulary.")
        s = self.settings
        processor = RedFlagLogitsProcessor.from_tokenizer(
            self.tokenizer, token=s.token, threshold=s.threshold, action=s.action, window=s.window,
            refusal_text=s.refusal_text, eos_token_id=self._loaded["eos_ids"], reader=self._reader)
        self._reader = None
        self._pending.append(processor)
        self.last_processor = processor
        return [processor]

    def finalize(self, responses, extras):
        while len(self._flags) < len(responses) and self._pending:
            self._flags.extend(self._pending.popleft().flags)
        if len(self._flags) < len(responses):
            raise RuntimeError(f"finalize() got {len(responses)} answers but only {len(self._flags)} were generated "
                               f"with this defense's logits processors.")
        flags = [self._flags.popleft() for _ in responses]
        for extra, flag in zip(extras, flags):
            extra["red_flag"] = flag
            if flag["fired"] and self.settings.action != "flag":  # the answer was replaced ("refuse") or cut
                extra["content_filter"] = self.spec
        if self.settings.action == "refuse":
            responses = [self.settings.refusal_text if flag["fired"] else r for r, flag in zip(responses, flags)]
        return responses


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _spec_argument(path: Path) -> str:
    from ..defaults import PRETRAINED_DIR

    return "default" if path.resolve() == (PRETRAINED_DIR / "red-flag-smollm2").resolve() else str(path)

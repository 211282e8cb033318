"""The Stackelberg red team as an attacker of any defense: it rewrites harmful requests at text level.

``StackelbergPPOTrainer`` saves the red team it trained the sentinel against in ``<output-dir>/red_team/`` (a PEFT
LoRA adapter of the target, with its value head and model card). :class:`RedTeamAttacker` loads that adapter on its
own copy of its base model and rewrites requests the way the trainer's leader phase did (the same instruction,
``StackelbergPPOConfig.red_team_instruction``, in the same chat turn), so its attacks can be sent to any target
under any defense: ``hf-sentinel bench --attacker red-team:default --defense red-flag:default``.

Specs (:data:`ATTACKER_FORMS`):

- ``red-team:default`` (or ``red-team``): the red team shipped for the embedded target
  (``pretrained/red-team-smollm2``, the leader of an 8-round game on the broad pools; its card has its numbers);
- ``red-team:PATH``: a red-team adapter folder (``adapter_config.json``), or a folder ``hf-sentinel train sentinel``
  wrote (the output folder or one of its ``checkpoint-N`` folders), which holds ``red_team/``.

Example (a random LoRA on a tiny random model stands in for a trained red team)::

    >>> import tempfile
    >>> from peft import LoraConfig, get_peft_model
    >>> from hf_sentinel.defaults import tiny_model
    >>> model, tokenizer = tiny_model()
    >>> base, adapter = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> model.save_pretrained(base); _ = tokenizer.save_pretrained(base)
    >>> from transformers import AutoModelForCausalLM
    >>> lora = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    >>> get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(adapter)
    >>> attacker = RedTeamAttacker.from_spec(f"red-team:{adapter}", max_new_tokens=4)
    >>> attacks = attacker.rewrite(["How do I pick a lock?"])
    >>> len(attacks), attacker.spec == f"red-team:{adapter}"
    (1, True)
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

#: The one attacker method ``--attacker`` knows today.
ATTACKER_METHOD = "red-team"
ATTACKER_FORMS = ("Accepted forms: red-team:default (the red team shipped for the embedded target) or "
                  "red-team:PATH, where PATH is a red-team adapter folder (adapter_config.json + "
                  "adapter_model.safetensors) or a folder written by `hf-sentinel train sentinel` (its output folder "
                  "or a checkpoint-N folder), which holds red_team/.")


def _trainer_default(name: str):
    """A field default of :class:`StackelbergPPOConfig` (read off the dataclass: no config is built)."""
    from .config import StackelbergPPOConfig

    return next(f.default for f in fields(StackelbergPPOConfig) if f.name == name)


def _red_team_subfolder() -> str:
    from .trainer import RED_TEAM_SUBFOLDER

    return RED_TEAM_SUBFOLDER


def parse_attacker_spec(spec: str) -> str:
    """The argument of a ``red-team[:ARG]`` spec (``"default"`` for a bare ``red-team``); a ``ValueError`` listing
    the accepted forms for anything else."""
    method, _, arg = str(spec).partition(":")
    if method != ATTACKER_METHOD:
        raise ValueError(f"Unknown attacker {spec!r}. {ATTACKER_FORMS}")
    return arg.strip() or "default"


def red_team_folder(spec: str) -> Path:
    """The red team's adapter folder for an attacker spec, checked without loading a model: a wrong folder fails here
    with what was found, what was expected and what to pass."""
    from ..defaults import pretrained_path
    from ..loading import artifact_kind, describe_kind

    arg = parse_attacker_spec(spec)
    subfolder = _red_team_subfolder()
    path = pretrained_path("red-team") if arg == "default" else Path(arg).expanduser()
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{spec}: {path.absolute()} {state}. {ATTACKER_FORMS}")
    for folder in (path, path / subfolder):
        if (folder / "adapter_config.json").is_file():
            kind = artifact_kind(folder)
            if kind not in ("red-team", "lora"):
                why = ("MART's red team writes from its own one-shot template, not the Stackelberg instruction"
                       if kind == "mart" else "it is not a LoRA adapter of a causal LM")
                raise ValueError(f"{spec}: {folder} is {describe_kind(kind)}, not a Stackelberg red-team adapter "
                                 f"({why}). {ATTACKER_FORMS}")
            if not (folder / "adapter_model.safetensors").is_file():
                raise FileNotFoundError(f"{spec}: {folder} has no adapter_model.safetensors (only safetensors "
                                        f"adapters load; re-save the adapter with safe_serialization=True).")
            return folder
    kind = artifact_kind(path)
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(path))
    hint = (f" Its last checkpoint holds one: red-team:{last}."
            if last and (Path(last) / subfolder / "adapter_config.json").is_file() else "")
    found = f"{describe_kind(kind)} without a {subfolder}/ folder" if kind else "no adapter"
    raise FileNotFoundError(f"{spec}: {path} holds {found} (no adapter_config.json in it or in "
                            f"{path / subfolder}).{hint} {ATTACKER_FORMS}")


class RedTeamAttacker:
    """A Stackelberg red team that rewrites harmful requests into attacks, for any target and defense.

    It runs on its own copy of its base model (the adapter merged into it), so it composes with any target at text
    level and never touches the defended model.

    Args:
        model, tokenizer: the red team (a causal LM with the adapter applied or merged) and its tokenizer.
        instruction: the chat instruction with ``{prompt}`` (default: the trainer's ``red_team_instruction``).
        max_new_tokens: longest attack, in tokens (default: the trainer's ``red_team_max_new_tokens``).
        do_sample, temperature: sample the attacks at ``temperature`` (seeded by :meth:`rewrite`'s ``seed``) instead
            of decoding greedily.
        batch_size: requests rewritten per ``generate`` call.
        spec: how tables and results name it.

    Attributes:
        fallbacks: how many rewrites came back empty over the attacker's life; each empty one was replaced by the
            original request (as the trainer does).
        last_fallbacks: per request of the last :meth:`rewrite` call, whether it fell back.
    """

    def __init__(self, model, tokenizer, *, instruction: str | None = None, max_new_tokens: int | None = None,
                 do_sample: bool = False, temperature: float = 1.0, batch_size: int = 16, spec: str = "red-team"):
        self.instruction = instruction if instruction is not None else _trainer_default("red_team_instruction")
        if "{prompt}" not in self.instruction:
            raise ValueError("The red team's instruction must contain '{prompt}' (where the request goes).")
        self.max_new_tokens = (max_new_tokens if max_new_tokens is not None
                               else _trainer_default("red_team_max_new_tokens"))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (tokens per attack), got {self.max_new_tokens}.")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.model, self.tokenizer = model, tokenizer
        self.do_sample, self.temperature, self.batch_size, self.spec = do_sample, temperature, batch_size, spec
        self.fallbacks = 0
        self.last_fallbacks: list[bool] = []

    @classmethod
    def from_spec(cls, spec: str = "red-team:default", *, base_model: str | None = None, dtype=None,
                  device=None, **kwargs) -> RedTeamAttacker:
        """Load ``red-team:default`` or ``red-team:PATH`` (see :data:`ATTACKER_FORMS`).

        The adapter loads on its own copy of the base its ``adapter_config.json`` names
        (``base_model_name_or_path``; the embedded target's Hub id resolves to the shipped copy), or on
        ``base_model`` when given (a folder or Hub id, for an adapter whose base moved). Safetensors only.
        ``dtype``: of the base (default: as saved); ``device``: where the red team runs (default: CPU).
        Other keyword arguments go to the constructor (``max_new_tokens``, ``do_sample``, ...)."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..defaults import resolve_model_path

        arg = parse_attacker_spec(spec)
        adapter_dir = red_team_folder(spec)
        adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
        base_name = base_model or adapter_config.get("base_model_name_or_path")
        if not base_name:
            raise ValueError(f"{spec}: {adapter_dir / 'adapter_config.json'} names no base model "
                             f"(base_model_name_or_path); pass base_model=FOLDER_OR_HUB_ID.")
        base_path = resolve_model_path(base_name)
        # The red team wrote with its base's tokenizer (a saved sentinel's folder holds the *target's*, which differs
        # when the agents had a base of their own); one saved with the adapter itself comes first.
        tokenizer_source = str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else base_path
        try:
            base = AutoModelForCausalLM.from_pretrained(base_path, use_safetensors=True, dtype=dtype or "auto")
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        except OSError as error:
            raise FileNotFoundError(f"{spec}: the red team is an adapter of {base_name}, which did not load "
                                    f"({error}). Make that model available (a folder, or a Hub id in the local "
                                    f"cache), or pass base_model=FOLDER_OR_HUB_ID.") from error
        try:
            model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"{spec}: the adapter in {adapter_dir} does not fit {base_name} ({error}); pass the "
                             f"base it was trained on as base_model=...") from error
        if device is not None:
            model = model.to(torch.device(device))
        model.eval()
        return cls(model, tokenizer, spec=f"{ATTACKER_METHOD}:{arg}", **kwargs)

    def rewrite(self, prompts: list[str], seed: int | None = 0, progress: bool = False) -> list[str]:
        """One attack per request: the red team's answer to the instruction around it, at most ``max_new_tokens``
        tokens, batched. An empty answer falls back to the request itself (counted in ``fallbacks`` and
        ``last_fallbacks``). ``seed`` seeds the sampled attacks (greedy ones do not depend on it)."""
        from ..generation import GenerationSettings, generate, to_conversation

        prompts = list(prompts)
        bad = next((p for p in prompts if not isinstance(p, str) or not p.strip()), None)
        if bad is not None:
            raise ValueError(f"Every request to rewrite must be a non-empty string, got {bad!r}.")
        if not prompts:
            self.last_fallbacks = []
            return []
        conversations = [to_conversation(self.instruction.format(prompt=p)) for p in prompts]
        settings = GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                      temperature=self.temperature, batch_size=self.batch_size, seed=seed)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), desc="red team rewriting", unit="request")
        try:
            answers = generate(self.model, self.tokenizer, conversations, settings,
                               on_batch=bar.update if bar else None).responses
        finally:
            if bar:
                bar.close()
        self.last_fallbacks = [not answer.strip() for answer in answers]
        self.fallbacks += sum(self.last_fallbacks)
        return [prompt if empty else answer for prompt, answer, empty in zip(prompts, answers, self.last_fallbacks)]

    def describe(self) -> dict:
        """The attacker's settings, as bench results record them."""
        decoding = f"sampled at temperature {self.temperature}" if self.do_sample else "greedy"
        return {"spec": self.spec, "max_new_tokens": self.max_new_tokens, "decoding": decoding,
                "instruction": self.instruction}

    def __repr__(self) -> str:
        return f"RedTeamAttacker({self.spec!r}, max_new_tokens={self.max_new_tokens}, do_sample={self.do_sample})"


def check_attacker(spec: str | None) -> None:
    """Fail fast, before any model loads, on an attacker spec that cannot load (``None``: no attacker)."""
    if spec is not None:
        red_team_folder(spec)


__all__ = ["RedTeamAttacker", "ATTACKER_FORMS", "parse_attacker_spec", "red_team_folder", "check_attacker"]

"""Telling artifact folders apart, and local paths from Hub ids, before anything heavy loads.

Every defense that loads a trained artifact (``dro:``, ``mart:``, ``red-flag:``, ``sentinel:``) and every
``--target`` goes through here, so that a wrong folder fails with one clear message (what was found, what was
expected, what to pass instead) rather than with a traceback from deep inside PEFT or transformers.

Artifact kinds, told apart by their marker files (:func:`artifact_kind`):

==============  =====================================================================================
``red-flag``    ``red_flag_config.json`` (next to a LoRA adapter and the tokenizer with ``<rf>``)
``sentinel``    ``config.json`` with ``model_type: sentinel`` (a saved ``SentinelForCausalLM``)
``dro``         ``adapter_config.json`` with ``peft_type: PROMPT_TUNING``
``mart``        a LoRA ``adapter_config.json`` whose model card (``README.md``) is tagged ``mart``
``red-team``    a LoRA adapter whose model card is tagged ``red-teaming`` (not ``mart``): the Stackelberg attacker
``lora``        any other LoRA adapter (accepted by ``mart:`` and ``sentinel:``)
``model``       ``config.json`` of a full model (a target, or a full-model sentinel)
==============  =====================================================================================

A string is read as a local path, never as a Hub id, when it starts with ``.``, ``/`` or ``~``, holds more than
one path separator, or names an existing file (:func:`looks_like_path`); a path that does not exist is an error
that names it. Any other string that is not an existing folder is tried as a Hub id.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

#: A Hub repo id as hf-sentinel artifacts use them: ``org/name``.
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
#: The file that makes a folder a red-flag artifact (``RedFlagSettings`` reads and writes it).
RED_FLAG_SETTINGS_NAME = "red_flag_config.json"
#: ``model_type`` of a saved sentinel's ``config.json`` (``SentinelConfig.model_type``).
SENTINEL_MODEL_TYPE = "sentinel"

#: How messages name each kind.
KIND_NAMES = {
    "red-flag": f"a red-flag folder (LoRA adapter + {RED_FLAG_SETTINGS_NAME})",
    "sentinel": f"a saved sentinel (config.json with model_type {SENTINEL_MODEL_TYPE!r})",
    "dro": "a DRO safety prompt (a PEFT PROMPT_TUNING adapter)",
    "mart": "a MART adapter (a PEFT LoRA adapter whose model card is tagged 'mart')",
    "red-team": "a red-team adapter (the attacker a sentinel is trained against)",
    "lora": "a plain PEFT LoRA adapter",
    "model": "a full model (config.json + weights)",
}
#: What each defense method loads: the kinds it accepts, and how its messages name them.
ACCEPTED_KINDS = {
    "dro": ("dro",),
    "mart": ("mart", "lora"),
    "red-flag": ("red-flag",),
    "sentinel": ("sentinel", "lora", "model"),
}
_EXPECTED = {
    "dro": "a DRO safety prompt (a PEFT PROMPT_TUNING adapter, as `hf-sentinel train dro` writes)",
    "mart": "a MART target adapter (a PEFT LoRA adapter, as `hf-sentinel train mart` writes in round-N/target)",
    "red-flag": f"a red-flag folder (LoRA adapter + {RED_FLAG_SETTINGS_NAME}, as `hf-sentinel train red-flag` writes)",
    "sentinel": "a sentinel (the folder `hf-sentinel train sentinel` writes, a plain LoRA adapter or a full "
                "causal LM)",
}


def looks_like_path(text: str) -> bool:
    """Whether ``text`` is meant as a local path (never tried as a Hub id): see the module docstring.

    >>> [looks_like_path(s) for s in ["./run", "/tmp/x", "~/x", "outputs/mart/round-1", "org/name", "default"]]
    [True, True, True, True, False, False]
    """
    text = str(text)
    return (text.startswith((".", "/", "~")) or max(text.count("/"), text.count(os.sep)) > 1
            or Path(text).expanduser().is_file())


def artifact_kind(folder) -> str | None:
    """The kind of artifact in ``folder`` (see the module docstring), ``"<PEFT_TYPE> adapter"`` for another PEFT
    adapter type, or ``None`` when it holds none of the marker files."""
    folder = Path(folder)
    if (folder / RED_FLAG_SETTINGS_NAME).is_file():
        return "red-flag"
    config = _read_json(folder / "config.json")
    if config.get("model_type") == SENTINEL_MODEL_TYPE:
        return "sentinel"
    adapter = _read_json(folder / "adapter_config.json")
    if adapter:
        peft_type = str(adapter.get("peft_type"))
        if peft_type == "PROMPT_TUNING":
            return "dro"
        if peft_type != "LORA":
            return f"{peft_type} adapter"
        tags = _card_tags(folder)
        if "mart" in tags:
            return "mart"
        return "red-team" if "red-teaming" in tags else "lora"
    return "model" if config else None


def check_artifact_kind(folder, method: str) -> None:
    """Raise a ``ValueError`` naming the kind found, the kind expected and the spec to use instead, when
    ``folder`` holds an artifact that ``method`` (a key of :data:`ACCEPTED_KINDS`) does not load.

    A folder without any marker file passes: the loader then says which file it misses.
    """
    kind = artifact_kind(folder)
    if kind is None or kind in ACCEPTED_KINDS[method]:
        return
    raise ValueError(f"{method}:{folder} is {describe_kind(kind)}, not {_EXPECTED[method]}. "
                     f"{how_to_use(kind, folder)}")


def describe_kind(kind: str) -> str:
    return KIND_NAMES.get(kind, f"a PEFT {kind}")


def how_to_use(kind: str, folder) -> str:
    """What to pass instead, for an artifact of ``kind`` given where it does not belong."""
    if kind in ACCEPTED_KINDS:  # the artifact of another defense method
        return f"Use it as --defense {kind}:{folder}."
    if kind == "lora":
        return f"A plain LoRA adapter works as --defense mart:{folder} or --defense sentinel:{folder}."
    if kind == "red-team":
        return (f"It attacks, it does not defend: bench defenses against it with --attacker red-team:{folder}, or "
                f"use the `sentinel` folder saved next to it.")
    if kind == "model":
        return f"Give a full model as --target {folder} (or as --defense sentinel:{folder})."
    return "No hf-sentinel defense loads this adapter type."


def artifact_folder(spec: str, method: str) -> Path:
    """The local folder of a defense's artifact spec: an existing folder, or a Hub repo downloaded (from the local
    Hub cache when the Hub is not reachable).

    Raises ``FileNotFoundError`` for a path (:func:`looks_like_path`) that does not exist, without trying the Hub.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    fix = (f"Give the folder written by `hf-sentinel train {method}`, a Hub repo id (org/name), or {method}:default "
           f"for the shipped artifact.")
    if path.exists():
        raise FileNotFoundError(f"{method}:{spec}: {path.absolute()} is a file, not a folder. {fix}")
    if looks_like_path(spec):
        raise FileNotFoundError(f"{method}:{spec}: no such local folder ({path.absolute()} does not exist). {fix}")
    from huggingface_hub import snapshot_download

    from .hub_access import hub_reachable

    online = hub_reachable()
    try:
        return Path(snapshot_download(spec, local_files_only=not online))
    except Exception as error:  # missing repo, no access, not cached while offline: say what was tried
        where = "on the Hub" if online else "in the local Hub cache (the Hub is not reachable)"
        raise FileNotFoundError(f"{method}:{spec}: no such local folder, and no repo {spec} {where} "
                                f"({type(error).__name__}). {fix}") from error


def same_vocabulary(tokenizer, other) -> bool:
    """Whether two tokenizers map the same tokens to the same ids."""
    return len(tokenizer) == len(other) and tokenizer.get_vocab() == other.get_vocab()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the artifact folder is damaged: re-save or "
                         f"re-download it.") from error
    return content if isinstance(content, dict) else {}


def _card_tags(folder: Path) -> set[str]:
    card = folder / "README.md"
    if not card.is_file():
        return set()
    import yaml
    from huggingface_hub import metadata_load

    try:
        tags = (metadata_load(card) or {}).get("tags") or []
    except yaml.YAMLError:  # a hand-edited card with broken metadata says nothing about the kind
        return set()
    return {tags} if isinstance(tags, str) else set(tags)

"""The sentinel as a defense: it rewrites the last user turn of each conversation (the ``rewrite`` hook)."""

from __future__ import annotations

from pathlib import Path

from ..defenses import Defense
from ..loading import artifact_folder, check_artifact_kind
from .modeling import SentinelForCausalLM


class SentinelDefense(Defense):
    """Appends the sentinel's suffix to each prompt and records it as ``extras[i]["sentinel_suffix"]``."""

    def __init__(self, sentinel: SentinelForCausalLM, spec: str = "sentinel"):
        self.sentinel = sentinel
        self.spec = spec

    @classmethod
    def from_spec(cls, arg: str, target=None, target_tokenizer=None) -> "SentinelDefense":
        """``arg``: a sentinel folder or Hub id, or ``default`` (the sentinel shipped for the embedded target)."""
        from ..defaults import pretrained_path

        path = pretrained_path("sentinel") if arg in ("", "default") else arg
        model = SentinelForCausalLM.from_pretrained(path, target=target, target_tokenizer=target_tokenizer)
        return cls(model, spec=f"sentinel:{arg or 'default'}")

    @staticmethod
    def folder(arg: str) -> Path:
        """The local folder of the sentinel ``arg`` names (a Hub id is downloaded), checked to hold a sentinel; no
        model loads."""
        from ..defaults import pretrained_path

        folder = pretrained_path("sentinel") if arg in ("", "default") else artifact_folder(arg, "sentinel")
        check_artifact_kind(folder, "sentinel")
        return folder

    def rewrite(self, conversations, extras):
        refined, suffixes = self.sentinel.refine(conversations)
        for extra, suffix in zip(extras, suffixes):
            extra["sentinel_suffix"] = suffix
        return refined

    def continue_prompts(self, model, inputs):
        return self.sentinel.continue_prompt_states(model, inputs)

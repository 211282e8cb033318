"""``MARTDefense``: a MART target adapter as a generation defense (``--defense mart:PATH``).

MART's defense is the tuned target itself, so this defense replaces the model that generates (``wrap_model``):
a copy of the target with the LoRA adapter merged into its weights. The copy is made once per target object and
cached, so batches and repeated evaluations do not reload it, and the caller's model is never modified.
"""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

from ..defenses import Defense
from ..loading import artifact_folder, check_artifact_kind


class MARTDefense(Defense):
    """Answers with the target plus a MART target adapter (a PEFT LoRA folder or Hub repo).

    Args:
        adapter: a local adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) or a Hub repo id.
        spec: the name reported in eval summaries.

    Example (an adapter trained for a tiny random model)::

        >>> import tempfile
        >>> from peft import get_peft_model
        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.generation import GenerationSettings, generate
        >>> from hf_sentinel.mart import MARTConfig
        >>> from hf_sentinel.training import lora_config
        >>> model, tokenizer = tiny_model()
        >>> folder = tempfile.mkdtemp()
        >>> get_peft_model(tiny_model()[0], lora_config(MARTConfig(), 2)).save_pretrained(folder)
        >>> defense = MARTDefense(folder)
        >>> result = generate(model, tokenizer, [[{"role": "user", "content": "Hello"}]],
        ...                   GenerationSettings(max_new_tokens=3), [defense])
        >>> len(result.responses), defense.wrap_model(model) is defense.wrap_model(model)
        (1, True)
        >>> hasattr(model, "peft_config")  # the caller's model is untouched
        False
    """

    def __init__(self, adapter: str | Path, spec: str | None = None):
        adapter = str(adapter)
        if not adapter.strip():
            raise ValueError("The MART adapter path is empty; use mart:default, mart:PATH_TO_ADAPTER or "
                             "mart:ORG/NAME.")
        # A Hub adapter is fetched here, so that a missing one or one of the wrong kind fails before any model loads.
        folder = artifact_folder(adapter, "mart")
        check_artifact_kind(folder, "mart")
        if not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a PEFT adapter folder (no adapter_config.json). Pass a round's target folder, "
                f"e.g. outputs/mart/round-4/target.")
        self.adapter = str(folder)
        self.spec = spec or f"mart:{adapter}"
        self._tuned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def from_spec(cls, arg: str) -> MARTDefense:
        """``default`` (the shipped adapter for the embedded target) | a local adapter folder | a Hub repo id."""
        arg = arg.strip()
        if arg in ("", "default"):
            from ..defaults import pretrained_path

            return cls(pretrained_path("mart"), spec="mart:default")
        return cls(arg)

    def wrap_model(self, model):
        tuned = self._tuned.get(model)
        if tuned is None:
            from peft import PeftModel

            try:
                tuned = PeftModel.from_pretrained(copy.deepcopy(model), self.adapter).merge_and_unload()
            except (RuntimeError, ValueError, KeyError) as error:
                raise ValueError(f"The MART adapter {self.adapter} does not fit this target "
                                 f"({getattr(model, 'name_or_path', type(model).__name__)}): {error}") from error
            tuned.eval()
            self._tuned[model] = tuned
        return tuned


__all__ = ["MARTDefense"]

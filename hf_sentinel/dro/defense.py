"""``DRODefense``: a DRO soft prompt (or a human-written prompt placed the same way) as a generation defense.

Spec strings (``--defense dro:ARG``, ``hf_sentinel.pipeline(..., safety_prompt=ARG)``): ``default`` (the shipped
artifact for the embedded target), a local adapter folder, a Hub repo id, or a human-written prompt (any text
with a space in it), whose token embeddings then take the soft prompt's place: the DRO starting point.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..defenses import Defense
from .prompt import DROSafetyPrompt

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class DRODefense(Defense):
    """Puts a soft safety prompt before every prompt of a batch, as input embeddings (``prepare_inputs``).

    Args:
        prompt: a :class:`DROSafetyPrompt`, or a human-written prompt's text (embedded with the target's own
            token embeddings on first use).
        tokenizer: for a text prompt, the target's tokenizer (default: loaded from ``model.name_or_path``).
        spec: the name reported in eval summaries.

    Example::

        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.generation import GenerationSettings, generate
        >>> model, tokenizer = tiny_model()
        >>> defense = DRODefense("Be safe and kind.", tokenizer=tokenizer)
        >>> result = generate(model, tokenizer, [[{"role": "user", "content": "Hello"}]],
        ...                   GenerationSettings(max_new_tokens=3), [defense])
        >>> len(result.responses), defense.spec
        (1, 'dro:Be safe and kind.')
    """

    def __init__(self, prompt: DROSafetyPrompt | str, tokenizer=None, spec: str | None = None):
        if isinstance(prompt, str) and not prompt.strip():
            raise ValueError("The DRO safety prompt text is empty; give a folder, a Hub id, 'default' or a text.")
        self.prompt = prompt
        self.tokenizer = tokenizer
        self.spec = spec or (f"dro:{prompt}" if isinstance(prompt, str) else "dro")
        self._embedded: dict[int, DROSafetyPrompt] = {}

    @classmethod
    def from_spec(cls, arg: str) -> DRODefense:
        """``default`` | local folder | Hub repo id | human-written prompt text (see the module docstring)."""
        arg = arg.strip()
        if arg in ("", "default"):
            from ..defaults import pretrained_path

            return cls(DROSafetyPrompt.from_pretrained(pretrained_path("dro")), spec="dro:default")
        if Path(arg).expanduser().is_dir():
            return cls(DROSafetyPrompt.from_pretrained(arg), spec=f"dro:{arg}")
        if _HUB_ID.match(arg):
            return cls(DROSafetyPrompt.from_pretrained(arg), spec=f"dro:{arg}")
        if " " in arg:
            return cls(arg)
        raise ValueError(f"dro:{arg}: not a folder, a Hub repo id (org/name) or a prompt text. Use dro:default, "
                         f"dro:PATH_TO_ADAPTER, dro:ORG/NAME or dro:YOUR SAFETY PROMPT.")

    def soft_prompt(self, model) -> DROSafetyPrompt:
        """The prompt as embeddings for ``model`` (a text prompt is embedded once per model)."""
        if isinstance(self.prompt, DROSafetyPrompt):
            return self.prompt
        if id(model) not in self._embedded:
            tokenizer = self.tokenizer
            if tokenizer is None:
                from transformers import AutoTokenizer

                name = getattr(model, "name_or_path", "")
                if not name:
                    raise ValueError("A text DRO prompt needs the target's tokenizer: pass DRODefense(text, tokenizer=...).")
                tokenizer = AutoTokenizer.from_pretrained(name)
            self._embedded[id(model)] = DROSafetyPrompt.from_text(model, tokenizer, self.prompt)
        return self._embedded[id(model)]

    def prepare_inputs(self, model, inputs: dict) -> dict:
        return self.soft_prompt(model).prepare_inputs(model, inputs)

"""``DRODefense``: a DRO soft prompt (or a human-written prompt placed the same way) as a generation defense.

Spec strings (``--defense dro:ARG``, ``hf_sentinel.pipeline(..., safety_prompt=ARG)``): ``default`` (the shipped
artifact for the embedded target), a local adapter folder, a Hub repo id, or a human-written prompt (any text
with a space in it), whose token embeddings then take the soft prompt's place: the DRO starting point.

ARG is read, in this order, as:

1. ``default``, or an existing folder;
2. a path, when it starts with ``.``, ``/`` or ``~``, or holds a ``/`` and does not end like a sentence (with
   ``.``, ``!`` or ``?``): it must then exist, so a mistyped folder such as ``dro:./outputs/my run`` is an error,
   never a prompt text;
3. a Hub repo id (``org/name``);
4. a prompt text (any text with a space in it), e.g. ``dro:Be safe and kind.``; a text with a ``/`` in it ends
   with ``.``, ``!`` or ``?``, e.g. ``dro:Refuse weapons/drugs requests.``
"""

from __future__ import annotations

from pathlib import Path

from ..defenses import Defense
from ..loading import HUB_ID, artifact_folder, check_artifact_kind
from .prompt import DROSafetyPrompt

_SENTENCE_END = (".", "!", "?")


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
        path = Path(arg).expanduser()
        if not path.is_dir() and _is_path(arg):
            state = "is a file" if path.exists() else "does not exist"
            raise FileNotFoundError(
                f"dro:{arg}: no such folder ({path.absolute()} {state}). Give the folder written by "
                f"`hf-sentinel train dro`, or a human-written prompt as text without '/' (or ending with '.', '!' "
                f"or '?'), e.g. dro:Be safe and kind.")
        if path.is_dir() or HUB_ID.match(arg):
            folder = artifact_folder(arg, "dro")
            check_artifact_kind(folder, "dro")
            return cls(DROSafetyPrompt.from_pretrained(folder), spec=f"dro:{arg}")
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
                    raise ValueError("A text DRO prompt needs the target's tokenizer: pass "
                                     "DRODefense(text, tokenizer=...).")
                tokenizer = AutoTokenizer.from_pretrained(name)
            self._embedded[id(model)] = DROSafetyPrompt.from_text(model, tokenizer, self.prompt)
        return self._embedded[id(model)]

    def prepare_inputs(self, model, inputs: dict) -> dict:
        return self.soft_prompt(model).prepare_inputs(model, inputs)


def _is_path(arg: str) -> bool:
    """Rule 2 of the module docstring: ``arg`` is meant as a folder, not as a prompt text."""
    return arg.startswith((".", "/", "~")) or ("/" in arg and not arg.endswith(_SENTENCE_END))

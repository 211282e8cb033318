"""Judges: callables with TRL's reward-function signature ``f(prompts, completions, **kw) -> list[float]``.

Higher scores mean more harmful (for the refusal judges: complied rather than refused).

``load_judge("default")`` is :class:`AnswerRefusalJudge`, which agrees with human refusal labels far more often
than the keyword :class:`RefusalJudge` (``load_judge("refusal")``, the judge the README's numbers were measured
with); ``docs/judges.md`` has the measurement. ``load_judge("red-flag:default")`` says whether the shipped red
flag would have fired on the answer (:class:`~hf_sentinel.red_flag.RedFlagJudge`); the shipped flag reads the request
more than the answer (a refusal of a harmful request scores as high as compliance), so it serves as a judge of
requests, MART's ``request_judge``.
"""

from __future__ import annotations

from .answer import AnswerRefusalJudge
from .base import Judge
from .classifier import ClassifierJudge
from .guard import GuardJudge
from .labels import load_refusal_labels
from .refusal import RefusalJudge
from .toxicity import ToxicityJudge

#: Prefix of a red flag given as a judge: ``red-flag:default`` (the shipped one) or ``red-flag:PATH``.
RED_FLAG_PREFIX = "red-flag:"


def _red_flag_judge(path: str = "default") -> Judge:
    # Imported on use: the red-flag package (its trainer, PEFT) is heavy, and it imports this package's base class.
    from ..red_flag import RedFlagJudge

    return RedFlagJudge(path)


BUILTIN_JUDGES = {"default": AnswerRefusalJudge, "answer-refusal": AnswerRefusalJudge, "refusal": RefusalJudge,
                  "toxicity": ToxicityJudge, f"{RED_FLAG_PREFIX}default": _red_flag_judge}


def load_judge(name_or_path: str) -> Judge:
    """A judge by name: ``default`` (= ``answer-refusal``, :class:`AnswerRefusalJudge`), ``refusal``
    (:class:`RefusalJudge`), ``toxicity``, ``red-flag:default`` / ``red-flag:PATH``
    (:class:`~hf_sentinel.red_flag.RedFlagJudge`: would a trained red flag have fired on the answer), or a
    Hub id / local folder of a classifier or guard LM.

    A model whose architecture is ``...ForSequenceClassification`` becomes a :class:`ClassifierJudge`;
    a causal LM becomes a :class:`GuardJudge`.
    """
    if name_or_path in BUILTIN_JUDGES:
        return BUILTIN_JUDGES[name_or_path]()
    if name_or_path.startswith(RED_FLAG_PREFIX):
        return _red_flag_judge(name_or_path.removeprefix(RED_FLAG_PREFIX))
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:  # nothing to load; a folder whose config.json names no model type
        raise ValueError(
            f"Unknown judge {name_or_path!r}: not one of {sorted(BUILTIN_JUDGES)} and not a loadable model "
            f"(Hub id or local folder). Use --judge default|refusal|toxicity|red-flag:default|red-flag:PATH|"
            f"MODEL_ID_OR_PATH. ({error})"
        ) from error
    architectures = config.architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return ClassifierJudge(name_or_path)
    if any(a.endswith("ForCausalLM") for a in architectures):
        return GuardJudge(name_or_path)
    raise ValueError(
        f"Judge model {name_or_path!r} has architectures {architectures}; expected a sequence classifier "
        f"or a causal LM guard model."
    )


__all__ = ["Judge", "RefusalJudge", "AnswerRefusalJudge", "ToxicityJudge", "ClassifierJudge", "GuardJudge",
           "load_judge", "load_refusal_labels", "BUILTIN_JUDGES"]

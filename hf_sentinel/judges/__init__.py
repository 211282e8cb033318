"""Judges: callables with TRL's reward-function signature ``f(prompts, completions, **kw) -> list[float]``.

Higher scores mean more harmful (for the refusal judge: complied rather than refused).
"""

from __future__ import annotations

from .base import Judge
from .classifier import ClassifierJudge
from .guard import GuardJudge
from .refusal import RefusalJudge
from .toxicity import ToxicityJudge

BUILTIN_JUDGES = {"refusal": RefusalJudge, "toxicity": ToxicityJudge}


def load_judge(name_or_path: str) -> Judge:
    """A judge by name: ``refusal``, ``toxicity``, or a Hub id / local folder of a classifier or guard LM.

    A model whose architecture is ``...ForSequenceClassification`` becomes a :class:`ClassifierJudge`;
    a causal LM becomes a :class:`GuardJudge`.
    """
    if name_or_path in BUILTIN_JUDGES:
        return BUILTIN_JUDGES[name_or_path]()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        raise ValueError(
            f"Unknown judge {name_or_path!r}: not one of {sorted(BUILTIN_JUDGES)} and not a loadable model "
            f"(Hub id or local folder). Use --judge refusal|toxicity|MODEL_ID_OR_PATH. ({error})"
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


__all__ = ["Judge", "RefusalJudge", "ToxicityJudge", "ClassifierJudge", "GuardJudge", "load_judge", "BUILTIN_JUDGES"]

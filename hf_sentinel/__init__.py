"""hf-sentinel: LLM-safety defenses as Hugging Face parts.

>>> import hf_sentinel
>>> callable(hf_sentinel.load_default_target)
True
"""

from .data import load_prompts
from .defaults import load_default_target, tiny_model
from .defenses import parse_defense
from .evaluation import evaluate, load_target
from .generation import GenerationSettings
from .judges import ClassifierJudge, GuardJudge, RefusalJudge, ToxicityJudge, load_judge

__version__ = "0.1.0"

__all__ = [
    "load_default_target", "tiny_model", "load_prompts", "parse_defense", "evaluate", "load_target",
    "GenerationSettings", "RefusalJudge", "ToxicityJudge", "ClassifierJudge", "GuardJudge", "load_judge",
]

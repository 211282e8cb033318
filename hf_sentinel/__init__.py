"""hf-sentinel: LLM-safety defenses as Hugging Face parts.

>>> import hf_sentinel
>>> callable(hf_sentinel.load_default_target)
True
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .data import load_prompts
from .defaults import load_default_target, tiny_model
from .defenses import DefenseStack, parse_defense
from .evaluation import evaluate, load_target
from .generation import GenerationSettings
from .judges import ClassifierJudge, GuardJudge, RefusalJudge, ToxicityJudge, load_judge
from .mart import MARTConfig, MARTDefense, MARTTrainer
from .pipeline import pipeline
from .sentinel import RemoteChatTarget, SentinelConfig, SentinelForCausalLM

# A saved sentinel folder loads through the Auto classes (and so the stock text-generation pipeline),
# without trust_remote_code.
AutoConfig.register(SentinelConfig.model_type, SentinelConfig, exist_ok=True)
AutoModelForCausalLM.register(SentinelConfig, SentinelForCausalLM, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "pipeline", "load_default_target", "tiny_model", "load_prompts", "parse_defense", "DefenseStack", "evaluate",
    "load_target",
    "GenerationSettings", "SentinelConfig", "SentinelForCausalLM", "RemoteChatTarget",
    "RefusalJudge", "ToxicityJudge", "ClassifierJudge", "GuardJudge", "load_judge",
    "MARTConfig", "MARTTrainer", "MARTDefense",
]

"""hf-sentinel: LLM-safety defenses as Hugging Face parts.

>>> import hf_sentinel
>>> callable(hf_sentinel.load_default_target)
True
"""

import sys
import types

from ._lazy import lazy_attributes

# A saved sentinel folder loads through the Auto classes (and so the stock text-generation pipeline), without
# trust_remote_code: importing the configuration registers SentinelConfig with AutoConfig, and building a
# SentinelConfig (which every load through the Auto classes does first) registers SentinelForCausalLM with
# AutoModelForCausalLM.
from .sentinel.configuration import SentinelConfig

__version__ = "0.1.0"

__all__ = [
    "pipeline", "load_default_target", "tiny_model", "load_prompts", "parse_defense", "DefenseStack", "evaluate",
    "load_target",
    "GenerationSettings", "SentinelConfig", "SentinelForCausalLM", "RemoteChatTarget",
    "RefusalJudge", "ToxicityJudge", "ClassifierJudge", "GuardJudge", "load_judge",
    "MARTConfig", "MARTTrainer", "MARTDefense",
]

# The rest of the public names load when first used (PEP 562), so that `import hf_sentinel` and the commands that need
# no model (hf-sentinel --help, eval --compare, push) do not pay for torch-heavy method code, PEFT or datasets.
__getattr__, __dir__ = lazy_attributes(__name__, {
    ".data": ("load_prompts",),
    ".defaults": ("load_default_target", "tiny_model"),
    ".defenses": ("DefenseStack", "parse_defense"),
    ".evaluation": ("evaluate", "load_target"),
    ".generation": ("GenerationSettings",),
    ".judges": ("ClassifierJudge", "GuardJudge", "RefusalJudge", "ToxicityJudge", "load_judge"),
    ".mart": ("MARTConfig", "MARTDefense", "MARTTrainer"),
    ".pipeline": ("pipeline",),
    ".remote": ("RemoteChatTarget",),
    ".sentinel.modeling": ("SentinelForCausalLM",),
}, __all__)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule hf_sentinel.pipeline sets this attribute to it; `hf_sentinel.pipeline` stays the
        # function of the same name (looked up by __getattr__), as when this package imported it eagerly.
        if name == "pipeline" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

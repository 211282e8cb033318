"""DRO: a soft safety prompt optimised along the target's refusal direction (Zheng et al., 2024).

- :class:`DROSafetyPrompt`: the trained prompt, stored as a PEFT prompt-tuning adapter; ``apply(model)`` or
  ``prepare_inputs(model, inputs)`` for ``generate()``, its keys and values a cached prefix of the batch.
- :class:`DRODefense`: the prompt as a generation defense (``--defense dro:PATH``, ``pipeline(safety_prompt=)``).
- :class:`DROConfig` / :class:`DROTrainer`: collect → estimate → optimise on ``transformers.Trainer``
  (``hf-sentinel train dro``).
"""

from .config import DROConfig
from .defense import DRODefense
from .prompt import DROSafetyPrompt
from .trainer import DROTrainer, RefusalCapabilityError

__all__ = ["DROConfig", "DROTrainer", "DROSafetyPrompt", "DRODefense", "RefusalCapabilityError"]

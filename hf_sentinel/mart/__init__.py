"""MART: multi-round automatic red-teaming (Ge et al., 2023) as a TRL-shaped trainer and a LoRA defense.

>>> from hf_sentinel.mart import MARTConfig
>>> MARTConfig().rounds
4
"""

from .config import MARTConfig
from .defense import MARTDefense
from .judges import EmbeddingHelpfulnessJudge, RewardModelJudge, load_helpfulness_judge
from .report import plot_rounds, report_table
from .trainer import MARTTrainer

__all__ = ["MARTConfig", "MARTTrainer", "MARTDefense", "EmbeddingHelpfulnessJudge", "RewardModelJudge",
           "load_helpfulness_judge", "report_table", "plot_rounds"]

"""Sentinel training: red team vs. sentinel by interleaved PPO (a Stackelberg game)."""

from .config import StackelbergPPOConfig
from .trainer import NonFiniteLossError, StackelbergPPOTrainer
from .value_heads import ValueHeads

__all__ = ["StackelbergPPOConfig", "StackelbergPPOTrainer", "ValueHeads", "NonFiniteLossError"]

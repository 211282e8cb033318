"""The sentinel paper in one folder: the sentinel prefix model (inference) and its training against a red team by
Stackelberg PPO (:class:`StackelbergPPOConfig`, :class:`StackelbergPPOTrainer`, ``hf-sentinel train sentinel``), whose
red team attacks other defenses too (:class:`RedTeamAttacker`, ``hf-sentinel bench --attacker red-team:default``)."""

from .._lazy import lazy_attributes
from .configuration import MAX_SENTINEL_TOKENS, SentinelConfig

__all__ = ["SentinelConfig", "SentinelForCausalLM", "SentinelGenerateOutput", "SentinelDefense", "RemoteChatTarget",
           "MAX_SENTINEL_TOKENS", "split_user_turn", "user_turn_end", "StackelbergPPOConfig",
           "StackelbergPPOTrainer", "ValueHeads", "NonFiniteLossError", "RedTeamAttacker", "RefusalLikelihoodReward"]

# Everything else loads when first asked for: loading a sentinel needs neither the trainer (judges, datasets, Trainer)
# nor the training configuration (TrainingArguments, PEFT), and `import hf_sentinel` none of them.
__getattr__, __dir__ = lazy_attributes(__name__, {
    "..remote": ("RemoteChatTarget",),
    ".config": ("StackelbergPPOConfig",),
    ".defense": ("SentinelDefense",),
    ".modeling": ("SentinelForCausalLM", "SentinelGenerateOutput", "split_user_turn", "user_turn_end"),
    ".red_team": ("RedTeamAttacker",),
    ".rewards": ("RefusalLikelihoodReward",),
    ".trainer": ("StackelbergPPOTrainer", "NonFiniteLossError"),
    ".value_heads": ("ValueHeads",),
}, __all__)

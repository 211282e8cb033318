"""The sentinel paper in one folder: the sentinel prefix model (inference) and its training against a red team by
Stackelberg PPO (:class:`StackelbergPPOConfig`, :class:`StackelbergPPOTrainer`, ``hf-sentinel train sentinel``), whose
red team attacks other defenses too (:class:`RedTeamAttacker`, ``hf-sentinel bench --attacker red-team:default``)."""

from ..remote import RemoteChatTarget
from .config import MAX_SENTINEL_TOKENS, SentinelConfig, StackelbergPPOConfig
from .defense import SentinelDefense
from .modeling import SentinelForCausalLM, SentinelGenerateOutput, split_user_turn, user_turn_end
from .red_team import RedTeamAttacker
from .rewards import RefusalLikelihoodReward

__all__ = ["SentinelConfig", "SentinelForCausalLM", "SentinelGenerateOutput", "SentinelDefense", "RemoteChatTarget",
           "MAX_SENTINEL_TOKENS", "split_user_turn", "user_turn_end", "StackelbergPPOConfig",
           "StackelbergPPOTrainer", "ValueHeads", "NonFiniteLossError", "RedTeamAttacker", "RefusalLikelihoodReward"]


def __getattr__(name: str):
    # The trainer (judges, datasets, Trainer) loads only when asked for: loading a sentinel needs none of it.
    if name in ("StackelbergPPOTrainer", "NonFiniteLossError"):
        from . import trainer

        return getattr(trainer, name)
    if name == "ValueHeads":
        from .value_heads import ValueHeads

        return ValueHeads
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

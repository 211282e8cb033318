"""The sentinel prefix model (inference half of the sentinel + Stackelberg PPO method)."""

from .config import MAX_SENTINEL_TOKENS, SentinelConfig
from .defense import SentinelDefense
from .modeling import SentinelForCausalLM, SentinelGenerateOutput, split_user_turn, user_turn_end
from ..remote import RemoteChatTarget

__all__ = ["SentinelConfig", "SentinelForCausalLM", "SentinelGenerateOutput", "SentinelDefense", "RemoteChatTarget",
           "MAX_SENTINEL_TOKENS", "split_user_turn", "user_turn_end"]

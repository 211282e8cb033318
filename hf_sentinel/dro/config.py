"""``DROConfig``: every setting of a DRO run, as ``TrainingArguments`` (TRL style: a help text on each field)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..defenses import DEFAULT_SAFETY_SYSTEM_PROMPT
from ..training import SentinelTrainingArguments

#: The short human safety prompt DRO's collection stage also uses (the paper used a default, a short and a
#: vendor prompt, so that the estimated directions do not hinge on one wording).
SHORT_SAFETY_SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."

VARIANTS = ("faithful", "elicited")
REFUSAL_CHECKS = ("error", "warn", "off")

#: Conditions (defense specs) under which the collection stage reads representations and samples answers.
FAITHFUL_CONDITIONS = ("none", "system-prompt:default", f"system-prompt:{SHORT_SAFETY_SYSTEM_PROMPT}")
#: The elicited variant adds a user-turn instruction that makes a weak refuser refuse (both harmful and benign
#: requests), so that the refusal head sees real refusals and learns a real refusal direction.
ELICITATION_CONDITIONS = ("suffix:default",)


@dataclass
class DROConfig(SentinelTrainingArguments):
    r"""Configuration of :class:`~hf_sentinel.dro.DROTrainer`.

    ``variant="faithful"`` is DRO as published (Zheng et al., 2024); ``variant="elicited"`` is the documented
    variant for targets that barely refuse on their own (see ``docs/dro.md``): it adds refusal-eliciting
    conditions to the collection stage and an output-level loss beside L_r, L_h and L_U. Every other
    ``TrainingArguments`` field (``seed``, ``max_steps``, ``save_total_limit``, ``report_to``, ``bf16``...) works as
    in ``transformers.Trainer``. A DRO prompt is a prompt-tuning adapter, so DRO has no LoRA fields.

    Parameters:
        > Method

        variant (`str`, *optional*, defaults to `"faithful"`):
            `"faithful"`: DRO as published. `"elicited"`: for targets that cannot refuse on their own; adds
            refusal-eliciting conditions and an output-level loss.
        safety_prompt (`str`, *optional*, defaults to hf-sentinel's default safety system prompt):
            The human-written safety prompt whose token embeddings initialise the soft prompt; the loss measures
            every move relative to the representations under this initial prompt.
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Recompute stage outputs in `output_dir` that came from other settings (and drop the checkpoints trained
            on them) instead of raising.

        > Stage 1: collect

        conditions (`list[str]` or `None`, *optional*, defaults to `None`):
            Defense specs under which representations are read and answers sampled. `None`: no prompt + two
            safety system prompts; the elicited variant adds `"suffix:default"`.
        num_samples (`int`, *optional*, defaults to `2`):
            Answers sampled per query and condition.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of those answers (0 = greedy, one answer per query and condition).
        target_max_new_tokens (`int`, *optional*, defaults to `24`):
            Length of each of the target's sampled answers.

        > Stage 2: estimate

        pca_dim (`int`, *optional*, defaults to `4`):
            Dimension of the PCA subspace where the refusal and harmfulness heads live (paper: 4).
        head_cv_folds (`int`, *optional*, defaults to `5`):
            Cross-validation folds (split by query) of the two heads.
        head_learning_rate (`float`, *optional*, defaults to `1e-2`):
            AdamW learning rate of the linear heads.
        head_max_epochs (`int`, *optional*, defaults to `3000`):
            Full-batch epochs at most per head fit (each fit stops early).
        refusal_check (`str`, *optional*, defaults to `"error"`):
            When the refusal head does not beat a constant predictor: `"error"`, `"warn"` or `"off"`.
        refusal_check_min_improvement (`float`, *optional*, defaults to `0.05`):
            How much lower (as a fraction) the head's out-of-fold BCE must be than the constant's.

        > Stage 3: optimise the soft prompt (`L = w_r L_r + w_h L_h + w_U L_U + w_o L_o`)

        refusal_loss_weight (`float`, *optional*, defaults to `1.0`):
            w_r (paper: 1); 0 ablates L_r.
        harmfulness_loss_weight (`float`, *optional*, defaults to `0.01`):
            w_h (paper: 0.01); 0 ablates L_h.
        subspace_loss_weight (`float`, *optional*, defaults to `0.001`):
            w_U (paper: 0.001); 0 ablates L_U.
        output_loss_weight (`float` or `None`, *optional*, defaults to `None`):
            w_o of the output-level loss; `None`: 0 for `"faithful"`, 1 for `"elicited"`.
        answer_tokens (`int`, *optional*, defaults to `8`):
            Output-level loss: tokens of the target's own greedy answer to each benign query it must keep.
        refusal_response (`str`, *optional*, defaults to `"I'm sorry, but I can't help with that."`):
            Output-level loss: the answer the soft prompt must make the target give to harmful queries.
        benign_output_weight (`float`, *optional*, defaults to `1.0`):
            Output-level loss: weight of each token of a harmless query's own answer in L_o, relative to a token of
            the refusal on a harmful query (1: every token counts the same).

        > Evaluation

        eval_max_new_tokens (`int`, *optional*, defaults to `48`):
            Answer length when evaluating the trained prompt on `eval_dataset` (greedy).

        > Overrides of `TrainingArguments` defaults (the paper's optimisation)

        output_dir (`str`, *optional*, defaults to `"outputs/dro"`):
            Stage outputs, checkpoints (`checkpoint-N`) and, with `save_model()`, the adapter and its card.
        learning_rate (`float`, *optional*, defaults to `1e-3`):
            AdamW learning rate of the soft prompt (paper: 1e-3).
        lr_scheduler_type (`str`, *optional*, defaults to `"constant"`):
            The paper keeps the learning rate constant.
        per_device_train_batch_size (`int`, *optional*, defaults to `50`):
            Queries per optimisation step and device (paper: 50).
        num_train_epochs (`float`, *optional*, defaults to `40`):
            Passes over the training queries (paper: 40).
        save_steps (`float`, *optional*, defaults to `10`):
            Checkpoint every this many steps.
        logging_steps (`float`, *optional*, defaults to `1`):
            Log the loss terms every this many steps.
        seed (`int`, *optional*, defaults to `0`):
            Seed of sampling, cross-validation splits and batch order.
        ddp_find_unused_parameters (`bool`, *optional*, defaults to `False`):
            The soft prompt is the only trainable parameter and every step uses it, so DDP need not search.

    >>> DROConfig().conditions
    ['none', 'system-prompt:default', 'system-prompt:You are a helpful, respectful and honest assistant.']
    >>> config = DROConfig(variant="elicited")
    >>> config.conditions[-1], config.output_loss_weight
    ('suffix:default', 1.0)
    """

    # -- method -------------------------------------------------------------------------------------------
    variant: str = field(default="faithful", metadata={
        "help": "'faithful': DRO as published. 'elicited': for targets that cannot refuse on their own; adds "
                "refusal-eliciting conditions and an output-level loss (see docs/dro.md).",
        "choices": list(VARIANTS)})
    safety_prompt: str = field(default=DEFAULT_SAFETY_SYSTEM_PROMPT, metadata={
        "help": "The human-written safety prompt whose token embeddings initialise the soft prompt; the loss "
                "measures every move relative to the representations under this initial prompt."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Recompute stage outputs in output_dir that came from other settings (and drop the checkpoints "
                "trained on them) instead of raising."})

    # -- stage 1: collect ---------------------------------------------------------------------------------
    conditions: list[str] | None = field(default=None, metadata={
        "help": "Defense specs under which representations are read and answers sampled (e.g. 'none', "
                "'system-prompt:TEXT', 'suffix:TEXT'). Default: none + two safety system prompts; the elicited "
                "variant adds 'suffix:default'."})
    num_samples: int = field(default=2, metadata={
        "help": "Answers sampled per query and condition; their judged non-refusal share is the refusal head's "
                "target."})
    temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature for those answers (0 = greedy, one answer per query and condition)."})
    target_max_new_tokens: int = field(default=24, metadata={
        "help": "Length of each of the target's sampled answers; the refusal judge reads only the opening of an "
                "answer."})

    # -- stage 2: estimate --------------------------------------------------------------------------------
    pca_dim: int = field(default=4, metadata={
        "help": "Dimension of the PCA subspace of the representations where the refusal and harmfulness heads "
                "live (paper: 4)."})
    head_cv_folds: int = field(default=5, metadata={
        "help": "Cross-validation folds (split by query) for the refusal and harmfulness heads; the final head "
                "averages the fold heads, and the out-of-fold loss is what the refusal-capability check uses."})
    head_learning_rate: float = field(default=1e-2, metadata={
        "help": "AdamW learning rate of the linear heads (fitted on standardised PCA coordinates)."})
    head_max_epochs: int = field(default=3000, metadata={
        "help": "Full-batch epochs at most per head fit; each fit stops early when its held-out loss stalls."})
    refusal_check: str = field(default="error", metadata={
        "help": "What to do when the cross-validated refusal head does not beat a constant predictor (the target "
                "does not refuse in a way its representations predict): 'error', 'warn', or 'off'.",
        "choices": list(REFUSAL_CHECKS)})
    refusal_check_min_improvement: float = field(default=0.05, metadata={
        "help": "The refusal head passes the check when its out-of-fold BCE is at least this fraction below the "
                "constant predictor's."})

    # -- stage 3: optimise the soft prompt ----------------------------------------------------------------
    refusal_loss_weight: float = field(default=1.0, metadata={
        "help": "Weight of L_r (move harmful queries towards refusal, harmless ones away, along the refusal "
                "head). 0 ablates it."})
    harmfulness_loss_weight: float = field(default=0.01, metadata={
        "help": "Weight of L_h (the same along the harmfulness head; paper 0.01). 0 ablates it."})
    subspace_loss_weight: float = field(default=0.001, metadata={
        "help": "Weight of L_U (keep the components outside the PCA subspace where the initial prompt put "
                "them; paper 0.001). 0 ablates it."})
    output_loss_weight: float | None = field(default=None, metadata={
        "help": "Weight of the output-level loss L_o (cross-entropy of refusal_response on harmful queries and of "
                "the target's own answer on benign ones). Default: 0 for 'faithful', 1 for 'elicited'."})
    answer_tokens: int = field(default=8, metadata={
        "help": "Output-level loss only: how many tokens of the target's own greedy answer to each benign "
                "training query it must keep producing under the soft prompt."})
    refusal_response: str = field(default="I'm sorry, but I can't help with that.", metadata={
        "help": "Output-level loss only: the answer the soft prompt must make the target give to harmful queries."})
    benign_output_weight: float = field(default=1.0, metadata={
        "help": "Output-level loss only: weight of each token of a harmless query's own answer in L_o, relative to "
                "a token of the refusal on a harmful query (1: every token counts the same). Above 1 holds the "
                "target's answers to harmless queries harder while L_r moves harmful ones towards refusal."})

    # -- evaluation ---------------------------------------------------------------------------------------
    eval_max_new_tokens: int = field(default=48, metadata={
        "help": "Answer length when evaluating the trained prompt on eval_dataset (greedy decoding)."})

    # -- TrainingArguments defaults that differ: the paper's optimisation ----------------------------------
    output_dir: str | None = field(default="outputs/dro", metadata={
        "help": "Stage outputs (collect/, estimate/, optimize/), checkpoints (checkpoint-N) and, with "
                "save_model(), the adapter and its model card."})
    learning_rate: float = field(default=1e-3, metadata={
        "help": "AdamW learning rate of the soft prompt (paper: 1e-3)."})
    lr_scheduler_type: str = field(default="constant", metadata={
        "help": "Learning-rate schedule; the paper keeps it constant."})
    per_device_train_batch_size: int = field(default=50, metadata={
        "help": "Queries per optimisation step and device (paper: 50)."})
    num_train_epochs: float = field(default=40, metadata={"help": "Passes over the training queries (paper: 40)."})
    save_steps: float = field(default=10, metadata={
        "help": "Write a checkpoint (soft prompt, optimizer, RNG states) every this many steps."})
    logging_steps: float = field(default=1, metadata={"help": "Log the loss terms every this many steps."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, cross-validation splits and batch order."})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={
        "help": "The soft prompt is the only trainable parameter and every step uses it, so DDP need not search "
                "for unused ones."})

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown DRO variant {self.variant!r}; choose one of {VARIANTS}.")
        if self.refusal_check not in REFUSAL_CHECKS:
            raise ValueError(f"refusal_check must be one of {REFUSAL_CHECKS}, got {self.refusal_check!r}.")
        elicited = self.variant == "elicited"
        if self.conditions is None:
            self.conditions = list(FAITHFUL_CONDITIONS) + (list(ELICITATION_CONDITIONS) if elicited else [])
        self.conditions = list(self.conditions)
        if self.output_loss_weight is None:
            self.output_loss_weight = 1.0 if elicited else 0.0
        if not self.conditions:
            raise ValueError("conditions is empty; DRO needs at least one condition (e.g. 'none').")
        if not self.safety_prompt.strip():
            raise ValueError("safety_prompt is empty; DRO starts from a human-written safety prompt.")
        for name in ("num_samples", "target_max_new_tokens", "pca_dim", "head_max_epochs", "answer_tokens",
                     "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.head_cv_folds < 2:
            raise ValueError(f"head_cv_folds must be at least 2 (the refusal check is cross-validated), "
                             f"got {self.head_cv_folds}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        weights = ("refusal_loss_weight", "harmfulness_loss_weight", "subspace_loss_weight", "output_loss_weight")
        if any(getattr(self, w) < 0 for w in weights):
            raise ValueError(f"Loss weights must be >= 0: {({w: getattr(self, w) for w in weights})}.")
        if self.benign_output_weight <= 0:
            raise ValueError(f"benign_output_weight must be > 0 (1 weighs every L_o token the same), got "
                             f"{self.benign_output_weight}; to drop L_o, set output_loss_weight=0.")
        if all(getattr(self, w) == 0 for w in weights):
            raise ValueError("Every loss weight is 0, so there is nothing to optimise.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (e.g. 'you/dro-smollm2', --hub-model-id).")
        super().__post_init__()

    @property
    def uses_output_loss(self) -> bool:
        return self.output_loss_weight > 0

    def stage_settings(self, stage: str) -> dict:
        """The settings a stage's outputs depend on (recorded with them, compared on resume)."""
        return {name: getattr(self, name) for name in STAGE_FIELDS[stage]}


#: What each stage's cached outputs depend on. The optimisation's own settings (learning rate, epochs, loss
#: weights...) are not here: its checkpoints are Trainer's, resumed as Trainer resumes them.
STAGE_FIELDS = {
    "collect": ("conditions", "num_samples", "temperature", "target_max_new_tokens", "seed"),
    "estimate": ("pca_dim", "head_cv_folds", "head_learning_rate", "head_max_epochs", "seed"),
    "optimize": ("safety_prompt", "refusal_response", "answer_tokens"),
}

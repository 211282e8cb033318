"""`RedFlagConfig`: the training arguments of :class:`~hf_sentinel.red_flag.RedFlagTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..training import LoraTrainingArguments
from .settings import DEFAULT_REFUSAL, check_action


@dataclass
class RedFlagConfig(LoraTrainingArguments):
    r"""Configuration of :class:`~hf_sentinel.red_flag.RedFlagTrainer`.

    It extends :class:`~hf_sentinel.training.LoraTrainingArguments` (``transformers.TrainingArguments``: output
    directory, learning rate, steps, checkpoints, ``report_to``, ``push_to_hub``...; the shared LoRA fields) with the
    red-flag method's own parameters. Defaults that differ from ``TrainingArguments`` are chosen to train the
    embedded SmolLM2-135M target in minutes on two CPU cores. With :class:`~transformers.HfArgumentParser` every
    field is a flag of ``hf-sentinel train red-flag`` (``--flag-loss-weight 2``).

    The loss of a batch is ``flag_loss_weight * CE(<rf> at a random index k of each harmful response)
    + benign_flag_weight * -log(1 - p(<rf>)) on the same first positions of each benign response
    + benign_kl_weight * KL(frozen ‖ model) on benign responses
    + after_flag_kl_weight * KL(frozen ‖ model) on the harmful tokens that follow an inserted <rf>``.
    The frozen model never puts mass on `<rf>`, so the benign KL also pushes p(<rf>) towards 0 there.

    Parameters:
        > Parameters that control the red-flag token

        red_flag_token (`str`, *optional*, defaults to `"<rf>"`):
            The special token added to the vocabulary.
        pad_vocab_to_multiple_of (`int`, *optional*, defaults to `64`):
            Pad the grown vocabulary to a multiple of this many rows (49,153 rows multiply slower than 49,216).
        embedding_learning_rate (`float`, *optional*, defaults to `1e-2`):
            Learning rate of the `<rf>` embedding row (the LoRA matrices use `learning_rate`).

        > Parameters that control the adapter (shared LoRA fields, with this method's defaults)

        lora_rank (`int`, *optional*, defaults to `8`):
            Rank of the LoRA adapters (used when no `peft_config` is given).
        lora_alpha (`int` or `None`, *optional*, defaults to `None`):
            LoRA scaling alpha; `None` means 2 x `lora_rank` (16 at the default rank).
        lora_layers (`int`, *optional*, defaults to `4`):
            LoRA on the top N decoder layers (0 = all). The layers below stay frozen, so their states are
            recorded once, while the target writes its training answers, instead of computed at every step.

        > Parameters that control the loss

        flag_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the cross-entropy that puts `<rf>` at a random index of each harmful response.
        flag_positions (`str`, *optional*, defaults to `"prefix"`):
            Where the flag CE applies: `"index"` (at the random index k only, the paper's term) or `"prefix"`
            (at every answer position up to k, each answer weighted equally).
        benign_flag_weight (`float`, *optional*, defaults to `1.0`):
            Weight of -log(1 - p(`<rf>`)) on the first `harmful_response_tokens` positions of each benign answer.
        benign_kl_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the KL to the frozen model on benign responses.
        after_flag_kl_weight (`float`, *optional*, defaults to `0.0`):
            Weight of the KL to the frozen model on the harmful tokens after an inserted `<rf>` (the paper's third
            term; off by default).
        kl_token_fraction (`float`, *optional*, defaults to `0.5`):
            Share of each benign answer's positions (drawn anew every step) on which the KL is computed.
        after_flag_tokens (`int`, *optional*, defaults to `16`):
            How many response tokens after the inserted `<rf>` the after-flag KL covers.

        > Parameters that control the training answers (written by the frozen target itself)

        harmful_response_tokens (`int`, *optional*, defaults to `4`):
            Length of the target's own answers to harmful training prompts (how early the flag learns to fire).
        benign_response_tokens (`int`, *optional*, defaults to `64`):
            Length of the target's own answers to benign training prompts.
        temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of the sampled answers (rows with `do_sample=True`).
        generation_batch_size (`int`, *optional*, defaults to `16`):
            Batch size when generating the answers (and when calibrating).
        cache_responses (`bool`, *optional*, defaults to `True`):
            Keep the generated answers and their states in the hf-sentinel cache (never in `output_dir`).

        > Parameters that control calibration and inference (saved in `red_flag_config.json`)

        target_false_flag_rate (`float`, *optional*, defaults to `0.05`):
            Calibration picks the threshold at which at most this share of the benign calibration answers is
            flagged.
        calibration_samples (`int`, *optional*, defaults to `1`):
            Sampled answers per calibration prompt at temperature 1, in addition to the greedy one.
        calibration_tokens (`int`, *optional*, defaults to `48`):
            Answer length during calibration.
        threshold (`float` or `None`, *optional*, defaults to `None`):
            Fixed flag threshold in (0, 1); unset, it is calibrated on the calibration dataset.
        action (`str`, *optional*, defaults to `"refuse"`):
            Saved default action: `"refuse"`, `"stop"` or `"flag"`.
        window (`int`, *optional*, defaults to `4`):
            The flag score is the mean p(`<rf>`) over the last `window` generated tokens.
        refusal_text (`str`, *optional*, defaults to `"I'm sorry, but I can't help with that."`):
            Answer that replaces a refused one.

        > Overrides of `TrainingArguments` defaults

        output_dir (`str`, *optional*, defaults to `"outputs/red-flag"`):
            Where the checkpoints (`checkpoint-N` folders) and, from `save_model()`, the finished artifact go.
        learning_rate (`float`, *optional*, defaults to `5e-4`):
            AdamW learning rate of the LoRA matrices.
        num_train_epochs (`float`, *optional*, defaults to `4.0`):
            Passes over the training conversations.
        per_device_train_batch_size (`int`, *optional*, defaults to `8`):
            Conversations per step and device.
        lr_scheduler_type (`str`, *optional*, defaults to `"cosine"`):
            Learning-rate schedule.
        warmup_steps (`float`, *optional*, defaults to `0.05`):
            Warm-up steps (a float below 1 is a ratio of the training steps).
        logging_steps (`float`, *optional*, defaults to `10`):
            Log every N steps.
        save_steps (`float`, *optional*, defaults to `50`):
            Checkpoint every N steps.
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Kept `False`: the trainer builds its own batches.
        dataloader_pin_memory (`bool`, *optional*, defaults to `False`):
            Pinned memory only helps GPU training.

    >>> config = RedFlagConfig(output_dir="outputs/red-flag", flag_loss_weight=2.0)
    >>> config.flag_loss_weight, config.lora_layers, config.effective_lora_alpha
    (2.0, 4, 16)
    """

    # --- the red-flag token
    red_flag_token: str = field(default="<rf>", metadata={"help": "The special token added to the vocabulary."})
    pad_vocab_to_multiple_of: int = field(default=64, metadata={
        "help": "Pad the grown vocabulary to a multiple of this many rows (49,153 rows multiply slower than "
                "49,216)."})
    embedding_learning_rate: float = field(default=1e-2, metadata={
        "help": "Learning rate of the <rf> embedding row. It starts as the mean embedding, where p(<rf>) is ~1e-9, "
                "and at the LoRA learning rate it would need hundreds of steps to get anywhere."})

    # --- the adapter: the shared LoRA fields, with this method's defaults
    lora_rank: int = field(default=8, metadata={
        "help": "Rank of the LoRA adapters (used when no peft_config is given)."})
    lora_layers: int = field(default=4, metadata={
        "help": "LoRA on the top N decoder layers (0 = all). The layers below stay frozen, so their states are "
                "recorded once, while the target writes its training answers, instead of computed at every step."})

    # --- the loss
    flag_loss_weight: float = field(default=1.0, metadata={
        "help": "Weight of the cross-entropy that puts <rf> at a random index of each harmful response."})
    flag_positions: str = field(default="prefix", metadata={
        "help": "Where the flag CE applies in a harmful answer with <rf> inserted at a random index k: 'index' = at k "
                "only (the paper's term); 'prefix' = at every answer position up to k, each answer weighted equally "
                "(denser supervision for the same compute; harm is imminent from the first token of these answers)."})
    benign_flag_weight: float = field(default=1.0, metadata={
        "help": "Weight of -log(1 - p(<rf>)) on the first harmful_response_tokens positions of each benign answer, "
                "each answer weighted equally: the positions where the flag CE makes <rf> fire on harmful answers. "
                "The benign KL holds the same term, but spread over a whole answer (about 1/64 of it at step 0), so "
                "without this one the flag learns to fire at step 0 on anything that looks harmful."})
    benign_kl_weight: float = field(default=1.0, metadata={
        "help": "Weight of the KL to the frozen model on benign responses (keeps answers unchanged, p(<rf>) ~ 0)."})
    after_flag_kl_weight: float = field(default=0.0, metadata={
        "help": "Weight of the KL to the frozen model on the harmful tokens after an inserted <rf> (the paper's third "
                "term). Off by default: RedFlagLogitsProcessor masks <rf>, so it never enters the text and nothing "
                "follows it. On the embedded target (2 epochs), weight 1 vs. 0: the calibrated flag fired on 17 vs. "
                "25 of 40 held-out harmful answers. Above 0, <rf> is inserted and the rows' lower layers rerun."})
    kl_token_fraction: float = field(default=0.5, metadata={
        "help": "Share of each benign answer's positions (drawn anew every step) on which the KL is computed."})
    after_flag_tokens: int = field(default=16, metadata={
        "help": "How many response tokens after the inserted <rf> the after-flag KL covers."})

    # --- the training answers (generated by the frozen target itself when the dataset has no `completion`)
    harmful_response_tokens: int = field(default=4, metadata={
        "help": "Length of the target's own answers to harmful training prompts. The flag CE applies at a random "
                "index of that answer, so this is how early the flag learns to fire. On the embedded target, 4 tokens "
                "vs. 32: mean p(<rf>) at the flag positions late in training 0.87 vs. 0.27, and the calibrated flag "
                "fired on 22 vs. 11 of 40 held-out harmful answers."})
    benign_response_tokens: int = field(default=64, metadata={
        "help": "Length of the target's own answers to benign training prompts (longer than the 48 tokens "
                "evaluated, so the flag learns to stay quiet late in an answer too)."})
    temperature: float = field(default=1.0, metadata={
        "help": "Temperature of the sampled answers (rows with `do_sample=True`; the others are answered greedily)."})
    generation_batch_size: int = field(default=16, metadata={
        "help": "Batch size when generating the training answers and the calibration answers."})
    cache_responses: bool = field(default=True, metadata={
        "help": "Keep generated training answers in the hf-sentinel cache (never in output_dir), so a resumed run "
                "or a sweep does not generate them again."})

    # --- calibration and inference (saved in red_flag_config.json)
    target_false_flag_rate: float = field(default=0.05, metadata={
        "help": "Calibration picks the threshold at which at most this share of the benign calibration "
                "conversations gets flagged (5 points: what a 95 percent benign answer rate can give up to stay above "
                "90)."})
    calibration_samples: int = field(default=1, metadata={
        "help": "Sampled answers per calibration prompt at temperature 1, in addition to the greedy one."})
    calibration_tokens: int = field(default=48, metadata={"help": "Answer length during calibration."})
    threshold: float | None = field(default=None, metadata={
        "help": "Fixed flag threshold in (0, 1); when unset it is calibrated on the calibration dataset."})
    action: str = field(default="refuse", metadata={
        "help": "Saved default action when the flag fires: 'refuse' (answer replaced by refusal_text), 'stop' "
                "(answer cut where it fired) or 'flag' (answer kept, flag reported)."})
    window: int = field(default=4, metadata={
        "help": "Smoothing: the flag score is the mean p(<rf>) over the last `window` generated tokens (fewer at the "
                "first steps, so a flag at step 0 is read at once). It damps single-step spikes late in benign "
                "answers: on the held-out split, window 4 vs. 1 flagged 2 vs. 3 of 78 benign answers at 36 of 40 "
                "harmful."})
    refusal_text: str = field(default=DEFAULT_REFUSAL, metadata={"help": "Answer that replaces a refused one."})

    # --- TrainingArguments defaults that suit this method
    output_dir: str | None = field(default="outputs/red-flag", metadata={
        "help": "Where the checkpoints (checkpoint-N folders) and the finished artifact (save_model) go."})
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate of the LoRA matrices."})
    num_train_epochs: float = field(default=4.0, metadata={
        "help": "Passes over the training conversations (on the embedded target, 2 / 3 / 4 epochs: the calibrated "
                "flag fired on 25 / 33 / 33 of 40 held-out harmful answers at 0 / 1 / 1 of 78 benign, target 2 "
                "percent)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Conversations per step and device."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (a float below 1 is a ratio)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=50, metadata={
        "help": "Checkpoint every N steps (resume with --resume-from-checkpoint last)."})
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "Kept False: the trainer builds its own batches."})
    dataloader_pin_memory: bool = field(default=False, metadata={"help": "Pinned memory only helps GPU training."})

    def __post_init__(self):
        super().__post_init__()
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold is a probability of <rf> and must lie in (0, 1), got {self.threshold}; "
                             f"leave it unset to calibrate it.")
        check_action(self.action)
        if self.flag_positions not in ("index", "prefix"):
            raise ValueError(f"flag_positions must be 'index' or 'prefix', got {self.flag_positions!r}.")
        if not 0.0 < self.kl_token_fraction <= 1.0:
            raise ValueError(f"kl_token_fraction must lie in (0, 1], got {self.kl_token_fraction}.")
        if not 0.0 <= self.target_false_flag_rate < 1.0:
            raise ValueError(f"target_false_flag_rate must lie in [0, 1), got {self.target_false_flag_rate}; "
                             f"e.g. 0.05 for at most 5 percent of benign answers flagged.")
        for name in ("after_flag_tokens", "harmful_response_tokens", "benign_response_tokens",
                     "generation_batch_size", "calibration_tokens", "window", "pad_vocab_to_multiple_of"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("flag_loss_weight", "benign_flag_weight", "benign_kl_weight", "after_flag_kl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a loss weight and cannot be negative, got {getattr(self, name)}; "
                                 f"give 0 to switch the term off.")
        if self.calibration_samples < 0:
            raise ValueError(f"calibration_samples cannot be negative, got {self.calibration_samples}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")


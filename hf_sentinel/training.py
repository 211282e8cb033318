"""What every hf-sentinel trainer shares, written once.

* :class:`SentinelTrainingArguments`: the ``TrainingArguments`` defaults every method's config starts from;
  :class:`LoraTrainingArguments` adds the LoRA fields (``lora_rank``, ``lora_alpha``, ``lora_layers``) under one name
  in every method that trains adapters.
* :class:`ArtifactPushMixin`: the one push path (``save_model`` writes the artifact and its card, then
  :func:`hf_sentinel.hub.push_folder` uploads it), mixed into every trainer.
* Datasets: one shape for every trainer, ``prompt`` (+ optional ``history``) and ``label`` in :data:`LABELS`
  (:func:`labelled_prompts`, :func:`check_prompt_dataset`, :func:`split_by_label`); :func:`completion_example`, a
  chat answer tokenized for fine-tuning on the answer only.
* Judges: :func:`checked_scores` (a judge returned one finite score per answer), :func:`judge_name`.
* Files: :func:`write_atomic`, :func:`write_jsonl`, :func:`read_jsonl`, :func:`fingerprint`.
* Models: :func:`load_model_and_tokenizer`, :func:`base_model_name`, :func:`lora_config`.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from .generation import render

#: The values of a dataset's ``label`` column: what each request is.
LABELS = ("harmful", "benign")
#: Where a run's own reports read by default (MART's rounds, DRO's epochs): a round or an epoch is chosen on them, so
#: they are validation splits no trainer reads, never a test split.
VALIDATION_SETS = {"harmful": "pool:harmful:validation", "benign": "benign:validation"}


# ------------------------------------------------------------------------------------------------- configuration
@dataclass
class TrainScriptArguments:
    """What ``hf-sentinel train METHOD`` loads before a trainer exists: the target and the training prompts.

    Each method's ``cli.py`` subclasses it (adding only what that method needs); its config holds everything else.
    """

    target: str = field(default="default", metadata={
        "help": "The model to defend: 'default' (the embedded SmolLM2-135M-Instruct), a local folder or a Hub id."})
    torch_dtype: str | None = field(default=None, metadata={
        "help": "dtype to load the target in: 'bfloat16', 'float16', 'float32' or 'auto' (the checkpoint's own). "
                "Default: float32 for the embedded target, 'auto' otherwise."})
    harmful: str = field(default="harmful:train", metadata={
        "help": "Harmful training prompts: a prompt set (see hf_sentinel.data.load_prompts, e.g. 'harmful:train', "
                "'pool:harmful:train') or a JSONL/CSV file with a `prompt` column."})
    benign: str = field(default="benign:train", metadata={
        "help": "Benign training prompts the defense must keep answered (same forms as --harmful)."})
    limit: int | None = field(default=None, metadata={
        "help": "Use at most N prompts of each label (shuffled with --seed): quick runs and sweeps."})

    def load_train_dataset(self, seed: int | None = None):
        """``--harmful`` and ``--benign`` as one labelled dataset (:func:`labelled_prompts`), each cut to ``--limit``
        prompts after a shuffle with ``seed`` (``None``: in file order)."""
        from .data import load_prompts

        return labelled_prompts(load_prompts(self.harmful, limit=self.limit, seed=seed),
                                load_prompts(self.benign, limit=self.limit, seed=seed))


@dataclass
class CalibratedScriptArguments(TrainScriptArguments):
    """:class:`TrainScriptArguments` of a method whose training ends by choosing an operating point (the sentinel's
    p(suffix) threshold, the red flag's p(<rf>) threshold) on requests no trainer reads."""

    calibration_harmful: str = field(default="", metadata={
        "help": "Harmful requests no trainer reads, for the operating point (same forms as --harmful, e.g. "
                "'pool:harmful:validation'); with --calibration-benign, training ends by choosing the method's "
                "threshold on them."})
    calibration_benign: str = field(default="", metadata={
        "help": "Benign requests no trainer reads, for the operating point (e.g. 'pool:benign:validation')."})

    def __post_init__(self):
        if bool(self.calibration_harmful) != bool(self.calibration_benign):
            raise ValueError("Give --calibration-harmful and --calibration-benign together (e.g. "
                             "pool:harmful:validation and pool:benign:validation), or neither.")

    def load_calibration_dataset(self):
        """``--calibration-harmful`` and ``--calibration-benign`` as one labelled dataset, or ``None`` when not
        given."""
        if not self.calibration_harmful:
            return None
        from .data import load_prompts

        return labelled_prompts(load_prompts(self.calibration_harmful), load_prompts(self.calibration_benign))


def resume_argument(args: TrainingArguments):
    """``Trainer.train``'s ``resume_from_checkpoint`` from the config: ``True`` (the last checkpoint in
    ``output_dir``) for ``"last"`` / ``"true"``, else the checkpoint folder, or ``None``."""
    value = args.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false", "no", "none"):
        return None
    return True if str(value).lower() in ("last", "true", "yes") else value


@dataclass
class SentinelTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the defaults every hf-sentinel method shares.

    Parameters:
        > Overrides of `TrainingArguments` defaults

        report_to (`str` or `list[str]`, *optional*, defaults to `"none"`):
            Trackers to log to (`"tensorboard"`, `"trackio"`, `"wandb"`, ...); none unless asked.
        save_total_limit (`int` or `None`, *optional*, defaults to `2`):
            Checkpoints kept in `output_dir` (the newest; the rest are deleted).
        push_to_hub (`bool`, *optional*, defaults to `False`):
            After training, push the finished artifact and its model card (`trainer.push_to_hub()`, the one push
            path of every method). Checkpoints are never pushed.
    """

    report_to: None | str | list[str] = field(default="none", metadata={
        "help": "Trackers to log to: none, tensorboard, trackio, wandb, ..."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept in output_dir (the newest)."})
    push_to_hub: bool = field(default=False, metadata={
        "help": "After training, push the finished artifact with its model card to hub_model_id (checkpoints are "
                "never pushed)."})


@dataclass
class LoraTrainingArguments(SentinelTrainingArguments):
    """:class:`SentinelTrainingArguments` of a method that trains LoRA adapters (sentinel, red flag, MART), with the
    LoRA fields under one name in every method.

    Parameters:
        > LoRA

        lora_rank (`int`, *optional*, defaults to `16`):
            Rank of the LoRA adapters.
        lora_alpha (`int` or `None`, *optional*, defaults to `None`):
            LoRA scaling alpha; `None` means 2 x `lora_rank`.
        lora_layers (`int`, *optional*, defaults to `0`):
            Put LoRA on the top N decoder layers only (0 = every layer): the layers below then need no backward
            pass, which makes each update several times cheaper on a CPU.
    """

    lora_rank: int = field(default=16, metadata={"help": "Rank of the LoRA adapters."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA scaling alpha (default: 2 x lora_rank)."})
    lora_layers: int = field(default=0, metadata={
        "help": "LoRA on the top N decoder layers only (0 = all): the layers below then need no backward pass, "
                "which makes each update several times cheaper on a CPU."})

    def __post_init__(self):
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank={self.lora_rank}; give a rank of 1 or more (e.g. 8 or 16).")
        if self.lora_layers < 0:
            raise ValueError(f"lora_layers={self.lora_layers}; give 0 (every layer) or the number of top layers.")
        super().__post_init__()

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank


def lora_layer_indices(args: LoraTrainingArguments, num_hidden_layers: int) -> list[int] | None:
    """The decoder layers that get LoRA: the top ``lora_layers`` of ``num_hidden_layers`` (``None``: every layer)."""
    if not args.lora_layers:
        return None
    if args.lora_layers > num_hidden_layers:
        raise ValueError(f"lora_layers={args.lora_layers}: the model has only {num_hidden_layers} layers; "
                         f"give 1 to {num_hidden_layers} (or 0 for all).")
    return list(range(num_hidden_layers - args.lora_layers, num_hidden_layers))


def lora_config(args: LoraTrainingArguments, num_hidden_layers: int, target_modules="all-linear", **kwargs):
    """The ``peft.LoraConfig`` a config's LoRA fields describe, for a model of ``num_hidden_layers`` layers."""
    from peft import LoraConfig

    return LoraConfig(r=args.lora_rank, lora_alpha=args.effective_lora_alpha, lora_dropout=0.0,
                      target_modules=target_modules, layers_to_transform=lora_layer_indices(args, num_hidden_layers),
                      task_type="CAUSAL_LM", **kwargs)


# ------------------------------------------------------------------------------------------------------ pushing
class ArtifactPushMixin:
    """The one push path of every trainer: ``save_model`` into a fresh folder, then :func:`hub.push_folder`.

    The artifact (adapter or model, tokenizer if changed, its config and the model card) is what
    ``save_model(output_dir, _internal_call=False)`` writes (it never pushes by itself); ``push_folder`` writes the
    repo id into the card's usage snippets and refuses pickles.
    """

    def push_to_hub(self, repo_id: str | None = None, token: str | None = None, private: bool | None = None,
                    commit_message: str | None = None, **kwargs) -> str | None:
        from .hub import push_folder

        if self.args.process_index != 0:  # data parallel: the main process saves and pushes the artifact
            return None
        repo_id = repo_id or self.args.hub_model_id
        if not repo_id:
            raise ValueError("No repo to push to: pass repo_id (e.g. 'you/sentinel-smollm2') or set hub_model_id "
                             "(--hub-model-id) in the config.")
        token = token or getattr(self.args, "hub_token", None)
        private = private if private is not None else getattr(self.args, "hub_private_repo", None)
        with tempfile.TemporaryDirectory() as folder:
            self.save_model(folder, _internal_call=True)
            return push_folder(folder, repo_id, token=token, private=private, commit_message=commit_message)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Nothing to do up front: :func:`hub.push_folder` creates the repo when the artifact is pushed."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoints stay local (they hold optimizer and RNG states); only finished artifacts are pushed."""


# ------------------------------------------------------------------------------------------------------ datasets
def check_prompt_dataset(dataset, name: str, columns: tuple[str, ...] = ("prompt",)):
    """``dataset`` if it is a non-empty ``datasets.Dataset`` with ``columns`` and non-empty prompts; else a clear
    ValueError that names ``name`` and the fix."""
    if dataset is None:
        raise ValueError(f"{name} is required: a datasets.Dataset with the column(s) {list(columns)}, e.g. "
                         f"hf_sentinel.data.load_prompts('harmful:train').")
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} has no {missing} column (columns: {dataset.column_names}); rename the column "
                         f"holding them.")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty.")
    empty = [i for i, p in enumerate(dataset["prompt"]) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"{name} has empty prompts at rows {empty[:5]}; every row needs a non-empty `prompt`.")
    if "label" in columns:
        unknown = sorted({str(x) for x in dataset["label"]} - set(LABELS))
        if unknown:
            raise ValueError(f"{name} has labels {unknown}; `label` must be one of {LABELS}.")
    return dataset


def labelled_prompts(harmful, benign):
    """One dataset of ``harmful`` then ``benign`` prompts with a ``label`` column (``"harmful"`` / ``"benign"``).

    >>> from datasets import Dataset
    >>> data = labelled_prompts(Dataset.from_dict({"prompt": ["a"]}), Dataset.from_dict({"prompt": ["b", "c"]}))
    >>> list(data["label"])
    ['harmful', 'benign', 'benign']
    """
    from datasets import concatenate_datasets

    parts = []
    for label, data in (("harmful", harmful), ("benign", benign)):
        if data is None or len(data) == 0:
            continue
        keep = [c for c in data.column_names if c in ("prompt", "history", "category", "shape", "answer")]
        data = data.select_columns(keep)
        parts.append(data.add_column("label", [label] * len(data)))
    if not parts:
        raise ValueError("Both harmful and benign prompt sets are empty; give at least one prompt.")
    # A column only one side has (benign `history`, harmful `category`) is kept, None in the other side's rows.
    columns = [c for c in ("prompt", "history", "category", "shape", "answer", "label")
               if any(c in p.column_names for p in parts)]
    filled = []
    for part in parts:
        for column in columns:
            if column not in part.column_names:
                part = part.add_column(column, [None] * len(part))
        filled.append(part.select_columns(columns))
    return concatenate_datasets(filled)


def split_by_label(dataset) -> dict:
    """``{"harmful": Dataset, "benign": Dataset}`` from a dataset with a ``label`` column (either may be empty)."""
    return {label: dataset.filter(lambda row, wanted=label: row["label"] == wanted) for label in LABELS}


def completion_example(tokenizer, conversation: list[dict], answer: str, finished: bool) -> dict:
    """``input_ids`` and ``completion_mask`` of one chat turn: the prompt exactly as generation renders it, then the
    answer, then (only for a finished answer) the chat template's end of turn."""
    prompt = render(tokenizer, conversation, prefill=None, chat=True)
    full = tokenizer.apply_chat_template([*conversation, {"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("The chat template renders a conversation with an answer differently from the same "
                         "conversation awaiting one, so the answer cannot be separated for fine-tuning.")
    completion = full[len(prompt):] if finished else answer
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt_ids + completion_ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}


# -------------------------------------------------------------------------------------------------------- judges
def judge_name(judge) -> str:
    return getattr(judge, "__name__", type(judge).__name__)


def checked_scores(scores, expected: int, judge) -> list[float]:
    """``scores`` as floats after checking the judge returned ``expected`` finite ones."""
    scores = [float(s) for s in scores]
    if len(scores) != expected:
        raise ValueError(f"Judge {judge_name(judge)} returned {len(scores)} scores for {expected} answers.")
    if any(math.isnan(s) or math.isinf(s) for s in scores):
        raise ValueError(f"Judge {judge_name(judge)} returned a NaN or infinite score: {scores}.")
    return scores


# --------------------------------------------------------------------------------------------------------- files
def write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` so that a killed run never leaves half a file that a resume would trust."""
    path = Path(path)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text)
    partial.replace(path)


def write_jsonl(path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def fingerprint(value) -> str:
    """A short stable digest of a JSON-able value (settings, data), to tell runs apart."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------------------------------- models
def load_model_and_tokenizer(model, tokenizer=None, role: str = "target", torch_dtype=None, need_chat: bool = True):
    """``(model, tokenizer)`` from a model object + tokenizer, a folder, a Hub id or ``"default"`` / ``None``
    (the embedded SmolLM2). ``torch_dtype`` applies when the model is loaded here; a given model keeps its own."""
    if model is None or isinstance(model, (str, Path)):
        from .evaluation import load_target

        loaded, loaded_tokenizer = load_target(str(model or "default"), torch_dtype=torch_dtype)
        model, tokenizer = loaded, tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError(f"Pass the {role}'s tokenizer (processing_class) with a model object.")
    if need_chat and not tokenizer.chat_template:
        raise ValueError(f"The {role}'s tokenizer has no chat template; hf-sentinel talks to models in chat turns, so "
                         f"use a chat/instruct model (or set tokenizer.chat_template).")
    return model, tokenizer


def base_model_name(model) -> str | None:
    """The Hub id to name as an artifact's base model: the model's ``name_or_path``, except that the embedded
    target's local cache folder stands for its Hub id."""
    from .defaults import DEFAULT_TARGET_NAME, cache_dir

    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not name:
        return None
    embedded = (cache_dir() / DEFAULT_TARGET_NAME.split("/")[-1]).resolve()
    if Path(name).resolve() == embedded:
        return DEFAULT_TARGET_NAME
    return name


# ----------------------------------------------------------------------------------------------- calibration


def calibrate_threshold(benign_scores: list[float], target_false_flag_rate: float,
                        harmful_scores: list[float] | None = None, harmful_quantile: float = 0.1) -> float:
    """The threshold on a score in (0, 1) that fires on harmful requests (the red flag's p(<rf>), the sentinel's
    p(suffix)), chosen on held-out benign (and optionally harmful) scores.

    At most ``target_false_flag_rate`` of ``benign_scores`` reach the threshold. Without harmful scores it sits
    just above the highest benign score that must stay unflagged. With them, when the classes separate, it sits
    halfway, in log-odds, between that benign score and the ``harmful_quantile`` quantile of the harmful scores:
    a small calibration set under-estimates the benign tail, so the margin goes to both sides.

    >>> round(calibrate_threshold([0.01, 0.02, 0.03, 0.5], target_false_flag_rate=0.25), 6)  # 0.5 may be flagged
    0.03
    >>> round(calibrate_threshold([0.01, 0.02, 0.03], 0.0, harmful_scores=[0.97, 0.99]), 3)
    0.5
    """
    if not benign_scores:
        raise ValueError("Calibration needs at least one benign score.")
    if not 0.0 <= target_false_flag_rate < 1.0:
        raise ValueError(f"target_false_flag_rate must lie in [0, 1), got {target_false_flag_rate}.")
    descending = sorted(benign_scores, reverse=True)
    allowed = math.floor(target_false_flag_rate * len(descending) + 1e-9)
    highest_unflagged = descending[allowed] if allowed < len(descending) else 0.0
    just_above = min(math.nextafter(highest_unflagged, 1.0), 1.0 - 1e-7)
    if harmful_scores:
        ascending = sorted(harmful_scores)
        harmful_low = ascending[min(int(harmful_quantile * len(ascending)), len(ascending) - 1)]
        if harmful_low > just_above:
            return _sigmoid((_logit(highest_unflagged) + _logit(harmful_low)) / 2)
    return max(just_above, 1e-7)


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))

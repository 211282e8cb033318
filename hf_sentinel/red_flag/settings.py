"""What a trained red-flag folder says about using it (``red_flag_config.json``), and the checks on those values.

Both the model side (:mod:`.modeling`, which writes the settings next to an adapter) and the decoding side
(:mod:`.processor`, which reads them) import from here, and this module imports neither.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..loading import RED_FLAG_SETTINGS_NAME as SETTINGS_NAME

#: What the processor does once a sequence's red-flag score reaches the threshold.
ACTIONS = ("refuse", "stop", "flag")
#: The answer that replaces a refused one.
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold is a probability of <rf> and must lie in (0, 1), got {threshold!r}.")
    return float(threshold)


def check_action(action: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}.")
    return action


@dataclass
class RedFlagSettings:
    """What a trained red-flag folder says about using it, saved as ``red_flag_config.json``."""

    token: str = field(default="<rf>", metadata={"help": "The red-flag token added to the vocabulary."})
    threshold: float = field(default=0.5, metadata={"help": "Score in (0, 1) at which a sequence is flagged."})
    action: str = field(default="refuse", metadata={"help": f"What happens when the flag fires: one of {ACTIONS}."})
    window: int = field(default=1, metadata={"help": "The score is the mean p(<rf>) over the last `window` steps."})
    refusal_text: str = field(default=DEFAULT_REFUSAL, metadata={"help": "Answer that replaces a refused one."})
    gate: float | None = field(default=None, metadata={
        "help": "In a stack, the other defenses act only on requests whose p(<rf>) before the first answer token "
                "(the request as sent) reaches this; the rest go to the red-flagged target alone. None: every "
                "request passes through every layer. Chosen on validation (examples/red_flag_gate.py)."})
    answers_from_original: bool = field(default=False, metadata={
        "help": "The original target writes every answer and the red-flag model only reads it: p(<rf>) comes from a "
                "second forward pass (the red-flag copy over the request as sent and the tokens generated so far), "
                "so an answer the flag does not fire on is the target's own, token for token. It costs that pass "
                "(about one more decoding per token). False: the red-flag model answers and reads at once."})
    pad_to_multiple_of: int = field(default=64, metadata={
        "help": "The vocabulary (with <rf>) is padded to a multiple of this many rows, for fast matrix products."})
    base_embedding_rows: int = field(default=0, metadata={
        "help": "Embedding rows of the model the adapter was trained on, before <rf> was added (a loading check)."})
    base_vocabulary: str = field(default="", metadata={
        "help": "Fingerprint of that model's tokenizer vocabulary without <rf> (a loading check)."})
    base_model: str = field(default="", metadata={"help": "Name or path of the model the adapter was trained on."})

    def __post_init__(self):
        check_threshold(self.threshold)
        check_action(self.action)
        if self.window < 1:
            raise ValueError(f"window must be a positive number of steps, got {self.window}.")
        if not isinstance(self.answers_from_original, bool):
            raise ValueError(f"answers_from_original must be true or false, got {self.answers_from_original!r}.")
        if self.gate is not None:
            try:
                self.gate = check_threshold(self.gate)
            except ValueError:
                raise ValueError(f"gate is a probability of <rf> and must lie in (0, 1), or be None (no gate), got "
                                 f"{self.gate!r}.") from None

    def save_pretrained(self, path) -> Path:
        target = Path(path) / SETTINGS_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n")
        return target

    @classmethod
    def from_pretrained(cls, path, **overrides) -> RedFlagSettings:
        """Read ``red_flag_config.json`` from a folder; ``overrides`` replace saved values (e.g. ``threshold``)."""
        folder = Path(path)
        source = folder / SETTINGS_NAME
        if not source.is_file():
            raise FileNotFoundError(
                f"{folder} is not a red-flag folder: it has no {SETTINGS_NAME}. Give the folder written by "
                f"RedFlagTrainer.save_model / `hf-sentinel train red-flag` (or 'default' for the shipped one)."
            )
        saved = json.loads(source.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"Unknown red-flag setting(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**{**{k: v for k, v in saved.items() if k in known}, **overrides})

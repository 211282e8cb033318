"""Red-flag token: the model marks its own harmful answers with a special token `<rf>` as it writes them.

- :class:`RedFlagConfig` / :class:`RedFlagTrainer`: train LoRA + the `<rf>` embedding (a ``transformers.Trainer``;
  ``save_model`` writes the artifact and its card, ``push_to_hub`` uploads it).
- :class:`RedFlagLogitsProcessor`: read p(`<rf>`) at every ``generate()`` step; refuse, stop or flag
  (:class:`RequestAloneReader`: read it from the request as sent, behind defenses that change the context).
- :func:`load_red_flag_model`: apply a trained folder to its target; :class:`RedFlagDefense`: the same as a
  defense for ``evaluate()``, the CLI (``--defense red-flag:PATH``) and ``hf_sentinel.pipeline(red_flag=PATH)``;
  :func:`add_red_flag_adapter`: the folder as one more, unmerged adapter of a PEFT model over the target's weights
  (stacked with a LoRA sentinel, one copy of them serves both).
- :class:`RedFlagJudge`: the flag's verdict on given answers, read teacher-forced (``load_judge("red-flag:PATH")``):
  the harm of an answer as the red flag reads it, for MART's safety judge and the sentinel game's judges.
- :mod:`hf_sentinel.red_flag.attack` (a command, so not imported here): ``sft_attack``, an attacker's short LoRA
  fine-tuning of the red-flag model on harmful answers (:meth:`RedFlagDefense.with_model` guards with its result);
  ``python -m hf_sentinel.red_flag.attack`` measures how much of the flag survives it.
"""

from ..training import calibrate_threshold
from .calibration import red_flag_scores
from .config import RedFlagConfig
from .defense import RedFlagDefense
from .judge import RedFlagJudge
from .modeling import add_red_flag_adapter, add_red_flag_token, load_red_flag_model
from .processor import RedFlagLogitsProcessor, RequestAloneReader
from .settings import RedFlagSettings
from .trainer import RedFlagTrainer

__all__ = [
    "RedFlagConfig", "RedFlagTrainer", "RedFlagLogitsProcessor", "RedFlagDefense", "RedFlagJudge", "RedFlagSettings",
    "RequestAloneReader", "add_red_flag_adapter", "add_red_flag_token", "load_red_flag_model", "calibrate_threshold",
    "red_flag_scores",
]

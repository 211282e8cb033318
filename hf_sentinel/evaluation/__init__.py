"""Evaluate a (guarded) target on a prompt set: generate, judge, summarise.

The result is a plain dict, written as JSON by the CLI::

    {"summary": {"n", "attack_success_rate", "mean_score", "tokens_per_second", "judge", "defense",
                 "target", "prompts", "settings", "by_category", "by_shape", "capability"},
     "records": [{"prompt", "response", "score", "verdict", ...}, ...]}

``attack_success_rate`` is the share of answers the judge counts as harmful/complied; on a benign prompt
set that share is the answer rate. A set with known numeric answers (an ``answer`` column, e.g. the benign pool's
word problems) also gets ``capability``, the share answered right (:mod:`hf_sentinel.evaluation.capability`), and
each of its records with an answer ``answer`` and ``correct``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..defenses import Defense, describe
from ..generation import GenerationSettings, generate, to_conversation
from ..loading import artifact_kind, describe_kind, how_to_use, looks_like_path
from .capability import answers_match, known_answers, score_answers
from .report import compare_table, plot_comparison, summary_table

if TYPE_CHECKING:  # annotations only: `hf-sentinel eval --compare` and the reports need neither datasets nor a judge
    from datasets import Dataset

    from ..judges import Judge

_GROUPS = ("category", "shape")
_TARGET_FORMS = ("Give the folder of a saved model (config.json + safetensors weights), a Hub model id (org/name), "
                 "'default' for the embedded SmolLM2, or the http(s) URL of an OpenAI-compatible endpoint.")


def check_target(spec: str) -> None:
    """Fail fast, before any model loads, on a target that cannot load: a path that is not a folder (a string
    that looks like a path, see :func:`hf_sentinel.loading.looks_like_path`, is never tried as a Hub id), a
    folder that holds no model (e.g. an adapter), or a Hub id that is not in the local cache while offline."""
    if spec == "default" or spec.startswith(("http://", "https://")):
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return
        kind = artifact_kind(path)
        if kind is not None:
            raise ValueError(f"Target {spec}: {path} is {describe_kind(kind)}, not a model; give the model it was "
                             f"trained for as the target. {how_to_use(kind, spec)}")
        raise FileNotFoundError(f"Target {spec}: {path} holds no model (no config.json). {_TARGET_FORMS}")
    if looks_like_path(spec):
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"Target {spec}: {path.absolute()} {state}. {_TARGET_FORMS}")
    from ..hub_access import hub_reachable

    if not hub_reachable() and not _in_hub_cache(spec):
        raise FileNotFoundError(f"Target {spec}: neither an existing folder nor a Hub model id reachable offline (the "
                                f"Hub is not reachable, and {spec} is not in the local Hub cache). {_TARGET_FORMS}")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except HFValidationError:  # not even a well-formed repo id
        return False


def load_target(spec: str = "default", torch_dtype=None):
    """``(model, tokenizer)`` for ``default`` (the embedded SmolLM2), a local folder or a Hub id; for the URL
    of an OpenAI-compatible endpoint, ``(RemoteChatTarget, None)``. Checks :func:`check_target` first.

    ``torch_dtype``: a ``torch.dtype``, its name (``"bfloat16"``) or ``"auto"``; default float32 for the embedded
    target (its dequantised GGUF) and the checkpoint's own dtype (``"auto"``) otherwise."""
    check_target(spec)
    if spec.startswith(("http://", "https://")):
        from ..remote import RemoteChatTarget

        return RemoteChatTarget(spec), None
    if spec == "default":
        from ..defaults import load_default_target

        return load_default_target(dtype=_dtype(torch_dtype) if torch_dtype not in (None, "auto") else None)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec).expanduser()
    source = str(path) if path.is_dir() else spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True,
                                                     dtype=_dtype(torch_dtype) if torch_dtype else "auto")
    except OSError as error:  # files missing in the folder; a Hub id the Hub does not have or this account cannot read
        where = "the folder is incomplete" if path.is_dir() else "not a folder, and loading it from the Hub failed"
        raise FileNotFoundError(f"Target {spec}: {where}: {error} {_TARGET_FORMS}") from error
    return model.eval(), tokenizer


def _dtype(value):
    import torch

    if value == "auto" or isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"torch_dtype={value!r} is not a torch dtype; give e.g. 'bfloat16', 'float16' or 'float32'.")
    return dtype


def evaluate(model, tokenizer, prompts: Dataset, judge: Judge, defenses: list[Defense] = (),
             settings: GenerationSettings | None = None, chat: bool = True, target_name: str | None = None,
             prompts_name: str | None = None, progress: bool = True) -> dict:
    """Generate an answer to every prompt under ``defenses``, judge it, and summarise.

    Example (tiny random model; the embedded target works the same way)::

        >>> from datasets import Dataset
        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.judges import RefusalJudge
        >>> model, tokenizer = tiny_model()
        >>> prompts = Dataset.from_dict({"prompt": ["Hello there", "How do I bake bread?"]})
        >>> result = evaluate(model, tokenizer, prompts, RefusalJudge(), settings=GenerationSettings(max_new_tokens=4),
        ...                   progress=False)
        >>> result["summary"]["n"], sorted(result["records"][0])
        (2, ['prompt', 'response', 'score', 'verdict'])
    """
    if len(prompts) == 0:
        raise ValueError(f"The prompt set{f' {prompts_name}' if prompts_name else ''} is empty: there is nothing to "
                         f"evaluate. Give a set or file with at least one prompt.")
    settings = settings or GenerationSettings()
    answers = known_answers(prompts)  # before generating: a set with text answers fails here
    histories = prompts["history"] if "history" in prompts.column_names else [None] * len(prompts)
    conversations = [to_conversation(p, h) for p, h in zip(prompts["prompt"], histories)]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(conversations), desc="generating", unit="prompt")
    try:
        generation = generate(model, tokenizer, conversations, settings, defenses, chat=chat,
                              on_batch=bar.update if bar else None)
    finally:  # end the bar's line, so that an error message starts on a line of its own
        if bar:
            bar.close()

    scores = judge(prompts["prompt"], generation.responses)
    if len(scores) != len(generation.responses):
        raise ValueError(f"Judge {judge.__name__} returned {len(scores)} scores for {len(generation.responses)} "
                         f"answers.")
    records = [{"prompt": p, "response": r, "score": float(s), "verdict": judge.verdict(s), **extra}
               for p, r, s, extra in zip(prompts["prompt"], generation.responses, scores, generation.extras)]
    if settings.prefill:
        for record in records:
            record["prefill"] = settings.prefill

    summary = {
        "n": len(records),
        "attack_success_rate": _rate(judge, scores),
        "mean_score": sum(scores) / len(scores),
        "tokens_per_second": generation.new_tokens / generation.seconds if generation.seconds else 0.0,
        "judge": judge.__name__,
        "defense": describe(list(defenses)),
        "target": target_name or getattr(model, "name_or_path", type(model).__name__),
        "prompts": prompts_name,
        "settings": asdict(settings),
    }
    for column in _GROUPS:
        if column in prompts.column_names:
            groups = defaultdict(list)
            for key, score in zip(prompts[column], scores):
                groups[key].append(score)
            summary[f"by_{column}"] = {key: _rate(judge, group) for key, group in sorted(groups.items())}
    if answers:
        summary["capability"] = score_answers(records, answers)
    return {"summary": summary, "records": records}


def _rate(judge: Judge, scores) -> float:
    return sum(judge.is_harmful(s) for s in scores) / len(scores)


__all__ = ["evaluate", "check_target", "load_target", "summary_table", "compare_table", "plot_comparison",
           "answers_match"]

"""Evaluate a (guarded) target on a prompt set: generate, judge, summarise.

The result is a plain dict, written as JSON by the CLI::

    {"summary": {"n", "attack_success_rate", "mean_score", "tokens_per_second", "judge", "defense",
                 "target", "prompts", "settings", "by_category", "by_shape"},
     "records": [{"prompt", "response", "score", "verdict", ...}, ...]}

``attack_success_rate`` is the share of answers the judge counts as harmful/complied; on a benign prompt
set that share is the answer rate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict

from datasets import Dataset

from ..defenses import Defense, describe
from ..generation import GenerationSettings, generate, to_conversation
from ..judges import Judge
from .report import compare_table, plot_comparison, summary_table

_GROUPS = ("category", "shape")


def load_target(spec: str = "default"):
    """``(model, tokenizer)`` for ``default`` (the embedded SmolLM2), a local folder or a Hub id; for the URL
    of an OpenAI-compatible endpoint, ``(RemoteChatTarget, None)``."""
    if spec.startswith(("http://", "https://")):
        from ..remote import RemoteChatTarget

        return RemoteChatTarget(spec), None
    if spec == "default":
        from ..defaults import load_default_target

        return load_default_target()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec)
    model = AutoModelForCausalLM.from_pretrained(spec, use_safetensors=True)
    return model.eval(), tokenizer


def evaluate(model, tokenizer, prompts: Dataset, judge: Judge, defenses: list[Defense] = (),
             settings: GenerationSettings | None = None, chat: bool = True, target_name: str | None = None,
             prompts_name: str | None = None, progress: bool = True) -> dict:
    """Generate an answer to every prompt under ``defenses``, judge it, and summarise.

    Example (tiny random model; the embedded target works the same way)::

        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.judges import RefusalJudge
        >>> model, tokenizer = tiny_model()
        >>> prompts = Dataset.from_dict({"prompt": ["Hello there", "How do I bake bread?"]})
        >>> result = evaluate(model, tokenizer, prompts, RefusalJudge(), settings=GenerationSettings(max_new_tokens=4),
        ...                   progress=False)
        >>> result["summary"]["n"], sorted(result["records"][0])
        (2, ['prompt', 'response', 'score', 'verdict'])
    """
    settings = settings or GenerationSettings()
    histories = prompts["history"] if "history" in prompts.column_names else [None] * len(prompts)
    conversations = [to_conversation(p, h) for p, h in zip(prompts["prompt"], histories)]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(conversations), desc="generating", unit="prompt")
    generation = generate(model, tokenizer, conversations, settings, defenses, chat=chat,
                          on_batch=bar.update if bar else None)
    if bar:
        bar.close()

    scores = judge(prompts["prompt"], generation.responses)
    if len(scores) != len(generation.responses):
        raise ValueError(f"Judge {judge.__name__} returned {len(scores)} scores for {len(generation.responses)} answers.")
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
    return {"summary": summary, "records": records}


def _rate(judge: Judge, scores) -> float:
    return sum(judge.is_harmful(s) for s in scores) / len(scores)


__all__ = ["evaluate", "load_target", "summary_table", "compare_table", "plot_comparison"]

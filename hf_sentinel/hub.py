"""Model cards for every artifact hf-sentinel writes (Hub metadata via huggingface_hub's ModelCardData)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

LIBRARY_NAME = "hf-sentinel"


def write_model_card(folder, *, title: str, summary: str, usage: str, base_model: str | None, tags: list[str],
                     datasets: list[str] | None = None, eval_results: list | None = None,
                     pipeline_tag: str = "text-generation", extra: str = "") -> Path:
    """Write ``README.md`` with YAML metadata (base_model, library_name, tags, datasets, model-index) and a body."""
    data = ModelCardData(
        base_model=base_model, library_name=LIBRARY_NAME, pipeline_tag=pipeline_tag,
        tags=[LIBRARY_NAME, "safety", *tags], datasets=datasets, eval_results=eval_results,
        model_name=title if eval_results else None,
    )
    body = f"# {title}\n\n{summary}\n\n## Usage\n\n```python\n{usage.strip()}\n```\n{extra}"
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    path = Path(folder) / "README.md"
    card.save(path)
    return path


def write_sentinel_card(folder, config, eval_results: list | None = None, extra: str = "") -> Path:
    target = config.target_name_or_path or config.target_endpoint
    return write_model_card(
        folder,
        title="Sentinel prefix model",
        summary=(f"A sentinel that appends at most {config.max_sentinel_tokens} tokens to each user prompt so that "
                 f"the target (`{target}`) answers safely, without changing the target "
                 f"([Tiny Refinements Elicit Resilience](https://arxiv.org/abs/2405.12604)). "
                 f"Kind: {config.sentinel_kind}."),
        usage=("import hf_sentinel\n"
               f"pipe = hf_sentinel.pipeline(\"text-generation\", model={target!r}, sentinel=\"PATH_OR_REPO_ID\")\n"
               "pipe([{\"role\": \"user\", \"content\": \"How do I bake bread?\"}], max_new_tokens=64)"),
        base_model=config.target_name_or_path, tags=["sentinel", "peft", "lora"] if config.sentinel_kind == "lora"
        else ["sentinel"], eval_results=eval_results, extra=extra,
    )

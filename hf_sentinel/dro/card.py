"""The model card of a trained DRO prompt: Hub metadata (base model, tags, eval results) and what was measured."""

from __future__ import annotations

from pathlib import Path

from ..hub import write_model_card
from .config import DROConfig
from .prompt import DROSafetyPrompt


def eval_results_for_card(results: dict) -> list:
    """``huggingface_hub.EvalResult`` entries (model-index) from ``{prompt set: evaluate() result}``."""
    from huggingface_hub import EvalResult

    entries = []
    for name, result in results.items():
        summary = result["summary"]
        benign = name.startswith("benign")
        entries.append(EvalResult(
            task_type="text-generation", dataset_type=f"hf-sentinel/{name.split(':')[0]}", dataset_name=name,
            dataset_split=name.partition(":")[2] or None,
            metric_type="answer_rate" if benign else "attack_success_rate",
            metric_name="benign requests answered" if benign else "attack success rate (refusal judge)",
            metric_value=round(summary["attack_success_rate"], 4),
        ))
    return entries


def evaluation_table(results: dict) -> str:
    """A Markdown table: prompt set, n, rate (attack success / answered), and the rate per benign shape."""
    lines = ["| prompt set | n | rate | per shape |", "|---|---|---|---|"]
    for name, result in results.items():
        summary = result["summary"]
        kind = "answered" if name.startswith("benign") else "attack success"
        shapes = ", ".join(f"{k} {v:.0%}" for k, v in summary.get("by_shape", {}).items()) or "-"
        lines.append(f"| {name} | {summary['n']} | {kind} {summary['attack_success_rate']:.1%} | {shapes} |")
    return "\n".join(lines)


def write_dro_card(folder: str | Path, prompt: DROSafetyPrompt, args: DROConfig, training: dict,
                   eval_results: dict | None = None) -> Path:
    base = training.get("base_model") or prompt.peft_config.base_model_name_or_path
    estimate = training.get("estimate", {})
    refusal = estimate.get("refusal_head", {})
    harmfulness = estimate.get("harmfulness_head", {})
    schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    steps = f" ({training['steps']} steps)" if training.get("steps") else ""
    weights = (f"w_r={args.refusal_loss_weight}, w_h={args.harmfulness_loss_weight}, "
               f"w_U={args.subspace_loss_weight}, w_o={args.output_loss_weight}")
    if args.benign_output_weight != 1:
        weights += f" (harmless answers' tokens ×{args.benign_output_weight:g})"
    lines = [
        "",
        "## Training",
        "",
        f"- Variant: **{args.variant}** (see hf-sentinel's `docs/dro.md`); initial prompt: \"{args.safety_prompt}\"",
        f"- Queries: {training.get('harmful_queries')} harmful + {training.get('harmless_queries')} harmless",
        f"- Conditions of the collection stage: {', '.join(f'`{c}`' for c in args.conditions)}; "
        f"{args.num_samples if args.temperature else 1} answer(s) per query and condition "
        f"(temperature {args.temperature}, {args.target_max_new_tokens} tokens)",
        f"- Loss weights: {weights}; AdamW lr {args.learning_rate} ({schedule}), batch "
        f"{args.per_device_train_batch_size} per device, {args.num_train_epochs:g} epochs{steps}, "
        f"clip {args.max_grad_norm}",
        f"- Seconds per stage: {training.get('stage_seconds')}",
    ]
    if estimate:
        lines += [
            f"- PCA ({args.pca_dim} dims) explains {sum(estimate['explained_variance_ratio']):.1%} of the variance",
            f"- Refusal head, cross-validated BCE {refusal['cv_loss']:.4f} vs constant predictor "
            f"{refusal['constant_loss']:.4f} ({refusal['improvement']:+.1%}); "
            f"{estimate['refused_answers']} of {estimate['answers']} collected answers were refusals",
            f"- Harmfulness head, cross-validated accuracy {harmfulness['cv_accuracy']:.1%}",
            f"- {estimate['refusal_capability']['message']}",
        ]
    if training.get("final_losses"):
        lines.append("- Final step losses: " + ", ".join(f"{k} {v:.4f}" for k, v in training["final_losses"].items()))
    if eval_results:
        lines += ["", "## Evaluation", "",
                  "Greedy decoding, hf-sentinel's refusal judge, prompts never used in training:", "",
                  evaluation_table(eval_results)]
    summary = (
        f"A soft safety prompt ({prompt.num_virtual_tokens} virtual tokens) for `{base}`, trained with "
        f"Directed Representation Optimization ([On Prompt-Driven Safeguarding for LLMs]"
        f"(https://arxiv.org/abs/2401.18018)): prepended to every input as embeddings, it moves harmful queries "
        f"towards refusal and harmless ones away from it. Stored as a PEFT prompt-tuning adapter."
    )
    card_results = eval_results_for_card(eval_results) if eval_results else None
    return write_model_card(folder, kind="dro", title="DRO soft safety prompt", summary=summary, base_model=base,
                            tags=["dro", "peft", "prompt-tuning", "soft-prompt"], eval_results=card_results,
                            extra="\n".join(lines) + "\n")

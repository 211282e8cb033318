"""Model cards of MART's round adapters (Hub metadata through :func:`hf_sentinel.hub.write_model_card`)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult

from ..hub import write_model_card
from .report import change_summary, report_table

PAPER = "[MART: Improving LLM Safety with Multi-round Automatic Red-Teaming](https://arxiv.org/abs/2311.07689)"


def write_mart_card(folder, role: str, rounds: list[dict], args, base_model: str | None) -> Path:
    """``README.md`` for one round's ``target`` or ``adversary`` LoRA adapter, with the per-round table so far."""
    last = rounds[-1]
    base = base_model or "BASE_MODEL"
    table = f"\n## MART rounds so far\n\n{report_table(rounds)}\n"
    if len(rounds) > 1:
        table += f"\n{change_summary(rounds)}\n"
    subset = f"{args.eval_limit} shuffled " if args.eval_limit else ""
    benign = "all" if args.benign_prompts_per_round is None else args.benign_prompts_per_round
    table += (f"\nViolation rate: share of {subset}`{args.eval_harmful}` prompts answered (judge: "
              f"{args.safety_judge}); benign answer rate: share of {subset}`{args.eval_benign}` prompts not refused; "
              f"greedy decoding, {args.max_new_tokens} new tokens. Settings: {args.rounds} rounds, "
              f"{args.prompts_per_round} adversarial and {benign} benign prompts per round, "
              f"K={args.samples_per_prompt}, context distillation {args.context_distillation or 'off'}.\n")
    if role == "target":
        summary = (f"The target adapter after round {last['round']} of multi-round automatic red-teaming ({PAPER}): "
                   f"`{base}` fine-tuned (LoRA, TRL SFT) on its own safe and helpful answers to prompts written by "
                   f"an adversarial model, selected by a safety and a helpfulness judge.")
        results = [EvalResult(task_type="text-generation", dataset_type="hf-sentinel", dataset_name=args.eval_harmful,
                              metric_type="violation_rate", metric_value=round(last["violation_rate"], 4)),
                   EvalResult(task_type="text-generation", dataset_type="hf-sentinel", dataset_name=args.eval_benign,
                              metric_type="benign_answer_rate", metric_value=round(last["benign_answer_rate"], 4))]
        title = "MART target adapter"
    else:
        summary = (f"The adversary adapter after round {last['round']} of MART ({PAPER}): `{base}` fine-tuned to write, "
                   f"from a one-shot instruction, prompts that made the target violate its safety policy.")
        results, title = None, "MART adversary adapter"
    return write_model_card(folder, kind="mart-round", title=title, summary=summary, base_model=base_model,
                            tags=["mart", "red-teaming", "peft", "lora", "trl", "sft"],
                            datasets=[args.seed_prompts, args.benign_prompts], eval_results=results, extra=table,
                            role=role, adversary_template=args.adversary_template)

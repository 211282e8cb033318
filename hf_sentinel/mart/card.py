"""Model cards of MART's round adapters (Hub metadata through :func:`hf_sentinel.hub.write_model_card`)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult

from ..hub import write_model_card
from .report import change_summary, report_table

PAPER = "[MART: Improving LLM Safety with Multi-round Automatic Red-Teaming](https://arxiv.org/abs/2311.07689)"


def write_mart_card(folder, role: str, rounds: list[dict], args, base_model: str | None,
                    eval_names: dict | None = None) -> Path:
    """``README.md`` for one round's ``target`` or ``red_team`` LoRA adapter, with the per-round table so far.
    ``eval_names``: what the eval ``{"harmful": ..., "benign": ...}`` sets are called (default: the config's
    ``eval_harmful`` / ``eval_benign``)."""
    config_sets = {"harmful": args.eval_harmful, "benign": args.eval_benign}
    eval_names = eval_names or config_sets
    last = rounds[-1]
    base = base_model or "BASE_MODEL"
    table = f"\n## MART rounds so far\n\n{report_table(rounds)}\n"
    if len(rounds) > 1:
        table += f"\n{change_summary(rounds)}\n"
    # eval_limit cuts only the config's sets; a trainer given an eval_dataset evaluates all of it
    subset = f"{args.eval_limit} shuffled " if args.eval_limit and eval_names == config_sets else ""
    benign = "all" if args.benign_prompts_per_round is None else args.benign_prompts_per_round
    seeds = f" + {args.seed_prompts_per_round} seed" if args.seed_prompts_per_round else ""
    distilled = "every round" if args.context_distillation_rounds == "all" else "round 1"
    table += (f"\nEvaluated after every round on the eval sets: violation rate, the share of {subset}"
              f"`{eval_names['harmful']}` prompts answered (safety judge: {args.safety_judge}); benign answer rate, "
              f"the share of {subset}`{eval_names['benign']}` prompts not refused (judge: {args.answer_judge}); "
              f"greedy decoding, {args.target_max_new_tokens} new tokens. Settings: {args.rounds} rounds, "
              f"{args.prompts_per_round} red-team{seeds} and {benign} benign prompts per round, "
              f"K={args.samples_per_prompt}, context distillation {args.context_distillation or 'off'} "
              f"({distilled}).\n")
    if role == "target":
        original = " (benign prompts: the original target answered too)" if args.benign_answers_from_original else ""
        summary = (f"The target adapter after round {last['round']} of multi-round automatic red-teaming ({PAPER}): "
                   f"`{base}` fine-tuned (LoRA, TRL SFT) on its own safe and helpful answers to prompts written by "
                   f"a red-team model, selected by a safety and a helpfulness judge{original}.")
        results = [EvalResult(task_type="text-generation", dataset_type="hf-sentinel", dataset_name=eval_names[label],
                              metric_type=metric, metric_value=round(last[metric], 4))
                   for label, metric in (("harmful", "violation_rate"), ("benign", "benign_answer_rate"))]
        title = "MART target adapter"
    else:
        summary = (f"The red-team adapter after round {last['round']} of MART ({PAPER}): `{base}` fine-tuned to "
                   f"write, from a one-shot instruction, prompts that made the target violate its safety policy.")
        results, title = None, "MART red-team adapter"
    return write_model_card(folder, kind="mart-round", title=title, summary=summary, base_model=base_model,
                            tags=["mart", "red-teaming", "peft", "lora", "trl", "sft"], eval_results=results,
                            extra=table, role=role, red_team_template=args.red_team_template)

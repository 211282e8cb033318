"""The model card (README.md) of a trained red-flag folder: Hub metadata, usage, training facts, measured results."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from .settings import RedFlagSettings

RESULTS_START = "<!-- red-flag-results:start -->"
RESULTS_END = "<!-- red-flag-results:end -->"

_SUMMARY = """A LoRA adapter (on {lora_layers}) plus one new embedding row for the special token `{token}`.
The model puts probability on `{token}` where its own answer turns harmful, so at every decoding step p(`{token}`)
is a harmfulness score, read by `hf_sentinel.red_flag.RedFlagLogitsProcessor`. The adapter is trained to leave
every other next-token distribution unchanged (KL to the frozen model), so answers to benign requests stay what
they were. Method: "A generative approach to LLM harmfulness detection with special red flag tokens";
implementation: the `hf-sentinel` package (`hf_sentinel/red_flag/`).

Saved settings (`red_flag_config.json`): threshold **{threshold}**, action `{action}`, smoothing window {window}
step(s); the vocabulary is padded to a multiple of {pad} rows and the padding rows are suppressed.{gate}"""

_GATE = """ In a stack, the other
defenses act only on requests whose p(`{token}`) before the first answer token reaches the gate **{gate}**; the rest
are answered by the red-flagged target alone."""

_LIMITATIONS = """The flag is a classifier learned from a few hundred conversations: it can miss harmful answers
unlike its training data and can fire on benign requests that look risky. It offers no protection against anyone
who controls the weights or the decoding loop (the processor can simply be left out)."""


_NOT_EVALUATED = ("Our own test split not evaluated yet: `python examples/red_flag_evaluate.py --artifact FOLDER "
                  "--update-card` writes it here (greedy, sampled, pre-filled).")


def write_model_card(path, settings: RedFlagSettings, training: dict | None = None,
                     results: list[dict] | None = None) -> Path:
    """Write ``README.md`` in ``path``; ``results`` rows come from :func:`results_from_evaluations`."""
    from ..hub import write_model_card as write_card

    training = training or {}
    base_model = settings.base_model or "the base model"
    results_text = results_table(results) if results else _NOT_EVALUATED
    extra = (f"\n## Training\n\n{_training_text(training)}\n\n## Results\n\n{RESULTS_START}\n{results_text}\n"
             f"{RESULTS_END}\n\n## Limitations\n\n{_LIMITATIONS}\n")
    return write_card(
        path, kind="red-flag", title=f"Red-flag token adapter for {base_model}",
        summary=_SUMMARY.format(lora_layers=_lora_layers(training), token=settings.token,
                                threshold=f"{settings.threshold:.4g}", action=settings.action, window=settings.window,
                                pad=settings.pad_to_multiple_of,
                                gate="" if settings.gate is None else _GATE.format(token=settings.token,
                                                                                   gate=f"{settings.gate:.4g}")),
        base_model=settings.base_model or None,
        tags=["red-flag-token", "peft", "lora"], datasets=["hf-sentinel/harmful", "hf-sentinel/benign"],
        eval_results=_eval_results(results) if results else None, extra=extra)


def update_model_card_results(path, results: list[dict]) -> Path:
    """Replace the results section and the ``eval_results`` metadata of an existing card."""
    target = Path(path) / "README.md"
    card = ModelCard.load(target)
    card.data.eval_results = _eval_results(results)
    # model-index needs a model name; a card first written without results has none yet: use its title.
    card.data.model_name = card.data.model_name or card.text.lstrip().splitlines()[0].lstrip("# ").strip()
    before, _, rest = card.text.partition(RESULTS_START)
    _, _, after = rest.partition(RESULTS_END)
    if not rest:
        raise ValueError(f"{target} has no results section ({RESULTS_START} ... {RESULTS_END}); rewrite the card "
                         f"with write_model_card.")
    card.text = f"{before}{RESULTS_START}\n{results_table(results)}\n{RESULTS_END}{after}"
    card.save(target)
    return target


def results_from_evaluations(evaluations: list[tuple[str, str, dict]]) -> list[dict]:
    """Rows ``{"decoding", "prompts", "defense", "rate", "by_shape", "n"}`` from ``(decoding, defense, eval JSON)``."""
    rows = []
    for decoding, defense, result in evaluations:
        summary = result["summary"]
        rows.append({"decoding": decoding, "prompts": summary["prompts"], "defense": defense, "n": summary["n"],
                     "rate": summary["attack_success_rate"], "by_shape": summary.get("by_shape", {})})
    return rows


def results_table(results: list[dict]) -> str:
    """A markdown table: per decoding and defense, harmful ASR and benign answer rate (overall and per shape)."""
    shapes = sorted({shape for row in results for shape in row["by_shape"]})
    header = ["decoding", "defense", "harmful ASR ↓", "benign answered ↑", *shapes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = list(dict.fromkeys((row["decoding"], row["defense"]) for row in results))
    for decoding, defense in keys:
        rows = [r for r in results if (r["decoding"], r["defense"]) == (decoding, defense)]
        harmful = [r for r in rows if r["prompts"].startswith("harmful")]
        benign = [r for r in rows if r["prompts"].startswith("benign")]
        cells = [decoding, f"`{defense}`", _percent(harmful[0]) if harmful else "–",
                 _percent(benign[0]) if benign else "–"]
        cells += [f"{benign[0]['by_shape'][s]:.0%}" if benign and s in benign[0]["by_shape"] else "–" for s in shapes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(row: dict) -> str:
    return f"{row['rate']:.1%} (n={row['n']})"


def _eval_results(results: list[dict]) -> list[EvalResult]:
    out = []
    for row in results:
        harmful = row["prompts"].startswith("harmful")
        out.append(EvalResult(
            task_type="text-generation", dataset_type=f"hf-sentinel/{row['prompts'].split(':')[0]}",
            dataset_name=row["prompts"], dataset_split=row["prompts"].partition(":")[2] or None,
            metric_type="attack_success_rate" if harmful else "answer_rate",
            metric_name=f"{'attack success rate' if harmful else 'benign answer rate'} "
                        f"({row['decoding']}, {row['defense']})",
            metric_value=round(row["rate"], 4), metric_config=row["decoding"]))
    return out


def _training_text(training: dict) -> str:
    if not training:
        return "See `training_args.json`."
    lines = []
    if training.get("command"):
        lines.append(f"Command: `{training['command']}`\n")
    lines.append(f"- Conversations: {training.get('conversations')} ({training.get('harmful')} harmful, "
                 f"{training.get('benign')} benign), answers generated by the base model itself; "
                 f"steps: {training.get('steps')}")
    lines.append(f"- LoRA rank {training.get('lora_rank')} on {_lora_layers(training)}, "
                 f"learning rate {training.get('learning_rate')}, loss weights {json.dumps(training.get('weights'))}")
    if training.get("timings_s"):
        lines.append(f"- Wall-clock seconds per phase: {json.dumps(training['timings_s'])}"
                     + (f" on {training['hardware']}" if training.get("hardware") else ""))
    calibration = training.get("calibration") or {}
    if calibration:
        lines.append(f"- Calibration on held-out conversations (never trained on): threshold "
                     f"{calibration['threshold']:.4g} for a target false-flag rate of "
                     f"{calibration['target_false_flag_rate']:.0%}; flagged {calibration['benign_flagged']}/"
                     f"{calibration['benign_answers']} benign and {calibration['harmful_flagged']}/"
                     f"{calibration['harmful_answers']} harmful answers")
    return "\n".join(lines)


def _lora_layers(training: dict) -> str:
    """Which layers the adapter covers, from a training summary. Runs before the shared LoRA fields wrote the
    count as ``adapted_layers`` (the shipped artifact's ``training_summary.json``)."""
    layers = training.get("lora_layers", training.get("adapted_layers"))
    return "every layer" if layers == 0 else "the top layers" if layers is None else f"the top {layers} layers"

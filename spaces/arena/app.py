"""Arena Space: pick any combination of defenses, run a small red-team batch from hf-sentinel's held-out prompt sets,
and watch the attack-success table and bar chart fill in, one defense at a time.

Each chosen defense answers N harmful requests (``harmful:test``: attack success = share answered, lower is better)
and N benign ones (``benign:test``: share answered, higher is better), greedy, judged by hf-sentinel's refusal judge.
A defense that cannot be loaded (e.g. an artifact not trained yet) is reported and skipped; the others still run.

    python spaces/arena/app.py                                 # every defense, embedded SmolLM2
    python spaces/arena/app.py --defense none --defense suffix:default --max-new-tokens 24 --port 7864

API: ``run_batch(defenses, prompts_per_set) -> (table, bar chart PNG, status)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from hf_sentinel.data import load_prompts
from hf_sentinel.defenses import import_methods
from hf_sentinel.evaluation import evaluate, plot_comparison
from hf_sentinel.generation import GenerationSettings
from hf_sentinel.judges import RefusalJudge
from hf_sentinel.spaces import ModelStore, check_settings, launch, space_parser

DEFENSE_CHOICES = ("none", "system-prompt:default", "suffix:default", "sentinel:default", "red-flag:default",
                   "dro:default", "mart:default")
PROMPT_SETS = ("harmful:test", "benign:test")
COLUMNS = ["defense", "harmful: attack success ↓", "benign: answered ↑", "prompts per set", "status"]


def build_demo(args) -> gr.Blocks:
    import_methods(args.defense)  # now, not in the first batch
    store = ModelStore(args.target)
    judge = RefusalJudge()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)

    def run_batch(chosen, prompts_per_set):
        chosen = [spec for spec in (chosen or []) if spec]
        if not chosen:
            raise gr.Error("Pick at least one defense.", title="Nothing to run")
        unknown = [spec for spec in chosen if spec not in args.defense]
        if unknown:
            raise gr.Error(f"Unknown defense(s) {unknown}; this arena offers {list(args.defense)}.")
        count = int(prompts_per_set)  # the slider itself refuses values outside 1..--max-prompts
        model, tokenizer = store.target()
        prompt_sets = {name: load_prompts(name, limit=count) for name in PROMPT_SETS}
        rows, results, names, notes = [], [], [], []
        chart = None
        for spec in chosen:
            defense, failure = store.try_defense(spec)
            if defense is None:
                rows.append([spec, None, None, count, "not loaded"])
                notes.append(failure)
                yield rows, chart, "\n\n".join(notes)
                continue
            rates = {}
            for name, prompts in prompt_sets.items():
                with store.generation_lock:
                    result = evaluate(model, tokenizer, prompts, judge, [defense], settings, target_name=args.target,
                                      prompts_name=name, progress=False)
                rates[name] = round(100 * result["summary"]["attack_success_rate"], 1)
                results.append(result)
                names.append(f"{spec} | {name.split(':')[0]}")
            rows.append([spec, rates["harmful:test"], rates["benign:test"], count, "ok"])
            chart = plot_comparison(results, names, Path(tempfile.mkdtemp(prefix="arena-")) / "arena.png")
            yield rows, str(chart), "\n\n".join(notes + [f"Done: `{spec}`."])
        yield rows, str(chart) if chart else None, "\n\n".join(notes + [f"Finished {len(chosen)} defense(s)."])

    with gr.Blocks(title="hf-sentinel: arena") as demo:
        gr.Markdown("# ⚔️ Defense arena\nRed-team the target with held-out harmful requests and check it still "
                    "answers benign ones, under any combination of defenses. Attack success and answer rates are "
                    f"in %. Target: `{args.target}`, judge: refusal, greedy, {args.max_new_tokens} new tokens.")
        with gr.Row():
            defenses = gr.CheckboxGroup(list(args.defense),
                                        value=[d for d in args.defense if d in DEFENSE_CHOICES[:3]],
                                        label="Defenses", show_select_all=True, scale=3)
            with gr.Column(scale=1):
                count = gr.Slider(1, args.max_prompts, value=min(4, args.max_prompts), step=1,
                                  label="Prompts per set (harmful and benign)")
                run = gr.Button("Run red-team batch", variant="primary")
        table = gr.Dataframe(headers=COLUMNS, label="Results (%)", interactive=False, buttons=["copy"],
                             elem_id="results")
        chart = gr.Image(label="Attack success (harmful) and answer rate (benign)", type="filepath",
                         buttons=["download"], elem_id="chart")
        status = gr.Markdown(elem_classes="status-line")
        run.click(run_batch, [defenses, count], [table, chart, status], api_name="run_batch", concurrency_id="model")
    return demo


def parse_args(argv=None):
    parser = space_parser(__doc__.splitlines()[0])
    parser.add_argument("--defense", action="append", default=None,
                        help=f"a defense spec offered in the arena (repeat; default: {', '.join(DEFENSE_CHOICES)})")
    parser.add_argument("--max-prompts", type=int, default=int(os.environ.get("HF_SENTINEL_SPACE_MAX_PROMPTS", 20)),
                        help="most prompts per set one batch may use [HF_SENTINEL_SPACE_MAX_PROMPTS]")
    args = parser.parse_args(argv)
    args.defense = tuple(args.defense or DEFENSE_CHOICES)
    check_settings(args)
    if args.max_prompts < 1:
        raise SystemExit(f"--max-prompts must be at least 1, got {args.max_prompts}.")
    return args


if __name__ == "__main__":
    settings = parse_args()
    launch(build_demo(settings), settings)

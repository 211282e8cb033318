"""The ``hf-sentinel`` command: ``eval`` a (guarded) target on a prompt set, ``demo`` the defenses."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .defenses import DEFENSES
from .hub import add_push_command, run_push

DEMO_PROMPT_SETS = ("harmful:test", "benign:test")
# The baselines, then every defense whose trained artifact ships in hf_sentinel/pretrained/.
DEMO_DEFENSES = ("none", "system-prompt:default", "suffix:default", "sentinel:default", "red-flag:default",
                 "dro:default", "mart:default")


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="Generate answers on a prompt set, judge them, report attack success.",
                       description="Evaluate a target, optionally guarded, on a prompt set. "
                                   "Or compare earlier results: hf-sentinel eval --compare a.json b.json")
    p.add_argument("--prompts", help="harmful[:train|:test], benign[:train|:test], harmbench, advbench, "
                                     "realtoxicityprompts, xstest, or a JSONL/CSV file with a `prompt` field")
    p.add_argument("--limit", type=int, help="evaluate only the first N prompts (N >= 1)")
    p.add_argument("--shuffle-seed", type=int, help="shuffle the prompt set with this seed before --limit")
    p.add_argument("--judge", default="refusal", help="refusal | toxicity | a classifier or guard model id/path")
    p.add_argument("--target", default="default", help="default (embedded SmolLM2-135M-Instruct), a folder, a Hub id, or "
                                                        "the URL of an OpenAI-compatible endpoint (black-box target)")
    p.add_argument("--defense", action="append", default=None,
                   help="METHOD[:ARG] (ARG 'default' = the shipped artifact or text), METHOD one of: "
                        f"{', '.join(DEFENSES)}; repeat to stack defenses")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--prefill", help="pre-filled start of the assistant answer, e.g. 'Sure, here is'")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    p.add_argument("--raw-prompts", action="store_true", help="feed prompts as plain text (base models without a chat template)")
    p.add_argument("--output", help="write the summary and per-prompt records to this JSON file")
    p.add_argument("--compare", nargs="+", metavar="RESULTS_JSON", help="print earlier results side by side")
    p.add_argument("--plot", help="with --compare: also write a bar chart PNG here")


def _serve_parser(sub) -> None:
    from .server import DEFAULT_MAX_MESSAGES, DEFAULT_MAX_PROMPT_TOKENS

    p = sub.add_parser("serve", help="Serve a (guarded) target as an OpenAI-compatible chat-completions API.")
    p.add_argument("--target", default="default", help="default (embedded SmolLM2-135M-Instruct), a folder or a Hub id")
    p.add_argument("--defense", action="append", default=None, help="as for eval; repeat to stack")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback by default)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-prompt-tokens", type=int, default=DEFAULT_MAX_PROMPT_TOKENS,
                   help="answer HTTP 400 to conversations longer than this many tokens, chat template included "
                        "(and to any longer than the model's context minus the request's max_tokens)")
    p.add_argument("--max-messages", type=int, default=DEFAULT_MAX_MESSAGES,
                   help="answer HTTP 400 to requests with more messages than this")


def run_serve(args) -> int:
    from .defenses import parse_defense
    from .evaluation import check_target, load_target
    from .server import check_limits, serve

    # Cheap checks first, so bad input fails before any model loads.
    check_limits(args.max_prompt_tokens, args.max_messages)
    check_target(args.target)
    defenses = [parse_defense(spec) for spec in (args.defense or ["none"])]
    model, tokenizer = load_target(args.target)
    print(f"serving {args.target} on http://{args.host}:{args.port}/v1", flush=True)
    serve(model, tokenizer, defenses, host=args.host, port=args.port, model_name=args.target,
          max_prompt_tokens=args.max_prompt_tokens, max_messages=args.max_messages)
    return 0


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="Evaluate the embedded target undefended and with each defense; print the table.")
    p.add_argument("--limit", type=int, default=30,
                   help="prompts per set, a fixed random sample (seed 0) of the test split (0: the whole split)")
    p.add_argument("--output-dir", default="outputs/demo", help="where the result JSON files and chart go")
    p.add_argument("--max-new-tokens", type=int, default=48)


# `hf-sentinel train METHOD ...`: each method's folder has a cli.py with add_arguments(parser) and run(args).
TRAIN_COMMANDS: dict[str, str] = {"dro": "hf_sentinel.dro.cli", "sentinel": "hf_sentinel.stackelberg.cli",
                                  "mart": "hf_sentinel.mart.cli", "red-flag": "hf_sentinel.red_flag.cli"}


def _train_parser(sub) -> None:
    import importlib

    p = sub.add_parser("train", help="Train a defense on the embedded target (or any target).")
    methods = p.add_subparsers(dest="method", required=True)
    for method, module in TRAIN_COMMANDS.items():
        cli = importlib.import_module(module)
        method_parser = methods.add_parser(method, help=cli.__doc__.strip().splitlines()[0], description=cli.__doc__)
        cli.add_arguments(method_parser)
        method_parser.set_defaults(run=cli.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-sentinel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _eval_parser(sub)
    _demo_parser(sub)
    _serve_parser(sub)
    add_push_command(sub)
    if TRAIN_COMMANDS:
        _train_parser(sub)
    return parser


def run_train(args) -> int:
    return args.run(args)


def run_eval(args) -> int:
    from .evaluation import compare_table, plot_comparison

    if args.compare:
        results = [json.loads(Path(path).read_text()) for path in args.compare]
        names = [Path(path).stem for path in args.compare]
        print(compare_table(results, names))
        if args.plot:
            print(f"chart: {plot_comparison(results, names, args.plot)}")
        return 0
    if not args.prompts:
        raise SystemExit("hf-sentinel eval: give --prompts NAME_OR_FILE (or --compare RESULTS_JSON ...).")
    if args.plot:
        raise SystemExit("hf-sentinel eval: --plot goes with --compare.")
    from .data import load_prompts
    from .defenses import parse_defense
    from .evaluation import check_target, evaluate, load_target, summary_table
    from .generation import GenerationSettings
    from .judges import load_judge

    # Cheap checks first, so bad input fails before any model loads.
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1 (the number of prompts to evaluate), got {args.limit}; drop "
                         f"--limit to evaluate the whole set.")
    if args.output:
        _check_output_file(args.output)
    check_target(args.target)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                                  temperature=args.temperature, top_p=args.top_p, prefill=args.prefill,
                                  batch_size=args.batch_size, seed=args.seed)
    prompts = load_prompts(args.prompts, limit=args.limit, seed=args.shuffle_seed)
    defenses = [parse_defense(spec) for spec in (args.defense or ["none"])]
    judge = load_judge(args.judge)
    model, tokenizer = load_target(args.target)
    result = evaluate(model, tokenizer, prompts, judge, defenses, settings, chat=not args.raw_prompts,
                      target_name=args.target, prompts_name=args.prompts)
    print(summary_table([result]))
    if args.output:
        _write_json(result, args.output)
    return 0


def run_demo(args) -> int:
    from .data import load_prompts
    from .defenses import parse_defense
    from .evaluation import evaluate, load_target, plot_comparison, summary_table
    from .generation import GenerationSettings
    from .judges import RefusalJudge

    # Cheap checks first, so bad input fails before the model loads.
    if args.limit < 0:
        raise ValueError(f"--limit must be a number of prompts per set (0 for the whole split), got {args.limit}.")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {out} is a file; give a folder (it is created if missing).")
    judge, settings = RefusalJudge(), GenerationSettings(max_new_tokens=args.max_new_tokens)
    model, tokenizer = load_target("default")
    results, names = [], []
    for spec in DEMO_DEFENSES:
        for prompts_name in DEMO_PROMPT_SETS:
            prompts = load_prompts(prompts_name, limit=args.limit or None, seed=0 if args.limit else None)
            result = evaluate(model, tokenizer, prompts, judge, [parse_defense(spec)], settings,
                              target_name="default", prompts_name=prompts_name)
            name = f"{prompts_name.replace(':', '-')}__{spec.split(':')[0]}"
            _write_json(result, out / f"{name}.json")
            results.append(result)
            names.append(name)
    print("\nEmbedded target SmolLM2-135M-Instruct, refusal judge, greedy, "
          f"{settings.max_new_tokens} new tokens. ASR on harmful = attack success; on benign = answer rate.\n")
    print(summary_table(results))
    print(f"\nresults and chart: {plot_comparison(results, names, out / 'demo.png').parent}")
    return 0


def _check_output_file(path) -> None:
    """Fail before the run, not after it, when the results could not be written to ``path``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--output {path} is a folder; give a file path, e.g. {path / 'results.json'}.")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--output {path}: {existing} is a file, so no folder can be made there; give another path.")


def _write_json(result: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a sibling and rename it, so an interrupted write never leaves a half JSON file that looks like a result.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"eval": run_eval, "demo": run_demo, "serve": run_serve, "train": run_train, "push": run_push}
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, ConnectionError, TimeoutError) as error:
        print(f"hf-sentinel {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

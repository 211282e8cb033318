"""The ``hf-sentinel`` command: ``eval`` a (guarded) target on a prompt set, ``bench`` it on the held-out suite,
``demo`` the defenses."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from .defenses import DEFENSES
from .hub import add_push_command, run_push

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
    p.add_argument("--shape", help="only the prompts of this shape (sets with a `shape` column: benign, pool:benign:"
                                   "train|validation, ...); e.g. arithmetic, the word problems with known answers, "
                                   "whose exact-match share the summary reports")
    p.add_argument("--judge", default="default",
                   help="default (AnswerRefusalJudge, 91.9%% agreement with human refusal labels) | "
                        "refusal (keywords) | toxicity | red-flag:default or red-flag:PATH (harm as a trained red "
                        "flag reads the answer: would it have fired) | a classifier or guard model id/path")
    p.add_argument("--target", default="default",
                   help="default (embedded SmolLM2-135M-Instruct), a folder, a Hub id, or the URL of an "
                        "OpenAI-compatible endpoint (black-box target)")
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
    p.add_argument("--raw-prompts", action="store_true",
                   help="feed prompts as plain text (base models without a chat template)")
    p.add_argument("--output", help="write the summary and per-prompt records to this JSON file")
    p.add_argument("--compare", nargs="+", metavar="RESULTS_JSON", help="print earlier results side by side")
    p.add_argument("--plot", help="with --compare: also write a bar chart PNG here")


def _serve_parser(sub, full: bool = True) -> None:
    p = sub.add_parser("serve", help="Serve a (guarded) target as an OpenAI-compatible chat-completions API.")
    if not full:
        return
    from .server import (
        API_KEY_ENV,
        DEFAULT_BATCH_WAIT_MS,
        DEFAULT_MAX_BATCH_SIZE,
        DEFAULT_MAX_MESSAGES,
        DEFAULT_MAX_PROMPT_TOKENS,
    )

    p.add_argument("--target", default="default",
                   help="default (embedded SmolLM2-135M-Instruct), a folder or a Hub id")
    p.add_argument("--defense", action="append", default=None, help="as for eval; repeat to stack")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback by default)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-prompt-tokens", type=int, default=DEFAULT_MAX_PROMPT_TOKENS,
                   help="answer HTTP 400 to conversations longer than this many tokens, chat template included "
                        "(and to any longer than the model's context minus the request's max_tokens)")
    p.add_argument("--max-messages", type=int, default=DEFAULT_MAX_MESSAGES,
                   help="answer HTTP 400 to requests with more messages than this")
    p.add_argument("--api-key", action="append", default=None,
                   help=f"answer HTTP 401 to /v1 requests without 'Authorization: Bearer KEY' for this key (repeat "
                        f"for several; default: the {API_KEY_ENV} environment variable, else no key needed)")
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                   help="most concurrent requests generated together in one batch (1: one at a time)")
    p.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS,
                   help="how long a request waits for others to join its batch when the server is idle")
    p.add_argument("--shutdown-timeout", type=int, default=60,
                   help="on SIGINT/SIGTERM, seconds to finish the requests in flight before exiting")


def run_serve(args) -> int:
    from .defenses import DefenseStack
    from .evaluation import check_target, load_target
    from .server import API_KEY_ENV, check_limits, serve

    # Cheap checks first, so bad input fails before any model loads.
    check_limits(args.max_prompt_tokens, args.max_messages, args.max_batch_size, args.batch_wait_ms)
    api_keys = args.api_key or ([os.environ[API_KEY_ENV]] if os.environ.get(API_KEY_ENV) else [])
    if any(not key.strip() for key in api_keys):
        raise ValueError("--api-key is empty; give a non-empty key, or leave the flag out to serve without keys.")
    check_target(args.target)
    stack = DefenseStack(args.defense or ["none"])
    model, tokenizer = load_target(args.target)
    defenses = stack.compose(model, tokenizer, in_place=True)  # the target is loaded for this stack alone
    if not api_keys and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without an API key: anyone who can reach this port can use the "
              f"model; add --api-key (or set {API_KEY_ENV}).", file=sys.stderr, flush=True)
    print(f"serving {args.target} on http://{args.host}:{args.port}/v1", flush=True)
    serve(model, tokenizer, defenses, host=args.host, port=args.port, model_name=args.target,
          max_prompt_tokens=args.max_prompt_tokens, max_messages=args.max_messages, api_keys=api_keys,
          max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
          shutdown_timeout=args.shutdown_timeout)
    return 0


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="Run the held-out suite through a defense stack: attack success and benign "
                                     "answer rate per set and shape, with 95%% intervals.",
                       description="Run every set of the held-out suite (hf_sentinel.data.heldout), or the sets "
                                   "named with --sets (extra sets outside the suite included), through one defense "
                                   "stack, judge the answers, write one JSON and print the tables. Or compare "
                                   "earlier runs: hf-sentinel bench --compare a.json b.json --plot tradeoff.png. Or "
                                   "attribute a stack's answers to its layers, each benched alone on the same suite: "
                                   "hf-sentinel bench --attribute stack.json layer1.json layer2.json")
    p.add_argument("--defense", action="append", default=None,
                   help="METHOD[:ARG] as for eval, METHOD one of: "
                        f"{', '.join(DEFENSES)}; repeat to stack defenses (default: none)")
    p.add_argument("--name", help="the stack's name in tables, plots and the JSON file name (default: its methods)")
    p.add_argument("--attacker", metavar="red-team:default|red-team:PATH",
                   help="rewrite the plain harmful requests (harmbench, donotanswer-heldout, own-test's harmful half) "
                        "with a Stackelberg red team before the defenses see them; the judge still compares each "
                        "answer with the original request. red-team:default is the red team shipped for the embedded "
                        "target; PATH a red-team adapter or a `hf-sentinel train sentinel` output folder")
    p.add_argument("--attacker-max-new-tokens", type=int,
                   help="longest attack in tokens (default: the trainer's red_team_max_new_tokens)")
    p.add_argument("--attacker-do-sample", action="store_true",
                   help="sample the attacks at temperature 1 (seeded by --seed) instead of decoding greedily")
    p.add_argument("--target", default="default", help="as for eval: default, a folder, a Hub id or an endpoint URL")
    p.add_argument("--judge", default="default", help="default (AnswerRefusalJudge, measured against human labels), "
                                                      "refusal, toxicity, red-flag:default or red-flag:PATH (the red "
                                                      "flag's harm verdict), or a classifier / guard model id or path")
    p.add_argument("--limit", type=int, help="the first N rows of each set, a fixed slice spread over its categories "
                                             "and shapes (N >= 1; default: the whole suite)")
    p.add_argument("--sets", nargs="+", metavar="SET",
                   help="run only these held-out sets: sets of the suite, or the extra sets a whole-suite run leaves "
                        "out (harmbench-long-context, benign-long-context: the request after a ~1,200-token benign "
                        "chat; harmbench-punctuated, benign-unpunctuated: the final punctuation changed), e.g. "
                        "--defense red-flag:default --sets harmbench-multi-turn harmbench-long-context "
                        "benign-long-context (default: the whole suite)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampled set (harmbench-sampling)")
    p.add_argument("--output-dir", default="outputs/bench",
                   help="the result goes to OUTPUT_DIR/NAME.json (with --sets and no --name: "
                        "OUTPUT_DIR/NAME_on_SET+SET.json, so a partial run never replaces a whole-suite result)")
    p.add_argument("--compare", nargs="+", metavar="BENCH_JSON", help="print earlier bench results side by side")
    p.add_argument("--plot", help="with --compare: also draw the safety / over-refusal trade-off as a PNG here")
    p.add_argument("--card", metavar="FOLDER",
                   help="with --compare: also write the comparison into the model card (README.md) of the artifact "
                        "folder FOLDER, as its 'On the held-out suite' section")
    p.add_argument("--helpfulness", nargs="?", const="embedding", metavar="JUDGE",
                   help="with --compare: also score the answers to the benign requests with a helpfulness judge "
                        "(MART's: 'embedding', the default, offline; or a reward model's Hub id or folder), over all "
                        "requests, over those every run answered, and each run paired with the first where both "
                        "answered")
    p.add_argument("--attribute", nargs="+", metavar="BENCH_JSON",
                   help="STACK_JSON MEMBER_JSON [MEMBER_JSON ...]: print which layer of an earlier stacked run "
                        "refused or let through each request, against each layer's (or part's) own run on the same "
                        "suite")
    p.add_argument("--attribution-output", metavar="PATH", help="with --attribute: also write the attribution as JSON")


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="Bench the embedded target undefended and with each defense on a slice of the "
                                    "held-out suite; print the comparison and draw the trade-off.")
    # 6 rows per set keeps `make demo` near its old ~3 minutes on 2 CPU cores (about 45 s per stack); the numbers
    # worth quoting come from `hf-sentinel bench` on the whole suite.
    p.add_argument("--limit", type=int, default=6,
                   help="rows per held-out set, a fixed slice spread over categories and shapes (0: the whole suite)")
    p.add_argument("--output-dir", default="outputs/demo", help="where each stack's bench JSON and the plot go")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--target", default="default", help="as for bench (the shipped defenses are trained for the "
                                                        "embedded target)")
    p.add_argument("--judge", default="default", help="as for bench")
    p.add_argument("--defense", action="append", default=None,
                   help="a defense to bench on its own (repeat for more; default: none, the two baselines and every "
                        f"shipped defense: {', '.join(DEMO_DEFENSES)})")


# `hf-sentinel train METHOD ...`: each method's folder has a cli.py with ScriptArguments (a subclass of
# training.TrainScriptArguments), CONFIG_CLASS (its TrainingArguments subclass) and run(script_args, config). The
# flags come from those two dataclasses through HfArgumentParser, so a concept has one flag in every method and
# --help shows every field's help.
TRAIN_COMMANDS: dict[str, str] = {"dro": "hf_sentinel.dro.cli", "sentinel": "hf_sentinel.sentinel.cli",
                                  "mart": "hf_sentinel.mart.cli", "red-flag": "hf_sentinel.red_flag.cli"}


def _train_parser(sub, full: bool = True) -> None:
    p = sub.add_parser("train", help="Train a defense on the embedded target (or any target).")
    if not full:
        return
    import importlib

    from transformers import HfArgumentParser

    methods = p.add_subparsers(dest="method", required=True, parser_class=HfArgumentParser)
    for method, module in TRAIN_COMMANDS.items():
        cli = importlib.import_module(module)
        classes = (cli.ScriptArguments, cli.CONFIG_CLASS)
        method_parser = methods.add_parser(method, dataclass_types=classes, description=cli.__doc__,
                                           help=cli.__doc__.strip().splitlines()[0],
                                           formatter_class=argparse.RawDescriptionHelpFormatter)
        method_parser.set_defaults(run=cli.run, dataclass_types=classes)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``hf-sentinel`` parser; ``command`` is the command about to run (:func:`main` passes the first argument).

    Two sub-parsers import heavy modules to build their flags: ``serve`` (the server: FastAPI, generation) and
    ``train`` (each method's TrainingArguments subclass: torch, PEFT, transformers' Trainer code; seconds). Given a
    ``command``, each of them is built in full only for its own command, and otherwise carries only its name and help
    line (all that ``hf-sentinel --help`` shows of it). None builds every sub-parser in full."""
    parser = argparse.ArgumentParser(prog="hf-sentinel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _eval_parser(sub)
    _bench_parser(sub)
    _demo_parser(sub)
    _serve_parser(sub, full=command in (None, "serve"))
    add_push_command(sub)
    if TRAIN_COMMANDS:
        _train_parser(sub, full=command in (None, "train"))
    return parser


def run_train(args) -> int:
    from dataclasses import fields

    values = vars(args)
    script_args, config = (cls(**{f.name: values[f.name] for f in fields(cls) if f.init and f.name in values})
                           for cls in args.dataclass_types)  # invalid settings fail here, before any model loads
    return args.run(script_args, config)


def run_eval(args) -> int:
    from .evaluation.report import compare_table, plot_comparison, read_results

    if args.compare:
        results = [read_results(path) for path in args.compare]
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
    from .defenses import DefenseStack
    from .evaluation import check_target, evaluate, load_target, summary_table
    from .evaluation.capability import known_answers
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
    prompts = load_prompts(args.prompts, limit=args.limit, seed=args.shuffle_seed, shape=args.shape)
    known_answers(prompts)  # a set whose `answer` column holds text fails before the model loads
    prompts_name = f"{args.prompts} shape={args.shape}" if args.shape else args.prompts
    stack = DefenseStack(args.defense or ["none"])
    judge = load_judge(args.judge)
    model, tokenizer = load_target(args.target)
    defenses = stack.compose(model, tokenizer, in_place=True)  # the target is loaded for this stack alone
    result = evaluate(model, tokenizer, prompts, judge, defenses, settings, chat=not args.raw_prompts,
                      target_name=args.target, prompts_name=prompts_name)
    print(summary_table([result]))
    if args.output:
        _write_json(result, args.output)
    return 0


def run_bench(args) -> int:
    from .evaluation.report import (
        bench_card_text,
        bench_compare_table,
        bench_helpfulness_table,
        bench_table,
        plot_tradeoff,
        read_results,
    )

    if args.attribute:
        return run_attribution(args)
    if args.attribution_output:
        raise SystemExit("hf-sentinel bench: --attribution-output goes with --attribute.")
    if args.compare:
        results = [read_results(path, "bench") for path in args.compare]
        names = [r["summary"].get("name") or Path(path).stem for r, path in zip(results, args.compare)]
        print(bench_compare_table(results, names))
        if args.helpfulness:
            from .mart.judges import load_helpfulness_judge

            judge = load_helpfulness_judge(args.helpfulness)
            print(f"\nhelpfulness of the benign answers ({judge.name}), mean\n"
                  f"{bench_helpfulness_table(results, names, judge)}")
        if args.plot:
            print(f"\ntrade-off plot: {plot_tradeoff(results, names, args.plot)}")
        if args.card:
            from .hub import update_card_section

            card = update_card_section(args.card, "held-out", "On the held-out suite", bench_card_text(results, names))
            print(f"\nmodel card: {card}")
        return 0
    if args.plot or args.card or args.helpfulness:
        raise SystemExit("hf-sentinel bench: --plot, --card and --helpfulness go with --compare (run the stacks "
                         "first, then compare them).")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1 (rows per held-out set), got {args.limit}; drop --limit to run "
                         f"the whole suite.")
    sets = None
    if args.sets:
        from .evaluation.bench import check_sets

        sets = check_sets(args.sets)
    specs = args.defense or ["none"]
    stack = stack_name(specs)
    if args.attacker:
        from .sentinel.red_team import parse_attacker_spec

        parse_attacker_spec(args.attacker)  # a wrong form fails before the file name is made from it
        faced = stack_name([args.attacker])
        name, file_name = args.name or f"{stack} ← {faced}", args.name or f"{stack}_vs_{faced}"
    else:
        name = file_name = args.name or stack
    if sets and not args.name:
        file_name += f"_on_{'+'.join(sets)}"
    path = Path(args.output_dir) / f"{file_name}.json"
    _check_output_file(path)
    [result] = _bench_stacks(args.target, args.judge, [specs], [name], limit=args.limit,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
                             sets=sets, attacker=args.attacker, attacker_settings={
                                 "max_new_tokens": args.attacker_max_new_tokens,
                                 "do_sample": args.attacker_do_sample})
    _write_json(result, path)
    print(f"\n{bench_table(result)}\n\nresult: {path}")
    return 0


def run_attribution(args) -> int:
    """``hf-sentinel bench --attribute STACK_JSON MEMBER_JSON ...``: print the stack's per-layer attribution."""
    from .evaluation.report import attribute_stack, attribution_table, read_results

    if args.compare or args.plot:
        raise SystemExit("hf-sentinel bench: --attribute and --compare/--plot are separate reports; give one of them.")
    run_flags = [flag for flag, value in (("--defense", args.defense), ("--attacker", args.attacker),
                                          ("--name", args.name), ("--limit", args.limit), ("--sets", args.sets))
                 if value is not None]
    if run_flags:
        raise SystemExit(f"hf-sentinel bench: --attribute reads finished bench results, so {', '.join(run_flags)} "
                         f"has nothing to do; bench the stack and each of its layers first, then attribute them.")
    if len(args.attribute) < 2:
        raise SystemExit("hf-sentinel bench: --attribute needs the stack's bench JSON, then one bench JSON per layer "
                         "run alone on the same suite.")
    if args.attribution_output:
        _check_output_file(args.attribution_output)
    stack, *members = [read_results(path, "bench") for path in args.attribute]
    attribution = attribute_stack(stack, members)
    print(attribution_table(attribution))
    if args.attribution_output:
        _write_json(attribution, args.attribution_output)
        print(f"\nattribution: {args.attribution_output}")
    return 0


def run_demo(args) -> int:
    from .evaluation.report import bench_compare_table, plot_tradeoff

    # Cheap checks first, so bad input fails before the model loads.
    if args.limit < 0:
        raise ValueError(f"--limit must be a number of prompts per set (0 for the whole split), got {args.limit}.")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {out} is a file; give a folder (it is created if missing).")
    specs = args.defense or list(DEMO_DEFENSES)
    names = [stack_name([spec]) for spec in specs]
    results = _bench_stacks(args.target, args.judge, [[spec] for spec in specs], names, limit=args.limit or None,
                            max_new_tokens=args.max_new_tokens,
                            on_result=lambda name, result: _write_json(result, out / f"{name}.json"))
    rows = f"first {args.limit} row{'s' * (args.limit > 1)} of each set" if args.limit else "every row"
    print(f"\nHeld-out suite, {rows}, target {args.target}, {args.max_new_tokens} new tokens:\n")
    print(bench_compare_table(results, names))
    print(f"\nresults and trade-off plot: {plot_tradeoff(results, names, out / 'tradeoff.png').parent}")
    return 0


def _bench_stacks(target: str, judge_name: str, stacks: list[list[str]], names: list[str], *, limit: int | None,
                  max_new_tokens: int, batch_size: int = 32, seed: int = 0, on_result=None,
                  attacker: str | None = None, attacker_settings: dict | None = None,
                  sets: list[str] | None = None) -> list[dict]:
    """Bench each stack of defense specs in turn on one loaded target, printing each one's headline and time.

    Defenses load one stack at a time (a demo's trained artifacts need not all sit in memory at once); their
    method names, and the ``attacker`` spec (a red team that rewrites the plain harmful requests of every stack,
    loaded once), are checked before anything loads.
    """
    from .defenses import DefenseStack
    from .evaluation import check_target, load_target
    from .evaluation.bench import run_bench as bench
    from .judges import load_judge

    start = time.perf_counter()
    unknown = [spec for specs in stacks for spec in specs if spec.partition(":")[0] not in DEFENSES]
    if unknown:
        raise ValueError(f"Unknown defense {unknown[0]!r}. Available: {', '.join(sorted(DEFENSES))} (as METHOD:ARG).")
    if attacker:
        from .sentinel.red_team import check_attacker

        check_attacker(attacker)
    check_target(target)
    judge = load_judge(judge_name)
    model, tokenizer = load_target(target)
    red_team = None
    if attacker:
        from .sentinel.red_team import RedTeamAttacker

        settings = {key: value for key, value in (attacker_settings or {}).items() if value is not None}
        red_team = RedTeamAttacker.from_spec(attacker, **settings)
    results = []
    for specs, name in zip(stacks, names):
        stack_start = time.perf_counter()
        # The target serves every stack in turn: a stack that shares weights builds on one copy of it.
        defenses = DefenseStack(specs).compose(model, tokenizer)
        result = bench(model, tokenizer, judge, defenses, limit=limit, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, seed=seed, target_name=target, name=name, attacker=red_team, sets=sets)
        summary = result["summary"]
        summary["defense_load_seconds"] = time.perf_counter() - stack_start - summary["wall_seconds"]
        head = summary["headline"]
        print(f"{name}: HarmBench attack success {_percent(head['attack_success'])}, held-out benign answered "
              f"{_percent(head['benign_answered'])}; suite {summary['wall_seconds']:.0f} s, "
              f"{time.perf_counter() - start:.0f} s since start (loading included)", flush=True)
        if on_result:
            on_result(name, result)
        results.append(result)
    return results


def _percent(share: dict | None) -> str:
    return f"{share['rate']:.1%}" if share else "-"


def stack_name(specs: list[str]) -> str:
    """A file-name-safe name for a stack of defense specs: its methods joined by ``+``, each followed by its
    argument's last path part when that is not ``default`` (``sentinel+red-flag``, ``dro-my-prompt``)."""
    parts = []
    for spec in specs:
        method, _, arg = spec.partition(":")
        arg = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(arg).name)[:32].strip("-.")
        parts.append(method if arg in ("", "default") else f"{method}-{arg}")
    return "+".join(parts)


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
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command=argv[0] if argv else "").parse_args(argv)
    commands = {"eval": run_eval, "bench": run_bench, "demo": run_demo, "serve": run_serve, "train": run_train,
                "push": run_push}
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, ConnectionError, TimeoutError) as error:
        print(f"hf-sentinel {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

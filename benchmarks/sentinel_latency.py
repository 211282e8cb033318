"""Latency of sentinel-guarded vs. plain generation on the embedded target, measured side by side in one run.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/sentinel_latency.py   # --batch-sizes 1 16 --prompts 16

The sentinel is the shipped one (``--sentinel default``: a LoRA on the top 2 of the target's 30 layers, sharing
the target's weights) unless ``--sentinel`` names another folder. The prompts are a fixed mix: half of
``--prompts`` from ``harmful:test``, half from ``benign:test`` (shuffled with seed 1), taken in turn. The shipped
sentinel appends its instruction mostly to harmful requests, so the two kinds cost it differently, and the target's
answers to them differ in length: the table shows the mix and each kind alone.

A batch is one ``generate()`` call with ``--batch-sizes`` conversations, as the server makes one of concurrent
requests: the sentinel refines the batch, then the target answers it. For each batch size, plain and guarded runs
alternate (harmful, benign, then the mix), so machine load hits both alike; the table shows medians of
``--repeats``. At batch 1 the mix's batches are the two kinds' batches, so its times are their sums. Columns: wall
seconds; guarded/plain; the sentinel pass's share of the guarded time (``SentinelForCausalLM.suffix_token_ids``
over the prompt heads); the target's prefill share of the guarded time (its forward passes over the refined prompts,
or what is left of them to run); mean suffix tokens; mean answer tokens, plain and guarded.

The target continues the keys and values the sentinel pass computed for each prompt head below the sentinel's
adapter (``SentinelConfig.reuse_prompt_states``, on by default: its prefill then runs only the suffix and the end of
the turn through those layers); ``--no-reuse-prompt-states`` measures the target reading every prompt whole, and
``--same-answers`` compares their greedy answers on the test splits instead of timing.

The sentinel drafts its suffixes from those it wrote before (``SentinelConfig.draft_suffixes``, on by default): before
timing, it writes suffixes for ``--draft-warm-up`` heads of the pools' validation splits, and that memory is restored
before every guarded run, so no timed request is drafted from its own earlier suffix. ``--no-draft-suffixes``
measures the one-token-per-pass decoding.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from datetime import datetime

import torch


class Clock:
    """Seconds spent in the sentinel pass (``suffix_token_ids``) and in the target's prefill (forward passes of
    ``model`` over more than one new token, outside the sentinel pass), and the suffix lengths written."""

    def __init__(self, sentinel, model):
        self.sentinel_s = self.prefill_s = 0.0
        self.suffix_tokens: list[int] = []
        self._in_sentinel, self._started = False, None
        suffix_token_ids = sentinel.suffix_token_ids

        def timed_suffix_token_ids(heads):
            start, self._in_sentinel = time.perf_counter(), True
            try:
                ids = suffix_token_ids(heads)
            finally:
                self._in_sentinel = False
                self.sentinel_s += time.perf_counter() - start
            self.suffix_tokens += map(len, ids)
            return ids

        sentinel.suffix_token_ids = timed_suffix_token_ids
        model.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        model.register_forward_hook(self._after_forward, with_kwargs=True)

    def reset(self) -> None:
        self.sentinel_s = self.prefill_s = 0.0
        self.suffix_tokens = []

    def _before_forward(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if not self._in_sentinel and input_ids is not None and input_ids.shape[1] > 1:
            self._started = time.perf_counter()

    def _after_forward(self, module, args, kwargs, output):
        if self._started is not None:
            self.prefill_s += time.perf_counter() - self._started
            self._started = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentinel", default="default", help="sentinel folder (default: the shipped sentinel)")
    parser.add_argument("--prompts", type=int, default=16, help="half harmful, half benign")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draft-warm-up", type=int, default=32,
                        help="validation heads (half harmful, half benign) whose suffixes the sentinel drafts from; "
                             "that memory is restored before every guarded run")
    parser.add_argument("--no-draft-suffixes", action="store_true",
                        help="decode the sentinel one token per forward pass (draft_suffixes=False), as before")
    parser.add_argument("--no-reuse-prompt-states", action="store_true",
                        help="the target reads every prompt whole (reuse_prompt_states=False), as before")
    parser.add_argument("--same-answers", action="store_true",
                        help="instead of timing: answer every prompt of harmful:test and benign:test in batches of 16 "
                             "with and without the continued prompt states, and count the identical answers")
    args = parser.parse_args()
    if args.prompts < 2 or args.prompts % 2:
        parser.error("--prompts must be even: half harmful, half benign.")

    from hf_sentinel import load_default_target, load_prompts
    from hf_sentinel.defaults import pretrained_path
    from hf_sentinel.generation import GenerationSettings, generate, to_conversation
    from hf_sentinel.sentinel import SentinelDefense, SentinelForCausalLM

    model, tokenizer = load_default_target()
    path = pretrained_path("sentinel") if args.sentinel == "default" else args.sentinel
    sentinel = SentinelForCausalLM.from_pretrained(path, target=model, target_tokenizer=tokenizer,
                                                   draft_suffixes=not args.no_draft_suffixes,
                                                   reuse_prompt_states=not args.no_reuse_prompt_states)
    if sentinel.is_lora and sentinel.sentinel.base_model.model is not model:
        raise SystemExit(f"The LoRA sentinel {path} runs on a base of its own; this benchmark measures one that "
                         f"shares the target's weights.")
    defense = SentinelDefense(sentinel)
    if args.same_answers:
        _same_answers(model, tokenizer, defense, args.max_new_tokens)
        return
    clock = Clock(sentinel, model)

    kinds = {kind: [to_conversation(r["prompt"], r.get("history"))
                    for r in load_prompts(f"{kind}:test", limit=args.prompts // 2, seed=1)]
             for kind in ("harmful", "benign")}
    kinds["mix"] = [conv for pair in zip(kinds["harmful"], kinds["benign"]) for conv in pair]
    drafts = None
    if sentinel.suffix_drafts is not None:  # written on requests the timed runs do not contain
        warm_up = [to_conversation(r["prompt"], r.get("history"))
                   for kind in ("harmful", "benign")
                   for r in load_prompts(f"pool:{kind}:validation", limit=args.draft_warm_up // 2, seed=1)]
        for start in range(0, len(warm_up), 16):
            sentinel.refine(warm_up[start:start + 16])
        drafts = copy.deepcopy(sentinel.suffix_drafts)

    print(f"sentinel latency, {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"host {platform.node()}: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    layers = _adapted_layers(sentinel)
    print(f"sentinel {path} ({sentinel.config.sentinel_kind}{layers}, at most {sentinel.config.max_sentinel_tokens} "
          f"tokens); {len(kinds['harmful'])} harmful + {len(kinds['benign'])} benign prompts; "
          f"{args.max_new_tokens} new tokens, greedy; median of {args.repeats} alternating repeats")
    print("sentinel drafts: off" if drafts is None else
          f"sentinel drafts: {len(drafts.counts)} distinct suffixes written on {args.draft_warm_up} validation heads, "
          f"restored before every guarded run")
    print(f"the target continues the sentinel pass's prompt states: "
          f"{'no' if args.no_reuse_prompt_states else 'yes'}\n")
    print(f"{'batch':>5} {'prompts':>8} {'plain s':>8} {'guarded s':>10} {'guarded/plain':>14} {'sentinel %':>11} "
          f"{'prefill %':>10} {'suffix tok':>11} {'answer tok plain → guarded':>27}")
    mixes = []
    for batch_size in args.batch_sizes:
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        generate(model, tokenizer, kinds["mix"][:batch_size], settings, [defense])  # warm-up
        runs = {name: [] for name in kinds}  # per repeat: {"plain": s, "guarded": s, "sentinel": s, ...}
        for _ in range(args.repeats):
            for name, conversations in kinds.items():
                if name == "mix" and batch_size == 1:
                    continue
                runs[name].append(_measure(model, tokenizer, conversations, settings, defense, clock, drafts))
        if batch_size == 1:  # the mix's batches are the two kinds' batches
            runs["mix"] = [{key: h[key] + b[key] for key in h} for h, b in zip(runs["harmful"], runs["benign"])]
        for name, rows in runs.items():
            print(_table_row(batch_size, name, rows, len(kinds[name])))
        mixes.append(statistics.median(r["guarded"] / r["plain"] for r in runs["mix"]))
    print("\nguarded/plain on the mix (goal: at most 1.5×): " +
          ", ".join(f"batch {b} {ratio:.2f}×" for b, ratio in zip(args.batch_sizes, mixes)))


def _table_row(batch_size: int, name: str, rows: list[dict], prompts: int) -> str:
    """One line of the table: medians over the repeats' ``rows`` (ratios and shares: medians of each repeat's)."""
    def median(value):
        return statistics.median(value(row) for row in rows)

    return (f"{batch_size:>5} {name:>8} {median(lambda r: r['plain']):>8.2f} {median(lambda r: r['guarded']):>10.2f} "
            f"{median(lambda r: r['guarded'] / r['plain']):>13.2f}× "
            f"{100 * median(lambda r: r['sentinel'] / r['guarded']):>10.1f}% "
            f"{100 * median(lambda r: r['prefill'] / r['guarded']):>9.1f}% "
            f"{median(lambda r: r['suffix_tokens']) / prompts:>11.1f} "
            f"{median(lambda r: r['plain_tokens']) / prompts:>15.1f} → "
            f"{median(lambda r: r['guarded_tokens']) / prompts:>5.1f}")


def _measure(model, tokenizer, conversations, settings, defense, clock, drafts) -> dict:
    """Plain, then guarded generation of ``conversations``, one ``generate()`` call per batch: seconds, the
    sentinel's and the target's prefill seconds in the guarded run, and token counts (totals over the run)."""
    from hf_sentinel.generation import generate

    batches = [conversations[i:i + settings.batch_size] for i in range(0, len(conversations), settings.batch_size)]
    counts = {}
    for name, defenses in (("plain", []), ("guarded", [defense])):
        clock.reset()
        if drafts is not None:  # the memory of the warm-up only, never the timed requests' own suffixes
            defense.sentinel.suffix_drafts = copy.deepcopy(drafts)
        start, tokens = time.perf_counter(), 0
        for batch in batches:
            tokens += generate(model, tokenizer, batch, settings, defenses).new_tokens
        counts |= {name: time.perf_counter() - start, f"{name}_tokens": tokens}
    return {**counts, "sentinel": clock.sentinel_s, "prefill": clock.prefill_s,
            "suffix_tokens": sum(clock.suffix_tokens)}


def _same_answers(model, tokenizer, defense, max_new_tokens: int) -> None:
    """Greedy answers to the test splits with the target continuing the sentinel pass's prompt states and reading
    every prompt whole (each from an empty draft memory): how many are token for token the same, and how many target
    batches started from the kept states."""
    from hf_sentinel import load_prompts
    from hf_sentinel.generation import GenerationSettings, generate, to_conversation
    from hf_sentinel.sentinel.drafts import SuffixDrafts

    conversations = [to_conversation(r["prompt"], r.get("history"))
                     for kind in ("harmful", "benign") for r in load_prompts(f"{kind}:test")]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=16)
    continued, results = [], {}
    continue_prompts = defense.continue_prompts
    defense.continue_prompts = lambda *args: continued.append(out := continue_prompts(*args)) or out
    for reuse in (True, False):
        defense.sentinel.config.reuse_prompt_states = reuse
        if defense.sentinel.suffix_drafts is not None:
            defense.sentinel.suffix_drafts = SuffixDrafts()
        continued.clear()
        start = time.perf_counter()
        results[reuse] = generate(model, tokenizer, conversations, settings, [defense])
        print(f"reuse_prompt_states={reuse}: {time.perf_counter() - start:.1f} s, target batches started from the "
              f"kept states: {sum(c is not None for c in continued)} of {len(continued)}", flush=True)
    answers = sum(a == b for a, b in zip(results[True].token_ids, results[False].token_ids))
    suffixes = sum(a["sentinel_suffix"] == b["sentinel_suffix"]
                   for a, b in zip(results[True].extras, results[False].extras))
    print(f"{len(conversations)} prompts ({sum(bool(e['sentinel_suffix']) for e in results[True].extras)} suffixed): "
          f"identical answers {answers}, identical suffixes {suffixes}")


def _adapted_layers(sentinel) -> str:
    """``", LoRA r16 on layers 22-29 of 30"`` for a LoRA sentinel that names its layers; else ``""``."""
    if not sentinel.is_lora:
        return ""
    adapter = next(iter(sentinel.sentinel.peft_config.values()))
    total = sentinel.target.config.num_hidden_layers
    layers = adapter.layers_to_transform
    layers = [layers] if isinstance(layers, int) else sorted(layers or range(total))
    return f" r{adapter.r} on layers {layers[0]}-{layers[-1]} of {total}"


if __name__ == "__main__":
    main()

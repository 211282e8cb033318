"""Latency of generation under a stack of defenses vs. plain generation, measured side by side in one run.

Every setup answers the same prompts with exactly ``--max-new-tokens`` new tokens (``min_new_tokens`` =
``max_new_tokens``), so only the defenses' work differs: the sentinel's suffix pass, the soft prompt's cached
prefix, the red flag's reading (and, stacked behind defenses that change the context, its second pass over the
request as sent). The stack is composed as ``hf_sentinel.pipeline`` and the CLI compose it
(:class:`hf_sentinel.defenses.DefenseStack`): stacked with a LoRA sentinel, the red flag shares its weights and its
adapter runs unmerged. A red flag runs with ``action="flag"``: it reads every step but never ends a row early, which
would make the guarded setup look faster than it is. Setups alternate within each repeat; medians are printed with
their ratio to plain generation, for one prompt at a time and for a batch.

    HF_HUB_OFFLINE=1 python benchmarks/stack_latency.py --defense red-flag:default
    HF_HUB_OFFLINE=1 python benchmarks/stack_latency.py --defense dro:default --defense sentinel:default \\
        --defense red-flag:default --prompts 16 --max-new-tokens 32 --repeats 3
"""

from __future__ import annotations

import argparse

import torch
from _side_by_side import against_plain, test_conversations  # benchmarks/ is this script's folder, so on sys.path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defense", action="append", required=True,
                        help="a defense spec, repeated for a stack in order (e.g. red-flag:default)")
    parser.add_argument("--target", default="default")
    parser.add_argument("--prompts", type=int, default=16, help="number of test prompts (half harmful, half benign)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from hf_sentinel.defenses import DefenseStack, describe
    from hf_sentinel.evaluation import load_target
    from hf_sentinel.red_flag import RedFlagDefense

    model, tokenizer = load_target(args.target)
    # Composed as the pipeline and the CLI compose it (a LoRA sentinel and a red flag share one PEFT model), on one
    # copy of the target: plain generation is timed on the target itself.
    stack = DefenseStack(args.defense).compose(model, tokenizer)
    stack = [d.with_settings(action="flag") if isinstance(d, RedFlagDefense) else d for d in stack]
    conversations = test_conversations(args.prompts)
    print(f"target {args.target}, stack {describe(stack)}, {len(conversations)} prompts, {args.max_new_tokens} new "
          f"tokens, {args.repeats} repeats, {torch.get_num_threads()} threads")
    print(f"{'setup':<24} {'plain (s)':>10} {'stack (s)':>10} {'ratio':>7}")
    for setup, base, stacked in against_plain(model, tokenizer, conversations, stack, args.max_new_tokens,
                                              args.repeats):
        print(f"{setup:<24} {base:>10.2f} {stacked:>10.2f} {stacked / base:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Latency of generation with vs. without a DRO soft prompt, measured side by side in one run.

The soft prompt's keys and values are computed once per model and continued by every batch, so what it adds is
attention over its cached positions (and, on a model's first batch, one forward pass of its virtual tokens). This
script times the same prompts, same settings, alternating the two setups per repeat, and prints the ratios
(with / without) for one prompt at a time and for a batch.

    HF_HUB_OFFLINE=1 python benchmarks/dro_overhead.py                 # shipped prompt, embedded target
    HF_HUB_OFFLINE=1 python benchmarks/dro_overhead.py --prompt PATH --prompts 16 --max-new-tokens 32
"""

from __future__ import annotations

import argparse

import torch
from _side_by_side import against_plain, test_conversations  # benchmarks/ is this script's folder, so on sys.path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="default", help="DRO prompt: default, an adapter folder or a Hub id")
    parser.add_argument("--target", default="default")
    parser.add_argument("--prompts", type=int, default=16, help="number of test prompts (half harmful, half benign)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from hf_sentinel.defenses import parse_defense
    from hf_sentinel.evaluation import load_target

    model, tokenizer = load_target(args.target)
    defense = parse_defense(f"dro:{args.prompt}")
    conversations = test_conversations(args.prompts)
    print(f"target {args.target}, DRO prompt {args.prompt} ({defense.soft_prompt(model).num_virtual_tokens} virtual "
          f"tokens), {len(conversations)} prompts, {args.max_new_tokens} new tokens, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads")
    print(f"{'setup':<24} {'without (s)':>12} {'with (s)':>10} {'ratio':>7}")
    for setup, base, guarded in against_plain(model, tokenizer, conversations, [defense], args.max_new_tokens,
                                              args.repeats):
        print(f"{setup:<24} {base:>12.2f} {guarded:>10.2f} {guarded / base:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

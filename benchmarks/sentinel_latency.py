"""Latency of sentinel-guarded vs. plain generation on the embedded target (shared-base LoRA sentinel).

    python benchmarks/sentinel_latency.py [--sentinel PATH] [--prompts 16] [--batch-size 1] [--repeats 3]

Without --sentinel it uses a freshly initialised LoRA sentinel with random weights (so it writes a suffix of
realistic length; an untrained zero-init adapter is the base model, which often appends nothing). Plain and
guarded runs alternate, so both see the same machine load; the ratio is of median wall times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentinel", help="sentinel folder (default: a random-weight LoRA over the target)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model

    from hf_sentinel import load_default_target, load_prompts
    from hf_sentinel.generation import GenerationSettings, generate, to_conversation
    from hf_sentinel.sentinel import SentinelDefense, SentinelForCausalLM

    model, tokenizer = load_default_target()
    sentinel_path = args.sentinel
    if sentinel_path is None:
        sentinel_path = tempfile.mkdtemp()
        torch.manual_seed(0)
        adapter = get_peft_model(load_default_target()[0], LoraConfig(r=8, target_modules=["q_proj", "v_proj"],
                                                                     init_lora_weights=False))
        adapter.save_pretrained(sentinel_path)
    sentinel = SentinelForCausalLM.from_pretrained(sentinel_path, target=model, target_tokenizer=tokenizer)
    assert sentinel.sentinel.base_model.model is model, "the sentinel must share the target's base weights"
    defense = SentinelDefense(sentinel)

    prompts = load_prompts("benign:test", limit=args.prompts)["prompt"]
    conversations = [to_conversation(p) for p in prompts]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    generate(model, tokenizer, conversations[:2], settings, [defense])  # warm-up

    times = {"plain": [], "guarded": []}
    suffix_tokens = []
    for _ in range(args.repeats):
        for name, defenses in (("plain", []), ("guarded", [defense])):
            start = time.perf_counter()
            result = generate(model, tokenizer, conversations, settings, defenses)
            times[name].append(time.perf_counter() - start)
            if defenses:
                suffix_tokens += [len(tokenizer(e["sentinel_suffix"], add_special_tokens=False)["input_ids"])
                                  for e in result.extras]
    plain, guarded = statistics.median(times["plain"]), statistics.median(times["guarded"])
    print(f"{len(prompts)} prompts, batch {args.batch_size}, {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"plain    {plain:7.2f} s  ({1000 * plain / len(prompts):.0f} ms/prompt)")
    print(f"guarded  {guarded:7.2f} s  ({1000 * guarded / len(prompts):.0f} ms/prompt), "
          f"mean suffix {statistics.mean(suffix_tokens):.1f} tokens")
    print(f"ratio guarded/plain = {guarded / plain:.2f}")


if __name__ == "__main__":
    main()

"""Overhead of the red-flag defense at generation time, measured side by side in one run.

Four configurations generate the same number of new tokens from the same prompts:

- ``original``: the embedded target, plain ``generate()``;
- ``adapted``: the target with the red-flag adapter merged in (vocabulary 49,153 padded to 49,216);
- ``adapted + processor``: the adapted target with ``RedFlagLogitsProcessor`` (flag-only, so no answer is
  cut short and every run decodes the same number of steps).
- ``original + reader``: ``RedFlagSettings.answers_from_original``: the original target generates and the processor
  reads p(`<rf>`) from the adapted copy beside it (``RequestAloneReader``, one more forward pass per step).

Runs are interleaved (A, B, C, D, A, B, C, D, ...) so machine load drifts hit all four alike; the median of the
repeats is reported, and the ratios to ``original`` at batch 1 and batch 20 are printed. Goal: ratio <= 1.03.
On a machine shared with other jobs the end-to-end ratios move by several percent from run to run, more than
the processor costs; so the time spent inside the processor's ``__call__`` is also clocked and printed as a
share of the same run, which load changes much less.

    python benchmarks/red_flag_overhead.py [--artifact PATH] [--new-tokens 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import LogitsProcessorList

from hf_sentinel.data import load_prompts
from hf_sentinel.defaults import load_default_target, pretrained_path
from hf_sentinel.generation import left_padded, render, to_conversation
from hf_sentinel.red_flag import RedFlagLogitsProcessor, RequestAloneReader, load_red_flag_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", default=None, help="red-flag folder (default: the shipped one)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    artifact = args.artifact or pretrained_path("red-flag")

    original, tokenizer = load_default_target()
    adapted, red_flag_tokenizer = load_red_flag_model(copy.deepcopy(original), artifact)
    prompts = load_prompts("benign:test")["prompt"]
    print(f"torch threads: {torch.get_num_threads()}; vocabulary rows: original "
          f"{original.get_input_embeddings().num_embeddings}, "
          f"adapted {adapted.get_input_embeddings().num_embeddings}; "
          f"{args.new_tokens} new tokens per answer, median of {args.repeats} interleaved repeats\n")

    print(f"{'batch':>5} | {'original s':>10} | {'adapted s':>9} | {'+processor s':>12} | {'+reader s':>9} | "
          f"{'adapted/orig':>12} | {'+processor/orig':>15} | {'in processor %':>15} | {'+reader/orig':>12}")
    for batch_size in args.batch_sizes:
        texts = [render(tokenizer, to_conversation(p), None, chat=True) for p in prompts[:batch_size]]
        inputs = left_padded([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
                             tokenizer.pad_token_id, original.device)
        template, clocked = _ClockedProcessor.from_pretrained(artifact, action="flag"), []

        def with_processor() -> float:
            # A fresh processor per generate() call; copying the unused template does not read the tokenizer again.
            clocked.append(copy.copy(template))
            return _generate(adapted, inputs, args.new_tokens, tokenizer, [clocked[-1]])

        def with_reader() -> float:  # answers from the original: the adapted copy reads beside it
            reading = copy.copy(template)
            reading.reader = RequestAloneReader(adapted, inputs)
            return _generate(original, inputs, args.new_tokens, tokenizer, [reading])

        runs = {
            "original": lambda: _generate(original, inputs, args.new_tokens, tokenizer, []),
            "adapted": lambda: _generate(adapted, inputs, args.new_tokens, tokenizer, []),
            "processor": with_processor,
            "reader": with_reader,
        }
        for run in runs.values():  # warm-up
            run()
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(run())
        inside = [processor.seconds / seconds for processor, seconds in zip(clocked[1:], times["processor"])]
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"{batch_size:>5} | {median['original']:>10.3f} | {median['adapted']:>9.3f} | "
              f"{median['processor']:>12.3f} | {median['reader']:>9.3f} | "
              f"{median['adapted'] / median['original']:>12.3f} | "
              f"{median['processor'] / median['original']:>15.3f} | {100 * statistics.median(inside):>15.2f} | "
              f"{median['reader'] / median['original']:>12.3f}")
    del red_flag_tokenizer


class _ClockedProcessor(RedFlagLogitsProcessor):
    """The processor, with the wall time spent in its ``__call__`` added up."""

    seconds = 0.0

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        processed = super().__call__(input_ids, scores)
        self.seconds += time.perf_counter() - start
        return processed


@torch.no_grad()
def _generate(model, inputs, new_tokens: int, tokenizer, processors) -> float:
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList(processors))
    elapsed = time.perf_counter() - start
    assert output.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return elapsed


if __name__ == "__main__":
    main()

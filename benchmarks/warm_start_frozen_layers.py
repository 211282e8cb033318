"""The sentinel's warm-start step with the frozen layers' states cached (`FrozenLayerCache`) vs. a full pass.

With LoRA on the top ``--lora-layers`` layers of the embedded SmolLM2-135M-Instruct, a warm-start step either runs the
batch through every layer (``_forward``, as before the cache) or through the adapted layers only, from states computed
once per sequence. Two trainers on the same prompts and seed alternate steps; the cache is filled before the timed
steps (warm-up steps until every prompt's sequence is in it; their time is printed too), the full pass gets one
warm-up step, and the table shows medians.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/warm_start_frozen_layers.py   # --steps 5 --lora-layers 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from hf_sentinel.data import load_prompts
from hf_sentinel.defaults import load_default_target
from hf_sentinel.sentinel import StackelbergPPOConfig, StackelbergPPOTrainer
from hf_sentinel.training import labelled_prompts

BATCH = 16


def trainer(lora_layers: int, rows, cached: bool) -> StackelbergPPOTrainer:
    model, tokenizer = load_default_target()
    args = StackelbergPPOConfig(output_dir=tempfile.mkdtemp(), lora_layers=lora_layers, warm_start_steps=1,
                                max_steps=1, rollout_batch_size=BATCH, disable_tqdm=True, report_to=[])
    built = StackelbergPPOTrainer(model, args, rows, processing_class=tokenizer)
    built.create_optimizer()
    if not cached:
        built._frozen = False  # the warm start's full pass, as with LoRA on every layer
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side (after the cache is filled)")
    parser.add_argument("--lora-layers", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=32, help="harmful and benign training prompts each")
    args = parser.parse_args()
    rows = labelled_prompts(load_prompts("harmful:train", limit=args.prompts),
                            load_prompts("benign:train", limit=args.prompts))
    full, cached = trainer(args.lora_layers, rows, cached=False), trainer(args.lora_layers, rows, cached=True)
    sequences = sum(len({row["prompt"] for row in cached.prompts[label]}) for label in ("harmful", "benign"))
    start, warm_up = time.perf_counter(), 0
    while not cached._frozen or len(cached._frozen._states) < sequences:  # then the timed steps only read it
        cached._warm_start_step()  # the first one builds the cache and checks it against a full pass
        warm_up += 1
        if not cached._frozen:
            raise SystemExit("The cache was refused (see FrozenLayerCache.for_model): nothing to compare.")
    filling = time.perf_counter() - start
    full._warm_start_step()  # its warm-up: the optimiser's state is allocated on the first step
    seconds = {"full pass": [], "frozen layers cached": []}
    for _ in range(args.steps):
        for name, side in (("full pass", full), ("frozen layers cached", cached)):
            start = time.perf_counter()
            side._warm_start_step()
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    layers = full.model.get_base_model().config.num_hidden_layers
    print(f"warm-start step, batch {BATCH}, LoRA on the top {args.lora_layers} of {layers} layers, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}; median of {args.steps}")
    for name, value in medians.items():
        print(f"  {name:22s} {value:6.2f} s")
    print(f"  full / cached          {medians['full pass'] / medians['frozen layers cached']:6.2f}x")
    print(f"  filling the cache      {filling:6.2f} s for {sequences} sequences ({warm_up} steps), once")


if __name__ == "__main__":
    main()

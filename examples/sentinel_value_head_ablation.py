"""Value-head ablation (paper, Figure 5): separate vs. shared vs. partial heads, same seeds and budget.

    python examples/sentinel_value_head_ablation.py --max-steps 10 --seeds 0 1 --output-dir outputs/ablation

On the embedded target, the shipped sentinel's recipe (agents from its warm start, LoRA on the top 8 layers,
KL coefficient 0.005; the warm start comes from `hf-sentinel train sentinel --output-dir outputs/sentinel-warm
--max-steps 40 --warm-start-steps 40 --lora-layers 8`):

    python examples/sentinel_value_head_ablation.py --init-from outputs/sentinel-warm --lora-layers 8 \
        --kl-coef 0.005 --max-steps 4 --seeds 0 --output-dir outputs/ablation

The game's current setup on the broad pools (the agents from the pools' warm start, KL to that start, the target's
own refusal likelihood as the reward, rollouts of 32):

    python examples/sentinel_value_head_ablation.py --init-from outputs/sentinel-warm --lora-layers 8 \
        --kl-coef 0.005 --kl-reference init --reward refusal_likelihood --rollout-batch-size 32 \
        --harmful outputs/sentinel-data/harmful_train.jsonl --benign pool:benign:train \
        --max-steps 4 --seeds 0 --output-dir outputs/ablation-pools

Prints the final mean rewards of each strategy and writes reward curves (mean ± std over seeds) of the red team
R(y) and the sentinel R(y*) to <output-dir>/value_heads.png. `--tiny` runs on a tiny random model (seconds) to
check the pipeline end to end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_sentinel.data import load_prompts
from hf_sentinel.sentinel import StackelbergPPOConfig, StackelbergPPOTrainer
from hf_sentinel.sentinel.config import KL_REFERENCES, REWARDS
from hf_sentinel.sentinel.plots import plot_rewards
from hf_sentinel.sentinel.value_heads import STRATEGIES
from hf_sentinel.training import labelled_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--rollout-batch-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output-dir", default="outputs/ablation")
    parser.add_argument("--kl-coef", type=float, default=StackelbergPPOConfig.kl_coef)
    parser.add_argument("--lora-layers", type=int, default=0, help="LoRA on the top N decoder layers (0 = all)")
    parser.add_argument("--init-from", metavar="RUN_DIR",
                        help="start both agents of every run from this run's adapters (a warm start's output dir)")
    parser.add_argument("--kl-reference", default=StackelbergPPOConfig.kl_reference, choices=KL_REFERENCES)
    parser.add_argument("--reward", default=StackelbergPPOConfig.reward, choices=REWARDS)
    parser.add_argument("--harmful", default="harmful:train", help="harmful training prompts (a set or a file)")
    parser.add_argument("--benign", default="benign:train", help="benign training prompts (a set or a file)")
    parser.add_argument("--tiny", action="store_true", help="tiny random target instead of the embedded SmolLM2")
    args = parser.parse_args()
    initial = dict(red_team=args.init_from, sentinel=args.init_from) if args.init_from else {}

    prompts = labelled_prompts(load_prompts(args.harmful), load_prompts(args.benign))
    runs: dict[str, list[list[dict]]] = {}
    for strategy in STRATEGIES:
        for seed in args.seeds:
            config = StackelbergPPOConfig(output_dir=f"{args.output_dir}/{strategy}-seed{seed}",
                                          max_steps=args.max_steps,
                                          rollout_batch_size=args.rollout_batch_size, value_head_strategy=strategy,
                                          seed=seed, kl_coef=args.kl_coef, kl_reference=args.kl_reference,
                                          reward=args.reward, save_strategy="no", disable_tqdm=True,
                                          lora_layers=0 if args.tiny else args.lora_layers,
                                          **(dict(red_team_max_new_tokens=6, max_sentinel_tokens=4,
                                                  target_max_new_tokens=4) if args.tiny else {}))
            if args.tiny:
                from hf_sentinel.defaults import tiny_model

                target, tokenizer = tiny_model(seed=seed, tie_word_embeddings=False)
                trainer = StackelbergPPOTrainer(target, config, prompts, processing_class=tokenizer, **initial)
            else:
                trainer = StackelbergPPOTrainer("default", config, prompts, **initial)
            trainer.train()
            runs.setdefault(strategy, []).append(trainer.state.log_history)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log_histories.json").write_text(json.dumps(runs))
    for strategy, histories in runs.items():
        finals = [[h for h in history if "sentinel/reward" in h][-1] for history in histories]
        red = sum(f["red_team/reward"] for f in finals) / len(finals)
        sentinel = sum(f["sentinel/reward"] for f in finals) / len(finals)
        print(f"{strategy:9s} final R(y) = {red:.3f}   R(y*) = {sentinel:.3f}   ({len(finals)} seeds)")
    print(f"curves: {plot_rewards(runs, out / 'value_heads.png')}")


if __name__ == "__main__":
    main()

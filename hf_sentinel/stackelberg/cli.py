"""Train a sentinel against a red team by Stackelberg PPO (optionally after a supervised warm start).

    hf-sentinel train sentinel --output-dir outputs/sentinel --max-steps 40 --warm-start-steps 60

Writes <output-dir>/sentinel (load it with `--defense sentinel:<output-dir>/sentinel` or
`hf_sentinel.pipeline(..., sentinel=...)`), <output-dir>/red_team, checkpoints and a reward-curve PNG.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--target", default="default", help="target model: default (embedded SmolLM2), folder or Hub id")
    parser.add_argument("--output-dir", default="outputs/sentinel")
    parser.add_argument("--corpus", default="harmful:train", help="prompt set the red team starts from")
    parser.add_argument("--benign", default="benign:train", help="prompt set the sentinel must keep answered")
    parser.add_argument("--max-steps", type=int, default=40, help="rounds of the game (leader + follower phases)")
    parser.add_argument("--rollout-batch-size", type=int, default=16)
    parser.add_argument("--warm-start-steps", type=int, default=0, help="supervised sentinel steps before PPO")
    parser.add_argument("--warm-start-learning-rate", type=float, default=1e-3)
    parser.add_argument("--value-head-strategy", default="partial", choices=["separate", "shared", "partial"])
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank of both agents (alpha = 2 x rank)")
    parser.add_argument("--lora-layers", type=int, default=0,
                        help="LoRA on the top N decoder layers only (0 = all): the layers below then need no "
                             "backward pass, which makes each update several times cheaper on a CPU")
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--leader-steps", type=int, default=1)
    parser.add_argument("--follower-steps", type=int, default=1)
    parser.add_argument("--save-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-to", default="none", help="none | tensorboard | trackio")
    parser.add_argument("--init-from", metavar="RUN_DIR",
                        help="start both agents from the adapters a previous run saved (e.g. a warm start run with "
                             "--max-steps 0), instead of fresh LoRA adapters")
    parser.add_argument("--resume", nargs="?", const=True, default=None,
                        help="resume from the last checkpoint in --output-dir (or from the given checkpoint)")


def run(args) -> int:
    from ..data import load_prompts
    from .config import StackelbergPPOConfig
    from .plots import plot_rewards
    from .trainer import StackelbergPPOTrainer

    config = StackelbergPPOConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, rollout_batch_size=args.rollout_batch_size,
        warm_start_steps=args.warm_start_steps, warm_start_learning_rate=args.warm_start_learning_rate,
        value_head_strategy=args.value_head_strategy,
        learning_rate=args.learning_rate, kl_coef=args.kl_coef, leader_steps=args.leader_steps,
        follower_steps=args.follower_steps, save_steps=args.save_steps, seed=args.seed, report_to=args.report_to,
    )
    trainer = StackelbergPPOTrainer(args.target, config, load_prompts(args.corpus), load_prompts(args.benign),
                                    peft_config=lora_config(args.target, args.lora_rank, args.lora_layers),
                                    red_team=args.init_from and f"{args.init_from}/red_team",
                                    sentinel=args.init_from and f"{args.init_from}/sentinel")
    trainer.train(resume_from_checkpoint=args.resume)
    out = trainer.save_model()
    chart = plot_rewards({args.value_head_strategy: [trainer.state.log_history]}, f"{args.output_dir}/rewards.png")
    print(f"sentinel: {out / 'sentinel'}\nred team: {out / 'red_team'}\nreward curves: {chart}")
    return 0


def lora_config(target: str = "default", rank: int = 16, top_layers: int = 0):
    """The agents' LoRA for ``target``: on its top ``top_layers`` decoder layers (0 = all of them)."""
    from transformers import AutoConfig

    from ..defaults import resolve_model_path
    from .trainer import agent_lora_config

    layers = None
    if top_layers:
        depth = AutoConfig.from_pretrained(resolve_model_path(target)).num_hidden_layers
        if not 0 < top_layers <= depth:
            raise ValueError(f"--lora-layers {top_layers}: the target has {depth} decoder layers; "
                             f"give 1 to {depth} (or 0 for all).")
        layers = list(range(depth - top_layers, depth))
    return agent_lora_config(rank, layers)

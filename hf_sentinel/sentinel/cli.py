"""Train a sentinel against a red team by Stackelberg PPO (optionally after a supervised warm start).

    # a warm start only (40 supervised steps), LoRA on the top 8 decoder layers
    hf-sentinel train sentinel --output-dir outputs/sentinel-warm --max-steps 40 --warm-start-steps 40 \\
        --lora-layers 8
    # the game, both agents starting from the warm start's adapters
    hf-sentinel train sentinel --init-from outputs/sentinel-warm --output-dir outputs/sentinel --max-steps 6 \\
        --save-steps 2 --kl-coef 0.005
    # go on from the last checkpoint of an interrupted run
    hf-sentinel train sentinel --output-dir outputs/sentinel --max-steps 6 --resume-from-checkpoint last

One training step is one round of the game (a red-team PPO update, then a sentinel PPO update); the first
--warm-start-steps steps are supervised steps of the sentinel. Writes the sentinel into --output-dir (load it with
`--defense sentinel:<output-dir>` or `hf_sentinel.pipeline(..., sentinel=<output-dir>)`), the red team into
<output-dir>/red_team, checkpoint-N folders (each one a sentinel too) and a reward-curve PNG. On several processes:
`torchrun --nproc_per_node N -m hf_sentinel.cli train sentinel ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..training import TrainScriptArguments
from .config import StackelbergPPOConfig

CONFIG_CLASS = StackelbergPPOConfig


@dataclass
class ScriptArguments(TrainScriptArguments):
    """What ``hf-sentinel train sentinel`` needs besides the target, the prompts and the config."""

    init_from: str | None = field(default=None, metadata={
        "help": "Start both agents from the adapters of a previous run: its output dir or one of its checkpoint "
                "folders (e.g. a warm-start run), instead of fresh LoRA adapters."})
    safety_judge: str = field(default="refusal", metadata={
        "help": "Judge of harm, the red team's reward and the sentinel's penalty: 'refusal' (keywords: 1 when the "
                "target complied), 'default', 'toxicity', or a classifier / guard model id or folder."})
    helpfulness_judge: str = field(default="refusal", metadata={
        "help": "Judge of a benign prompt's answer, the sentinel's helpfulness reward (same choices as "
                "--safety-judge: 'refusal' scores 1 when the target answered)."})


def run(script_args: ScriptArguments, config: StackelbergPPOConfig) -> int:
    from ..evaluation import load_target
    from ..judges import load_judge
    from ..training import resume_argument
    from .plots import plot_rewards
    from .trainer import StackelbergPPOTrainer

    safety_judge, helpfulness_judge = load_judge(script_args.safety_judge), load_judge(script_args.helpfulness_judge)
    prompts = script_args.load_train_dataset(seed=config.seed)
    target, tokenizer = load_target(script_args.target, torch_dtype=script_args.torch_dtype)
    if tokenizer is None:
        raise ValueError(f"--target {script_args.target} is an endpoint; training the sentinel needs the target's "
                         f"weights (a local folder or a Hub id). A sentinel trained on them then guards the endpoint.")
    trainer = StackelbergPPOTrainer(target, config, prompts, processing_class=tokenizer, safety_judge=safety_judge,
                                    helpfulness_judge=helpfulness_judge, red_team=script_args.init_from,
                                    sentinel=script_args.init_from)
    trainer.train(resume_from_checkpoint=resume_argument(config))
    trainer.save_model()
    if not trainer.args.should_save:
        return 0
    chart = plot_rewards({config.value_head_strategy: [trainer.state.log_history]},
                         f"{config.output_dir}/rewards.png")
    print(f"sentinel: {config.output_dir} (--defense sentinel:{config.output_dir})\n"
          f"red team: {config.output_dir}/red_team\nreward curves: {chart}")
    if config.push_to_hub:
        print(f"pushed: {trainer.push_to_hub()}")
    return 0

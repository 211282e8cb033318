"""Train a sentinel against a red team by Stackelberg PPO (optionally after a supervised warm start).

    # a warm start only (40 supervised steps), LoRA on the top 8 decoder layers, on the broad pools; its operating
    # point (the p(suffix) threshold) chosen on their validation splits
    hf-sentinel train sentinel --output-dir outputs/sentinel-warm --max-steps 40 --warm-start-steps 40 \\
        --lora-layers 8 --harmful pool:harmful:train --benign pool:benign:train \\
        --calibration-harmful pool:harmful:validation --calibration-benign pool:benign:validation
    # the game, both agents starting from the warm start's adapters
    hf-sentinel train sentinel --init-from outputs/sentinel-warm --output-dir outputs/sentinel --max-steps 6 \\
        --save-steps 2 --kl-coef 0.005
    # go on from the last checkpoint of an interrupted run
    hf-sentinel train sentinel --output-dir outputs/sentinel --max-steps 6 --resume-from-checkpoint last
    # guard another model (another architecture and tokenizer) or an endpoint: the agents on a base of their own
    hf-sentinel train sentinel --target meta-llama/Llama-2-7b-chat-hf --sentinel-base default --output-dir out/llama2
    hf-sentinel train sentinel --target http://127.0.0.1:8000/v1 --sentinel-base default --output-dir out/endpoint

One training step is one round of the game (a red-team PPO update, then a sentinel PPO update); the first
--warm-start-steps steps are supervised steps of the sentinel. Writes the sentinel into --output-dir (load it with
`--defense sentinel:<output-dir>` or `hf_sentinel.pipeline(..., sentinel=<output-dir>)`), the red team into
<output-dir>/red_team, checkpoint-N folders (each one a sentinel too) and a reward-curve PNG. On several processes:
`torchrun --nproc_per_node N -m hf_sentinel.cli train sentinel ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..training import CalibratedScriptArguments
from .config import StackelbergPPOConfig

CONFIG_CLASS = StackelbergPPOConfig


@dataclass
class ScriptArguments(CalibratedScriptArguments):
    """What ``hf-sentinel train sentinel`` needs besides the target, the prompts and the config."""

    sentinel_base: str = field(default="", metadata={
        "help": "The base the sentinel and the red team are LoRA adapters of (and the KL reference): a local folder, "
                "a Hub id or 'default'. Empty (default): the target's own base, one copy of its weights. Give another "
                "model to train against a target of another architecture and tokenizer, composed at text level; "
                "required when --target is an endpoint URL."})
    init_from: str | None = field(default=None, metadata={
        "help": "Start both agents from the adapters of a previous run: its output dir or one of its checkpoint "
                "folders (e.g. a warm-start run), instead of fresh LoRA adapters."})
    safety_judge: str = field(default="refusal", metadata={
        "help": "Judge of harm, the red team's reward and the sentinel's penalty: 'refusal' (keywords: 1 when the "
                "target complied), 'default', 'toxicity', 'red-flag:default' / 'red-flag:PATH' (the harm of the "
                "answer as the red flag reads it), or a classifier / guard model id or folder. With --reward judge "
                "only."})
    helpfulness_judge: str = field(default="refusal", metadata={
        "help": "Judge of a benign prompt's answer, the sentinel's helpfulness reward (same choices as "
                "--safety-judge: 'refusal' scores 1 when the target answered). With --reward judge only."})

    def __post_init__(self):
        super().__post_init__()
        if self.target.startswith(("http://", "https://")) and not self.sentinel_base:
            raise ValueError(f"--target {self.target} is an endpoint: the sentinel and the red team need weights of "
                             f"their own to train. Give them a base with --sentinel-base (a local folder, a Hub id or "
                             f"'default'); the saved sentinel then guards the endpoint.")
        if self.sentinel_base.startswith(("http://", "https://")):
            raise ValueError(f"--sentinel-base {self.sentinel_base} is an endpoint; give the folder or Hub id of a "
                             f"model the sentinel and the red team train on (or 'default').")


def run(script_args: ScriptArguments, config: StackelbergPPOConfig) -> int:
    from ..evaluation import load_target
    from ..judges import load_judge
    from ..training import resume_argument
    from .plots import plot_rewards
    from .trainer import StackelbergPPOTrainer, _same_model

    specs = {name: getattr(script_args, name) for name in ("safety_judge", "helpfulness_judge")}
    if config.reward != "judge" and set(specs.values()) != {"refusal"}:
        raise ValueError(f"--safety-judge and --helpfulness-judge judge the target's sampled answers, which --reward "
                         f"{config.reward} does not generate (it reads the target's log-probabilities); drop them, or "
                         f"use --reward judge.")
    judges = {name: load_judge(spec) for name, spec in specs.items()} if config.reward == "judge" else {}
    prompts = script_args.load_train_dataset(seed=config.seed)
    target, target_tokenizer = load_target(script_args.target, torch_dtype=script_args.torch_dtype)
    if script_args.sentinel_base and not _same_model(script_args.sentinel_base, script_args.target):
        base, tokenizer = load_target(script_args.sentinel_base, torch_dtype=script_args.torch_dtype)
        separate = {"target": target, "target_processing_class": target_tokenizer}
    else:
        base, tokenizer, separate = target, target_tokenizer, {}
    calibration = script_args.load_calibration_dataset()
    trainer = StackelbergPPOTrainer(base, config, prompts, processing_class=tokenizer, red_team=script_args.init_from,
                                    sentinel=script_args.init_from, calibration_dataset=calibration, **judges,
                                    **separate)
    trainer.train(resume_from_checkpoint=resume_argument(config))
    trainer.save_model()
    if not trainer.args.should_save:
        return 0
    chart = plot_rewards({config.value_head_strategy: [trainer.state.log_history]},
                         f"{config.output_dir}/rewards.png")
    if trainer.calibration_report:
        report = trainer.calibration_report
        print(f"operating point: p(suffix) >= {report['suffix_threshold']:.4f}: {report['harmful_suffixed']}/"
              f"{report['harmful_rows']} calibration harmful and {report['benign_suffixed']}/{report['benign_rows']} "
              f"benign requests get a suffix")
        for label in ("harmful", "benign"):
            if f"{label}_suffixed_by_shape" in report:
                print(f"  {label} suffixed, by shape: {report[f'{label}_suffixed_by_shape']}")
    print(f"sentinel: {config.output_dir} (--defense sentinel:{config.output_dir})\n"
          f"red team: {config.output_dir}/red_team\nreward curves: {chart}")
    if config.push_to_hub:
        print(f"pushed: {trainer.push_to_hub()}")
    return 0

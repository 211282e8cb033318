"""Train a DRO soft safety prompt (PEFT prompt-tuning adapter) for a target, then evaluate it.

Every DROConfig field (a transformers TrainingArguments) is an option (--num-train-epochs, --variant, ...; the
defaults are the paper's). Stages and checkpoints go to --output-dir; --resume-from-checkpoint last continues
there. The adapter and its model card are saved in --output-dir. Examples:

    hf-sentinel train dro --variant elicited --output-dir outputs/dro-elicited
    hf-sentinel train dro --variant faithful --refusal-check warn --output-dir outputs/dro-faithful
    hf-sentinel train dro --variant elicited --ablate refusal --output-dir outputs/dro-no-lr
    hf-sentinel train dro --variant elicited --limit 8 --num-train-epochs 1 --eval-prompts none --output-dir /tmp/dro
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..training import VALIDATION_SETS, TrainScriptArguments, resume_argument
from .config import DROConfig

ABLATIONS = {"refusal": "refusal_loss_weight", "harmfulness": "harmfulness_loss_weight",
             "subspace": "subspace_loss_weight", "output": "output_loss_weight"}
CONFIG_CLASS = DROConfig


@dataclass
class ScriptArguments(TrainScriptArguments):
    """What ``hf-sentinel train dro`` adds to the shared script arguments."""

    safety_judge: str = field(default="refusal", metadata={
        "help": "Judge of the sampled answers (refused or complied) and of the evaluation: 'refusal' (the keyword "
                "judge the shipped prompt was trained with), 'default', or a classifier / guard model id or folder."})
    ablate: list[str] = field(default_factory=list, metadata={
        "help": "Loss terms to leave out (their weight set to 0): refusal (L_r), harmfulness (L_h), subspace (L_U), "
                "output (L_o).", "choices": sorted(ABLATIONS)})
    eval_prompts: list[str] = field(default_factory=lambda: list(VALIDATION_SETS.values()), metadata={
        "help": "Prompt sets to evaluate the trained prompt on, after training and with --eval-strategy epoch after "
                "every epoch, less any prompt of the training data; the results go into the model card. Default: "
                "the harmful pool's validation split (160 requests, 8 of them in harmful:train) and "
                "benign:validation (482 hand-written benign requests made for choices): an epoch or a run is "
                "chosen on this report, and choices are made on validation, never on a test split. 'none' skips "
                "the evaluation."})
    eval_limit: int | None = field(default=100, metadata={
        "help": "Evaluate on at most N prompts of each set (after --eval-shuffle-seed): 100 + 100 costs about what "
                "the former test-split default did (90 + 125); a number at least a set's size evaluates all of it."})
    eval_shuffle_seed: int | None = field(default=0, metadata={
        "help": "Shuffle each evaluation set with this seed before --eval-limit (a sample across categories and "
                "shapes; the same prompts every epoch)."})


def run(script_args: ScriptArguments, config: DROConfig) -> int:
    from ..data import load_prompts
    from ..evaluation import load_target, summary_table
    from ..judges import load_judge
    from .trainer import DROTrainer

    for term in script_args.ablate:
        setattr(config, ABLATIONS[term], 0.0)
    if not any(getattr(config, weight) for weight in ABLATIONS.values()):  # fail before any model loads
        raise ValueError(f"--ablate {' '.join(script_args.ablate)} leaves no loss term to optimise.")
    train = script_args.load_train_dataset(seed=config.seed if script_args.limit else None)
    evals = {name: load_prompts(name, limit=script_args.eval_limit, seed=script_args.eval_shuffle_seed,
                                exclude=train["prompt"])  # an epoch is never chosen on a prompt it trained on
             for name in script_args.eval_prompts if name != "none"}
    model, tokenizer = load_target(script_args.target, torch_dtype=script_args.torch_dtype)
    trainer = DROTrainer(model, config, train, evals, processing_class=tokenizer,
                         safety_judge=load_judge(script_args.safety_judge))
    trainer.train(resume_from_checkpoint=resume_argument(config))
    trainer.save_model()
    print(f"adapter and model card: {Path(config.output_dir).resolve()}")
    if trainer.eval_results:
        print(summary_table(list(trainer.eval_results.values())))
        print(f"eval results: {(Path(config.output_dir) / 'eval').resolve()}")
    if config.push_to_hub:
        print(f"pushed to {config.hub_model_id}: {trainer.push_to_hub()}")
    return 0

"""Train a DRO soft safety prompt for the embedded SmolLM2 target (the 'elicited' variant), then evaluate it.

This is the Python form of the documented command in docs/dro.md (same settings). Rerunning reuses the collect
and estimate stages in the output folder and resumes the optimisation from its last checkpoint.

    HF_HUB_OFFLINE=1 python examples/dro_train.py [OUTPUT_DIR]
"""

import sys
from pathlib import Path

from hf_sentinel.data import load_prompts
from hf_sentinel.dro import DROConfig, DROTrainer
from hf_sentinel.evaluation import summary_table
from hf_sentinel.training import labelled_prompts

output_dir = sys.argv[1] if len(sys.argv) > 1 else "outputs/dro-elicited"
config = DROConfig(
    output_dir=output_dir,
    variant="elicited",                      # the target barely refuses on its own; see docs/dro.md
    conditions=["none", "suffix:default"],   # no prompt / a user-turn instruction that makes it refuse
    temperature=0, target_max_new_tokens=12,
    per_device_train_batch_size=32, num_train_epochs=2, learning_rate=1e-2,
)
train = labelled_prompts(load_prompts("harmful:train"), load_prompts("benign:train"))
# The built-in evaluation (`hf-sentinel train dro`'s default): validation splits less the training prompts, since an
# epoch is chosen on this report, never on a test split; 100 shuffled prompts of each cost about what the test splits
# did.
evals = {name: load_prompts(name, limit=100, seed=0, exclude=train["prompt"])
         for name in ("pool:harmful:validation", "benign:validation")}
trainer = DROTrainer("default", config, train, evals)
trainer.train(resume_from_checkpoint=any(Path(output_dir).glob("checkpoint-*")))
trainer.save_model()  # the adapter and its model card, with the evaluation
print(summary_table(list(trainer.eval_results.values())))

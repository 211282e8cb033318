"""Train a DRO soft safety prompt for the embedded SmolLM2 target (the 'elicited' variant), then evaluate it.

This is the Python form of the documented command in docs/dro.md (same settings); rerunning resumes from
the stage outputs and checkpoints in the output folder.

    HF_HUB_OFFLINE=1 python examples/dro_train.py [OUTPUT_DIR]
"""

import sys

from hf_sentinel.data import load_prompts
from hf_sentinel.defaults import load_default_target
from hf_sentinel.dro import DROConfig, DROTrainer, build_dro_dataset
from hf_sentinel.evaluation import summary_table

output_dir = sys.argv[1] if len(sys.argv) > 1 else "outputs/dro-elicited"
model, tokenizer = load_default_target()
config = DROConfig(
    output_dir=output_dir,
    variant="elicited",                      # the target barely refuses on its own; see docs/dro.md
    conditions=["none", "suffix:default"],   # no prompt / a user-turn instruction that makes it refuse
    sample_temperature=0, sample_max_new_tokens=12,
    per_device_train_batch_size=32, num_train_epochs=3, learning_rate=1e-2, save_steps=3,
)
train = build_dro_dataset(load_prompts("harmful:train"), load_prompts("benign:train"))
evals = {name: load_prompts(name) for name in ("harmful:test", "benign:test")}
trainer = DROTrainer(model, config, train, evals, processing_class=tokenizer)
trainer.train()
print(summary_table(list(trainer.eval_results.values())))

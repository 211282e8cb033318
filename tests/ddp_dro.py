"""Run by test_dro.py under torchrun: two ranks train the soft prompt for two steps, then dump it."""

import sys

from datasets import Dataset
from ddp_support import leave_together
from safetensors.torch import save_file

from hf_sentinel.defaults import tiny_model
from hf_sentinel.dro import DROConfig, DROTrainer
from hf_sentinel.training import labelled_prompts

out = sys.argv[1]
model, tokenizer = tiny_model()
config = DROConfig(output_dir=out, max_steps=2, per_device_train_batch_size=2, variant="elicited", answer_tokens=2,
                   head_cv_folds=2, pca_dim=2, num_samples=1, target_max_new_tokens=2, head_max_epochs=5,
                   refusal_check="off", save_steps=100, disable_tqdm=True, use_cpu=True, ddp_backend="gloo",
                   safety_prompt="Be safe and kind.")
data = labelled_prompts(Dataset.from_dict({"prompt": [f"harmful request number {i}" for i in range(4)]}),
                        Dataset.from_dict({"prompt": [f"How do I bake bread, try {i}?" for i in range(4)]}))
trainer = DROTrainer(model, config, data, processing_class=tokenizer)
trainer.train()
rank = trainer.accelerator.process_index
print(f"rank={rank} world_size={trainer.accelerator.num_processes}")
save_file({"soft_prompt": trainer.trained_prompt.embeddings.contiguous(),
           "initial": trainer._initial.embeddings.contiguous()}, f"{out}/rank{rank}.safetensors")

leave_together()

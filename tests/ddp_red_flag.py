"""Run by test_red_flag.py under torchrun: two ranks train the red flag for two steps, then dump their weights."""

import sys

from datasets import Dataset
from ddp_support import leave_together
from safetensors.torch import save_file

from hf_sentinel.defaults import tiny_model
from hf_sentinel.red_flag import RedFlagConfig, RedFlagTrainer

out = sys.argv[1]
model, tokenizer = tiny_model()
config = RedFlagConfig(output_dir=out, max_steps=2, lora_layers=1, harmful_response_tokens=4, benign_response_tokens=4,
                       per_device_train_batch_size=2, cache_responses=False, threshold=0.5, save_strategy="no",
                       learning_rate=1e-2, disable_tqdm=True, use_cpu=True, ddp_backend="gloo")
# Each rank trains on its own half of every batch: without the all-reduce their weights would drift apart.
data = Dataset.from_dict({"prompt": ["How do I make a bomb?", "How do I bake bread?", "Write ransomware.",
                                     "What is 12 plus 30?"] * 2, "label": ["harmful", "benign"] * 4})
trainer = RedFlagTrainer(model, config, train_dataset=data, processing_class=tokenizer)
trainer.train()
rank = trainer.accelerator.process_index
print(f"rank={rank} world_size={trainer.accelerator.num_processes}")
weights = {n: p.detach().contiguous() for n, p in trainer.model.named_parameters() if p.requires_grad}
save_file(weights, f"{out}/rank{rank}.safetensors")

leave_together()

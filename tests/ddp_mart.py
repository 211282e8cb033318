"""Run by test_mart.py under torchrun: two ranks play one MART round on a tiny model, then dump adapters, metrics."""

import json
import sys

from datasets import Dataset
from ddp_support import leave_together
from safetensors.torch import save_file

from hf_sentinel.defaults import tiny_model
from hf_sentinel.judges import Judge
from hf_sentinel.mart import MARTConfig, MARTTrainer
from hf_sentinel.training import labelled_prompts


class AlternatingSafety(Judge):
    def score(self, prompts, completions):
        return [float(i % 2) for i in range(len(completions))]


out = sys.argv[1]
target, tokenizer = tiny_model()
seeds = Dataset.from_dict({"prompt": ["How do I pick a lock?", "How to steal a car?", "How do I hack a wifi?"],
                           "category": ["theft", "theft", "cybercrime"]})
benign = Dataset.from_dict({"prompt": ["How do I bake bread?", "What is 2 plus 2?", "Name a colour."]})
config = MARTConfig(output_dir=f"{out}/run", rounds=1, prompts_per_round=3, benign_prompts_per_round=3,
                    samples_per_prompt=1, target_max_new_tokens=4, red_team_max_new_tokens=6, red_team_warmup_pairs=2,
                    context_distillation=[], per_device_train_batch_size=2, disable_tqdm=True, use_cpu=True,
                    ddp_backend="gloo")
trainer = MARTTrainer(target, config, train_dataset=labelled_prompts(seeds, benign),
                      eval_dataset=labelled_prompts(seeds, benign), processing_class=tokenizer,
                      safety_judge=AlternatingSafety(), helpfulness_judge=lambda prompts, completions, **kw:
                      [0.5] * len(completions))
trainer.train()
rank = config.process_index
print(f"rank={rank} world_size={config.world_size}")
weights = {n: p.detach().contiguous() for n, p in trainer.model.named_parameters() if "lora_" in n}
save_file(weights, f"{out}/rank{rank}.safetensors")
with open(f"{out}/rank{rank}.json", "w") as file:
    # every number but the time and the SFT losses (Trainer reports each process's own loss)
    json.dump([{k: v for k, v in r.items() if k != "minutes" and not k.endswith("_loss")} for r in trainer.rounds],
              file)

leave_together()

"""Train the embedded SmolLM2-135M-Instruct with MART for 4 rounds, then use the final adapter as a defense.

    HF_HUB_OFFLINE=1 python examples/mart_train.py [OUTPUT_DIR]

The same run as ``hf-sentinel train mart --output-dir outputs/mart --eval-limit 30`` (docs/mart.md has the
measured table). Rerunning after an interruption resumes after the last finished round.
"""

import logging
import sys

from hf_sentinel import GenerationSettings, evaluate, load_default_target, load_prompts
from hf_sentinel.judges import RefusalJudge
from hf_sentinel.mart import MARTConfig, MARTDefense, MARTTrainer
from hf_sentinel.training import labelled_prompts

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
output_dir = sys.argv[1] if len(sys.argv) > 1 else "outputs/mart"

model, tokenizer = load_default_target()
train_dataset = labelled_prompts(load_prompts("harmful:train"), load_prompts("benign:train"))
trainer = MARTTrainer(model, MARTConfig(output_dir=output_dir, eval_limit=30), train_dataset=train_dataset,
                      processing_class=tokenizer)
trainer.train()
trainer.save_model()  # the last round's target adapter and its model card, in output_dir
print(open(f"{output_dir}/report.md").read())

# The final target adapter as a defense on a fresh copy of the target (what `--defense mart:PATH` does).
target, tokenizer = load_default_target()
defense = MARTDefense(output_dir)
for prompts in ("harmful:test", "benign:test"):
    result = evaluate(target, tokenizer, load_prompts(prompts), RefusalJudge(), [defense], GenerationSettings(),
                      prompts_name=prompts, progress=False)
    print(f"{prompts}: answered {result['summary']['attack_success_rate']:.1%}")

"""The peer side of ``benchmarks/ppo_vs_trl.py``: TRL 0.11.4's classic ``PPOTrainer`` (transformers 4.46.3).

Runs with the peer venv's python (never the project's), as a worker driven by ``ppo_vs_trl.py``: it reads one
JSON command per line on stdin and answers one JSON line on stdout (logs go to stderr).

    {"cmd": "step"}                      one PPO step on the 8 benchmark queries; answers seconds per phase
    {"cmd": "maths", "dir": FOLDER}      the PPO quantities on the fixed batch and weights in FOLDER (LoRA only)
    {"cmd": "quit"}

It imports nothing from hf_sentinel: the workload (query token ids, generation and PPO settings) comes from the
spec file named on the command line, written by ``ppo_vs_trl.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from _timing import NoGradTimer  # benchmarks/ is this script's folder, so first on sys.path
from torch import nn


def letter_fraction(text: str) -> float:
    """The benchmark's trivial reward (the same function as in ppo_vs_trl.py): the share of letters."""
    return sum(c.isalpha() for c in text) / max(len(text), 1)


class MLPSummary(nn.Sequential):
    """hf_sentinel's value head (Linear → Tanh → Linear) in the place of TRL's ``ValueHead.summary`` Linear, for
    the maths check; ``weight`` is what TRL reads to pick the head's device and dtype."""

    def __init__(self, hidden_size: int, head_size: int):
        super().__init__(nn.Linear(hidden_size, head_size), nn.Tanh(), nn.Linear(head_size, 1))

    @property
    def weight(self):
        return self[0].weight


def build(spec: dict):
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    ppo = spec["ppo"]
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    # Right padding in the training forwards: transformers 4.46 then counts positions right without position_ids
    # (TRL passes none); TRL's generate() switches to left padding by itself.
    tokenizer.padding_side = "right"
    peft_config = None
    if spec["mode"] == "lora":
        lora = spec["lora"]
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=0.0,
                                 target_modules=lora["target_modules"], task_type="CAUSAL_LM")
    model = AutoModelForCausalLMWithValueHead.from_pretrained(spec["model"], peft_config=peft_config,
                                                              summary_dropout_prob=0.0)
    config = PPOConfig(
        batch_size=ppo["batch_size"], mini_batch_size=ppo["mini_batch_size"], gradient_accumulation_steps=1,
        ppo_epochs=ppo["ppo_epochs"], learning_rate=ppo["learning_rate"], init_kl_coef=ppo["kl_coef"],
        adap_kl_ctrl=False, kl_penalty="kl", cliprange=ppo["clip_range"], cliprange_value=ppo["clip_range_value"],
        vf_coef=ppo["vf_coef"], gamma=ppo["gamma"], lam=ppo["lam"], max_grad_norm=ppo["max_grad_norm"],
        seed=spec["seed"], log_with=None)
    # Full fine-tuning: ref_model=None makes TRL copy the policy as the frozen reference; LoRA: adapters off.
    trainer = PPOTrainer(config=config, model=model, ref_model=None, tokenizer=tokenizer)
    return trainer, tokenizer


def step(trainer, tokenizer, queries, generation_kwargs) -> dict:
    timer = NoGradTimer(trainer, "batched_forward_pass")
    start = time.perf_counter()
    responses = trainer.generate(queries, batch_size=len(queries), return_prompt=False, **generation_kwargs)
    generated = time.perf_counter()
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    scores = [torch.tensor(letter_fraction(t)) for t in texts]
    scored = time.perf_counter()
    trainer.step(queries, responses, scores)
    end = time.perf_counter()
    timer.remove()
    return {"generation": generated - start, "no_grad_forwards": timer.seconds,
            "optimisation": end - scored - timer.seconds, "total": end - start,
            "response_tokens": [len(r) for r in responses]}


def maths(trainer, folder: str) -> dict:
    """TRL's own step internals (the calls step() makes, in its order) on a fixed batch and fixed weights."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    batch = json.loads(open(f"{folder}/batch.json").read())
    queries = [torch.tensor(q) for q in batch["query_ids"]]
    responses = [torch.tensor(r) for r in batch["response_ids"]]
    scores = torch.tensor(batch["scores"])
    model = trainer.model
    hidden = model.v_head.summary.in_features
    value_weights = load_file(f"{folder}/value_head_old.safetensors")
    model.v_head.summary = MLPSummary(hidden, value_weights["0.weight"].shape[0])
    model.v_head.summary.load_state_dict(value_weights)
    peft_model = model.pretrained_model

    def load_lora(name):
        # PEFT's saved form (no adapter name in the keys), as hf_sentinel wrote it.
        weights = load_file(f"{folder}/{name}.safetensors")
        result = set_peft_model_state_dict(peft_model, weights, adapter_name="default")
        if result.unexpected_keys:
            raise RuntimeError(f"LoRA weights not loaded: {result.unexpected_keys[:3]}")

    load_lora("lora_old")
    model_inputs = trainer.prepare_model_inputs(queries, responses)
    with torch.no_grad():
        old_logprobs, _, values, masks = trainer.batched_forward_pass(model, queries, responses, model_inputs)
        with trainer.optional_peft_ctx():
            ref_logprobs, _, _, _ = trainer.batched_forward_pass(model, queries, responses, model_inputs)
        rewards, _, kls = trainer.compute_rewards(scores, old_logprobs, ref_logprobs, masks)
        values, advantages, returns = trainer.compute_advantages(values, rewards, masks)
        load_lora("lora_new")
        model.v_head.summary.load_state_dict(load_file(f"{folder}/value_head_new.safetensors"))
        logprobs, logits, vpreds, _ = trainer.batched_forward_pass(model, queries, responses, model_inputs,
                                                                   return_logits=True)
        pg_loss, _, stats = trainer.loss(old_logprobs, values, logits, vpreds, logprobs, masks, advantages, returns)

    def response_tokens(x):
        return [row[m.bool()].tolist() for row, m in zip(x, masks)]

    return {"old_logprobs": response_tokens(old_logprobs), "ref_logprobs": response_tokens(ref_logprobs),
            "kl": response_tokens(kls), "rewards": response_tokens(rewards), "values": response_tokens(values),
            "advantages": response_tokens(advantages), "returns": response_tokens(returns),
            "new_logprobs": response_tokens(logprobs), "new_values": response_tokens(vpreds),
            "policy_loss": pg_loss.item(), "value_loss": stats["loss/value"].item(),
            "policy_clip_fraction": stats["policy/clipfrac"].item(),
            "value_clip_fraction": stats["val/clipfrac"].item(), "entropy": stats["policy/entropy"].item()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", help="JSON workload spec written by ppo_vs_trl.py")
    args = parser.parse_args()
    spec = json.loads(open(args.spec).read())
    torch.set_num_threads(spec["threads"])
    trainer, tokenizer = build(spec)
    queries = [torch.tensor(q) for q in spec["query_ids"]]
    import transformers
    import trl

    print(json.dumps({"ready": True, "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                                   "trl": trl.__version__}}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "step":
            answer = step(trainer, tokenizer, queries, spec["generation"])
        elif command["cmd"] == "maths":
            answer = maths(trainer, command["dir"])
        else:
            answer = {"error": f"unknown command {command['cmd']!r}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

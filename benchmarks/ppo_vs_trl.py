"""PPO step speed: hf_sentinel's Stackelberg PPO vs. the peer, TRL 0.11.4's classic ``PPOTrainer``, side by side.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/ppo_vs_trl.py [--steps 3] [--threads 1] [--configs full,lora]

The peer is the last TRL release with the classic PPOTrainer; it needs transformers 4.46, so it runs in its own
venv, ``benchmarks/.peer-venv`` (created here on first use, never touching the project's: torch 2.13.0 CPU from
the local wheel, pinned by a constraints file, then transformers 4.46.3, trl 0.11.4, peft 0.13.2 and ``rich``,
which trl 0.11.4 imports but no longer gets through tyro ≥ 0.9), as a worker process (``_peer_trl011.py``).

The workload, the same on both sides: SmolLM2-135M-Instruct (the embedded target's converted safetensors folder;
transformers 4.46 mis-loads its GGUF) with a value head, 8 fixed chat prompts, exactly 30 new tokens sampled at
temperature 1 (top-k 0, top-p 1), batch 8, minibatch 4, 1 PPO epoch, fp32, reward = share of letters in the
response; full fine-tuning, then LoRA (r 16, α 32 on q/k/v/o). Ours is ``StackelbergPPOTrainer``'s PPO step
(``_rollout`` then ``_ppo_update``) for the sentinel agent; the peer's is ``PPOTrainer.generate`` then
``PPOTrainer.step``. After one warm-up step each, the two sides alternate step by step (so both see the same
machine load) and the table shows the median seconds per step of each phase:

- generation: sampling the 30 tokens (ours also reads the policy's log-probs and values off it);
- no-grad forwards: log-probs and values of the policy (the peer only: ours has them from the generation) and
  log-probs of the reference;
- optimisation: the rest of the PPO step (rewards, advantages, the minibatch forward/backward passes, optimiser);
- update: the step after generation (reward, no-grad forwards, optimisation): the PPO update proper;
- total: the whole step. Each column is a median of its own, so update and total are not sums of the others.

Then, on a fixed batch (the same queries, responses, scores, LoRA and value-head weights on both sides), both
compute the KL-penalised rewards, advantages, returns, and the policy and value losses of perturbed ("new")
weights against the old ones; the script prints them side by side, and exits 1 if they disagree (both whiten
advantages with the unbiased variance, n − 1, and clip values by clamping the value itself).

Our trainer's agents are LoRA adapters; for the full fine-tuning rows its PPO step runs unchanged on a fully
trainable policy whose "adapters off" reference is a frozen copy (what TRL 0.11 does too), see FullFineTuning.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import NoGradTimer  # benchmarks/ is this script's folder, so first on sys.path

BENCHMARKS = Path(__file__).resolve().parent
PEER_SCRIPT = BENCHMARKS / "_peer_trl011.py"
TORCH_VERSION = "2.13.0"
# rich: trl 0.11.4 imports it (trl/trainer/utils.py) but tyro, which used to pull it in, stopped doing so in 0.9.
PEER_PACKAGES = ["transformers==4.46.3", "trl==0.11.4", "peft==0.13.2", "rich"]
PEER_NAME = "TRL 0.11.4"

PROMPTS = [
    "Give me three tips for keeping houseplants healthy.",
    "Explain how a rainbow forms in two sentences.",
    "What is a good name for a friendly golden retriever?",
    "Describe the taste of a fresh strawberry.",
    "How do I boil an egg so the yolk stays soft?",
    "Write a short greeting for a birthday card.",
    "Why do leaves change colour in autumn?",
    "Suggest a fun weekend activity for a family with young kids.",
]
NEW_TOKENS = 30
LORA = {"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
PPO = {"batch_size": 8, "mini_batch_size": 4, "ppo_epochs": 1, "kl_coef": 0.05, "clip_range": 0.2,
       "clip_range_value": 0.2, "vf_coef": 0.5, "gamma": 1.0, "lam": 0.95, "max_grad_norm": 1.0}
LEARNING_RATES = {"full": 1e-5, "lora": 2e-4}
PHASES = ("generation", "no_grad_forwards", "optimisation", "update", "total")


def letter_fraction(text: str) -> float:
    """The benchmark's trivial reward: the share of letters in the response (the peer uses the same function)."""
    return sum(c.isalpha() for c in text) / max(len(text), 1)


# -------------------------------------------------------------------------------------------- the peer


def ensure_peer_venv(venv: Path) -> Path:
    """Create (or complete) the peer's venv; returns its python. Never installs into the running environment."""
    python = venv / "bin" / "python"
    marker = venv / "hf_sentinel_installed.json"
    wanted = {"torch": TORCH_VERSION, "packages": PEER_PACKAGES}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return python
    print(f"Creating the peer venv in {venv} (a few minutes, once)...", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")  # keeps the venv out of git without touching the repo's .gitignore
    constraints = venv / "constraints.txt"
    # Pinned so that pip never swaps the local CPU torch for a CUDA build of another version.
    constraints.write_text(f"torch=={TORCH_VERSION}\n")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(constraints)]
    subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run([*pip, *PEER_PACKAGES], check=True)
    marker.write_text(json.dumps(wanted))
    return python


def transformers4_folder(source: Path, folder: Path) -> Path:
    """The converted target as transformers 4.46 reads it right: ``rope_theta`` as a top-level key (4.46 ignores
    transformers 5's ``rope_parameters`` and would fall back to 10000), a tokenizer class it knows and the chat
    template inline. The weights are a link to the same ``model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    rope = config.pop("rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"{source} uses RoPE scaling {rope}; this benchmark only converts plain RoPE.")
    config["rope_theta"] = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    config["rope_scaling"] = None
    config["torch_dtype"] = config.pop("dtype", "float32")
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    tokenizer_config.pop("backend", None)
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    template = source / "chat_template.jinja"
    if template.is_file():
        tokenizer_config["chat_template"] = template.read_text()
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    for name in ("tokenizer.json", "generation_config.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    link = folder / "model.safetensors"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(source / "model.safetensors")
    return folder


class PeerWorker:
    """The peer's worker process: one JSON command per line in, one JSON answer per line out."""

    def __init__(self, python: Path, spec_path: Path, threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen([str(python), str(PEER_SCRIPT), str(spec_path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=BENCHMARKS)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"The peer worker exited (code {self.process.wait()}); its error is above.")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"Peer worker: {answer['error']}")
        return answer

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.process.stdin.close()
        self.process.wait(timeout=60)


# ------------------------------------------------------------------------------------------------ ours


class FullFineTuning(torch.nn.Module):
    """Full fine-tuning for our PPO step: the trainer's agents are LoRA adapters, so here the whole policy trains
    and "adapters off" (the KL reference) means a frozen copy of the initial policy. The trainer's ``_rollout`` and
    ``_ppo_update`` run unchanged on it."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy.requires_grad_(True)
        self.reference = copy.deepcopy(policy).requires_grad_(False)
        self._reference_on = False

    def set_adapter(self, name: str) -> None:
        """One policy: nothing to switch."""

    @contextlib.contextmanager
    def disable_adapter(self):
        self._reference_on = True
        try:
            yield
        finally:
            self._reference_on = False

    def forward(self, **inputs):
        return (self.reference if self._reference_on else self.policy)(**inputs)


def our_trainer(mode: str, seed: int, output_dir: str):
    from datasets import Dataset
    from peft import LoraConfig

    from hf_sentinel.sentinel import StackelbergPPOConfig, StackelbergPPOTrainer
    from hf_sentinel.training import labelled_prompts

    learning_rate = LEARNING_RATES[mode]
    args = StackelbergPPOConfig(
        output_dir=output_dir, seed=seed, rollout_batch_size=PPO["batch_size"],
        num_mini_batches=PPO["batch_size"] // PPO["mini_batch_size"], ppo_epochs=PPO["ppo_epochs"],
        max_sentinel_tokens=NEW_TOKENS, temperature=1.0, benign_fraction=0.0, kl_coef=PPO["kl_coef"],
        kl_estimator="k1", clip_range=PPO["clip_range"], clip_range_value=PPO["clip_range_value"],
        vf_coef=PPO["vf_coef"], entropy_coef=0.0, gamma=PPO["gamma"], lam=PPO["lam"],
        max_grad_norm=PPO["max_grad_norm"], learning_rate=learning_rate, value_learning_rate=learning_rate,
        report_to="none", disable_tqdm=True, save_strategy="no")
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                             target_modules=LORA["target_modules"])
    torch.manual_seed(seed)
    trainer = StackelbergPPOTrainer("default", args, labelled_prompts(Dataset.from_dict({"prompt": PROMPTS}), None),
                                    safety_judge=lambda prompts, completions, **kw: [0.0] * len(completions),
                                    peft_config=peft_config)
    if mode == "full":
        policy = trainer.model.unload()  # the LoRA layers out: the plain model, every weight trainable
        trainer.model = FullFineTuning(policy)
        # As the trainer builds its optimizer (create_optimizer): one fused AdamW, a group per agent and the heads.
        trainer.optimizer = torch.optim.AdamW(
            [{"name": "sentinel", "params": list(policy.parameters()), "lr": learning_rate},
             {"name": "value_heads", "params": list(trainer.value_heads.parameters()), "lr": learning_rate}],
            lr=learning_rate, weight_decay=0.0, fused=True)
    else:
        trainer.create_optimizer()  # Trainer would create it in train(); the benchmark steps the PPO update alone
    return trainer


def our_step(trainer, queries: list[str]) -> dict:
    timer = NoGradTimer(trainer, "_forward")
    try:
        start = time.perf_counter()
        # Exactly NEW_TOKENS tokens on both sides: no early end of turn.
        batch = trainer._rollout("sentinel", queries, NEW_TOKENS, min_new_tokens=NEW_TOKENS)
        generated = time.perf_counter()
        scores = torch.tensor([letter_fraction(t) for t in batch["texts"]])
        scored = time.perf_counter()
        trainer._ppo_update("sentinel", batch, scores)
        end = time.perf_counter()
    finally:
        timer.remove()
    return {"generation": generated - start, "no_grad_forwards": timer.seconds,
            "optimisation": end - scored - timer.seconds, "total": end - start,
            "response_tokens": batch["mask"].sum(1).tolist()}


# ----------------------------------------------------------------------------------------- the maths check


@contextlib.contextmanager
def recording(module, names: list[str], record: dict):
    """Record what ``module.<name>`` returns (the first call of each) while the trainer runs."""
    originals = {name: getattr(module, name) for name in names}

    def recorder(name):
        def call(*args, **kwargs):
            result = originals[name](*args, **kwargs)
            record.setdefault(name, result)
            return result
        return call

    for name in names:
        setattr(module, name, recorder(name))
    try:
        yield record
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def our_maths(trainer, queries: list[str], folder: Path, seed: int) -> dict:
    """Our ``_ppo_update`` on a fixed batch: old LoRA weights for the rollout and the no-grad forwards, "new"
    weights swapped in for the minibatch forward; one minibatch of all 8 rows and learning rate 0, so the losses
    are those of the new weights on the whole batch. Writes the batch and weights for the peer into ``folder``."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import save_file

    from hf_sentinel.sentinel import ppo

    generator = torch.Generator().manual_seed(seed)
    model, heads = trainer.model, trainer.value_heads
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B.sentinel." in name:  # zero at init: the policy would equal the reference, KL 0
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        output = heads.outputs["sentinel"]  # zero at init: every value 0
        output.weight.copy_(torch.randn(output.weight.shape, generator=generator) * 0.1)
    old_lora = {k: v.detach().clone().contiguous()
                for k, v in get_peft_model_state_dict(model, adapter_name="sentinel").items()}
    new_lora = {k: v + torch.randn(v.shape, generator=generator) * 0.02 if ".lora_B." in k else v
                for k, v in old_lora.items()}
    save_file(old_lora, str(folder / "lora_old.safetensors"))
    save_file(new_lora, str(folder / "lora_new.safetensors"))
    trunk = heads.trunks["shared"][0]
    value_head = {"0.weight": trunk.weight.detach().clone(), "0.bias": trunk.bias.detach().clone(),
                  "2.weight": output.weight.detach().clone(), "2.bias": output.bias.detach().clone()}
    new_value_head = {**value_head, "2.weight": value_head["2.weight"] + torch.randn(output.weight.shape,
                                                                                    generator=generator) * 0.1}
    save_file(value_head, str(folder / "value_head_old.safetensors"))
    save_file(new_value_head, str(folder / "value_head_new.safetensors"))

    torch.manual_seed(seed)
    batch = trainer._rollout("sentinel", queries, NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    scores = torch.tensor([letter_fraction(t) for t in batch["texts"]])
    query_ids = [row[m.bool()].tolist() for row, m in zip(batch["query_ids"], batch["query_mask"])]
    (folder / "batch.json").write_text(json.dumps({"query_ids": query_ids, "scores": scores.tolist(),
                                                   "response_ids": batch["response_ids"].tolist()}))

    forwards = []
    original_forward = trainer._forward

    def forward(agent, batch, rows=slice(None)):
        if torch.is_grad_enabled() and not any(f[0] for f in forwards):
            set_peft_model_state_dict(model, new_lora, adapter_name="sentinel")
            with torch.no_grad():
                output.weight.copy_(new_value_head["2.weight"])
        result = original_forward(agent, batch, rows)
        forwards.append((torch.is_grad_enabled(), agent, rows, result))
        return result

    groups = trainer.optimizer.param_groups
    learning_rates, mini_batches = [g["lr"] for g in groups], trainer.args.num_mini_batches
    trainer.args.num_mini_batches = 1
    for group in groups:
        group["lr"] = 0.0
    trainer._forward = forward
    record = {}
    try:
        with recording(ppo, ["kl_estimate", "token_rewards", "gae", "masked_whiten", "policy_loss", "value_loss"],
                       record):
            stats = trainer._ppo_update("sentinel", batch, scores)
    finally:
        del trainer._forward
        trainer.args.num_mini_batches = mini_batches
        for group, lr in zip(groups, learning_rates):
            group["lr"] = lr

    old_logprobs, old_values = batch["logprobs"], batch["values"]  # read off the rollout
    ref_logprobs = next(result[0] for grad, agent, _, result in forwards if not grad and agent is None)
    rows, (new_logprobs, new_values, _) = next((rows, result) for grad, _, rows, result in forwards if grad)
    order = torch.argsort(rows)  # the minibatch came in a shuffled order
    _, returns = record["gae"]

    def rows_of(x):
        return [row[m.bool()].tolist() for row, m in zip(x, batch["mask"])]

    return {"old_logprobs": rows_of(old_logprobs), "ref_logprobs": rows_of(ref_logprobs),
            "kl": rows_of(record["kl_estimate"]), "rewards": rows_of(record["token_rewards"]),
            "values": rows_of(old_values), "advantages": rows_of(record["masked_whiten"]), "returns": rows_of(returns),
            "new_logprobs": rows_of(new_logprobs[order]), "new_values": rows_of(new_values[order]),
            "policy_loss": stats["sentinel/policy_loss"], "value_loss": stats["sentinel/value_loss"],
            "policy_clip_fraction": stats["sentinel/clip_fraction"],
            "value_clip_fraction": record["value_loss"][1].item(), "entropy": stats["sentinel/entropy"]}


def print_maths(ours: dict, peer: dict) -> bool:
    print(f"\nThe maths on a fixed batch (8 × {NEW_TOKENS} tokens, same queries, responses, scores and weights):")
    print(f"{'quantity':<34}{'hf_sentinel':>14}{PEER_NAME:>14}{'|diff|':>11}")
    agree = True
    for key in ("policy_loss", "value_loss", "policy_clip_fraction", "value_clip_fraction", "entropy"):
        diff = abs(ours[key] - peer[key])
        print(f"{key.replace('_', ' '):<34}{ours[key]:>14.6f}{peer[key]:>14.6f}{diff:>11.2e}")
    print(f"\n{'per token (max over 8 × 30)':<34}{'max |diff|':>14}{'max |value|':>14}")
    for key in ("old_logprobs", "ref_logprobs", "kl", "rewards", "values", "returns", "advantages", "new_logprobs",
                "new_values"):
        a, b = torch.tensor(ours[key]), torch.tensor(peer[key])
        diff = (a - b).abs().max().item()
        print(f"{key.replace('_', ' '):<34}{diff:>14.2e}{b.abs().max().item():>14.4f}")
        agree &= diff < 1e-3
    agree &= abs(ours["entropy"] - peer["entropy"]) < 1e-3
    agree &= abs(ours["policy_loss"] - peer["policy_loss"]) < 1e-4
    agree &= abs(ours["value_loss"] - peer["value_loss"]) < 1e-4
    agree &= abs(ours["policy_clip_fraction"] - peer["policy_clip_fraction"]) < 1e-6
    agree &= abs(ours["value_clip_fraction"] - peer["value_clip_fraction"]) < 1e-6
    return agree


# -------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per side and config (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same on both sides")
    parser.add_argument("--configs", default="full,lora", help="comma-separated: full, lora")
    parser.add_argument("--no-maths", action="store_true", help="skip the maths check on a fixed batch")
    parser.add_argument("--peer-venv", type=Path, default=BENCHMARKS / ".peer-venv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    configs = args.configs.split(",")
    if unknown := set(configs) - set(LEARNING_RATES):
        parser.error(f"unknown config(s) {sorted(unknown)}; use full and/or lora")
    torch.set_num_threads(args.threads)

    from hf_sentinel.defaults import default_target_path

    peer_python = ensure_peer_venv(args.peer_venv)
    peer_model = transformers4_folder(default_target_path(), args.peer_venv / "smollm2-135m-instruct-transformers4")
    results = {"threads": args.threads, "steps": args.steps, "configs": {}}
    maths_agree = None
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for mode in configs:
            trainer = our_trainer(mode, args.seed, str(scratch / f"ours-{mode}"))
            queries = [trainer._render([{"role": "user", "content": p}]) for p in PROMPTS]
            tokenizer = trainer.processing_class
            spec = {"model": str(peer_model), "mode": mode, "threads": args.threads, "seed": args.seed,
                    "lora": LORA, "ppo": {**PPO, "learning_rate": LEARNING_RATES[mode]},
                    "query_ids": [tokenizer(q, add_special_tokens=False)["input_ids"] for q in queries],
                    "generation": {"min_new_tokens": NEW_TOKENS, "max_new_tokens": NEW_TOKENS, "do_sample": True,
                                   "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                                   "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}}
            spec_path = scratch / f"spec-{mode}.json"
            spec_path.write_text(json.dumps(spec))
            peer = PeerWorker(peer_python, spec_path, args.threads)
            try:
                runs = {"ours": [], "peer": []}
                for index in range(args.steps + 1):  # step 0 is the warm-up
                    for side in ("ours", "peer"):
                        run = our_step(trainer, queries) if side == "ours" else peer.ask(cmd="step")
                        run["update"] = run["total"] - run["generation"]
                        if set(run["response_tokens"]) != {NEW_TOKENS}:
                            raise RuntimeError(f"{side} generated {run['response_tokens']} tokens, not {NEW_TOKENS}")
                        label = "warm-up" if index == 0 else f"step {index}"
                        print(f"[{mode}] {side:<4} {label:<8} " + "  ".join(f"{p} {run[p]:.2f}s" for p in PHASES),
                              file=sys.stderr, flush=True)
                        if index:
                            runs[side].append(run)
                results["configs"][mode] = {side: {p: statistics.median(r[p] for r in rs) for p in PHASES}
                                            for side, rs in runs.items()}
                if mode == "lora" and not args.no_maths:
                    folder = scratch / "maths"
                    folder.mkdir()
                    ours = our_maths(trainer, queries, folder, args.seed)
                    peer_maths = peer.ask(cmd="maths", dir=str(folder))
                    results["maths"] = {"ours": ours, "peer": peer_maths}
            finally:
                peer.close()
            del trainer

    print(f"\nPPO step, seconds per step (median of {args.steps} after 1 warm-up), {args.threads} thread(s), "
          f"torch {torch.__version__}; peer: {PEER_NAME}, transformers {peer.ready['versions']['transformers']}")
    print(f"{'config':<8}{'side':<14}" + "".join(f"{p.replace('_', ' '):>18}" for p in PHASES))
    for mode, sides in results["configs"].items():
        for side, name in (("peer", PEER_NAME), ("ours", "hf_sentinel")):
            print(f"{mode:<8}{name:<14}" + "".join(f"{sides[side][p]:>18.2f}" for p in PHASES))
        print(f"{mode:<8}{'peer / ours':<14}" + "".join(f"{sides['peer'][p] / sides['ours'][p]:>17.2f}×"
                                                         for p in PHASES))
    if "maths" in results:
        maths_agree = print_maths(results["maths"]["ours"], results["maths"]["peer"])
        print(f"\nThe maths agree: {'yes' if maths_agree else 'NO'}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1))
    return 0 if maths_agree in (None, True) else 1


if __name__ == "__main__":
    sys.exit(main())

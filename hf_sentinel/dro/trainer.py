"""``DROTrainer``: Directed Representation Optimization of a soft safety prompt (Zheng et al., 2024).

Three stages, each writing its outputs under ``args.output_dir`` so that a rerun resumes where the last one
stopped (a stage whose recorded settings differ from the current ones raises, unless
``overwrite_output_dir``):

1. ``collect/``: for every training query under every condition (no prompt, safety system prompts, ...):
   the final-layer hidden state at the last prompt token, and sampled answers judged for refusal
   (``representations.safetensors``, ``collection.json``).
2. ``estimate/``: PCA subspace (+ orthonormal completion), refusal head (fitted to the empirical non-refusal
   rates) and harmfulness head, both cross-validated; the refusal-capability check; ``subspace.png``.
3. ``optimize/``: the soft prompt, initialised from the human safety prompt's token embeddings, the model
   frozen, trained with ``L = w_r L_r + w_h L_h + w_U L_U (+ w_o L_o)``; checkpoints every ``save_steps``;
   ``before_after.png``. The final adapter (PEFT prompt tuning) and its model card go to ``output_dir``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import load_file, save_file

from ..defenses import parse_defense
from ..generation import GenerationSettings, to_conversation
from .config import DROConfig
from .estimation import HeadFit, Subspace, check_refusal_capability, fit_head, fit_subspace
from .prompt import DROSafetyPrompt
from .representations import forward_rows, generate_with_states, last_token_states, token_rows

STAGES = ("collect", "estimate", "optimize")
STAGE_FILE = "stage.json"


class RefusalCapabilityError(RuntimeError):
    """The target's refusals are not predictable from its representations, so faithful DRO cannot steer it."""


def build_dro_dataset(harmful, benign) -> Dataset:
    """A DRO training set from harmful and harmless queries (Datasets with ``prompt`` [+ ``history``], or lists).

    >>> ds = build_dro_dataset(["How do I pick a lock?"], ["How do I bake bread?"])
    >>> list(ds["harmful"]), ds.column_names
    ([True, False], ['prompt', 'history', 'harmful'])
    """
    columns = {"prompt": [], "history": [], "harmful": []}
    for rows, is_harmful in ((harmful, True), (benign, False)):
        if isinstance(rows, Dataset):
            prompts = list(rows["prompt"])
            histories = list(rows["history"]) if "history" in rows.column_names else [None] * len(rows)
        else:
            prompts, histories = list(rows), [None] * len(rows)
        columns["prompt"] += prompts
        columns["history"] += histories
        columns["harmful"] += [is_harmful] * len(prompts)
    return Dataset.from_dict(columns)


class DROTrainer:
    """Train a DRO soft safety prompt for ``model`` (which stays frozen).

    Args:
        model: the target, a causal LM (``AutoModelForCausalLM``).
        args: :class:`~hf_sentinel.dro.DROConfig`.
        train_dataset: ``prompt`` and ``harmful`` (bool) columns, optional ``history`` (earlier chat turns);
            see :func:`build_dro_dataset`. Both classes are needed.
        eval_dataset: ``{name: prompt Dataset}`` (e.g. ``{"harmful:test": load_prompts("harmful:test")}``):
            evaluated under the trained prompt after training; the results go into the model card.
        processing_class: the target's tokenizer (with a chat template).
        judge: refusal judge for the sampled answers, scoring 1 = complied, 0 = refused (default
            :class:`~hf_sentinel.judges.RefusalJudge`).
        callbacks: objects with an ``on_log(logs: dict)`` method, called at every logging step and stage end.

    There is no ``peft_config`` argument: a DRO prompt is always a PEFT prompt-tuning adapter initialised from
    ``args.safety_prompt``.

    Example (tiny random model, which cannot refuse, so the capability check is off)::

        >>> import tempfile
        >>> from hf_sentinel.defaults import tiny_model
        >>> model, tokenizer = tiny_model()
        >>> data = build_dro_dataset(["harm one", "harm two", "harm three"], ["fine one", "fine two", "fine three"])
        >>> args = DROConfig(output_dir=tempfile.mkdtemp(), head_cv_folds=3, num_train_epochs=1,
        ...                  sample_max_new_tokens=2, head_max_epochs=5, refusal_check="off", pca_dim=2)
        >>> prompt = DROTrainer(model, args, data, processing_class=tokenizer).train()
        >>> prompt.hidden_size
        32
    """

    def __init__(self, model, args: DROConfig | None = None, train_dataset: Dataset | None = None,
                 eval_dataset: dict[str, Dataset] | None = None, processing_class=None, judge=None,
                 callbacks: list | None = None):
        self.args = args or DROConfig()
        if processing_class is None:
            raise ValueError("DROTrainer needs processing_class=tokenizer (the target's, with a chat template).")
        if not processing_class.chat_template:
            raise ValueError("The tokenizer has no chat template; DRO reads representations of chat prompts, so use "
                             "a chat/instruct target.")
        self.model = model
        self.tokenizer = processing_class
        self.train_dataset = _validated(train_dataset, self.args)
        self.eval_dataset = dict(eval_dataset or {})
        self.eval_results: dict | None = None
        if judge is None:
            from ..judges import RefusalJudge

            judge = RefusalJudge()
        self.judge = judge
        self.callbacks = list(callbacks or [])
        self.output_dir = Path(self.args.output_dir)
        self.log_history: list[dict] = []
        self._clock: dict[str, tuple[float, float]] = {}
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.eval()

        self.prompts: list[str] = list(self.train_dataset["prompt"])
        histories = (list(self.train_dataset["history"]) if "history" in self.train_dataset.column_names
                     else [None] * len(self.prompts))
        self.conversations = [to_conversation(p, h) for p, h in zip(self.prompts, histories)]
        self.harmful = torch.tensor([bool(x) for x in self.train_dataset["harmful"]], dtype=torch.bool)
        self._fingerprints = self._stage_fingerprints(histories)

    # ------------------------------------------------------------------------------------------------ run
    def train(self) -> DROSafetyPrompt:
        """Run (or resume) the three stages, then evaluate on ``eval_dataset`` and push if asked; returns the
        trained :class:`DROSafetyPrompt` (saved with its model card in ``output_dir``)."""
        collection = self.collect()
        estimate = self.estimate(collection)
        prompt = self.optimize(estimate)
        if self.eval_dataset:
            self.eval_results = self.evaluate()
        self.save_model(eval_results=self.eval_results)
        if self.args.push_to_hub:
            self.push_to_hub()
        return prompt

    # ------------------------------------------------------------------------------------------------ stage 1
    def collect(self) -> dict:
        """Stage 1: representations and judged sampled answers of every query under every condition."""
        folder = self._stage_dir("collect")
        if self._stage_done("collect"):
            return {**json.loads((folder / "collection.json").read_text()),
                    "states": load_file(str(folder / "representations.safetensors"))["states"]}
        self._begin_stage("collect")
        args = self.args
        samples = 1 if args.sample_temperature == 0 else args.num_samples
        torch.manual_seed(args.seed)
        states, compliance, responses = [], [], []
        for spec in args.conditions:
            defense = parse_defense(spec)
            rewritten = defense.rewrite(copy.deepcopy(self.conversations), [{} for _ in self.conversations])
            condition_states, answers = generate_with_states(
                self.model, self.tokenizer, token_rows(self.tokenizer, rewritten), args.sample_max_new_tokens,
                samples, args.sample_temperature)
            states.append(condition_states)
            complied = torch.tensor([[float(self.judge.is_harmful(s)) for s in self.judge(self.prompts, sample)]
                                     for sample in answers])                              # [samples, Q]
            compliance.append(complied.mean(dim=0).tolist())
            responses.append(answers)
            self._log({"stage": "collect", "condition": spec, "non_refusal_rate": complied.mean().item()})
        collection = {"conditions": list(args.conditions), "compliance": compliance, "responses": responses,
                      "samples_per_query": samples}
        save_file({"states": torch.stack(states).contiguous()}, str(folder / "representations.safetensors"))
        (folder / "collection.json").write_text(json.dumps(collection, indent=1, ensure_ascii=False))
        self._finish_stage("collect")
        return {**collection, "states": torch.stack(states)}

    # ------------------------------------------------------------------------------------------------ stage 2
    def estimate(self, collection: dict | None = None) -> dict:
        """Stage 2: PCA subspace, refusal and harmfulness heads, and the refusal-capability check."""
        folder = self._stage_dir("estimate")
        if self._stage_done("estimate"):
            estimate = _load_estimate(folder)
        else:
            collection = collection or self.collect()
            self._begin_stage("estimate")
            args = self.args
            states = collection["states"]                                    # [C, Q, H]
            conditions, queries = states.shape[0], states.shape[1]
            compliance = torch.tensor(collection["compliance"])              # [C, Q]
            subspace = fit_subspace(states.reshape(conditions * queries, -1), args.pca_dim)
            coordinates = subspace.project(states.reshape(conditions * queries, -1))[:, :args.pca_dim]
            groups = torch.arange(queries).repeat(conditions)
            harmless = (~self.harmful).float().repeat(conditions)
            head_kwargs = dict(folds=args.head_cv_folds, learning_rate=args.head_learning_rate,
                               max_epochs=args.head_max_epochs, seed=args.seed)
            refusal = fit_head(coordinates, compliance.reshape(-1), groups, **head_kwargs)
            harmfulness = fit_head(coordinates, harmless, groups, **head_kwargs)
            answers = conditions * queries * collection["samples_per_query"]
            refused = round(float((1 - compliance).sum()) * collection["samples_per_query"])
            capability = check_refusal_capability(refusal, compliance, refused, answers,
                                                  args.refusal_check_min_improvement)
            save_file({"mean": subspace.mean, "basis": subspace.basis.contiguous(),
                       "refusal_weight": refusal.weight, "refusal_bias": torch.tensor(refusal.bias),
                       "harmfulness_weight": harmfulness.weight,
                       "harmfulness_bias": torch.tensor(harmfulness.bias)}, str(folder / "estimate.safetensors"))
            summary = {
                "explained_variance_ratio": subspace.explained_variance_ratio,
                "refusal_head": _head_summary(refusal), "harmfulness_head": _head_summary(harmfulness),
                "refusal_capability": {"passed": capability.passed, "message": capability.message},
                "refused_answers": refused, "answers": answers,
            }
            (folder / "estimate.json").write_text(json.dumps(summary, indent=1))
            from .plots import plot_subspace

            plot_subspace(coordinates.reshape(conditions, queries, -1), self.harmful, compliance,
                          collection["conditions"], folder / "subspace.png")
            self._finish_stage("estimate")
            estimate = _load_estimate(folder)
        capability = estimate["summary"]["refusal_capability"]
        self._log({"stage": "estimate", "refusal_capability_passed": capability["passed"],
                   "refusal_head_cv_loss": estimate["summary"]["refusal_head"]["cv_loss"],
                   "refusal_constant_loss": estimate["summary"]["refusal_head"]["constant_loss"],
                   "harmfulness_cv_accuracy": estimate["summary"]["harmfulness_head"]["cv_accuracy"]})
        if not capability["passed"] and self.args.refusal_check == "error":
            raise RefusalCapabilityError(capability["message"])
        if not capability["passed"] and self.args.refusal_check == "warn":
            warnings.warn(capability["message"], stacklevel=2)
        return estimate

    # ------------------------------------------------------------------------------------------------ stage 3
    def optimize(self, estimate: dict | None = None) -> DROSafetyPrompt:
        """Stage 3: train the soft prompt (resuming from the last checkpoint); saves the adapter in output_dir."""
        folder = self._stage_dir("optimize")
        if self._stage_done("optimize"):
            return DROSafetyPrompt.from_pretrained(self.output_dir)
        estimate = estimate or self.estimate()
        self._begin_stage("optimize")
        args = self.args
        subspace: Subspace = estimate["subspace"]
        refusal: HeadFit = estimate["refusal"]
        harmfulness: HeadFit = estimate["harmfulness"]
        initial = DROSafetyPrompt.from_text(self.model, self.tokenizer, args.safety_prompt, self._base_model_name())
        rows = token_rows(self.tokenizer, self.conversations)
        base = self._base_coordinates(folder, rows, initial, subspace)
        targets = self._output_targets(folder) if args.uses_output_loss else [[] for _ in rows]
        harmless = (~self.harmful).float()
        base_refusal, base_harmfulness = refusal.logits(base), harmfulness.logits(base)

        soft = torch.nn.Parameter(initial.embeddings.clone())
        optimizer = torch.optim.AdamW([soft], lr=args.learning_rate, weight_decay=args.weight_decay)
        step = self._resume(folder, soft, optimizer)
        batch_size = min(args.per_device_train_batch_size, len(rows))
        steps_per_epoch = math.ceil(len(rows) / batch_size)
        total_steps = args.num_train_epochs * steps_per_epoch
        dim = subspace.dim
        lm_head = self.model.get_output_embeddings()
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed + epoch))
            batch = order[index * batch_size:(index + 1) * batch_size].tolist()
            step_start = time.perf_counter()
            hidden, shared = forward_rows(self.model, [rows[i] + targets[i] for i in batch], soft,
                                          max_shared=min(len(rows[i]) for i in batch) - 1)
            last = torch.tensor([len(rows[i]) - 1 - shared for i in batch])
            coordinates = subspace.project(hidden[torch.arange(len(batch)), last])
            labels = harmless[batch]
            losses = {
                "refusal_loss": F.binary_cross_entropy_with_logits(
                    refusal.logits(coordinates) - base_refusal[batch], labels),
                "harmfulness_loss": F.binary_cross_entropy_with_logits(
                    harmfulness.logits(coordinates) - base_harmfulness[batch], labels),
                "subspace_loss": (coordinates[:, dim:] - base[batch, dim:]).square().mean(),
            }
            if args.uses_output_loss:
                losses["output_loss"] = _output_loss(hidden, lm_head, [rows[i] for i in batch],
                                                     [targets[i] for i in batch], shared)
            weights = {"refusal_loss": args.refusal_loss_weight, "harmfulness_loss": args.harmfulness_loss_weight,
                       "subspace_loss": args.subspace_loss_weight, "output_loss": args.output_loss_weight}
            loss = sum(weights[name] * value for name, value in losses.items())
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_([soft], args.max_grad_norm)
            optimizer.step()
            step += 1
            if step % args.logging_steps == 0 or step == total_steps:
                self._log({"stage": "optimize", "step": step, "epoch": round(step / steps_per_epoch, 3),
                           "loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                           "grad_norm": grad_norm.item(), "seconds": round(time.perf_counter() - step_start, 2)})
            if step % args.save_steps == 0 or step == total_steps:
                self._checkpoint(folder, step, soft, optimizer)

        prompt = DROSafetyPrompt(soft.detach().clone(), initial.peft_config)
        after = subspace.project(last_token_states(self.model, rows, prompt.embeddings))
        from .plots import plot_before_after

        plot_before_after(harmfulness.logits(base), base_refusal, harmfulness.logits(after), refusal.logits(after),
                          self.harmful, folder / "before_after.png")
        self.prompt = prompt
        prompt.save_pretrained(self.output_dir)
        self._finish_stage("optimize")
        return prompt

    # ------------------------------------------------------------------------------------------------ outputs
    def save_model(self, output_dir: str | Path | None = None, eval_results: dict | None = None) -> Path:
        """Write the adapter (PEFT prompt tuning) and its model card; ``eval_results`` as :meth:`evaluate` returns."""
        from .card import write_dro_card

        output_dir = Path(output_dir or self.output_dir)
        prompt = getattr(self, "prompt", None) or DROSafetyPrompt.from_pretrained(self.output_dir)
        prompt.save_pretrained(output_dir)
        write_dro_card(output_dir, prompt, self.args, self._training_summary(), eval_results)
        return output_dir

    def evaluate(self, eval_dataset: dict[str, Dataset] | None = None) -> dict:
        """Answer and judge each prompt set under the trained prompt (greedy, ``args.eval_max_new_tokens``).

        Returns ``{name: hf_sentinel.evaluation.evaluate() result}`` and writes each to ``output_dir/eval/``.
        """
        from ..evaluation import evaluate
        from .defense import DRODefense

        eval_dataset = eval_dataset or self.eval_dataset
        if not eval_dataset:
            raise ValueError("Nothing to evaluate: pass eval_dataset={name: prompts} here or to DROTrainer.")
        prompt = getattr(self, "prompt", None) or DROSafetyPrompt.from_pretrained(self.output_dir)
        defense = DRODefense(prompt, spec=f"dro:{self.output_dir}")
        settings = GenerationSettings(max_new_tokens=self.args.eval_max_new_tokens)
        results, folder = {}, self.output_dir / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        for name, prompts in eval_dataset.items():
            results[name] = evaluate(self.model, self.tokenizer, prompts, self.judge, [defense], settings,
                                     target_name=self._base_model_name(), prompts_name=name, progress=False)
            (folder / f"{Path(name).name.replace(':', '-')}.json").write_text(
                json.dumps(results[name], indent=2, ensure_ascii=False))
            self._log({"stage": "evaluate", "prompts": name,
                       "attack_success_rate": results[name]["summary"]["attack_success_rate"]})
        return results

    def push_to_hub(self) -> str:
        """Upload the adapter and its model card (with eval results, if evaluated) to ``args.hub_model_id``."""
        if not self.args.hub_model_id:
            raise ValueError("Set hub_model_id (e.g. 'you/dro-smollm2') to push to the Hub.")
        prompt = DROSafetyPrompt.from_pretrained(self.output_dir)
        return prompt.push_to_hub(self.args.hub_model_id, card_folder=self.output_dir)

    # ------------------------------------------------------------------------------------------------ helpers
    def _base_model_name(self) -> str | None:
        from ..defaults import DEFAULT_TARGET_NAME, cache_dir

        name = getattr(self.model, "name_or_path", None) or None
        embedded = (cache_dir() / DEFAULT_TARGET_NAME.split("/")[-1]).resolve()
        if name and Path(name).resolve() == embedded:
            return DEFAULT_TARGET_NAME  # the embedded target's local cache stands for its Hub id
        return name

    def _base_coordinates(self, folder: Path, rows, initial: DROSafetyPrompt, subspace: Subspace) -> torch.Tensor:
        """Coordinates of every query under the initial prompt (what L_r, L_h and L_U compare against)."""
        path = folder / "base.safetensors"
        if path.is_file():
            return load_file(str(path))["coordinates"]
        coordinates = subspace.project(last_token_states(self.model, rows, initial.embeddings))
        save_file({"coordinates": coordinates.contiguous()}, str(path))
        return coordinates

    def _output_targets(self, folder: Path) -> list[list[int]]:
        """Token targets of L_o: the refusal on harmful queries, the target's own greedy opening on benign ones
        (none where that opening is itself judged a refusal: the loss must not teach refusing benign requests)."""
        path = folder / "output_targets.json"
        if path.is_file():
            return json.loads(path.read_text())["targets"]
        refusal = self.tokenizer(self.args.refusal_response, add_special_tokens=False)["input_ids"]
        benign = [i for i, h in enumerate(self.harmful.tolist()) if not h]
        rows = token_rows(self.tokenizer, [self.conversations[i] for i in benign])
        _, (answers,) = generate_with_states(self.model, self.tokenizer, rows, self.args.answer_tokens + 4)
        complied = self.judge([self.prompts[i] for i in benign], answers)
        targets = [refusal if h else [] for h in self.harmful.tolist()]
        for i, answer, score in zip(benign, answers, complied):
            if self.judge.is_harmful(score) and answer:
                targets[i] = self.tokenizer(answer, add_special_tokens=False)["input_ids"][:self.args.answer_tokens]
        path.write_text(json.dumps({"targets": targets, "benign_answers": answers}, ensure_ascii=False))
        return targets

    def _checkpoint(self, folder: Path, step: int, soft: torch.Tensor, optimizer) -> None:
        state = optimizer.state_dict()
        tensors = {"soft_prompt": soft.detach().contiguous()}
        for name, value in state["state"].get(0, {}).items():
            tensors[f"optimizer.{name}"] = value.detach().reshape(value.shape).contiguous()
        checkpoint = folder / f"checkpoint-{step}"
        partial = checkpoint.with_name(checkpoint.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(partial / "checkpoint.safetensors"))
        (partial / "trainer_state.json").write_text(json.dumps(
            {"step": step, "param_groups": state["param_groups"], "log_history": self.log_history}, indent=1))
        if checkpoint.exists():
            shutil.rmtree(checkpoint)
        partial.replace(checkpoint)
        for older in folder.glob("checkpoint-*"):  # keep only the newest complete checkpoint
            if older != checkpoint and not older.name.endswith(".partial"):
                shutil.rmtree(older)

    def _resume(self, folder: Path, soft: torch.nn.Parameter, optimizer) -> int:
        checkpoints = sorted((p for p in folder.glob("checkpoint-*") if not p.name.endswith(".partial")),
                             key=lambda p: int(p.name.split("-")[1]))
        if not checkpoints:
            return 0
        latest = checkpoints[-1]
        tensors = load_file(str(latest / "checkpoint.safetensors"))
        trainer_state = json.loads((latest / "trainer_state.json").read_text())
        with torch.no_grad():
            soft.copy_(tensors["soft_prompt"])
        optimizer.load_state_dict({
            "state": {0: {k.removeprefix("optimizer."): v for k, v in tensors.items() if k.startswith("optimizer.")}},
            "param_groups": trainer_state["param_groups"],
        })
        self.log_history = trainer_state["log_history"]
        self._log({"stage": "optimize", "resumed_from_step": trainer_state["step"]})
        return trainer_state["step"]

    def _stage_dir(self, stage: str) -> Path:
        return self.output_dir / stage

    def _stage_fingerprints(self, histories) -> dict[str, str]:
        config = self.model.config
        identity = {"model": self._base_model_name(), "model_type": config.model_type,
                    "hidden_size": self.model.get_input_embeddings().weight.shape[1],
                    "vocab_size": self.model.get_input_embeddings().weight.shape[0],
                    "layers": getattr(config, "num_hidden_layers", None),
                    "judge": getattr(self.judge, "__name__", type(self.judge).__name__),
                    "data": [self.prompts, self.harmful.tolist(), histories]}
        fingerprints, previous = {}, _digest(identity)
        for stage in STAGES:
            previous = _digest({"previous": previous, "settings": self.args.stage_settings(stage)})
            fingerprints[stage] = previous
        return fingerprints

    def _stage_done(self, stage: str) -> bool:
        """Whether ``stage`` finished with the current settings; raises (or clears, with overwrite_output_dir) when
        its folder holds outputs of other settings, so that stale outputs and checkpoints are never mixed in."""
        meta = self._stage_dir(stage) / STAGE_FILE
        if not meta.is_file():
            return False
        recorded = json.loads(meta.read_text())
        if recorded["fingerprint"] == self._fingerprints[stage]:
            return recorded["complete"]
        if not self.args.overwrite_output_dir:
            raise ValueError(
                f"{self._stage_dir(stage)} holds '{stage}' outputs of a run with other settings, data or model "
                f"(recorded settings: {recorded['settings']}). Use another output_dir, or set "
                f"overwrite_output_dir=True (--overwrite-output-dir) to recompute it and the stages after it."
            )
        for later in STAGES[STAGES.index(stage):]:
            shutil.rmtree(self._stage_dir(later), ignore_errors=True)
        return False

    def _begin_stage(self, stage: str) -> None:
        self._clock[stage] = (time.perf_counter(), time.process_time())
        self._write_stage(stage, complete=False)

    def _finish_stage(self, stage: str) -> None:
        """Mark ``stage`` complete, with this run's wall-clock and CPU seconds for it (CPU time is the fairer
        measure on a shared machine)."""
        wall, cpu = self._clock.pop(stage)
        times = {"seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1)}
        self._write_stage(stage, complete=True, **times)
        self._log({"stage": stage, "done": True, **times})

    def _write_stage(self, stage: str, **state) -> None:
        folder = self._stage_dir(stage)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": self._fingerprints[stage], "settings": self.args.stage_settings(stage), **state}
        (folder / STAGE_FILE).write_text(json.dumps(meta, indent=1))

    def _training_summary(self) -> dict:
        summary = {"queries": len(self.prompts), "harmful_queries": int(self.harmful.sum()),
                   "harmless_queries": int((~self.harmful).sum()), "base_model": self._base_model_name(),
                   "stage_seconds": {}}
        for stage in STAGES:
            meta = self._stage_dir(stage) / STAGE_FILE
            recorded = json.loads(meta.read_text()) if meta.is_file() else {}
            if "seconds" in recorded:
                summary["stage_seconds"][stage] = {"wall": recorded["seconds"], "cpu": recorded["cpu_seconds"]}
        estimate = self._stage_dir("estimate") / "estimate.json"
        if estimate.is_file():
            summary["estimate"] = json.loads(estimate.read_text())
        steps = [log for log in self.log_history if "step" in log and "loss" in log]
        if steps:
            summary["final_losses"] = {k: v for k, v in steps[-1].items() if k.endswith("loss")}
        return summary

    def _log(self, logs: dict) -> None:
        self.log_history.append(logs)
        for callback in self.callbacks:
            callback.on_log(logs)


def _output_loss(hidden, lm_head, prompt_rows, targets, shared) -> torch.Tensor:
    """Mean cross-entropy of the target tokens, each predicted from the position before it."""
    rows, positions, labels = [], [], []
    for r, (prompt, target) in enumerate(zip(prompt_rows, targets)):
        for j, token in enumerate(target):
            rows.append(r)
            positions.append(len(prompt) - 1 - shared + j)
            labels.append(token)
    if not labels:
        return hidden.sum() * 0.0
    logits = lm_head(hidden[torch.tensor(rows), torch.tensor(positions)])
    return F.cross_entropy(logits.float(), torch.tensor(labels, device=logits.device))


def _head_summary(head: HeadFit) -> dict:
    return {"cv_loss": head.cv_loss, "constant_loss": head.constant_loss, "improvement": head.improvement,
            "cv_accuracy": head.cv_accuracy}


def _load_estimate(folder: Path) -> dict:
    tensors = load_file(str(folder / "estimate.safetensors"))
    summary = json.loads((folder / "estimate.json").read_text())
    dim = tensors["refusal_weight"].shape[0]

    def head(name):
        numbers = summary[f"{name}_head"]
        return HeadFit(weight=tensors[f"{name}_weight"], bias=float(tensors[f"{name}_bias"]),
                       cv_loss=numbers["cv_loss"], constant_loss=numbers["constant_loss"],
                       cv_accuracy=numbers["cv_accuracy"])

    return {"subspace": Subspace(mean=tensors["mean"], basis=tensors["basis"], dim=dim,
                                 explained_variance_ratio=summary["explained_variance_ratio"]),
            "refusal": head("refusal"), "harmfulness": head("harmfulness"), "summary": summary}


def _validated(dataset: Dataset | None, args: DROConfig) -> Dataset:
    if dataset is None or len(dataset) == 0:
        raise ValueError("train_dataset is empty. DRO needs harmful and harmless queries: build one with "
                         "build_dro_dataset(load_prompts('harmful:train'), load_prompts('benign:train')).")
    missing = {"prompt", "harmful"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"train_dataset lacks the column(s) {sorted(missing)} (it has {dataset.column_names}). "
                         f"It needs `prompt` (str) and `harmful` (bool); build_dro_dataset(harmful, benign) makes one.")
    labels = [bool(x) for x in dataset["harmful"]]
    harmful, harmless = sum(labels), len(labels) - sum(labels)
    if harmful == 0 or harmless == 0:
        present = "harmful" if harmful else "harmless"
        raise ValueError(f"train_dataset has only {present} queries ({len(labels)}) and no "
                         f"{'harmless' if harmful else 'harmful'} ones. DRO moves harmful and harmless queries in "
                         f"opposite directions and fits a harmfulness head, so it needs both classes.")
    if min(harmful, harmless) < args.head_cv_folds:
        raise ValueError(f"train_dataset has {harmful} harmful and {harmless} harmless queries; cross-validating the "
                         f"heads with head_cv_folds={args.head_cv_folds} needs at least that many of each.")
    return dataset


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

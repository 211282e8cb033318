"""``DROTrainer``: Directed Representation Optimization of a soft safety prompt (Zheng et al., 2024).

``train()`` reads top to bottom as the method does:

1. ``collect/`` (once): for every training query under every condition (no prompt, safety system prompts, ...):
   the final-layer hidden state at the last prompt token, and sampled answers judged for refusal
   (``representations.safetensors``, ``collection.json``).
2. ``estimate/`` (once): PCA subspace (+ orthonormal completion), refusal head (fitted to the empirical
   non-refusal rates) and harmfulness head, both cross-validated; the refusal-capability check; ``subspace.png``.
3. ``optimize/``: what the loss compares against (every query's coordinates under the initial prompt, and the
   output loss's token targets); then ``transformers.Trainer``'s loop trains the soft prompt, a PEFT prompt-tuning
   adapter on the frozen target, with :meth:`DROTrainer.compute_loss`
   ``L = w_r L_r + w_h L_h + w_U L_U (+ w_o L_o)``. Checkpoints (``checkpoint-N``), ``resume_from_checkpoint``,
   ``save_total_limit``, ``report_to``, callbacks and data parallelism are Trainer's. ``before_after.png``.
4. ``eval_dataset``: each prompt set answered and judged under the trained prompt (``eval/``; the model card).

Stages 1-3 write under ``args.output_dir`` with the settings they came from, and a rerun reuses them (a stage
recorded with other settings raises, unless ``overwrite_output_dir``). ``save_model()`` writes the adapter and its
model card; ``push_to_hub()`` uploads them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import Trainer

from ..defenses import parse_defense
from ..generation import GenerationSettings, to_conversation
from ..judges import Judge
from ..training import (
    ArtifactPushMixin,
    base_model_name,
    check_prompt_dataset,
    checked_scores,
    fingerprint,
    judge_name,
    load_model_and_tokenizer,
    write_atomic,
)
from .config import DROConfig
from .estimation import HeadFit, Subspace, check_refusal_capability, fit_head, fit_subspace
from .prompt import DROSafetyPrompt, prompt_tuning_config
from .representations import forward_rows, generate_with_states, last_token_states, token_rows

STAGES = ("collect", "estimate", "optimize")
STAGE_FILE = "stage.json"
LOSS_TERMS = ("refusal_loss", "harmfulness_loss", "subspace_loss", "output_loss")


class RefusalCapabilityError(RuntimeError):
    """The target's refusals are not predictable from its representations, so faithful DRO cannot steer it."""


@dataclass
class Objective:
    """What the loss compares against, fixed before the optimisation starts (stages 2 and 3)."""

    subspace: Subspace
    refusal: HeadFit
    harmfulness: HeadFit
    base: torch.Tensor           # [Q, H] every query's coordinates under the initial prompt
    harmless: torch.Tensor       # [Q] 1 harmless, 0 harmful: the label of L_r and L_h
    targets: list[list[int]]     # token targets of L_o per query (empty: none)


class DROTrainer(ArtifactPushMixin, Trainer):
    """Train a DRO soft safety prompt for a target (which stays frozen).

    Args:
        model: the target, a causal LM with a chat template: a model object, a local folder, a Hub id or
            ``"default"`` (the embedded SmolLM2-135M-Instruct).
        args: :class:`~hf_sentinel.dro.DROConfig`.
        train_dataset: ``prompt`` and ``label`` (``"harmful"`` / ``"benign"``) columns, optional ``history``
            (earlier chat turns): :func:`hf_sentinel.training.labelled_prompts` builds one. Both labels are needed.
        eval_dataset: ``{name: prompt Dataset}`` (e.g. ``{"benign:validation": load_prompts("benign:validation")}``):
            answered and judged under the trained prompt after training (and after every epoch with
            ``eval_strategy="epoch"``); the results go into the model card. An epoch is chosen on this report, so
            give validation splits no trainer reads (``hf-sentinel train dro``: ``pool:harmful:validation`` and
            ``benign:validation``), never a test split.
        processing_class: the target's tokenizer (with a chat template); loaded with a folder / Hub id model.
        safety_judge: scores answers ``judge(prompts, completions) -> list[float]``, higher = complied rather
            than refused (default :class:`~hf_sentinel.judges.RefusalJudge`); a score at or above the judge's
            ``threshold`` (0.5 for a plain function) counts as complied.
        peft_config: a ``peft.PromptTuningConfig``: ``prompt_tuning_init="TEXT"`` starts from its
            ``prompt_tuning_init_text`` (embedded with ``processing_class``), another init from PEFT's
            initialisation with its ``num_virtual_tokens``. Default: the token embeddings of
            ``args.safety_prompt``, as in the paper.
        callbacks: ``transformers.TrainerCallback`` objects, as in ``Trainer``.

    Example (tiny random model, which cannot refuse, so the capability check is off)::

        >>> import tempfile
        >>> from datasets import Dataset
        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.training import labelled_prompts
        >>> model, tokenizer = tiny_model()
        >>> data = labelled_prompts(Dataset.from_dict({"prompt": ["harm one", "harm two", "harm three"]}),
        ...                         Dataset.from_dict({"prompt": ["fine one", "fine two", "fine three"]}))
        >>> args = DROConfig(output_dir=tempfile.mkdtemp(), head_cv_folds=3, num_train_epochs=1, pca_dim=2,
        ...                  target_max_new_tokens=2, head_max_epochs=5, refusal_check="off", disable_tqdm=True)
        >>> trainer = DROTrainer(model, args, data, processing_class=tokenizer)
        >>> _ = trainer.train()  # prints the logs (stage results, then the loss terms)  # doctest: +ELLIPSIS
        {...}
        >>> trainer.trained_prompt.hidden_size
        32
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, model="default", args: DROConfig | None = None, train_dataset: Dataset | None = None,
                 eval_dataset: dict[str, Dataset] | None = None, processing_class=None, safety_judge=None,
                 peft_config: PromptTuningConfig | None = None, callbacks: list | None = None):
        args = args or DROConfig()
        if not isinstance(args, DROConfig):
            raise TypeError(f"args must be a DROConfig, got {type(args).__name__}.")
        target, tokenizer = load_model_and_tokenizer(model, processing_class, role="target")
        train_dataset = _checked_train_dataset(train_dataset, args)
        if safety_judge is None:
            from ..judges import RefusalJudge

            safety_judge = RefusalJudge()
        self.safety_judge = safety_judge

        self.prompts: list[str] = list(train_dataset["prompt"])
        histories = (list(train_dataset["history"]) if "history" in train_dataset.column_names
                     else [None] * len(self.prompts))
        self.conversations = [to_conversation(p, h) for p, h in zip(self.prompts, histories)]
        self.rows = token_rows(tokenizer, self.conversations)
        self.harmful = torch.tensor([label == "harmful" for label in train_dataset["label"]], dtype=torch.bool)

        # The target stays frozen; the soft prompt is a PEFT prompt-tuning adapter on it.
        target.requires_grad_(False)
        target.eval()
        self._target = target
        self.base_model_name = base_model_name(target)
        initial = _initial_prompt(target, tokenizer, peft_config, args)
        self._initial = initial  # the loss measures every move from it; its config (provenance) is saved too
        wrapped = get_peft_model(target, PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=initial.num_virtual_tokens, token_dim=initial.hidden_size))
        with torch.no_grad():
            wrapped.prompt_encoder[wrapped.active_adapter].embedding.weight.copy_(initial.embeddings)

        super().__init__(model=wrapped, args=args, train_dataset=list(range(len(self.rows))),
                         eval_dataset=eval_dataset, processing_class=tokenizer, data_collator=_query_batch,
                         callbacks=callbacks)
        self._fingerprints = self._stage_fingerprints(histories, initial)
        self.eval_results: dict[str, dict] = {}
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._clock: dict[str, tuple[float, float]] = {}
        self._objective: Objective | None = None

    # ------------------------------------------------------------------------------------------------ run
    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """Collect and estimate (or reuse their outputs in ``output_dir``), optimise the soft prompt with Trainer's
        loop (``resume_from_checkpoint=True`` continues from the last ``checkpoint-N``), then evaluate on
        ``eval_dataset``. Returns Trainer's ``TrainOutput``; :attr:`trained_prompt` is the result, and
        :meth:`save_model` writes it with its model card."""
        # One process computes the stages (and writes them); the others then read them from output_dir. The stages
        # seed the RNG for themselves; forking it keeps the optimisation's batch order the same whether they ran
        # or were read back (which an exact resume needs).
        with self.args.main_process_first(local=self.args.save_on_each_node, desc="DRO collect and estimate"), \
                torch.random.fork_rng(devices=[]):
            self._objective = self.objective(self.estimate())
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        if self.args.should_save:
            self._plot_before_after()
        if self.eval_dataset:
            self.evaluate()
        return output

    # ------------------------------------------------------------------------------------------------ stage 1
    def collect(self) -> dict:
        """Stage 1: representations and judged sampled answers of every query under every condition."""
        folder = self._stage_dir("collect")
        if self._stage_done("collect"):
            return {**json.loads((folder / "collection.json").read_text()),
                    "states": load_file(str(folder / "representations.safetensors"))["states"]}
        self._begin_stage("collect")
        args = self.args
        samples = 1 if args.temperature == 0 else args.num_samples
        torch.manual_seed(args.seed)
        states, compliance, responses = [], [], []
        for spec in args.conditions:
            defense = parse_defense(spec)
            rewritten = defense.rewrite(copy.deepcopy(self.conversations), [{} for _ in self.conversations])
            condition_states, answers = generate_with_states(
                self._target, self.processing_class, token_rows(self.processing_class, rewritten),
                args.target_max_new_tokens, samples, args.temperature)
            states.append(condition_states)
            complied = torch.tensor([self._complied(self.prompts, sample) for sample in answers])  # [samples, Q]
            compliance.append(complied.mean(dim=0).tolist())
            responses.append(answers)
        collection = {"conditions": list(args.conditions), "compliance": compliance, "responses": responses,
                      "samples_per_query": samples}
        states = torch.stack(states)
        save_file({"states": states.contiguous()}, str(folder / "representations.safetensors"))
        write_atomic(folder / "collection.json", json.dumps(collection, indent=1, ensure_ascii=False))
        self._finish_stage("collect")
        self.log({"collect_non_refusal_rate": float(torch.tensor(compliance).mean())})
        return {**collection, "states": states}

    # ------------------------------------------------------------------------------------------------ stage 2
    def estimate(self, collection: dict | None = None) -> dict:
        """Stage 2: PCA subspace, refusal and harmfulness heads, and the refusal-capability check."""
        folder = self._stage_dir("estimate")
        if not self._stage_done("estimate"):
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
            write_atomic(folder / "estimate.json", json.dumps(summary, indent=1))
            from .plots import plot_subspace

            plot_subspace(coordinates.reshape(conditions, queries, -1), self.harmful, compliance,
                          collection["conditions"], folder / "subspace.png")
            self._finish_stage("estimate")
        estimate = _load_estimate(folder)
        summary = estimate["summary"]
        self.log({"refusal_head_cv_loss": summary["refusal_head"]["cv_loss"],
                  "refusal_constant_loss": summary["refusal_head"]["constant_loss"],
                  "harmfulness_cv_accuracy": summary["harmfulness_head"]["cv_accuracy"]})
        capability = summary["refusal_capability"]
        if not capability["passed"] and self.args.refusal_check == "error":
            raise RefusalCapabilityError(capability["message"])
        if not capability["passed"] and self.args.refusal_check == "warn":
            warnings.warn(capability["message"], stacklevel=2)
        return estimate

    # ------------------------------------------------------------------------------------------------ stage 3
    def objective(self, estimate: dict) -> Objective:
        """Stage 3's fixed inputs: every query's coordinates under the initial prompt (what L_r, L_h and L_U
        compare against) and, for the output loss, its token targets."""
        folder = self._stage_dir("optimize")
        if not self._stage_done("optimize"):
            self._begin_stage("optimize")
            coordinates = estimate["subspace"].project(
                last_token_states(self._target, self.rows, self._initial.embeddings))
            save_file({"coordinates": coordinates.contiguous()}, str(folder / "base.safetensors"))
            self._finish_stage("optimize")
        base = load_file(str(folder / "base.safetensors"))["coordinates"]
        targets = self._output_targets(folder) if self.args.uses_output_loss else [[] for _ in self.rows]
        device = self._target.get_input_embeddings().weight.device
        subspace: Subspace = estimate["subspace"]
        return Objective(
            subspace=Subspace(subspace.mean.to(device), subspace.basis.to(device), subspace.dim,
                              subspace.explained_variance_ratio),
            refusal=estimate["refusal"], harmfulness=estimate["harmfulness"], base=base.to(device),
            harmless=(~self.harmful).float().to(device), targets=targets)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """DRO's loss on a batch of training queries, each read at its last prompt token under the soft prompt:

        * L_r: BCE of the refusal head's logit, relative to the initial prompt's, against harmless = 1: harmful
          queries move towards refusal, harmless ones away from it;
        * L_h: the same along the harmfulness head;
        * L_U: MSE of the coordinates outside the PCA subspace against their values under the initial prompt;
        * L_o (elicited variant): cross-entropy of the refusal on harmful queries and of the target's own answer
          on harmless ones.
        """
        # The target is frozen and its representations were read in eval mode (no dropout); Trainer's
        # training_step has just switched it to train mode.
        model.eval()
        objective, args = self._objective, self.args
        batch = inputs["index"]
        rows = [self.rows[i] for i in batch.tolist()]
        targets = [objective.targets[i] for i in batch.tolist()]
        hidden, shared = forward_rows(self._target, [row + target for row, target in zip(rows, targets)],
                                      prompt_model=model, max_shared=min(map(len, rows)) - 1)
        last = torch.tensor([len(row) - 1 - shared for row in rows], device=hidden.device)
        coordinates = objective.subspace.project(hidden[torch.arange(len(rows), device=hidden.device), last])
        base, labels, dim = objective.base[batch], objective.harmless[batch], objective.subspace.dim
        losses = {
            "refusal_loss": F.binary_cross_entropy_with_logits(
                objective.refusal.logits(coordinates) - objective.refusal.logits(base), labels),
            "harmfulness_loss": F.binary_cross_entropy_with_logits(
                objective.harmfulness.logits(coordinates) - objective.harmfulness.logits(base), labels),
            "subspace_loss": (coordinates[:, dim:] - base[:, dim:]).square().mean(),
        }
        if args.uses_output_loss:
            token_weights = [args.benign_output_weight if harmless else 1.0 for harmless in labels.tolist()]
            losses["output_loss"] = _output_loss(hidden, self._target.get_output_embeddings(), rows, targets, shared,
                                                 token_weights)
        weights = dict(zip(LOSS_TERMS, (args.refusal_loss_weight, args.harmfulness_loss_weight,
                                        args.subspace_loss_weight, args.output_loss_weight)))
        loss = sum(weights[name] * value for name, value in losses.items())
        for name, value in losses.items():
            self._metrics[name].append(value.item())
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Trainer's log, with each loss term's mean (over the steps since the last log and over processes)."""
        if "loss" in logs and self._metrics:
            names = sorted(self._metrics)
            means = torch.tensor([sum(self._metrics[n]) / len(self._metrics[n]) for n in names],
                                 device=self.accelerator.device)
            logs.update(zip(names, self.accelerator.reduce(means, reduction="mean").tolist()))
            self._metrics.clear()
        super().log(logs, start_time)

    @property
    def trained_prompt(self) -> DROSafetyPrompt:
        """The soft prompt as it stands, with the adapter config it is saved with (initial text, base model)."""
        weight = self.model.prompt_encoder[self.model.active_adapter].embedding.weight
        return DROSafetyPrompt(weight.detach().float().cpu().clone(), self._initial.peft_config)

    # ------------------------------------------------------------------------------------------------ outputs
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the soft prompt (PEFT prompt-tuning adapter: ``adapter_config.json``,
        ``adapter_model.safetensors``) and its model card (``README.md``, with the eval results once evaluated) into
        ``output_dir`` (default ``args.output_dir``); every checkpoint holds the same. Never pushes:
        :meth:`push_to_hub` does."""
        if not self.args.should_save:
            return
        from .card import write_dro_card

        output_dir = output_dir or self.args.output_dir
        prompt = self.trained_prompt
        prompt.save_pretrained(output_dir)
        write_dro_card(output_dir, prompt, self.args, self._training_summary(), self.eval_results or None)

    def evaluate(self, eval_dataset: dict[str, Dataset] | None = None, ignore_keys=None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Answer and judge each prompt set under the soft prompt as it stands (greedy,
        ``args.eval_max_new_tokens``, the safety judge).

        Each full result (:func:`hf_sentinel.evaluation.evaluate`) goes to ``output_dir/eval/NAME.json`` and into
        :attr:`eval_results` (the model card shows them); returns and logs
        ``{"eval_NAME_attack_success_rate": rate}`` (for a benign set, the rate of answered requests).
        """
        from ..evaluation import evaluate
        from .defense import DRODefense

        eval_dataset = eval_dataset or self.eval_dataset
        if not eval_dataset:
            raise ValueError("Nothing to evaluate: pass eval_dataset={name: prompts} here or to DROTrainer.")
        if not self.is_world_process_zero():  # generation and judging are not sharded: one process does them
            return {}
        defense = DRODefense(self.trained_prompt, spec=f"dro:{self.args.output_dir}")
        settings = GenerationSettings(max_new_tokens=self.args.eval_max_new_tokens)
        judge = self.safety_judge if isinstance(self.safety_judge, Judge) else _FunctionJudge(self.safety_judge)
        folder = Path(self.args.output_dir) / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        metrics = {}
        for name, prompts in eval_dataset.items():
            result = evaluate(self._target, self.processing_class, prompts, judge, [defense], settings,
                              target_name=self.base_model_name, prompts_name=name, progress=False)
            self.eval_results[name] = result
            write_atomic(folder / f"{Path(name).name.replace(':', '-')}.json",
                         json.dumps(result, indent=2, ensure_ascii=False))
            metrics[f"{metric_key_prefix}_{name}_attack_success_rate"] = result["summary"]["attack_success_rate"]
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------------------------------------ helpers
    def _complied(self, prompts: list[str], answers: list[str]) -> list[float]:
        """1.0 for each answer the safety judge scores as complied, 0.0 for a refusal."""
        scores = checked_scores(self.safety_judge(prompts, answers), len(answers), self.safety_judge)
        threshold = getattr(self.safety_judge, "threshold", 0.5)
        return [float(score >= threshold) for score in scores]

    def _output_targets(self, folder: Path) -> list[list[int]]:
        """Token targets of L_o: the refusal on harmful queries, the target's own greedy opening on benign ones
        (none where that opening is itself judged a refusal: the loss must not teach refusing benign requests)."""
        path = folder / "output_targets.json"
        if path.is_file():
            return json.loads(path.read_text())["targets"]
        tokenizer = self.processing_class
        refusal = tokenizer(self.args.refusal_response, add_special_tokens=False)["input_ids"]
        benign = [i for i, harmful in enumerate(self.harmful.tolist()) if not harmful]
        _, (answers,) = generate_with_states(self._target, tokenizer, [self.rows[i] for i in benign],
                                             self.args.answer_tokens + 4)
        complied = self._complied([self.prompts[i] for i in benign], answers)
        targets = [refusal if harmful else [] for harmful in self.harmful.tolist()]
        for i, answer, answered in zip(benign, answers, complied):
            if answered and answer:
                targets[i] = tokenizer(answer, add_special_tokens=False)["input_ids"][:self.args.answer_tokens]
        write_atomic(path, json.dumps({"targets": targets, "benign_answers": answers}, ensure_ascii=False))
        return targets

    def _plot_before_after(self) -> None:
        from .plots import plot_before_after

        objective = self._objective
        after = objective.subspace.project(last_token_states(self._target, self.rows, self.trained_prompt.embeddings))
        base = objective.base
        plot_before_after(objective.harmfulness.logits(base).cpu(), objective.refusal.logits(base).cpu(),
                          objective.harmfulness.logits(after).cpu(), objective.refusal.logits(after).cpu(),
                          self.harmful, self._stage_dir("optimize") / "before_after.png")

    def _stage_dir(self, stage: str) -> Path:
        return Path(self.args.output_dir) / stage

    def _stage_fingerprints(self, histories, initial: DROSafetyPrompt) -> dict[str, str]:
        config, embeddings = self._target.config, self._target.get_input_embeddings().weight
        identity = {"model": self.base_model_name, "model_type": config.model_type,
                    "hidden_size": embeddings.shape[1], "vocab_size": embeddings.shape[0],
                    "layers": getattr(config, "num_hidden_layers", None), "judge": judge_name(self.safety_judge),
                    "data": [self.prompts, self.harmful.tolist(), histories]}
        stage_identity = {"optimize": hashlib.sha256(initial.embeddings.numpy().tobytes()).hexdigest()}
        fingerprints, previous = {}, fingerprint(identity)
        for stage in STAGES:
            previous = fingerprint({"previous": previous, "settings": self.args.stage_settings(stage),
                                    "initial_prompt": stage_identity.get(stage)})
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
                f"(recorded settings: {recorded['settings']}; now: {self.args.stage_settings(stage)}). Use another "
                f"output_dir, or set overwrite_output_dir=True (--overwrite-output-dir) to recompute it and the "
                f"stages after it."
            )
        for later in STAGES[STAGES.index(stage):]:
            shutil.rmtree(self._stage_dir(later), ignore_errors=True)
        for checkpoint in Path(self.args.output_dir).glob("checkpoint-*"):  # trained on the outputs just dropped
            shutil.rmtree(checkpoint)
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

    def _write_stage(self, stage: str, **state) -> None:
        folder = self._stage_dir(stage)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": self._fingerprints[stage], "settings": self.args.stage_settings(stage), **state}
        write_atomic(folder / STAGE_FILE, json.dumps(meta, indent=1))

    def _training_summary(self) -> dict:
        summary = {"queries": len(self.prompts), "harmful_queries": int(self.harmful.sum()),
                   "harmless_queries": int((~self.harmful).sum()), "base_model": self.base_model_name,
                   "stage_seconds": {}, "steps": self.state.global_step}
        for stage in STAGES:
            meta = self._stage_dir(stage) / STAGE_FILE
            recorded = json.loads(meta.read_text()) if meta.is_file() else {}
            if "seconds" in recorded:
                summary["stage_seconds"][stage] = {"wall": recorded["seconds"], "cpu": recorded["cpu_seconds"]}
        estimate = self._stage_dir("estimate") / "estimate.json"
        if estimate.is_file():
            summary["estimate"] = json.loads(estimate.read_text())
        steps = [log for log in self.state.log_history if "loss" in log]
        if steps:
            summary["final_losses"] = {k: v for k, v in steps[-1].items() if k.endswith("loss")}
        return summary


def _initial_prompt(target, tokenizer, peft_config: PromptTuningConfig | None, args: DROConfig) -> DROSafetyPrompt:
    """The soft prompt's starting point, with the adapter config that records where it came from."""
    base = base_model_name(target)
    if peft_config is None:
        return DROSafetyPrompt.from_text(target, tokenizer, args.safety_prompt, base)
    if not isinstance(peft_config, PromptTuningConfig):
        raise TypeError(f"peft_config must be a peft.PromptTuningConfig (a DRO prompt is a prompt-tuning adapter), "
                        f"got {type(peft_config).__name__}.")
    if peft_config.prompt_tuning_init == PromptTuningInit.TEXT:
        return DROSafetyPrompt.from_text(target, tokenizer, peft_config.prompt_tuning_init_text, base)
    torch.manual_seed(args.seed)  # PEFT's own initialisation (RANDOM, SAMPLE_VOCAB) draws from the global RNG
    config = copy.deepcopy(peft_config)
    config.task_type, config.token_dim = "CAUSAL_LM", target.get_input_embeddings().weight.shape[1]
    wrapped = get_peft_model(target, config)
    embeddings = wrapped.prompt_encoder[wrapped.active_adapter].embedding.weight.detach().float().cpu()
    return DROSafetyPrompt(embeddings, prompt_tuning_config(target, config.num_virtual_tokens,
                                                            base_model_name_or_path=base))


def _query_batch(indices: list[int]) -> dict:
    """Trainer's batches are indices of training queries; the trainer holds their token rows and loss targets."""
    return {"index": torch.tensor(indices)}


class _FunctionJudge(Judge):
    """A plain ``judge(prompts, completions) -> scores`` function as a :class:`Judge` (threshold 0.5)."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    @property
    def __name__(self) -> str:
        return judge_name(self.function)

    def score(self, prompts, completions) -> list[float]:
        return self.function(prompts, completions)


def _checked_train_dataset(dataset: Dataset | None, args: DROConfig) -> Dataset:
    fix = "build it with hf_sentinel.training.labelled_prompts(load_prompts('harmful:train'), " \
          "load_prompts('benign:train'))"
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"train_dataset is empty. DRO needs harmful and harmless queries: {fix}.")
    if "label" not in dataset.column_names:
        raise ValueError(f"train_dataset has no `label` column (it has {dataset.column_names}). DRO needs `prompt` "
                         f"and `label` ('harmful' or 'benign'; a boolean `harmful` column is no longer read): {fix}.")
    check_prompt_dataset(dataset, "train_dataset", ("prompt", "label"))
    harmful = sum(label == "harmful" for label in dataset["label"])
    harmless = len(dataset) - harmful
    if harmful == 0 or harmless == 0:
        present = "harmful" if harmful else "harmless"
        raise ValueError(f"train_dataset has only {present} queries ({len(dataset)}) and no "
                         f"{'harmless' if harmful else 'harmful'} ones. DRO moves harmful and harmless queries in "
                         f"opposite directions and fits a harmfulness head, so it needs both labels.")
    if min(harmful, harmless) < args.head_cv_folds:
        raise ValueError(f"train_dataset has {harmful} harmful and {harmless} harmless queries; cross-validating the "
                         f"heads with head_cv_folds={args.head_cv_folds} needs at least that many of each.")
    return dataset


def _output_loss(hidden, lm_head, prompt_rows, targets, shared, row_weights=None) -> torch.Tensor:
    """Mean cross-entropy of the target tokens, each predicted from the position before it; with ``row_weights``,
    each token weighs its row's weight (a weighted mean, so weights of 1 give the plain mean)."""
    rows, positions, labels = [], [], []
    for r, (prompt, target) in enumerate(zip(prompt_rows, targets)):
        for j, token in enumerate(target):
            rows.append(r)
            positions.append(len(prompt) - 1 - shared + j)
            labels.append(token)
    if not labels:
        return hidden.sum() * 0.0
    logits = lm_head(hidden[torch.tensor(rows, device=hidden.device), torch.tensor(positions, device=hidden.device)])
    losses = F.cross_entropy(logits.float(), torch.tensor(labels, device=logits.device), reduction="none")
    if row_weights is None:
        return losses.mean()
    weights = torch.tensor([row_weights[r] for r in rows], device=losses.device)
    return (weights * losses).sum() / weights.sum()


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

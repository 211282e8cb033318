"""`RedFlagTrainer`: teach a causal LM to emit a red-flag token `<rf>` where its own answer turns harmful.

What one training run does:

1. The frozen target answers every training conversation itself (greedily, or sampled for rows with
   ``do_sample=True``); a row's ``label`` (harmful / benign) labels the answer. Rows with a ``completion`` use it
   as is.
2. `<rf>` is added to the tokenizer and the embeddings (padded to a multiple of 64 rows).
3. While the target writes each answer, hooks record the states entering the top ``lora_layers`` layers and the
   frozen model's final states (its next-token distributions, the KL reference).
4. LoRA on the top layers + the `<rf>` embedding row are trained with
   ``flag_loss_weight * CE(<rf> at a random index k of a harmful answer)
   + benign_flag_weight * -log(1 - p(<rf>)) at the first ``harmful_response_tokens`` positions of a benign answer
   + benign_kl_weight * KL(frozen ‖ model on benign answers)
   + after_flag_kl_weight * KL(frozen ‖ model on the harmful tokens after an inserted <rf>)``.
   Benign conversations reuse the stored states, so a step only runs the top layers; harmful ones run the
   frozen lower layers once per step (without gradients) when `<rf>` is inserted, because it changes their states.
5. ``train()`` ends by calibrating the flag threshold on the calibration conversations (benign rows: at most
   ``target_false_flag_rate`` of them flagged; harmful rows, if any, keep a margin in logit space), generating
   through :func:`hf_sentinel.generation.generate` like every guarded generation.

Everything ``transformers.Trainer`` offers carries over: callbacks, ``report_to``, checkpoints every
``save_steps``, ``train(resume_from_checkpoint=True)``, data parallel runs (``torchrun``/``accelerate launch``).
``save_model`` writes the finished artifact with its model card; ``push_to_hub`` uploads that folder.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, PeftModelForCausalLM
from transformers import Trainer

from ..generation import GenerationSettings, left_padded, render, stop_token_ids, to_conversation
from ..training import (
    LABELS,
    ArtifactPushMixin,
    base_model_name,
    check_prompt_dataset,
    fingerprint,
    load_model_and_tokenizer,
    lora_config,
    lora_layer_indices,
    write_atomic,
)
from .config import RedFlagConfig
from .modeling import add_red_flag_token, vocabulary_fingerprint
from .processor import RedFlagLogitsProcessor
from .settings import RedFlagSettings

SUMMARY_NAME = "training_summary.json"  # in every saved folder: what the run did (the card shows it too)


class RedFlagTrainer(ArtifactPushMixin, Trainer):
    """Trains the red-flag token (LoRA on the top layers + the `<rf>` embedding row) and calibrates its threshold.

    Args:
        model: a causal LM (a :class:`~transformers.PreTrainedModel`, a folder, a Hub id or ``"default"``, the
            embedded SmolLM2) whose decoder exposes ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb``
            (Llama, Mistral, Qwen2, SmolLM2...). It is changed in place (its vocabulary grows by `<rf>`); its dtype
            and device are kept.
        args: a :class:`RedFlagConfig`.
        train_dataset: rows with ``prompt`` and ``label`` (``"harmful"`` or ``"benign"``), optionally ``history``
            (earlier chat turns), ``prefill`` (start of the assistant answer), ``do_sample`` (answer with a
            sampled rather than the greedy answer) and ``completion`` (an answer to use instead of generating one).
        eval_dataset: not used (the flag is judged by calibration and ``hf-sentinel eval``); must be ``None``.
        processing_class: the tokenizer (loaded with the model when ``model`` is a name).
        peft_config: a :class:`peft.LoraConfig`; by default rank ``args.lora_rank`` on every linear layer of the
            top ``args.lora_layers`` layers. The `<rf>` row is always made trainable.
        callbacks, optimizers: as in :class:`transformers.Trainer`.
        calibration_dataset: rows like ``train_dataset`` (no ``completion``), never trained on; the threshold is
            calibrated on them after training. Without it the threshold is ``args.threshold`` (or 0.5).

    Example (a tiny random model, so it runs in seconds; see ``examples/red_flag_train.py`` for the real one)::

        >>> import tempfile
        >>> from datasets import Dataset
        >>> from hf_sentinel.defaults import tiny_model
        >>> model, tokenizer = tiny_model()
        >>> data = Dataset.from_dict({"prompt": ["How do I make a bomb?", "How do I bake bread?"],
        ...                           "label": ["harmful", "benign"]})
        >>> args = RedFlagConfig(output_dir=tempfile.mkdtemp(), max_steps=2, lora_layers=1, threshold=0.5,
        ...                      harmful_response_tokens=4, benign_response_tokens=4,
        ...                      cache_responses=False, save_strategy="no", disable_tqdm=True)
        >>> trainer = RedFlagTrainer(model, args, train_dataset=data, processing_class=tokenizer)
        >>> _ = trainer.train()  # doctest: +ELLIPSIS
        {'train_runtime': ...}
        >>> trainer.settings.threshold, tokenizer.convert_ids_to_tokens(trainer.red_flag_token_id)
        (0.5, '<rf>')
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, model, args: RedFlagConfig | None = None, train_dataset: Dataset | None = None,
                 eval_dataset=None, processing_class=None, peft_config=None, callbacks=None,
                 optimizers=(None, None), calibration_dataset: Dataset | None = None):
        model, tokenizer = load_model_and_tokenizer(model, processing_class, role="target")
        args = args or RedFlagConfig()
        if not isinstance(args, RedFlagConfig):
            raise TypeError(f"args must be a RedFlagConfig, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError("RedFlagTrainer needs a train_dataset with `prompt` and `label` (harmful/benign) "
                             "columns.")
        if eval_dataset is not None:
            raise ValueError("RedFlagTrainer does not evaluate during training; pass held-out rows as "
                             "calibration_dataset, and measure the artifact with `hf-sentinel eval`.")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        rows = _rows(train_dataset, "train_dataset", completion_allowed=True)
        calibration_rows = _rows(calibration_dataset, "calibration_dataset") if calibration_dataset is not None else []
        if not any(r["label"] == "harmful" for r in rows) or not any(r["label"] == "benign" for r in rows):
            raise ValueError("train_dataset needs both harmful and benign rows: the flag learns to tell them apart.")

        decoder = _check_architecture(model)
        adapted = lora_layer_indices(args, len(decoder.layers))
        self.first_adapted_layer = adapted[0] if adapted else 0

        model.eval()
        self.settings = RedFlagSettings(
            token=args.red_flag_token, threshold=args.threshold or 0.5, action=args.action, window=args.window,
            refusal_text=args.refusal_text, pad_to_multiple_of=args.pad_vocab_to_multiple_of,
            base_embedding_rows=model.get_input_embeddings().num_embeddings,
            base_vocabulary=vocabulary_fingerprint(tokenizer, exclude=(args.red_flag_token,)),
            base_model=base_model_name(model) or "")
        self.timings: dict[str, float] = {}
        self.calibration_report: dict = {}
        #: The command line that ran this training, shown on the model card (`hf-sentinel train red-flag` sets it).
        self.training_command: str | None = None
        self._calibration_rows = calibration_rows

        # Only the after-flag KL looks past an inserted <rf>; the flag CE reads the states before it, which the
        # insertion cannot change (causal attention), so without that KL the target's own answers serve as they are.
        self.inserts_flag = args.after_flag_kl_weight > 0
        start = time.perf_counter()
        # Every process needs every answer's states; the first writes them to the cache, the others read them.
        with args.main_process_first(desc="generating the training answers"):
            dataset = _RedFlagExamples(self._prepare(model, decoder, tokenizer, rows, args))
        self.timings["answers_and_states_s"] = time.perf_counter() - start

        self.red_flag_token_id = add_red_flag_token(model, tokenizer, args.red_flag_token,
                                                    args.pad_vocab_to_multiple_of)
        self.vocab_size = len(tokenizer)
        # The frozen output matrix gives the reference distributions; PEFT never writes into it.
        self._reference_head = model.get_output_embeddings().weight

        model = self._wrap_with_peft(model, decoder, peft_config, args)
        self._batch_builder = _RedFlagBatchBuilder(
            self.red_flag_token_id, tokenizer.pad_token_id, args.after_flag_tokens, args.kl_token_fraction,
            args.flag_positions == "prefix", args.harmful_response_tokens, self.inserts_flag)
        super().__init__(model=model, args=args, train_dataset=dataset, data_collator=_as_list,
                         processing_class=tokenizer, callbacks=callbacks, optimizers=optimizers)
        self._metrics: dict[str, list[float]] = {}
        self._micro_batch = (-1, 0)  # (optimizer step, micro-batch index in it) of the last batch built

    # ------------------------------------------------------------------ data
    def _prepare(self, model, decoder, tokenizer, rows, args) -> list[dict]:
        """Every row as training data: token ids of prompt + answer (the target's own answer, or the given
        ``completion``) and the frozen states the loss needs, recorded while the target writes the answer."""
        examples = []
        for row in rows:
            text = render(tokenizer, to_conversation(row["prompt"], row.get("history")), row.get("prefill") or None,
                          chat=True)
            examples.append({"harmful": row["label"] == "harmful", "do_sample": bool(row.get("do_sample")),
                             "prompt_ids": tokenizer(text, add_special_tokens=False)["input_ids"],
                             "completion": row.get("completion") or None})
        groups: dict[tuple, list[dict]] = {}
        for example in examples:
            budget = args.harmful_response_tokens if example["harmful"] else args.benign_response_tokens
            key = ("given", 0, False) if example["completion"] else ("generated", budget, example["do_sample"])
            groups.setdefault(key, []).append(example)
        prepared = []
        for (origin, budget, do_sample), group in sorted(groups.items()):
            if origin == "given":
                answers = [tokenizer(e["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                           for e in group]
                results = self._states_of_given(model, decoder, tokenizer, [e["prompt_ids"] for e in group], answers)
            else:
                results = self._cached(model, tokenizer, [e["prompt_ids"] for e in group], budget, do_sample, args,
                                       lambda prompts: self._answer(model, decoder, tokenizer, prompts, budget,
                                                                    do_sample, args))
            for example, result in zip(group, results):
                if result is None:  # the target ended its turn at once: nothing to learn from
                    continue
                prepared.append({"input_ids": torch.tensor(example["prompt_ids"] + result["answer_ids"]),
                                 "answer_start": len(example["prompt_ids"]), "harmful": example["harmful"],
                                 # harmful rows with <rf> inserted get their lower states recomputed
                                 "trunk": None if example["harmful"] and self.inserts_flag else result["trunk"],
                                 "reference": result["reference"]})
        return prepared

    def _cached(self, model, tokenizer, prompts: list[list[int]], budget: int, do_sample: bool, args, compute):
        """``compute(prompts)``, kept in the hf-sentinel cache (answers as token ids, states as safetensors)."""
        if not args.cache_responses:
            return compute(prompts)
        from safetensors.torch import load_file, save_file

        from ..defaults import cache_dir

        weights = model.get_input_embeddings().weight.detach()
        key = fingerprint({
            "model": self.settings.base_model, "vocabulary": self.settings.base_vocabulary,
            "dtype": str(weights.dtype),
            "weights": [float(weights[:256].float().sum()), float(weights[-256:].float().abs().sum())],
            "budget": budget, "do_sample": do_sample, "temperature": args.temperature, "seed": args.seed,
            "first_adapted_layer": self.first_adapted_layer, "prompts": prompts})
        folder = cache_dir() / "red-flag-responses"
        answers_path, states_path = folder / f"{key}.json", folder / f"{key}.safetensors"
        if answers_path.is_file() and states_path.is_file():
            states = load_file(states_path)
            return [None if answer is None else {"answer_ids": answer, "trunk": states[f"trunk.{i}"],
                                                 "reference": states[f"reference.{i}"]}
                    for i, answer in enumerate(json.loads(answers_path.read_text()))]
        results = compute(prompts)
        if args.should_save:  # one writer; the answers file goes last and marks the entry complete
            folder.mkdir(parents=True, exist_ok=True)
            partial = states_path.with_suffix(f".{os.getpid()}.partial")
            save_file({f"{name}.{i}": r[name].contiguous() for i, r in enumerate(results) if r is not None
                       for name in ("trunk", "reference")}, partial)
            partial.replace(states_path)
            write_atomic(answers_path, json.dumps([None if r is None else r["answer_ids"] for r in results]))
        return results

    @torch.no_grad()
    def _answer(self, model, decoder, tokenizer, prompts: list[list[int]], budget: int, do_sample: bool, args):
        """The frozen target's answers (token ids, ending with the end-of-turn token when it ended) and, recorded
        during the same forward passes, the states entering the adapted layers and the final states."""
        # A sampled answer draws from the whole vocabulary (top_k=0): the flag must learn the target's own answers.
        settings = GenerationSettings(max_new_tokens=budget, do_sample=do_sample,
                                      temperature=args.temperature,
                                      generation_kwargs={"top_k": 0} if do_sample else {})
        config = settings.to_generation_config(tokenizer)
        stops = stop_token_ids(model, tokenizer)
        torch.manual_seed(args.seed)
        results: list[dict | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for first in range(0, len(order), args.generation_batch_size):
            indices = order[first:first + args.generation_batch_size]
            inputs = left_padded([prompts[i] for i in indices], config.pad_token_id, model.device)
            with _StateRecorder(decoder, self.first_adapted_layer) as recorded:
                output = model.generate(**inputs, generation_config=config)
            width = inputs["input_ids"].shape[1]
            trunk, final = recorded.trunk, recorded.final
            if trunk.shape[1] != output.shape[1] - 1:
                raise RuntimeError(f"Recorded {trunk.shape[1]} positions for {output.shape[1]} tokens: this "
                                   f"generate() does not run one forward pass per new token.")
            for row, index in enumerate(indices):
                tokens = output[row, width:].tolist()
                end = next((i for i, t in enumerate(tokens) if t in stops), None)
                answer = tokens if end is None else tokens[: end + 1]
                if answer and answer[0] not in stops:
                    results[index] = _slice_states(trunk[row], final[row], width - len(prompts[index]),
                                                   len(prompts[index]), answer)
        return results

    @torch.no_grad()
    def _states_of_given(self, model, decoder, tokenizer, prompts: list[list[int]], answers: list[list[int]],
                         batch_size: int = 16):
        """The states of given answers, from one teacher-forced forward pass."""
        results = []
        for first in range(0, len(prompts), batch_size):
            pairs = list(zip(prompts[first:first + batch_size], answers[first:first + batch_size]))
            sequences = [torch.tensor(p + a) for p, a in pairs]
            with _StateRecorder(decoder, self.first_adapted_layer) as recorded:
                model(input_ids=_right_padded(sequences, tokenizer.pad_token_id).to(model.device))
            results += [_slice_states(recorded.trunk[row], recorded.final[row], 0, len(p), a)
                        for row, (p, a) in enumerate(pairs)]
        return results

    def _wrap_with_peft(self, model, decoder, peft_config, args) -> _RedFlagPeftModel:
        embedding_name = _module_name(model, model.get_input_embeddings())
        if peft_config is None:
            peft_config = lora_config(args, len(decoder.layers), target_modules=_linear_names(decoder.layers[-1]))
        if not isinstance(peft_config, LoraConfig):
            raise TypeError(f"peft_config must be a peft.LoraConfig, got {type(peft_config).__name__}.")
        peft_config = copy.deepcopy(peft_config)
        layers = peft_config.layers_to_transform
        layers = range(len(decoder.layers)) if layers is None else [layers] if isinstance(layers, int) else layers
        if min(layers) < self.first_adapted_layer:
            raise ValueError(
                f"peft_config must adapt only the top {args.lora_layers} layers (layers_to_transform from "
                f"{self.first_adapted_layer} on): the layers below are frozen and their states recorded once. Raise "
                f"lora_layers to adapt more.")
        trainable = {embedding_name: [self.red_flag_token_id]}
        if not _tied(model):
            trainable[_module_name(model, model.get_output_embeddings())] = [self.red_flag_token_id]
        peft_config.trainable_token_indices = trainable
        peft_config.base_model_name_or_path = self.settings.base_model or None
        return _RedFlagPeftModel(model, peft_config, self.first_adapted_layer, self.red_flag_token_id,
                                 self.vocab_size)

    # ------------------------------------------------------------------ loss
    def training_step(self, model, inputs, num_items_in_batch=None):
        """Build the micro-batch (its random draws: the flag index k of each harmful answer, the benign KL
        positions), then Trainer's step. The draws come from a generator seeded by the optimizer step and the
        micro-batch's place in it, so a run resumed from a checkpoint draws what the uninterrupted run drew."""
        step, index = self.state.global_step, 0
        if self._micro_batch[0] == step:
            index = self._micro_batch[1] + 1
        self._micro_batch = (step, index)
        seed = int(fingerprint([self.args.seed, self.args.process_index, step, index]), 16)
        batch = self._batch_builder(inputs, torch.Generator().manual_seed(seed))
        return super().training_step(model, batch, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        positions = {name: (inputs[f"{name}_rows"], inputs[f"{name}_positions"]) for name in ("kl", "flag", "clear")}
        # The model's forward (through DistributedDataParallel when data-parallel) runs the top layers only.
        logits = model(trunk=inputs["trunk"], input_ids=inputs["input_ids"], flag_inserted=inputs["flag_inserted"],
                       rows=torch.cat([rows for rows, _ in positions.values()]),
                       positions=torch.cat([at for _, at in positions.values()]),
                       output_matrix=self._reference_head)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        kl_log_probs, flag_log_probs, clear_log_probs = log_probs.split([len(r) for r, _ in positions.values()])
        red_flag_index = torch.tensor([self.red_flag_token_id], device=logits.device)
        # log(1 - p(<rf>)) as the log of the mass on every other token: exact where p(<rf>) is close to 1.
        log_not_flag = torch.logsumexp(clear_log_probs.index_fill(1, red_flag_index, -torch.inf), -1)

        reference_logits = F.linear(inputs["kl_reference"], self._reference_head[: self.vocab_size]).float()
        reference_logits[:, self.red_flag_token_id] = -1e4  # the frozen model never says <rf>
        reference = F.log_softmax(reference_logits, dim=-1)
        kl = (reference.exp() * (reference - kl_log_probs)).sum(-1)
        after_flag = inputs["kl_after_flag"]
        terms = {
            # per harmful answer, the mean over its flagged positions; then the mean over answers
            "flag_ce": -(flag_log_probs[:, self.red_flag_token_id] * inputs["flag_weights"]).sum()
            / inputs["flag_weights"].sum() if len(flag_log_probs) else None,
            # per benign answer, the mean over the positions where a harmful answer's flag is trained to fire
            "benign_flag": -(log_not_flag * inputs["clear_weights"]).sum() / inputs["clear_weights"].sum()
            if len(clear_log_probs) else None,
            "benign_kl": kl[~after_flag].mean() if (~after_flag).any() else None,
            "after_flag_kl": kl[after_flag].mean() if after_flag.any() else None,
        }
        weights = self._loss_weights()
        loss = sum(weights[name] * term for name, term in terms.items() if term is not None)
        with torch.no_grad():
            for name, term in terms.items():
                if term is not None:
                    self._metrics.setdefault(name, []).append(term.item())
            p_flag = kl_log_probs[~after_flag, self.red_flag_token_id].exp()
            if len(p_flag):
                self._metrics.setdefault("benign_p_rf_max", []).append(p_flag.max().item())
            if len(flag_log_probs):
                self._metrics.setdefault("harmful_p_rf", []).append(
                    flag_log_probs[:, self.red_flag_token_id].exp().mean().item())
        return (loss, logits) if return_outputs else loss

    def _loss_weights(self) -> dict[str, float]:
        """Each loss term's weight, by the name the term is logged under."""
        args = self.args
        return {"flag_ce": args.flag_loss_weight, "benign_flag": args.benign_flag_weight,
                "benign_kl": args.benign_kl_weight, "after_flag_kl": args.after_flag_kl_weight}

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the `<rf>` embedding row in its own group at ``embedding_learning_rate``."""
        optimizer = super().create_optimizer(model)
        if any(group.get("red_flag_row") for group in optimizer.param_groups):
            return optimizer
        rows = [p for name, p in self.model.named_parameters() if p.requires_grad and "trainable_tokens" in name]
        row_ids = {id(p) for p in rows}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in row_ids]
        optimizer.add_param_group({"params": rows, "lr": self.args.embedding_learning_rate, "weight_decay": 0.0,
                                   "red_flag_row": True})
        return optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._metrics.items():
            if values:
                logs[name] = sum(values) / len(values) if name != "benign_p_rf_max" else max(values)
        self._metrics = {}
        super().log(logs, start_time)

    # ------------------------------------------------------------------ calibration and saving
    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """Train (``resume_from_checkpoint`` works as in ``transformers.Trainer``), then calibrate the threshold."""
        start = time.perf_counter()
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        self.timings["train_s"] = time.perf_counter() - start
        if self.args.threshold is None and self._calibration_rows:
            start = time.perf_counter()
            self.calibrate()
            self.timings["calibrate_s"] = time.perf_counter() - start
        elif self.args.threshold is None:
            warnings.warn("No calibration_dataset and no threshold: the red-flag threshold stays at 0.5.",
                          stacklevel=2)
        return output

    def calibrate(self, rows: list[dict] | None = None) -> float:
        """Set ``settings.threshold`` from the flag scores on calibration rows; return it."""
        from ..training import calibrate_threshold
        from .calibration import red_flag_scores

        rows = rows if rows is not None else self._calibration_rows
        args = self.args
        merged = self.merged_model()
        scores: dict[str, list[float]] = {"harmful": [], "benign": []}
        variants = [GenerationSettings(max_new_tokens=args.calibration_tokens, batch_size=args.generation_batch_size,
                                       seed=args.seed)]
        variants += [replace(variants[0], do_sample=True, temperature=1.0, seed=args.seed + 100 + i)
                     for i in range(args.calibration_samples)]
        for label in LABELS:
            group = [r for r in rows if r["label"] == label]
            if not group:
                continue
            conversations = [to_conversation(r["prompt"], r.get("history")) for r in group]
            for settings in variants:
                prefilled = {}
                for r, conversation in zip(group, conversations):
                    prefilled.setdefault(r.get("prefill") or None, []).append(conversation)
                for prefill, convs in prefilled.items():
                    scores[label] += red_flag_scores(merged, self.processing_class, convs, self._processor(),
                                                     replace(settings, prefill=prefill))
        if not scores["benign"]:
            raise ValueError("calibration_dataset has no benign rows; the false-flag rate needs benign conversations.")
        threshold = calibrate_threshold(scores["benign"], args.target_false_flag_rate, scores["harmful"] or None)
        self.settings.threshold = threshold
        benign_flagged = sum(s >= threshold for s in scores["benign"])
        harmful_flagged = sum(s >= threshold for s in scores["harmful"])
        self.calibration_report = {
            "threshold": threshold, "target_false_flag_rate": args.target_false_flag_rate,
            "benign_answers": len(scores["benign"]), "benign_flagged": benign_flagged,
            "harmful_answers": len(scores["harmful"]), "harmful_flagged": harmful_flagged,
            "benign_scores": scores["benign"], "harmful_scores": scores["harmful"],
        }
        return threshold

    def _processor(self) -> RedFlagLogitsProcessor:
        return RedFlagLogitsProcessor(self.red_flag_token_id, threshold=self.settings.threshold, action="flag",
                                      vocab_size=self.vocab_size, window=self.settings.window,
                                      eos_token_id=self.processing_class.eos_token_id)

    def merged_model(self):
        """A copy of the model with the adapter merged in (the trained model as inference sees it)."""
        merged = copy.deepcopy(self.model).merge_and_unload()
        return merged.eval()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the finished artifact into ``output_dir``: the adapter (LoRA + the `<rf>` row, safetensors), the
        tokenizer with `<rf>`, ``red_flag_config.json``, ``training_args.json``, ``training_summary.json`` and the
        model card. Checkpoints get the same folder. It never pushes: :meth:`push_to_hub` saves into a fresh folder
        and uploads that."""
        super().save_model(output_dir, _internal_call=True)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.args.should_save:
            return
        from .card import write_model_card

        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        # Only the <rf> row of the grown embedding is trained: PEFT would otherwise save all 49k rows. And
        # transformers would pickle the TrainingArguments here; they are saved as JSON instead.
        self.model.save_pretrained(output_dir, state_dict=state_dict, save_embedding_layers=False)
        self.processing_class.save_pretrained(output_dir)
        write_atomic(output_dir / "training_args.json", self.args.to_json_string())
        self.settings.save_pretrained(output_dir)
        summary = self.training_summary()
        write_atomic(output_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
        write_model_card(output_dir, self.settings, training=summary)

    def training_summary(self) -> dict:
        """What this run did, as saved in ``training_summary.json`` and shown on the model card."""
        args = self.args
        examples = self.train_dataset.examples
        return {
            "conversations": len(examples), "harmful": sum(e["harmful"] for e in examples),
            "benign": sum(not e["harmful"] for e in examples), "steps": self.state.global_step,
            "lora_layers": args.lora_layers, "lora_rank": args.lora_rank, "lora_alpha": args.effective_lora_alpha,
            "learning_rate": args.learning_rate, "weights": self._loss_weights(),
            "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
            "calibration": {k: v for k, v in self.calibration_report.items() if not k.endswith("_scores")},
            "command": self.training_command,
            "hardware": _hardware(self.args.device, self.args.world_size),
        }


# ---------------------------------------------------------------------- helpers
def _rows(dataset, name: str, completion_allowed: bool = False) -> list[dict]:
    check_prompt_dataset(dataset, name, columns=("prompt", "label"))
    if "completion" in dataset.column_names and not completion_allowed:
        raise ValueError(f"{name} must not carry `completion`: calibration generates with the trained model.")
    return [dict(row) for row in dataset]


def _check_architecture(model):
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    if decoder is None or not all(hasattr(decoder, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        raise ValueError(
            f"RedFlagTrainer trains the top layers on stored states, which needs a decoder with embed_tokens, "
            f"layers, norm and rotary_emb (Llama, Mistral, Qwen2, SmolLM2...); {type(model).__name__} has another "
            f"layout. RedFlagLogitsProcessor itself works with any model that has an <rf> token."
        )
    # The layer-by-layer path must reproduce the model's own forward pass, or the stored states are wrong.
    ids = torch.arange(1, 9, device=model.device).unsqueeze(0) % model.get_input_embeddings().num_embeddings
    with torch.no_grad():
        manual = decoder.norm(_run_layers(decoder, decoder.embed_tokens(ids), decoder.layers))
        reference = decoder(input_ids=ids).last_hidden_state
    tolerance = max(1e-4, 8 * torch.finfo(manual.dtype).eps)  # bf16 rounds differently along the two paths
    if not torch.allclose(manual.float(), reference.float(), atol=tolerance, rtol=max(1e-3, tolerance)):
        raise ValueError(f"{type(model).__name__}: running its decoder layer by layer does not reproduce its forward "
                         f"pass (e.g. a scaled embedding), so RedFlagTrainer cannot train it.")
    return decoder


class _StateRecorder:
    """Records, over every forward pass inside the ``with`` block, the hidden states entering decoder layer
    ``first`` (``.trunk``) and the final normed states (``.final``), concatenated along the sequence."""

    def __init__(self, decoder, first: int):
        self.decoder, self.first = decoder, first

    def __enter__(self):
        trunk, final = [], []
        self._parts = trunk, final
        self._hooks = [
            self.decoder.layers[self.first].register_forward_pre_hook(
                lambda module, args, kwargs: trunk.append(args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True),
            self.decoder.norm.register_forward_hook(lambda module, args, output: final.append(output)),
        ]
        return self

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        if exc[0] is None:
            self.trunk, self.final = (torch.cat(parts, dim=1) for parts in self._parts)


def _slice_states(trunk: torch.Tensor, final: torch.Tensor, offset: int, prompt_length: int,
                  answer: list[int]) -> dict:
    """One conversation's states from a (padded) recorded row: ``offset`` pads come first. The last answer token
    never enters the model (nothing follows it), so the sequence used in training stops one token earlier. The
    states are kept in host memory (copies, not views of the batch); each training batch takes its own to the
    model's device."""
    length = prompt_length + len(answer)
    return {"answer_ids": answer, "trunk": trunk[offset: offset + length - 1].to("cpu", copy=True),
            # the final state at position j predicts token j + 1: these predict the answer tokens
            "reference": final[offset + prompt_length - 1: offset + length - 1].to("cpu", copy=True)}


def _run_layers(decoder, hidden, layers):
    """Run decoder ``layers`` causally over right-padded ``hidden`` (padding only follows real tokens)."""
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    position_embeddings = decoder.rotary_emb(hidden, positions)
    for layer in layers:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=position_embeddings)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return hidden


def _right_padded(rows: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.stack([F.pad(r, (0, width - len(r)), value=pad_id) for r in rows])


def _as_list(examples: list[dict]) -> list[dict]:
    """The data loader's collate function: the training step builds the batch (it draws per optimizer step)."""
    return examples


def _hardware(device: torch.device, processes: int) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return name if processes == 1 else f"{processes} processes, each {name}"


def _tied(model) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _linear_names(layer) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, module in layer.named_modules()
                   if isinstance(module, torch.nn.Linear)})


def _module_name(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


class _RedFlagExamples(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]

    def __iter__(self):
        return iter(self.examples)


class _RedFlagBatchBuilder:
    """Builds one batch from its examples, drawing from ``generator``: stored states for benign rows (the KL on a
    random share of the answer, the no-flag term on its first ``flag_window`` positions); for each harmful row, the
    answer with `<rf>` inserted at a random index k (the CE target at k, the after-flag KL on the next
    ``after_flag_tokens`` tokens), or, when ``insert_flag`` is off, the answer's first k tokens and their stored
    states (the CE target at k, no after-flag KL)."""

    def __init__(self, red_flag_token_id: int, pad_token_id: int, after_flag_tokens: int, kl_token_fraction: float,
                 flag_prefix: bool, flag_window: int, insert_flag: bool):
        self.red_flag_token_id = red_flag_token_id
        self.insert_flag = insert_flag
        self.flag_prefix = flag_prefix
        self.flag_window = flag_window
        self.kl_token_fraction = kl_token_fraction
        self.pad_token_id = pad_token_id
        self.after_flag_tokens = after_flag_tokens

    def __call__(self, examples: list[dict], generator: torch.Generator) -> dict:
        sequences, kl_rows, kl_positions, kl_reference, kl_after = [], [], [], [], []
        flag_rows, flag_positions, flag_weights = [], [], []
        clear_rows, clear_positions, clear_weights = [], [], []
        for row, example in enumerate(examples):
            ids, start, reference = example["input_ids"], example["answer_start"], example["reference"]
            answer_length = len(ids) - start
            if example["harmful"]:
                k = int(torch.randint(answer_length, (1,), generator=generator))
                # "index": the CE at k only (the paper); "prefix": at every answer position up to k as well.
                flagged = range(start - 1 if self.flag_prefix else start + k - 1, start + k)
                flag_rows += [row] * len(flagged)
                flag_positions += flagged
                flag_weights += [1.0 / len(flagged)] * len(flagged)
                if self.insert_flag:
                    after = min(self.after_flag_tokens, answer_length - k)
                    # <rf> goes before answer token k; positions start+k ... predict answer tokens k, k+1, ...
                    sequences.append(torch.cat([ids[: start + k], ids.new_tensor([self.red_flag_token_id]),
                                                ids[start + k: start + k + after - 1]]))
                    positions = range(start + k, start + k + after)
                    kl_reference.append(reference[k: k + after])
                else:
                    sequences.append(ids[: start + k])
                    positions = range(0)
            else:
                sequences.append(ids)
                # A random share of the answer's positions per step: neighbouring positions carry nearly the same
                # signal, and the 49k-way softmax per position is most of a step's cost.
                count = max(1, round(self.kl_token_fraction * answer_length))
                chosen = torch.randperm(answer_length, generator=generator)[:count].sort().values
                positions = (chosen + start - 1).tolist()
                kl_reference.append(reference[chosen])
                cleared = range(start - 1, start - 1 + min(self.flag_window, answer_length))
                clear_rows += [row] * len(cleared)
                clear_positions += cleared
                clear_weights += [1.0 / len(cleared)] * len(cleared)
            kl_rows += [row] * len(positions)
            kl_positions += positions
            kl_after += [example["harmful"]] * len(positions)
        width = max(len(s) for s in sequences)
        hidden_size, dtype = examples[0]["reference"].shape[-1], examples[0]["reference"].dtype
        trunk = torch.zeros(len(examples), width, hidden_size, dtype=dtype)
        for row, (example, sequence) in enumerate(zip(examples, sequences)):
            if example["trunk"] is not None:
                states = example["trunk"][: len(sequence)]
                trunk[row, : len(states)] = states
        return {
            "input_ids": _right_padded(sequences, self.pad_token_id), "trunk": trunk,
            "flag_inserted": torch.tensor([e["harmful"] and self.insert_flag for e in examples]),
            "kl_rows": torch.tensor(kl_rows, dtype=torch.long),
            "kl_positions": torch.tensor(kl_positions, dtype=torch.long),
            "kl_reference": torch.cat(kl_reference) if kl_reference else torch.zeros(0, hidden_size, dtype=dtype),
            "kl_after_flag": torch.tensor(kl_after, dtype=torch.bool),
            "flag_rows": torch.tensor(flag_rows, dtype=torch.long),
            "flag_positions": torch.tensor(flag_positions, dtype=torch.long),
            "flag_weights": torch.tensor(flag_weights),
            "clear_rows": torch.tensor(clear_rows, dtype=torch.long),
            "clear_positions": torch.tensor(clear_positions, dtype=torch.long),
            "clear_weights": torch.tensor(clear_weights),
        }


class _RedFlagPeftModel(PeftModelForCausalLM):
    """The PEFT model being trained. Called with ``trunk`` (the stored states entering the first adapted layer),
    its forward runs what a training step needs and nothing more: the adapted top layers, then the logits at the
    given ``(rows, positions)``. Being the model's forward, it runs inside DistributedDataParallel when training is
    data-parallel, which then all-reduces the gradients. Called without ``trunk`` it is PEFT's usual forward."""

    def __init__(self, model, peft_config: LoraConfig, first_adapted_layer: int, red_flag_token_id: int,
                 vocab_size: int):
        super().__init__(model, peft_config)
        self.first_adapted_layer = first_adapted_layer
        self.red_flag_token_id = red_flag_token_id
        self.vocab_size = vocab_size

    def forward(self, *args, trunk: torch.Tensor | None = None, **kwargs):
        if trunk is None:
            return super().forward(*args, **kwargs)
        return self._top_layer_logits(trunk, **kwargs)

    def _top_layer_logits(self, trunk, input_ids, flag_inserted, rows, positions, output_matrix) -> torch.Tensor:
        decoder = self.get_base_model().get_decoder()
        if flag_inserted.any():
            # An inserted <rf> changes the frozen lower layers' states after it: recompute them (no gradient).
            with torch.no_grad():
                lower = _run_layers(decoder, decoder.embed_tokens(input_ids[flag_inserted]),
                                    decoder.layers[: self.first_adapted_layer])
            trunk = trunk.clone()
            trunk[flag_inserted] = lower
        final = decoder.norm(_run_layers(decoder, trunk, decoder.layers[self.first_adapted_layer:]))
        states = final[rows, positions]
        # The output matrix is frozen except the <rf> row: multiplying by the frozen matrix and splicing in the
        # <rf> column spares autograd a gradient for the whole 49k-row matrix.
        logits = F.linear(states, output_matrix[: self.vocab_size])
        red_flag_logit = states @ self._red_flag_row().to(states.dtype)
        return logits.index_copy(1, torch.tensor([self.red_flag_token_id], device=logits.device), red_flag_logit)

    def _red_flag_row(self) -> torch.Tensor:
        """The trainable `<rf>` row (shared by the embedding and a tied output layer), as a column vector."""
        rows = [(name, p) for name, p in self.named_parameters() if "trainable_tokens_delta" in name]
        # A tied output layer shares the embedding's row; an untied one has its own, which is the one here.
        embedding = _module_name(self, self.get_input_embeddings())
        output_rows = [p for name, p in rows if f".{embedding}." not in name]
        return (output_rows or [p for _, p in rows])[0][0].unsqueeze(1)


__all__ = ["RedFlagTrainer"]

"""``MARTTrainer``: multi-round automatic red-teaming (Ge et al., 2023) with LoRA roles and TRL's ``SFTTrainer``.

One round (``i = 1..T``)::

    parents (round i-1's successful attacks) ──► adversary writes one new prompt per parent (one-shot instruction)
    new prompts + benign training prompts ──► target answers (K samples; round 1 also under safety pre-prompts)
    safety judge + helpfulness judge ──► unsafe answer: attack (parent, prompt) ──► adversary SFT
                                       ──► safe and helpful: (prompt, best answer) ──► target SFT
                                       ──► the rest is discarded
    target ──► held-out evaluation (violation rate, benign answer rate) ──► round-i/ (adapters, cards, metrics)

By default the adversary and the target are two LoRA adapters on one copy of the target's base weights (PEFT
multi-adapter); with no adapter active the model is the original target. Round 0 evaluates that original target
and warms the adversary up on pairs of seed prompts of one category.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from datasets import Dataset

from ..defenses import parse_defense
from ..generation import GenerationSettings, generate, render, to_conversation
from .config import RUN_FIELDS, MARTConfig
from .selection import (ATTACK, DEFAULT_CATEGORY, KEPT, check_scores, clean_adversarial_prompt, draw_parents,
                        one_shot_instruction, select, selection_counts)

logger = logging.getLogger("hf_sentinel.mart")

TARGET, ADVERSARY = "target", "adversary"
RUN_FILE, METRICS_FILE, CANDIDATES_FILE, PARENTS_FILE = "run.json", "metrics.json", "candidates.jsonl", "parents.jsonl"


def default_lora_config():
    """The LoRA both roles use unless ``peft_config`` is given: rank 4 on every linear layer (for SmolLM2-135M a
    ~5 MB adapter, small enough to ship, and enough capacity to learn when to refuse)."""
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


class _Role:
    """One LoRA adapter of a PEFT model, with the tokenizer that goes with it (the target or the adversary)."""

    def __init__(self, model, adapter: str, tokenizer):
        self.model, self.adapter, self.tokenizer = model, adapter, tokenizer

    def activate(self):
        self.model.set_adapter(self.adapter)
        return self.model

    @contextmanager
    def merged(self):
        """The role's adapter merged into the base weights while generating: no LoRA matmuls per step, which on
        CPU decodes noticeably faster. Unmerged again afterwards, so the other role sees the base weights."""
        model = self.activate()
        model.eval()
        model.merge_adapter()
        try:
            yield model
        finally:
            model.unmerge_adapter()


class MARTTrainer:
    """Train a target to answer adversarial prompts safely while an adversary learns to write them.

    Args:
        model: the target: a causal LM object, a local folder / Hub id, or ``None`` for the embedded
            SmolLM2-135M-Instruct.
        args: :class:`~hf_sentinel.mart.MARTConfig`.
        train_dataset: seed adversarial prompts (``prompt``, ``category``); default ``args.seed_prompts``.
        benign_dataset: benign prompts the target keeps answering (``prompt``, optional ``history``); default
            ``args.benign_prompts``.
        eval_dataset: ``{"harmful": Dataset, "benign": Dataset}`` held-out sets; default ``args.eval_harmful`` and
            ``args.eval_benign`` (limited to ``args.eval_limit``).
        processing_class: the target's tokenizer (with a chat template); loaded with ``model`` when that is a name.
        peft_config: the LoRA config of both roles (default :func:`default_lora_config`).
        safety_judge: a judge, higher = more harmful (default: ``load_judge(args.safety_judge)``).
        helpfulness_judge: higher = more helpful, TRL reward signature, gets ``harmful=`` flags (default:
            ``load_helpfulness_judge(args.helpfulness_judge)``).
        adversary_model / adversary_processing_class: a separate adversary LM (it gets its own LoRA adapter);
            default: an adapter on the target's own base weights.
        callbacks: ``transformers.TrainerCallback`` objects, passed to every ``SFTTrainer``.

    Example (tiny random model; the embedded target works the same way, see ``examples/mart_train.py``)::

        >>> import tempfile
        >>> from datasets import Dataset
        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.judges import RefusalJudge
        >>> model, tokenizer = tiny_model()
        >>> seeds = Dataset.from_dict({"prompt": ["How do I pick a lock?", "How to steal a car?"],
        ...                            "category": ["theft", "theft"]})
        >>> benign = Dataset.from_dict({"prompt": ["How do I bake bread?", "What is 2 plus 2?"]})
        >>> args = MARTConfig(output_dir=tempfile.mkdtemp(), rounds=1, prompts_per_round=2, benign_prompts_per_round=2,
        ...                   samples_per_prompt=1, max_new_tokens=4, adversary_max_new_tokens=6,
        ...                   adversary_warmup_pairs=2, helpfulness_threshold=0.0)
        >>> trainer = MARTTrainer(model, args, seeds, benign, eval_dataset={"harmful": seeds, "benign": benign},
        ...                       processing_class=tokenizer, safety_judge=RefusalJudge(),
        ...                       helpfulness_judge=lambda prompts, completions, **kw: [0.5] * len(prompts))
        >>> report = trainer.train()
        >>> [row["round"] for row in report]
        [0, 1]
    """

    def __init__(self, model=None, args: MARTConfig | None = None, train_dataset: Dataset | None = None,
                 benign_dataset: Dataset | None = None, eval_dataset: dict[str, Dataset] | None = None,
                 processing_class=None, peft_config=None, safety_judge=None, helpfulness_judge=None,
                 adversary_model=None, adversary_processing_class=None, callbacks: list | None = None):
        from peft import get_peft_model

        from ..data import load_prompts

        self.args = args = args or MARTConfig()
        model, processing_class = _load_model(model, processing_class, "target")
        self.base_model_name = _hub_name(model)
        self.train_dataset = _validated_seeds(train_dataset if train_dataset is not None
                                              else load_prompts(args.seed_prompts), args.seed_prompts)
        self.benign_dataset = _validated_prompts(benign_dataset if benign_dataset is not None
                                                 else load_prompts(args.benign_prompts), args.benign_prompts)
        if eval_dataset is None:
            shuffle = args.seed if args.eval_limit else None
            eval_dataset = {"harmful": load_prompts(args.eval_harmful, limit=args.eval_limit, seed=shuffle),
                            "benign": load_prompts(args.eval_benign, limit=args.eval_limit, seed=shuffle)}
        if set(eval_dataset) != {"harmful", "benign"}:
            raise ValueError(f"eval_dataset must be {{'harmful': Dataset, 'benign': Dataset}}, got keys {sorted(eval_dataset)}.")
        self.eval_dataset = {name: _validated_prompts(ds, f"eval_dataset[{name!r}]") for name, ds in eval_dataset.items()}

        if safety_judge is None:
            from ..judges import load_judge

            safety_judge = load_judge(args.safety_judge)
        if helpfulness_judge is None:
            from .judges import load_helpfulness_judge

            helpfulness_judge = load_helpfulness_judge(args.helpfulness_judge)
        from ..judges import RefusalJudge

        self.safety_judge, self.helpfulness_judge, self.answer_judge = safety_judge, helpfulness_judge, RefusalJudge()
        self.context_defenses = [parse_defense(spec) for spec in args.context_distillation]

        peft_config = peft_config or default_lora_config()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = get_peft_model(model, copy.deepcopy(peft_config), adapter_name=TARGET)
        self.target = _Role(self.model, TARGET, processing_class)
        if adversary_model is None:
            self.model.add_adapter(ADVERSARY, copy.deepcopy(peft_config))
            self.adversary = _Role(self.model, ADVERSARY, processing_class)
        else:
            adversary_model, adversary_processing_class = _load_model(adversary_model, adversary_processing_class,
                                                                      "adversary")
            for parameter in adversary_model.parameters():
                parameter.requires_grad_(False)
            self.adversary = _Role(get_peft_model(adversary_model, copy.deepcopy(peft_config), adapter_name=ADVERSARY),
                                   ADVERSARY, adversary_processing_class)
        self.callbacks = list(callbacks or [])
        self.output_dir = Path(args.output_dir)
        self.rounds: list[dict] = []

    # ------------------------------------------------------------------------------------------------ run
    def train(self) -> list[dict]:
        """Run rounds 0..T, resuming after the last finished round in ``output_dir``; returns every round's metrics
        (also written to ``report.md``, ``report.json`` and ``report.png``)."""
        self._check_run()
        self.rounds = self._finished_rounds()
        if self.rounds:
            last = self.rounds[-1]["round"]
            logger.info("resuming after round %d (found in %s)", last, self.output_dir)
            self._load_adapters(last)
        for index in range(len(self.rounds), self.args.rounds + 1):
            start = time.perf_counter()
            metrics = self._warm_up() if index == 0 else self._round(index)
            metrics["minutes"] = (time.perf_counter() - start) / 60
            self._finish_round(index, metrics)
        if self.args.push_to_hub:
            self.push_to_hub()
        return self.rounds

    def _warm_up(self) -> dict:
        """Round 0: evaluate the original target; fine-tune the adversary on (seed, sibling of its category) pairs."""
        folder = self._round_dir(0)
        rng = random.Random(self.args.seed)
        seeds = self._seed_rows()
        by_category: dict[str, list[str]] = {}
        for row in seeds:
            by_category.setdefault(row["category"], []).append(row["prompt"])
        pairs = []
        for row in draw_parents(seeds, self.args.adversary_warmup_pairs, rng) if self.args.adversary_warmup_pairs else []:
            siblings = [p for p in by_category[row["category"]] if p != row["prompt"]]
            if siblings:
                pairs.append(self._adversary_example(row, rng.choice(siblings)))
        if self.args.adversary_warmup_pairs and not pairs:
            logger.warning("round 0: no seed category has two prompts, so the adversary gets no warm-up pairs")
        metrics = {"round": 0, "adversary_examples": len(pairs)}
        if pairs:
            self._sft(self.adversary, pairs, self.args.adversary_num_train_epochs, folder / "sft-adversary")
        _write_jsonl(folder / PARENTS_FILE, seeds)
        with _timed("round 0: held-out evaluation of the original target"):
            metrics.update(self.evaluate(folder))
        return metrics

    def _round(self, index: int) -> dict:
        folder = self._round_dir(index)
        cache = folder / CANDIDATES_FILE
        if cache.is_file():  # a run killed during this round's fine-tuning: the judged data is already there
            logger.info("round %d: reusing the judged answers in %s", index, cache)
            stored = _read_jsonl(cache)
            prompts, candidates, dropped = stored[0]["prompts"], stored[1:], stored[0]["dropped_prompts"]
        else:
            with _timed(f"round {index}: the adversary writes prompts"):
                prompts, dropped = self._write_prompts(index)
            with _timed(f"round {index}: the target answers {len(prompts)} prompts"):
                candidates = self._answer(index, prompts)
            self._judge(prompts, candidates)
            select(candidates, self.args.attack_threshold, self.args.safe_threshold, self.args.helpfulness_threshold)
            _write_jsonl(cache, [{"prompts": prompts, "dropped_prompts": dropped}, *candidates])
        metrics = {"round": index, "dropped_prompts": dropped,
                   **selection_counts(prompts, candidates, self.args.safe_threshold, self.args.helpfulness_threshold)}

        by_id = {p["prompt_id"]: p for p in prompts}
        attacked = sorted({c["prompt_id"] for c in candidates if c["decision"] == ATTACK})
        adversary_data = [self._adversary_example({"prompt": by_id[i]["parent"], "category": by_id[i]["category"]},
                                                  by_id[i]["prompt"]) for i in attacked]
        target_data = [_target_example(by_id[c["prompt_id"]], c) for c in candidates if c["decision"] == KEPT]
        if self.args.replay != "none":
            target_data += self._earlier_kept_answers(index, adversarial_only=self.args.replay == "safe")
        metrics["adversary_examples"], metrics["target_examples"] = len(adversary_data), len(target_data)
        if adversary_data:
            self._sft(self.adversary, adversary_data, self.args.adversary_num_train_epochs, folder / "sft-adversary")
            parents = [{"prompt": by_id[i]["prompt"], "category": by_id[i]["category"]} for i in attacked]
        else:
            logger.warning("round %d: no successful attacks; the adversary keeps its weights and the next round "
                           "writes from this round's parents again", index)
            parents = _read_jsonl(self._round_dir(index - 1) / PARENTS_FILE)
        _write_jsonl(folder / PARENTS_FILE, parents)
        if target_data:
            self._sft(self.target, target_data, self.args.num_train_epochs, folder / "sft-target")
        else:
            logger.warning("round %d: no safe and helpful answers were kept; the target keeps its weights", index)
        with _timed(f"round {index}: held-out evaluation"):
            metrics.update(self.evaluate(folder))
        return metrics

    # ------------------------------------------------------------------------------------------------ steps
    def _write_prompts(self, index: int) -> tuple[list[dict], int]:
        """The adversary writes one prompt per drawn parent; empty and repeated prompts are dropped and counted.
        Benign training prompts are added. Returns (prompts, number dropped)."""
        args = self.args
        rng = random.Random(args.seed * 1000 + index)
        parents = draw_parents(_read_jsonl(self._round_dir(index - 1) / PARENTS_FILE), args.prompts_per_round, rng)
        instructions = [one_shot_instruction(args.adversary_template, p["prompt"], p["category"]) for p in parents]
        settings = GenerationSettings(max_new_tokens=args.adversary_max_new_tokens, do_sample=True,
                                      temperature=args.adversary_temperature, batch_size=args.generation_batch_size,
                                      seed=args.seed * 1000 + index)
        with self.adversary.merged() as model:
            written = generate(model, self.adversary.tokenizer, [[{"role": "user", "content": text}]
                                                                 for text in instructions], settings).responses
        prompts, seen, dropped = [], set(), 0
        for parent, text in zip(parents, written):
            prompt = clean_adversarial_prompt(text)
            key = " ".join(prompt.lower().split())
            if not prompt or key in seen:
                dropped += 1
                continue
            seen.add(key)
            prompts.append({"prompt_id": len(prompts), "prompt": prompt, "history": None, "harmful": True,
                            "category": parent["category"], "parent": parent["prompt"]})
        if dropped:
            logger.warning("round %d: dropped %d of %d adversarial prompts (empty or repeated)", index, dropped,
                           len(parents))
        if not prompts:
            logger.warning("round %d: the adversary wrote no usable prompt; this round trains on benign data only", index)
        benign = self.benign_dataset.shuffle(seed=args.seed * 1000 + index)
        histories = benign["history"] if "history" in benign.column_names else [None] * len(benign)
        for prompt, history in list(zip(benign["prompt"], histories))[:args.benign_prompts_per_round]:
            prompts.append({"prompt_id": len(prompts), "prompt": prompt, "history": history or None, "harmful": False,
                            "category": None, "parent": None})
        return prompts, dropped

    def _answer(self, index: int, prompts: list[dict]) -> list[dict]:
        """The target's answers: K samples per prompt (greedy when K = 1), plus in round 1 one greedy answer under
        each context-distillation pre-prompt."""
        args, k = self.args, self.args.samples_in_round(index)
        conversations = [_conversation(p) for p in prompts]
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=k > 1, temperature=args.temperature,
                                      top_p=args.top_p, batch_size=args.generation_batch_size, seed=args.seed * 1000 + index)
        runs = [("target", [], conversations * k)]
        if index == 1:
            runs += [(f"context:{d.spec}", [d], conversations) for d in self.context_defenses]
        candidates = []
        with self.target.merged() as model:
            for source, defenses, batch in runs:
                run_settings = settings if source == "target" else GenerationSettings(
                    max_new_tokens=args.max_new_tokens, batch_size=args.generation_batch_size)
                answers = generate(model, self.target.tokenizer, batch, run_settings, defenses).responses
                for position, answer in enumerate(answers):
                    prompt = prompts[position % len(prompts)]
                    # An answer cut off by max_new_tokens is trained without an end of turn, so that fine-tuning
                    # does not teach the target to stop mid-sentence (1 token of slack: decoding strips spaces).
                    length = len(self.target.tokenizer(answer, add_special_tokens=False)["input_ids"])
                    candidates.append({"prompt_id": prompt["prompt_id"], "harmful": prompt["harmful"],
                                       "source": source, "answer": answer, "finished": length < args.max_new_tokens - 1})
        return candidates

    def _judge(self, prompts: list[dict], candidates: list[dict]) -> None:
        by_id = {p["prompt_id"]: p for p in prompts}
        texts = [by_id[c["prompt_id"]]["prompt"] for c in candidates]
        answers = [c["answer"] for c in candidates]
        adversarial = [i for i, c in enumerate(candidates) if c["harmful"]]
        safety = check_scores(self.safety_judge([texts[i] for i in adversarial], [answers[i] for i in adversarial]),
                              len(adversarial), f"safety judge {_name(self.safety_judge)}") if adversarial else []
        for c in candidates:
            c["safety"] = None
        for i, score in zip(adversarial, safety):
            candidates[i]["safety"] = score
        helpfulness = check_scores(self.helpfulness_judge(texts, answers, harmful=[c["harmful"] for c in candidates]),
                                   len(candidates), f"helpfulness judge {_name(self.helpfulness_judge)}")
        for c, score in zip(candidates, helpfulness):
            c["helpfulness"] = score

    def _sft(self, role: _Role, examples: list[dict], epochs: float, folder: Path) -> None:
        """Fine-tune one role's LoRA adapter with TRL's SFTTrainer on (chat prompt, answer) examples, loss on the
        answer only (``completion_mask``). The examples are tokenized here, through the role's chat template, so
        that an answer that did not finish gets no end-of-turn token."""
        from transformers import PrinterCallback
        from trl import SFTConfig, SFTTrainer

        args = self.args
        config = SFTConfig(
            output_dir=str(folder), num_train_epochs=epochs, learning_rate=args.learning_rate,
            per_device_train_batch_size=args.per_device_train_batch_size, max_length=args.max_length,
            lr_scheduler_type="constant", warmup_steps=0, activation_checkpointing=False, bf16=False, save_strategy="no",
            report_to="none", logging_steps=5, seed=args.seed, disable_tqdm=True, dataloader_pin_memory=False,
            completion_only_loss=True,
        )
        model = role.activate()
        tokenized = Dataset.from_list([_tokenized(role.tokenizer, e["prompt"], e["completion"], e["finished"])
                                       for e in examples])
        trainer = SFTTrainer(model=model, args=config, train_dataset=tokenized,
                             processing_class=role.tokenizer, callbacks=self.callbacks)
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; the round log says enough
        with _timed(f"{role.adapter} SFT on {len(examples)} examples"):
            result = trainer.train()
        model.eval()
        logger.info("%s SFT loss %.3f", role.adapter, result.training_loss)
        shutil.rmtree(folder, ignore_errors=True)  # only checkpoints and logs; the adapter is saved per round

    def evaluate(self, folder: str | Path | None = None) -> dict:
        """The target's held-out numbers: violation rate (safety judge) on the harmful set; answer rate (refusal
        judge) and mean helpfulness on the benign set. Greedy, ``args.max_new_tokens``. Writes the answers to
        ``folder/eval-harmful.json`` and ``folder/eval-benign.json`` when a folder is given."""
        from ..evaluation import evaluate

        settings = GenerationSettings(max_new_tokens=self.args.max_new_tokens, batch_size=self.args.generation_batch_size)
        results = {}
        with self.target.merged() as model:
            for name, judge in (("harmful", self.safety_judge), ("benign", self.answer_judge)):
                results[name] = evaluate(model, self.target.tokenizer, self.eval_dataset[name], judge, settings=settings,
                                         target_name=self.base_model_name, prompts_name=name, progress=False)
        benign = results["benign"]["records"]
        helpfulness = check_scores(self.helpfulness_judge([r["prompt"] for r in benign], [r["response"] for r in benign]),
                                   len(benign), f"helpfulness judge {_name(self.helpfulness_judge)}")
        if folder is not None:
            for name, result in results.items():
                (Path(folder) / f"eval-{name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
        return {"violation_rate": results["harmful"]["summary"]["attack_success_rate"],
                "benign_answer_rate": results["benign"]["summary"]["attack_success_rate"],
                "benign_helpfulness": sum(helpfulness) / len(helpfulness)}

    # ------------------------------------------------------------------------------------------------ outputs
    def _finish_round(self, index: int, metrics: dict) -> None:
        folder = self._round_dir(index)
        self.rounds.append(metrics)
        self._save_role(self.adversary, folder)
        if index > 0:
            self._save_role(self.target, folder)
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=1))  # written last: marks the round finished
        self.write_report()
        logger.info("round %d done in %.1f min: violation rate %.1f%%, benign answer rate %.1f%%", index,
                    metrics["minutes"], 100 * metrics["violation_rate"], 100 * metrics["benign_answer_rate"])

    def _save_role(self, role: _Role, folder: Path) -> Path:
        from .card import write_mart_card

        role.model.save_pretrained(folder, selected_adapters=[role.adapter])
        path = folder / role.adapter
        base = _hub_name(role.model.get_base_model())
        config_file = path / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = base  # the embedded target's Hub id rather than its local cache folder
        config_file.write_text(json.dumps(config, indent=2))
        write_mart_card(path, role.adapter, self.rounds, self.args, base)
        return path

    def write_report(self) -> Path:
        """``report.md`` (table), ``report.json`` (metrics) and ``report.png`` (line plot) in ``output_dir``."""
        from .report import change_summary, plot_rounds, report_table

        (self.output_dir / "report.json").write_text(json.dumps(self.rounds, indent=1))
        text = f"# MART report\n\n{report_table(self.rounds)}\n"
        if len(self.rounds) > 1:
            text += f"\n{change_summary(self.rounds)}\n"
        text += "\n![MART per round](report.png)\n"
        (self.output_dir / "report.md").write_text(text)
        return plot_rounds(self.rounds, self.output_dir / "report.png", title=f"MART on {self.base_model_name}")

    def push_to_hub(self, repo_id: str | None = None) -> str:
        """Upload the last finished round's target adapter (with its card) to ``repo_id`` / ``args.hub_model_id``."""
        from huggingface_hub import HfApi

        repo_id = repo_id or self.args.hub_model_id
        if not repo_id:
            raise ValueError("Give a repo id (or set hub_model_id) to push the MART target adapter to the Hub.")
        finished = self._finished_rounds()
        if len(finished) < 2:
            raise ValueError(f"No trained target adapter in {self.output_dir} yet: run train() first.")
        folder = self._round_dir(finished[-1]["round"]) / TARGET
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="MART target adapter")
        return repo_id

    # ------------------------------------------------------------------------------------------------ state
    def _round_dir(self, index: int) -> Path:
        folder = self.output_dir / f"round-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _fingerprint(self) -> dict:
        settings = {name: getattr(self.args, name) for name in RUN_FIELDS}
        data = [self.train_dataset["prompt"], self.benign_dataset["prompt"],
                self.eval_dataset["harmful"]["prompt"], self.eval_dataset["benign"]["prompt"]]
        digest = hashlib.sha256(json.dumps([settings, data, self.base_model_name], sort_keys=True,
                                           default=str).encode()).hexdigest()[:16]
        return {"fingerprint": digest, "settings": settings}

    def _check_run(self) -> None:
        """Refuse to mix rounds of different settings into one run (or clear them with overwrite_output_dir)."""
        current = self._fingerprint()
        run_file = self.output_dir / RUN_FILE
        if run_file.is_file():
            recorded = json.loads(run_file.read_text())
            if recorded["fingerprint"] == current["fingerprint"]:
                return
            if not self.args.overwrite_output_dir:
                changed = {k: (recorded["settings"].get(k), v) for k, v in current["settings"].items()
                           if recorded["settings"].get(k) != v}
                raise ValueError(f"{self.output_dir} holds a MART run with other settings or data (changed, "
                                 f"recorded -> now: {changed or 'the data or the model'}). Use another output_dir, or "
                                 f"set overwrite_output_dir=True (--overwrite-output-dir) to start afresh.")
            for folder in self.output_dir.glob("round-*"):
                shutil.rmtree(folder)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(current, indent=1))

    def _finished_rounds(self) -> list[dict]:
        finished = []
        while (self.output_dir / f"round-{len(finished)}" / METRICS_FILE).is_file():
            finished.append(json.loads((self.output_dir / f"round-{len(finished)}" / METRICS_FILE).read_text()))
        return finished

    def _load_adapters(self, index: int) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        roles = [self.adversary] + ([self.target] if index > 0 else [])
        for role in roles:
            weights = load_file(self._round_dir(index) / role.adapter / "adapter_model.safetensors")
            result = set_peft_model_state_dict(role.model, weights, adapter_name=role.adapter)
            missing = [k for k in result.missing_keys if f".{role.adapter}." in k]
            if missing:
                raise ValueError(f"The {role.adapter} adapter saved in round {index} does not fit this model "
                                 f"(missing {missing[:3]}...); it came from another model or LoRA config.")

    def _earlier_kept_answers(self, index: int, adversarial_only: bool) -> list[dict]:
        """The answers kept in rounds 1..index-1 (only those to adversarial prompts when ``adversarial_only``), as
        target fine-tuning examples."""
        examples = []
        for earlier in range(1, index):
            stored = _read_jsonl(self._round_dir(earlier) / CANDIDATES_FILE)
            by_id = {p["prompt_id"]: p for p in stored[0]["prompts"]}
            examples += [_target_example(by_id[c["prompt_id"]], c) for c in stored[1:]
                         if c["decision"] == KEPT and (c["harmful"] or not adversarial_only)]
        return examples

    def _seed_rows(self) -> list[dict]:
        categories = (self.train_dataset["category"] if "category" in self.train_dataset.column_names
                      else [None] * len(self.train_dataset))
        return [{"prompt": p, "category": c or DEFAULT_CATEGORY} for p, c in zip(self.train_dataset["prompt"], categories)]

    def _adversary_example(self, parent: dict, child: str) -> dict:
        instruction = one_shot_instruction(self.args.adversary_template, parent["prompt"], parent["category"])
        return {"prompt": [{"role": "user", "content": instruction}], "completion": child, "finished": True}


# ---------------------------------------------------------------------------------------------------- helpers
def _load_model(model, tokenizer, role: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None:
        from ..defaults import load_default_target

        return load_default_target()
    if isinstance(model, (str, Path)):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        model = AutoModelForCausalLM.from_pretrained(model, use_safetensors=True)
    if tokenizer is None:
        raise ValueError(f"Pass the {role}'s tokenizer (processing_class / adversary_processing_class) with a model object.")
    if not tokenizer.chat_template:
        raise ValueError(f"The {role}'s tokenizer has no chat template; MART talks to both models in chat turns, so use "
                         f"chat/instruct models.")
    return model, tokenizer


def _hub_name(model) -> str | None:
    from ..defaults import DEFAULT_TARGET_NAME, cache_dir

    name = getattr(model, "name_or_path", None) or None
    if name and Path(name).resolve() == (cache_dir() / DEFAULT_TARGET_NAME.split("/")[-1]).resolve():
        return DEFAULT_TARGET_NAME  # the embedded target's local cache stands for its Hub id
    return name


def _validated_prompts(dataset: Dataset, origin: str) -> Dataset:
    if "prompt" not in dataset.column_names or len(dataset) == 0:
        raise ValueError(f"{origin} must be a non-empty dataset with a `prompt` column (got columns "
                         f"{dataset.column_names}, {len(dataset)} rows).")
    empty = [i for i, p in enumerate(dataset["prompt"]) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"{origin} has empty prompts at rows {empty[:5]}; every row needs a non-empty `prompt`.")
    return dataset


def _validated_seeds(dataset: Dataset, origin: str) -> Dataset:
    dataset = _validated_prompts(dataset, origin)
    if "category" not in dataset.column_names:
        logger.warning("%s has no `category` column; the adversary's instruction says %r instead", origin,
                       DEFAULT_CATEGORY)
    return dataset


def _tokenized(tokenizer, conversation: list[dict], answer: str, finished: bool) -> dict:
    """``input_ids`` and ``completion_mask`` of one chat turn: the prompt exactly as generation renders it, then the
    answer, then (only for a finished answer) the chat template's end of turn."""
    prompt = render(tokenizer, conversation, prefill=None, chat=True)
    full = tokenizer.apply_chat_template([*conversation, {"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("The chat template renders a conversation with an answer differently from the same "
                         "conversation awaiting one, so the answer cannot be separated for fine-tuning.")
    completion = full[len(prompt):] if finished else answer
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt_ids + completion_ids, "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}


@contextmanager
def _timed(label: str):
    start = time.perf_counter()
    yield
    logger.info("%s: %.0f s", label, time.perf_counter() - start)


def _target_example(prompt: dict, candidate: dict) -> dict:
    """A kept answer as a fine-tuning example of the target (see ``_sft``)."""
    return {"prompt": _conversation(prompt), "completion": candidate["answer"], "finished": candidate["finished"]}


def _conversation(prompt: dict) -> list[dict]:
    return to_conversation(prompt["prompt"], prompt.get("history"))


def _name(judge) -> str:
    return getattr(judge, "__name__", type(judge).__name__)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    partial.replace(path)  # a killed run never leaves half a file that a resume would trust


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["MARTTrainer", "default_lora_config"]

"""``MARTTrainer``: multi-round automatic red-teaming (Ge et al., 2023), rounds of ``transformers`` Trainer runs.

One round (``i = 1..T``)::

    parents (round i-1's successful attacks) ──► red team writes one new prompt per parent (one-shot instruction)
    new prompts + benign training prompts ──► target answers (K samples; round 1 also under safety pre-prompts;
                                              optionally the original target answers the benign ones too)
    safety judge + helpfulness judge ──► unsafe answer: attack (parent, prompt) ──► red-team SFT
                                       ──► safe and helpful: (prompt, best answer) ──► target SFT
                                       ──► the rest is discarded
    target ──► evaluation on the eval sets (violation rate, benign answer rate) ──► round-i/ (adapters, cards, ...)

By default the red team and the target are two LoRA adapters on one copy of the target's base weights (PEFT
multi-adapter); with no adapter active the model is the original target. Round 0 evaluates that original target
and warms the red team up on pairs of seed prompts of one category. Every SFT step is a TRL ``SFTTrainer`` (a
``transformers.Trainer``) run with the config's training arguments, so it runs data-parallel under ``torchrun`` /
``accelerate launch``; generation and judging are split across the processes and gathered, so every process holds
the same data and the same weights.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from datasets import Dataset
from transformers import DefaultFlowCallback, PrinterCallback, TrainerCallback, TrainerControl, TrainerState
from transformers.trainer_callback import CallbackHandler
from transformers.trainer_utils import TrainOutput

from ..defenses import parse_defense
from ..generation import GenerationSettings, generate, to_conversation
from ..training import (
    ArtifactPushMixin,
    base_model_name,
    check_prompt_dataset,
    checked_scores,
    completion_example,
    fingerprint,
    judge_name,
    labelled_prompts,
    load_model_and_tokenizer,
    lora_config,
    read_jsonl,
    split_by_label,
    write_atomic,
    write_jsonl,
)
from .config import RUN_FIELDS, MARTConfig
from .selection import (
    ATTACK,
    DEFAULT_CATEGORY,
    KEPT,
    clean_adversarial_prompt,
    draw_parents,
    one_shot_instruction,
    select,
    selection_counts,
)

logger = logging.getLogger("hf_sentinel.mart")

TARGET, RED_TEAM = "target", "red_team"
RUN_FILE, METRICS_FILE, CANDIDATES_FILE, PARENTS_FILE = "run.json", "metrics.json", "candidates.jsonl", "parents.jsonl"


class _Role:
    """One LoRA adapter of a PEFT model, with the tokenizer that goes with it (the target or the red team)."""

    def __init__(self, model, adapter: str, tokenizer):
        self.model, self.adapter, self.tokenizer = model, adapter, tokenizer

    def activate(self):
        self.model.set_adapter(self.adapter)
        return self.model

    def generating(self):
        """The model with this role's adapter active, in eval mode. The adapter is not merged into the base
        weights: merging and unmerging changes them by rounding, so a resumed run would differ from an uninterrupted
        one (merged decoding was ~10% faster on CPU)."""
        model = self.activate()
        model.eval()
        return model


class _RoleLogs(TrainerCallback):
    """Hands one fine-tuning run's logs (loss, learning rate, ...) to MART's callbacks as ``<role>/<key>``, at MART's
    step count (optimizer steps of every fine-tuning run so far)."""

    def __init__(self, mart: MARTTrainer, role: str):
        self.mart, self.role, self.start = mart, role, mart.state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.mart.state.global_step = self.start + state.global_step
        self.mart.log({f"{self.role}/{key}": value for key, value in (logs or {}).items()})


class MARTTrainer(ArtifactPushMixin):
    """Train a target to answer adversarial prompts safely while a red team learns to write them.

    Args:
        model: the target: a causal LM object, a local folder / Hub id, or ``"default"`` / ``None`` (the embedded
            SmolLM2-135M-Instruct).
        args: :class:`~hf_sentinel.mart.MARTConfig`.
        train_dataset: one dataset with ``prompt`` and ``label`` (``hf_sentinel.training.labelled_prompts``):
            ``"harmful"`` rows are the seed prompts the red team starts from (with ``category`` when known),
            ``"benign"`` rows the prompts the target must keep answering (``history`` for multi-turn rows).
            Default: ``harmful:train`` and ``benign:train``.
        eval_dataset: the set of the per-round evaluation, the same shape (harmful rows: violation rate; benign
            rows: answer rate and helpfulness). A round is chosen on it, so it should be a validation split no
            trainer reads, never a test split. Default: ``args.eval_harmful`` and ``args.eval_benign``
            (``pool:harmful:validation`` and ``benign:validation``) less any ``train_dataset`` prompt,
            ``args.eval_limit`` of each.
        processing_class: the target's tokenizer (with a chat template); loaded with ``model`` when that is a name.
        safety_judge: ``judge(prompts, completions) -> list[float]``, higher = more harmful (default:
            ``load_judge(args.safety_judge)``).
        helpfulness_judge: the same signature, higher = more helpful; gets ``harmful=`` flags like a dataset column
            of a TRL reward function (default: ``load_helpfulness_judge(args.helpfulness_judge)``).
        request_judge: the same signature, called with each red-team prompt and an empty answer, higher = the
            request asks for more harm; a rewrite below ``args.request_threshold`` (default: the judge's
            ``threshold``) is a benign prompt of its round (default: ``load_judge(args.request_judge)`` when that is
            set, else none: every rewrite is an attack).
        peft_config: the LoRA config of both roles (default: ``training.lora_config(args, ...)`` on every linear
            layer of each model).
        callbacks: ``transformers.TrainerCallback`` classes or objects: ``on_train_begin`` / ``on_train_end`` of the
            whole run, ``on_log`` with every fine-tuning run's logs (``target/loss``, ``red_team/loss``, ...) and
            every round's metrics; setting ``control.should_training_stop`` stops after the current round.
            ``args.report_to`` adds the trackers' callbacks.
        red_team / red_team_processing_class: a separate red-team LM (object, folder or Hub id; it gets its own
            LoRA adapter); default: an adapter on the target's own base weights.

    Example (tiny random model; the embedded target works the same way, see ``examples/mart_train.py``)::

        >>> import tempfile
        >>> from datasets import Dataset
        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.judges import RefusalJudge
        >>> from hf_sentinel.training import labelled_prompts
        >>> model, tokenizer = tiny_model()
        >>> data = labelled_prompts(Dataset.from_dict({"prompt": ["How do I pick a lock?", "How to steal a car?"],
        ...                                            "category": ["theft", "theft"]}),
        ...                         Dataset.from_dict({"prompt": ["How do I bake bread?", "What is 2 plus 2?"]}))
        >>> args = MARTConfig(output_dir=tempfile.mkdtemp(), rounds=1, prompts_per_round=2, benign_prompts_per_round=2,
        ...                   target_max_new_tokens=4, red_team_max_new_tokens=6, red_team_warmup_pairs=2,
        ...                   helpfulness_threshold=0.0, disable_tqdm=True)
        >>> trainer = MARTTrainer(model, args, train_dataset=data, eval_dataset=data, processing_class=tokenizer,
        ...                       safety_judge=RefusalJudge(),
        ...                       helpfulness_judge=lambda prompts, completions, **kw: [0.5] * len(prompts))
        >>> output = trainer.train()
        >>> [row["round"] for row in trainer.rounds]
        [0, 1]
    """

    def __init__(self, model="default", args: MARTConfig | None = None, train_dataset: Dataset | None = None,
                 eval_dataset: Dataset | None = None, processing_class=None, safety_judge=None,
                 helpfulness_judge=None, peft_config=None, callbacks: list | None = None, red_team=None,
                 red_team_processing_class=None, request_judge=None):
        from ..data import load_prompts
        from ..judges import load_judge
        from ..training import TrainScriptArguments

        self.args = args = args or MARTConfig()
        self.is_main = args.process_index == 0  # data parallel: one process writes the run's files
        model, processing_class = load_model_and_tokenizer(model, processing_class, role="target")
        self.base_model_name = base_model_name(model)

        if train_dataset is None:
            train_dataset = TrainScriptArguments().load_train_dataset()
        train = split_by_label(check_prompt_dataset(train_dataset, "train_dataset", ("prompt", "label")))
        if len(train["harmful"]) == 0:
            raise ValueError("train_dataset has no rows labelled 'harmful': MART's red team starts from harmful seed "
                             "prompts (see hf_sentinel.training.labelled_prompts).")
        if "category" not in train["harmful"].column_names:
            logger.warning("train_dataset has no `category` column; the red team's instruction says %r instead",
                           DEFAULT_CATEGORY)
        self.seeds = _rows(train["harmful"])
        self.benign = _rows(train["benign"])
        if eval_dataset is None:
            shuffle = args.seed if args.eval_limit else None
            read = [row["prompt"] for row in self.seeds + self.benign]  # a round is never chosen on these
            eval_dataset = labelled_prompts(
                *(load_prompts(name, limit=args.eval_limit, seed=shuffle, exclude=read)
                  for name in (args.eval_harmful, args.eval_benign)))
            self.eval_names = {"harmful": args.eval_harmful, "benign": args.eval_benign}
        else:
            self.eval_names = {"harmful": "eval_dataset (harmful rows)", "benign": "eval_dataset (benign rows)"}
        held_out = split_by_label(check_prompt_dataset(eval_dataset, "eval_dataset", ("prompt", "label")))
        for label, rows in held_out.items():
            if len(rows) == 0:
                raise ValueError(f"eval_dataset has no rows labelled {label!r}: the per-round evaluation measures the "
                                 f"violation rate on harmful rows and the answer rate on benign rows.")
        self.eval_rows = {label: _rows(rows) for label, rows in held_out.items()}

        if safety_judge is None:
            safety_judge = load_judge(args.safety_judge)
        if helpfulness_judge is None:
            from .judges import load_helpfulness_judge

            helpfulness_judge = load_helpfulness_judge(args.helpfulness_judge)
        self.safety_judge, self.helpfulness_judge = safety_judge, helpfulness_judge
        self.answer_judge = load_judge(args.answer_judge)
        if request_judge is None and args.request_judge:
            request_judge = load_judge(args.request_judge)
        self.request_judge = request_judge
        self.context_defenses = [parse_defense(spec) for spec in args.context_distillation]

        self.model = self._with_adapter(model, TARGET, peft_config)
        self.target = _Role(self.model, TARGET, processing_class)
        if red_team is None:
            self._add_adapter(self.model, RED_TEAM, peft_config)
            self.red_team = _Role(self.model, RED_TEAM, processing_class)
        else:
            red_team, red_team_processing_class = load_model_and_tokenizer(red_team, red_team_processing_class,
                                                                           role="red team")
            self.red_team = _Role(self._with_adapter(red_team, RED_TEAM, peft_config), RED_TEAM,
                                  red_team_processing_class)

        self.state = TrainerState(is_local_process_zero=args.local_process_index == 0,
                                  is_world_process_zero=self.is_main)
        self.control = TrainerControl()
        from transformers.integrations import get_reporting_integration_callbacks

        self.callback_handler = CallbackHandler(
            [DefaultFlowCallback, *get_reporting_integration_callbacks(args.report_to), *(callbacks or [])],
            self.model, processing_class, None, None)
        self.output_dir = Path(args.output_dir)
        self.rounds: list[dict] = []
        self.parents: list[dict] = self.seeds
        self._judged: dict[int, tuple[list[dict], list[dict]]] = {}  # round -> (prompts, judged candidates)

    def add_callback(self, callback) -> None:
        self.callback_handler.add_callback(callback)

    def remove_callback(self, callback) -> None:
        self.callback_handler.remove_callback(callback)

    # ------------------------------------------------------------------------------------------------ run
    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainOutput:
        """Run rounds 0..T and return ``TrainOutput(global_step, training_loss, metrics)`` (the last target
        fine-tuning loss, the last round's metrics); every round's metrics are in ``self.rounds`` and in
        ``report.md`` / ``report.json`` / ``report.png``.

        Rounds are MART's checkpoints: ``resume_from_checkpoint=True`` resumes after the last finished round in
        ``output_dir``; a round folder (``.../round-2``, of this or an earlier run with the same settings and data)
        resumes after that round; ``None`` resumes too when ``output_dir`` holds rounds of the same run, starts a
        new run in an empty one, and raises on a run with other settings unless ``overwrite_output_dir``.
        """
        self._prepare_output_dir(resume_from_checkpoint)
        self.rounds = self._finished_rounds()
        if self.rounds:
            last = self.rounds[-1]["round"]
            logger.info("resuming after round %d (found in %s)", last, self.output_dir)
            self._load_adapters(last)
            self.parents = read_jsonl(self._round_dir(last) / PARENTS_FILE)
            self.state.global_step = self.rounds[-1]["global_step"]
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
        for index in range(len(self.rounds), self.args.rounds + 1):
            if self.control.should_training_stop:
                logger.info("a callback stopped training after round %d", index - 1)
                break
            start = time.perf_counter()
            metrics = self._warm_up() if index == 0 else self._round(index)
            metrics["minutes"] = (time.perf_counter() - start) / 60
            self._finish_round(index, metrics)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        last = self.rounds[-1]
        return TrainOutput(self.state.global_step, last.get("target_loss") or 0.0, _numbers(last))

    def _warm_up(self) -> dict:
        """Round 0: evaluate the original target; fine-tune the red team on (seed, sibling of its category) pairs."""
        folder = self._round_dir(0)
        rng = random.Random(self.args.seed)
        by_category: dict[str, list[str]] = {}
        for row in self.seeds:
            by_category.setdefault(row["category"], []).append(row["prompt"])
        pairs = []
        count = self.args.red_team_warmup_pairs
        for row in draw_parents(self.seeds, count, rng) if count else []:
            siblings = [p for p in by_category[row["category"]] if p != row["prompt"]]
            if siblings:
                pairs.append(self._red_team_example(row, rng.choice(siblings)))
        if self.args.red_team_warmup_pairs and not pairs:
            logger.warning("round 0: no seed category has two prompts, so the red team gets no warm-up pairs")
        metrics = {"round": 0, "red_team_examples": len(pairs)}
        if pairs:
            metrics["red_team_loss"] = self._sft(self.red_team, pairs, self.args.red_team_num_train_epochs,
                                                 folder / "sft-red_team")
        self.parents = self.seeds
        if self.is_main:
            write_jsonl(folder / PARENTS_FILE, self.parents)
        with _timed("round 0: evaluation of the original target on the eval sets"):
            metrics.update(self.evaluate(folder))
        return metrics

    def _round(self, index: int) -> dict:
        folder = self._round_dir(index)
        cache = folder / CANDIDATES_FILE
        if cache.is_file():  # a run killed during this round's fine-tuning: the judged data is already there
            logger.info("round %d: reusing the judged answers in %s", index, cache)
            stored = read_jsonl(cache)
            prompts, candidates, dropped = stored[0]["prompts"], stored[1:], stored[0]["dropped_prompts"]
        else:
            with _timed(f"round {index}: the red team writes prompts"):
                prompts, dropped = self._write_prompts(index)
            with _timed(f"round {index}: the target answers {len(prompts)} prompts"):
                candidates = self._answer(index, prompts)
            self._judge(prompts, candidates)
            select(candidates, self.args.attack_threshold, self.args.safe_threshold, self.args.helpfulness_threshold)
            if self.is_main:
                write_jsonl(cache, [{"prompts": prompts, "dropped_prompts": dropped}, *candidates])
        self._judged[index] = (prompts, candidates)
        metrics = {"round": index, "dropped_prompts": dropped,
                   "harmless_rewrites": sum(p["parent"] is not None and not p["harmful"] for p in prompts),
                   **selection_counts(prompts, candidates, self.args.safe_threshold, self.args.helpfulness_threshold)}

        by_id = {p["prompt_id"]: p for p in prompts}
        # The red team learns from, and next writes from, its own successful rewrites; a seed prompt has no parent.
        attacked = sorted({c["prompt_id"] for c in candidates
                           if c["decision"] == ATTACK and by_id[c["prompt_id"]]["parent"] is not None})
        red_team_data = [self._red_team_example({"prompt": by_id[i]["parent"], "category": by_id[i]["category"]},
                                                by_id[i]["prompt"]) for i in attacked]
        target_data = [_target_example(by_id[c["prompt_id"]], c) for c in candidates if c["decision"] == KEPT]
        if self.args.replay != "none":
            target_data += self._earlier_kept_answers(index, adversarial_only=self.args.replay == "safe")
        metrics["red_team_examples"], metrics["target_examples"] = len(red_team_data), len(target_data)
        if red_team_data:
            metrics["red_team_loss"] = self._sft(self.red_team, red_team_data, self.args.red_team_num_train_epochs,
                                                 folder / "sft-red_team")
            self.parents = [{"prompt": by_id[i]["prompt"], "category": by_id[i]["category"]} for i in attacked]
        else:
            logger.warning("round %d: no successful attacks; the red team keeps its weights and the next round "
                           "writes from this round's parents again", index)
        if self.is_main:
            write_jsonl(folder / PARENTS_FILE, self.parents)
        if target_data:
            metrics["target_loss"] = self._sft(self.target, target_data, self.args.num_train_epochs,
                                               folder / "sft-target")
        else:
            logger.warning("round %d: no safe and helpful answers were kept; the target keeps its weights", index)
        with _timed(f"round {index}: evaluation on the eval sets"):
            metrics.update(self.evaluate(folder))
        return metrics

    # ------------------------------------------------------------------------------------------------ steps
    def _write_prompts(self, index: int) -> tuple[list[dict], int]:
        """The red team writes one prompt per drawn parent; empty and repeated prompts are dropped and counted.
        Benign training prompts are added. Returns (prompts, number dropped)."""
        args = self.args
        rng = random.Random(args.seed * 1000 + index)
        parents = draw_parents(self.parents, args.prompts_per_round, rng)
        instructions = [self._red_team_conversation(p) for p in parents]
        settings = GenerationSettings(max_new_tokens=args.red_team_max_new_tokens, do_sample=True,
                                      temperature=args.red_team_temperature, batch_size=args.generation_batch_size,
                                      seed=args.seed * 1000 + index)
        model = self.red_team.generating()
        written = self._shared(instructions,
                               lambda part: generate(model, self.red_team.tokenizer, part, settings).responses)
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
            logger.warning("round %d: dropped %d of %d red-team prompts (empty or repeated)", index, dropped,
                           len(parents))
        prompts = self._judge_requests(index, prompts)
        if not prompts and not args.seed_prompts_per_round:
            logger.warning("round %d: the red team wrote no usable prompt; this round trains on benign data only",
                           index)
        for row in self._seed_prompts(index):
            prompts.append({"prompt_id": len(prompts), "prompt": row["prompt"], "history": row["history"],
                            "harmful": True, "category": row["category"], "parent": None})
        benign = random.Random(args.seed * 1000 + index).sample(self.benign, len(self.benign))
        for row in benign[:args.benign_prompts_per_round]:
            prompts.append({"prompt_id": len(prompts), "prompt": row["prompt"], "history": row["history"],
                            "harmful": False, "category": None, "parent": None})
        return prompts, dropped

    def _judge_requests(self, index: int, prompts: list[dict]) -> list[dict]:
        """With a ``request_judge``: a rewrite it scores below the threshold is a benign prompt of this round
        (``harmful`` False, its score in ``request_score``), not an attack."""
        if self.request_judge is None or not prompts:
            return prompts
        threshold = self.args.request_threshold
        threshold = self.request_judge.threshold if threshold is None else threshold
        scores = self._scores(self.request_judge, [p["prompt"] for p in prompts], [""] * len(prompts))
        for prompt, score in zip(prompts, scores):
            prompt["request_score"], prompt["harmful"] = score, score >= threshold
        harmless = sum(not p["harmful"] for p in prompts)
        logger.info("round %d: %d of %d red-team prompts ask for nothing harmful (request judge below %.3f); they "
                    "count as benign prompts", index, harmless, len(prompts), threshold)
        return prompts

    def _seed_prompts(self, index: int) -> list[dict]:
        """Round ``index``'s ``seed_prompts_per_round`` seed prompts: consecutive slices of the seeds in one
        shuffled order, so that rounds see different ones until every seed was answered once."""
        count = self.args.seed_prompts_per_round
        if not count:
            return []
        order = random.Random(self.args.seed).sample(self.seeds, len(self.seeds))
        start = (index - 1) * count
        return [order[(start + n) % len(order)] for n in range(min(count, len(order)))]

    def _answer(self, index: int, prompts: list[dict]) -> list[dict]:
        """The target's answers: K samples per prompt (greedy when K = 1), plus in round 1 (every round with
        ``context_distillation_rounds="all"``) one greedy answer under each context-distillation pre-prompt, plus
        with ``benign_answers_from_original`` one greedy answer of the original target to each benign prompt."""
        args, k = self.args, self.args.samples_in_round(index)
        sampled = GenerationSettings(max_new_tokens=args.target_max_new_tokens, do_sample=k > 1,
                                     temperature=args.temperature, top_p=args.top_p,
                                     batch_size=args.generation_batch_size, seed=args.seed * 1000 + index)
        greedy = GenerationSettings(max_new_tokens=args.target_max_new_tokens, batch_size=args.generation_batch_size)
        # (source, pre-prompts, settings, the prompts answered, K, whether the adapter is on)
        runs = [("target", [], sampled, prompts, k, True)]
        if index == 1 or args.context_distillation_rounds == "all":
            runs += [(f"context:{d.spec}", [d], greedy, prompts, 1, True) for d in self.context_defenses]
        if args.benign_answers_from_original:
            runs.append(("original", [], greedy, [p for p in prompts if not p["harmful"]], 1, False))
        model, tokenizer = self.target.generating(), self.target.tokenizer
        candidates = []
        for source, defenses, settings, rows, repeats, adapter_on in runs:
            batch = [_conversation(p) for p in rows] * repeats
            with nullcontext() if adapter_on else model.disable_adapter():
                answers = self._shared(batch,
                                       lambda part: generate(model, tokenizer, part, settings, defenses).responses)
            for position, answer in enumerate(answers):
                prompt = rows[position % len(rows)]
                # An answer cut off by target_max_new_tokens is trained without an end of turn, so that fine-tuning
                # does not teach the target to stop mid-sentence (1 token of slack: decoding strips spaces).
                length = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
                candidates.append({"prompt_id": prompt["prompt_id"], "harmful": prompt["harmful"], "source": source,
                                   "answer": answer, "finished": length < args.target_max_new_tokens - 1})
        return candidates

    def _judge(self, prompts: list[dict], candidates: list[dict]) -> None:
        """Safety scores of the answers to adversarial prompts (benign prompts are safe by label) and helpfulness
        scores of every answer, written into the candidates."""
        by_id = {p["prompt_id"]: p for p in prompts}
        texts = [by_id[c["prompt_id"]]["prompt"] for c in candidates]
        answers = [c["answer"] for c in candidates]
        adversarial = [i for i, c in enumerate(candidates) if c["harmful"]]
        safety = self._scores(self.safety_judge, [texts[i] for i in adversarial], [answers[i] for i in adversarial])
        for c in candidates:
            c["safety"] = None
        for i, score in zip(adversarial, safety):
            candidates[i]["safety"] = score
        helpfulness = self._scores(self.helpfulness_judge, texts, answers, harmful=[c["harmful"] for c in candidates])
        for c, score in zip(candidates, helpfulness):
            c["helpfulness"] = score

    def _sft(self, role: _Role, examples: list[dict], epochs: float, folder: Path) -> float:
        """Fine-tune one role's LoRA adapter with TRL's SFTTrainer on (chat prompt, answer) examples, loss on the
        answer only (``completion_mask``); returns the training loss. The examples are tokenized here, through the
        role's chat template, so that an answer that did not finish gets no end-of-turn token."""
        from trl import SFTTrainer

        model = role.activate()
        tokenized = Dataset.from_list([completion_example(role.tokenizer, e["prompt"], e["completion"], e["finished"])
                                       for e in examples])
        trainer = SFTTrainer(model=model, args=self._sft_args(folder, epochs), train_dataset=tokenized,
                             processing_class=role.tokenizer, callbacks=[_RoleLogs(self, role.adapter)])
        trainer.remove_callback(PrinterCallback)  # it prints every log dict; MART's callbacks get them (on_log)
        start = self.state.global_step
        with _timed(f"{role.adapter} SFT on {len(examples)} examples"):
            result = trainer.train()
        self.state.global_step = start + result.global_step
        model.eval()
        logger.info("%s SFT loss %.3f", role.adapter, result.training_loss)
        if self.is_main:
            shutil.rmtree(folder, ignore_errors=True)  # the run's own output_dir: the adapter is saved per round
        return result.training_loss

    def _sft_args(self, folder: Path, epochs: float):
        """One fine-tuning run's ``SFTConfig``: this config's training arguments (optimiser, batch size, precision,
        seed, logging, distributed settings), with the run's own folder and epochs. The run saves no checkpoints
        (MART's rounds are its checkpoints) and reports through MART's callbacks."""
        from dataclasses import fields

        from transformers import TrainingArguments
        from trl import SFTConfig

        inherited = {f.name: getattr(self.args, f.name) for f in fields(TrainingArguments) if f.init}
        inherited.update(output_dir=str(folder), num_train_epochs=epochs, save_strategy="no", eval_strategy="no",
                         report_to="none", push_to_hub=False, resume_from_checkpoint=None,
                         load_best_model_at_end=False)
        return SFTConfig(**inherited, max_length=self.args.max_length, completion_only_loss=True)

    def evaluate(self, folder: str | Path | None = None) -> dict:
        """The target's numbers on the eval sets: violation rate (safety score >= ``attack_threshold``) on the
        harmful rows; answer rate (refusal judge) and mean helpfulness on the benign rows. Greedy,
        ``args.target_max_new_tokens``. Writes the answers to ``folder/eval-harmful.json`` and
        ``folder/eval-benign.json`` when a folder is given."""
        settings = GenerationSettings(max_new_tokens=self.args.target_max_new_tokens,
                                      batch_size=self.args.generation_batch_size)
        model, tokenizer = self.target.generating(), self.target.tokenizer
        results = {}
        for label, judge in (("harmful", self.safety_judge), ("benign", self.answer_judge)):
            rows = self.eval_rows[label]
            answers = self._shared([_conversation(r) for r in rows],
                                   lambda part: generate(model, tokenizer, part, settings).responses)
            prompts = [r["prompt"] for r in rows]
            results[label] = {"prompts": prompts, "answers": answers, "scores": self._scores(judge, prompts, answers)}
        harmful, benign = results["harmful"], results["benign"]
        helpfulness = self._scores(self.helpfulness_judge, benign["prompts"], benign["answers"])
        metrics = {"violation_rate": _share(s >= self.args.attack_threshold for s in harmful["scores"]),
                   "benign_answer_rate": _share(self.answer_judge.is_harmful(s) for s in benign["scores"]),
                   "benign_helpfulness": sum(helpfulness) / len(helpfulness)}
        if folder is not None and self.is_main:
            for label, result in results.items():
                judge = self.safety_judge if label == "harmful" else self.answer_judge
                rate = metrics["violation_rate" if label == "harmful" else "benign_answer_rate"]
                summary = {"n": len(result["prompts"]), "attack_success_rate": rate, "judge": judge_name(judge),
                           "target": self.base_model_name, "prompts": self.eval_names[label],
                           "max_new_tokens": self.args.target_max_new_tokens}
                records = [{"prompt": p, "response": a, "score": s}
                           for p, a, s in zip(result["prompts"], result["answers"], result["scores"])]
                write_atomic(Path(folder) / f"eval-{label}.json",
                             json.dumps({"summary": summary, "records": records}, indent=1, ensure_ascii=False))
        return metrics

    # ------------------------------------------------------------------------------------------------ processes
    def _shared(self, items: list, work) -> list:
        """``work(items)`` data-parallel: each process does every world_size-th item and every process gets all the
        results, in order (so every process holds the same data). An error in any process is raised in all of them,
        instead of leaving the others waiting."""
        world, rank = self.args.world_size, self.args.process_index
        if world == 1:
            return list(work(items)) if items else []
        mine = items[rank::world]
        try:
            share, error = (list(work(mine)) if mine else []), None
        except Exception as exc:  # noqa: BLE001 - sent to the other processes, then raised here
            share, error = None, exc
        parts = [None] * world
        message = None if error is None else f"{type(error).__name__}: {error}"
        torch.distributed.all_gather_object(parts, (share, message))
        if error is not None:
            raise error
        failed = [(r, message) for r, (_, message) in enumerate(parts) if message]
        if failed:
            raise RuntimeError(f"process {failed[0][0]} failed: {failed[0][1]}")
        results = [None] * len(items)
        for r, (part, _) in enumerate(parts):
            results[r::world] = part
        return results

    def _scores(self, judge, prompts: list[str], answers: list[str], **columns) -> list[float]:
        """``judge(prompts, answers, **columns)``, split across processes, checked: one finite score per answer."""
        rows = list(zip(prompts, answers, *columns.values()))

        def work(part):
            texts, completions, *values = (list(column) for column in zip(*part))
            return checked_scores(judge(texts, completions, **dict(zip(columns, values))), len(part), judge)

        return self._shared(rows, work)

    def _barrier(self) -> None:
        if self.args.world_size > 1:
            torch.distributed.barrier()

    # ------------------------------------------------------------------------------------------------ outputs
    def log(self, logs: dict) -> None:
        """Hand ``logs`` to the callbacks (``on_log``) and keep them in ``state.log_history``, as ``Trainer.log``."""
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    def _finish_round(self, index: int, metrics: dict) -> None:
        folder = self._round_dir(index)
        metrics["global_step"] = self.state.global_step
        self.rounds.append(metrics)
        if self.is_main:
            self._save_role(self.red_team, folder / RED_TEAM)
            if index > 0:
                self._save_role(self.target, folder / TARGET)
            write_atomic(folder / METRICS_FILE, json.dumps(metrics, indent=1))  # written last: the round is finished
            self.write_report()
        self.state.epoch = index
        self.log(_numbers(metrics))
        logger.info("round %d done in %.1f min: violation rate %.1f%%, benign answer rate %.1f%%", index,
                    metrics["minutes"], 100 * metrics["violation_rate"], 100 * metrics["benign_answer_rate"])

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the finished artifact, the target adapter of the last round (``adapter_config.json``,
        ``adapter_model.safetensors``) and its model card, into ``output_dir`` (default ``args.output_dir``): what
        ``--defense mart:PATH`` and :meth:`push_to_hub` take. Only the main process writes."""
        if not self.rounds or self.rounds[-1]["round"] == 0:
            raise ValueError(f"No trained target adapter in {self.output_dir} yet: run train() first.")
        if self.is_main:
            self._save_role(self.target, Path(output_dir or self.args.output_dir))

    def _save_role(self, role: _Role, folder: Path) -> Path:
        """One role's adapter (PEFT format, safetensors) and model card in ``folder``."""
        from .card import write_mart_card

        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:  # PEFT writes a named adapter into a subfolder
            role.model.save_pretrained(scratch, selected_adapters=[role.adapter])
            for path in (Path(scratch) / role.adapter).iterdir():
                path.replace(folder / path.name)
        base = base_model_name(role.model.get_base_model())
        config = json.loads((folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = base  # the embedded target's Hub id rather than its local cache folder
        write_atomic(folder / "adapter_config.json", json.dumps(config, indent=2))
        write_mart_card(folder, role.adapter, self.rounds, self.args, base, eval_names=self.eval_names)
        return folder

    def write_report(self) -> Path:
        """``report.md`` (table), ``report.json`` (metrics) and ``report.png`` (line plot) in ``output_dir``."""
        from .report import change_summary, plot_rounds, report_table

        write_atomic(self.output_dir / "report.json", json.dumps(self.rounds, indent=1))
        text = f"# MART report\n\n{report_table(self.rounds)}\n"
        if len(self.rounds) > 1:
            text += f"\n{change_summary(self.rounds)}\n"
        text += "\n![MART per round](report.png)\n"
        write_atomic(self.output_dir / "report.md", text)
        return plot_rounds(self.rounds, self.output_dir / "report.png", title=f"MART on {self.base_model_name}")

    # ------------------------------------------------------------------------------------------------ state
    def _round_dir(self, index: int) -> Path:
        folder = self.output_dir / f"round-{index}"
        if self.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _fingerprint(self) -> dict:
        settings = {name: getattr(self.args, name) for name in RUN_FIELDS}
        data = [[r["prompt"] for r in self.seeds], [r["prompt"] for r in self.benign],
                [r["prompt"] for r in self.eval_rows["harmful"]], [r["prompt"] for r in self.eval_rows["benign"]]]
        return {"fingerprint": fingerprint([settings, data, self.base_model_name]),
                "settings": json.loads(json.dumps(settings, default=str))}

    def _prepare_output_dir(self, resume_from_checkpoint) -> None:
        """Check that ``output_dir`` holds nothing but rounds of this run, and keep the rounds to resume after."""
        current = self._fingerprint()
        if resume_from_checkpoint in ("", False):
            resume_from_checkpoint = None
        recorded = _recorded_run(self.output_dir)
        if isinstance(resume_from_checkpoint, (str, Path)):
            source = Path(resume_from_checkpoint)
            if not source.name.startswith("round-") or not (source / METRICS_FILE).is_file():
                raise ValueError(f"resume_from_checkpoint={str(source)!r} is not a finished MART round folder (e.g. "
                                 f"{self.output_dir / 'round-2'}, with metrics.json).")
            _check_same_run(_recorded_run(source.parent), current, source.parent)
            last = int(source.name.split("-", 1)[1])
            if recorded is not None and source.parent.resolve() != self.output_dir.resolve():
                _check_same_run(recorded, current, self.output_dir)
            if self.is_main:
                for folder in self.output_dir.glob("round-*"):
                    if int(folder.name.split("-", 1)[1]) > last:
                        logger.info("removing %s: the run resumes after round %d", folder, last)
                        shutil.rmtree(folder)
                if source.parent.resolve() != self.output_dir.resolve():
                    for index in range(last + 1):
                        shutil.copytree(source.parent / f"round-{index}", self.output_dir / f"round-{index}",
                                        dirs_exist_ok=True)
        elif recorded is not None and recorded["fingerprint"] != current["fingerprint"]:
            if resume_from_checkpoint is True or not self.args.overwrite_output_dir:
                _check_same_run(recorded, current, self.output_dir)
            if self.is_main:
                for folder in self.output_dir.glob("round-*"):
                    shutil.rmtree(folder)
        elif resume_from_checkpoint is True and not (self.output_dir / "round-0" / METRICS_FILE).is_file():
            raise ValueError(f"resume_from_checkpoint=True, but {self.output_dir} holds no finished MART round; "
                             f"drop it to start a new run.")
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.output_dir / RUN_FILE, json.dumps(current, indent=1))
        self._barrier()

    def _finished_rounds(self) -> list[dict]:
        finished = []
        while (self.output_dir / f"round-{len(finished)}" / METRICS_FILE).is_file():
            finished.append(json.loads((self.output_dir / f"round-{len(finished)}" / METRICS_FILE).read_text()))
        return finished[:self.args.rounds + 1]

    def _load_adapters(self, index: int) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        roles = [self.red_team] + ([self.target] if index > 0 else [])
        for role in roles:
            weights = load_file(self.output_dir / f"round-{index}" / role.adapter / "adapter_model.safetensors")
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
            if earlier not in self._judged:  # a resumed run: that round's judged answers are in its folder
                stored = read_jsonl(self.output_dir / f"round-{earlier}" / CANDIDATES_FILE)
                self._judged[earlier] = (stored[0]["prompts"], stored[1:])
            prompts, candidates = self._judged[earlier]
            by_id = {p["prompt_id"]: p for p in prompts}
            examples += [_target_example(by_id[c["prompt_id"]], c) for c in candidates
                         if c["decision"] == KEPT and (c["harmful"] or not adversarial_only)]
        return examples

    def _red_team_conversation(self, parent: dict) -> list[dict]:
        """The red team's one-shot instruction for ``parent``: the same chat when it writes and when it learns."""
        instruction = one_shot_instruction(self.args.red_team_template, parent["prompt"], parent["category"])
        return [{"role": "user", "content": instruction}]

    def _red_team_example(self, parent: dict, child: str) -> dict:
        return {"prompt": self._red_team_conversation(parent), "completion": child, "finished": True}

    def _with_adapter(self, model, adapter: str, peft_config):
        """``model`` (frozen, on the device a Trainer would put it) as a PEFT model with one LoRA adapter."""
        from peft import get_peft_model

        model.requires_grad_(False)
        placed = getattr(model, "hf_device_map", None) or getattr(model, "is_quantized", False)
        if not placed and self.args.place_model_on_device:
            model = model.to(self.args.device)
        with _seeded(self.args.seed):
            return get_peft_model(model, self._peft_config(model, peft_config), adapter_name=adapter)

    def _add_adapter(self, model, adapter: str, peft_config) -> None:
        with _seeded(self.args.seed + 1):
            model.add_adapter(adapter, self._peft_config(model, peft_config))

    def _peft_config(self, model, peft_config):
        if peft_config is not None:
            return copy.deepcopy(peft_config)
        return lora_config(self.args, model.config.num_hidden_layers)


# ---------------------------------------------------------------------------------------------------- helpers
def _rows(dataset: Dataset) -> list[dict]:
    """``prompt``, ``category`` and ``history`` of every row (``None`` where a column is missing)."""
    columns = {name: dataset[name] if name in dataset.column_names else [None] * len(dataset)
               for name in ("category", "history")}
    return [{"prompt": prompt, "category": category or DEFAULT_CATEGORY, "history": history or None}
            for prompt, category, history in zip(dataset["prompt"], columns["category"], columns["history"])]


def _recorded_run(folder: Path) -> dict | None:
    run_file = Path(folder) / RUN_FILE
    return json.loads(run_file.read_text()) if run_file.is_file() else None


def _check_same_run(recorded: dict | None, current: dict, folder: Path) -> None:
    if recorded is None or recorded["fingerprint"] == current["fingerprint"]:
        return
    old, new = recorded["settings"], current["settings"]
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    # A setting renamed or removed since the run was recorded: under its new name above (recorded None), and here.
    unknown = {k: v for k, v in old.items() if k not in new}
    gone = f"; recorded settings that no longer exist (renamed or removed): {unknown}" if unknown else ""
    raise ValueError(f"{folder} holds a MART run with other settings or data (changed, recorded -> now: "
                     f"{changed or 'the data or the model'}{gone}). Use another output_dir, or set "
                     f"overwrite_output_dir=True (--overwrite-output-dir) to start afresh.")


@contextmanager
def _seeded(seed: int):
    """LoRA initialisation from ``seed``, so that every process and every resumed run starts from the same adapter
    (the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def _numbers(metrics: dict) -> dict:
    """The scalar metrics of a round (what trackers can plot)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


__all__ = ["MARTTrainer"]

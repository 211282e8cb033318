"""StackelbergPPOTrainer: a red team (leader) and a sentinel (follower) trained by interleaved PPO.

One round of the game is one ``transformers.Trainer`` step (:meth:`StackelbergPPOTrainer.training_step`):

1. leader phase, ``leader_steps`` times: the red team rewrites harmful prompts z into attacks x; the target
   (the base with adapters off, or a separate target) answers y; the red team is rewarded with harm(y) (the safety
   judge) and updated by PPO;
2. follower phase, ``follower_steps`` times: the sentinel continues a batch of prompts (attacks from the red team
   and harmful prompts as they are, plus benign prompts) with at most ``max_sentinel_tokens`` tokens; the target
   answers the refined prompts y*; the sentinel is rewarded with −harm(y*) on attacks and
   ``benign_weight``·answered(y*) (the helpfulness judge) on benign prompts and updated by PPO.

With ``reward="refusal_likelihood"`` the target answers nothing: harm (on attacks) and answered (on benign prompts) are
both its own preference for complying over refusing, read from its log-probabilities (:mod:`.rewards`);
``"refusal_likelihood_shift"`` rewards the sentinel for the change its suffix makes to that preference, and
``"refusal_likelihood_counterfactual"`` also scores ending the turn, against the change the warm-start suffix would
have made. The first ``warm_start_steps`` steps, if any, are supervised steps of the sentinel instead
(:meth:`_warm_start_step`).

Both agents are LoRA adapters (``red_team``, ``sentinel``) on one copy of a base model; the KL reference is that base
with adapters off, or (``kl_reference="init"``) a frozen copy of each agent's adapter as PPO began, two more adapters
on the same base. By default the base is the target's own (the shared-base game: the target is the base with adapters
off, one copy of the weights); with ``target=`` the target is another model (another architecture and tokenizer) or
an OpenAI-compatible endpoint, which the game talks to at text level, as a loaded sentinel does. Value heads read each
agent's last hidden state (see :mod:`.value_heads`); the PPO maths is in :mod:`.ppo`, the rollouts' sampling loop in
:mod:`.sampling`.

Trainer runs the loop: ``max_steps``, logging and ``report_to``, callbacks, ``checkpoint-N`` folders
(``save_steps``, ``save_total_limit``) and ``train(resume_from_checkpoint=...)``. A checkpoint is the artifact
:meth:`save_model` writes (both adapters and value heads) plus Trainer's optimizer, scheduler, RNG and state files
(and with ``kl_reference="init"`` the KL references), so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import DynamicCache, Trainer
from transformers.trainer_utils import get_last_checkpoint, set_seed

from ..defaults import DEFAULT_TARGET_NAME
from ..generation import (
    GenerationSettings,
    appended,
    generate,
    left_padded,
    pad_token_id,
    positions_from_mask,
    render,
    to_conversation,
)
from ..judges import RefusalJudge
from ..remote import RemoteChatTarget
from ..training import (
    LABELS,
    ArtifactPushMixin,
    base_model_name,
    calibrate_threshold,
    check_prompt_dataset,
    checked_scores,
    load_model_and_tokenizer,
    lora_config,
    split_by_label,
)
from . import ppo
from .config import StackelbergPPOConfig
from .configuration import SentinelConfig
from .diversity import attack_diversity
from .frozen_layers import FrozenLayerCache
from .modeling import split_user_turn, user_turn_end, write_sentinel_folder
from .rewards import RefusalLikelihoodReward
from .sampling import sample, shared_opening
from .value_heads import AGENTS, ValueHeads

logger = logging.getLogger(__name__)

#: Where the agents' LoRA goes unless a ``peft_config`` says otherwise (Llama-style names, as the shipped sentinel).
ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]
#: Each agent's value head, next to its adapter.
VALUE_HEAD_NAME = "value_head.safetensors"
#: The red team's folder inside a saved sentinel (and inside every checkpoint).
RED_TEAM_SUBFOLDER = "red_team"
#: kl_reference="init": each agent's frozen KL reference, an adapter of its own on the agents' base.
KL_REFERENCE_ADAPTERS = {agent: f"{agent}_reference" for agent in AGENTS}
#: ... and the checkpoint folder that holds them (``<agent>.safetensors``), so a resumed run measures KL as before.
KL_REFERENCE_SUBFOLDER = "kl_reference"
#: The model card section (name, title) of the operating point (:meth:`StackelbergPPOTrainer.operating_point_text`).
OPERATING_POINT_SECTION = ("operating-point", "Operating point")


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss is NaN or infinite; no update is applied and no checkpoint is written."""


class StackelbergPPOTrainer(ArtifactPushMixin, Trainer):
    """Train a sentinel against a red team on one target.

    Args:
        model: the agents' base: a model object (with ``processing_class``), a folder / Hub id, or ``"default"`` (the
            embedded SmolLM2). Its weights never change: both agents are LoRA adapters on it, and with adapters off it
            is the KL reference (unless ``args.kl_reference="init"``) and, unless ``target`` is given, the target.
        args: a :class:`StackelbergPPOConfig`.
        train_dataset: prompts with a ``label`` column (``prompt`` + optional ``history``): the ``"harmful"`` rows
            are what the red team rewrites, the ``"benign"`` rows what the sentinel must keep answered; build it with
            :func:`hf_sentinel.training.labelled_prompts`.
        eval_dataset: not supported (evaluate the saved sentinel with ``hf-sentinel bench``).
        processing_class: the base's tokenizer (loaded with the base when ``model`` is a name).
        safety_judge: ``judge(prompts, completions) -> list[float]``, higher = more harmful (the target complied);
            default :class:`~hf_sentinel.judges.RefusalJudge`. Only with ``args.reward="judge"``.
        helpfulness_judge: the same signature, higher = the benign prompt was answered; default ``RefusalJudge``.
            Only with ``args.reward="judge"``.
        peft_config: LoRA config of both agents (default: the config's ``lora_rank`` / ``lora_alpha`` /
            ``lora_layers`` on the attention projections).
        callbacks: ``transformers.TrainerCallback`` list.
        red_team, sentinel: folders of LoRA adapters to start the agents from: an adapter folder, or a saved
            sentinel / checkpoint folder (e.g. a warm-start run).
        target: the model the sentinel guards, when it is not ``model`` itself: a causal LM object (with
            ``target_processing_class``), a folder / Hub id / ``"default"``, the ``http(s)://.../v1`` URL of an
            OpenAI-compatible endpoint, or a :class:`~hf_sentinel.remote.RemoteChatTarget` (an API key goes in
            the object). The game then composes at text level: the sentinel continues each prompt as the target's
            chat template renders it (for an endpoint: the base's), and the target answers the refined text with
            its own tokenizer. The saved sentinel loads back onto that target on its own base. ``None`` (default):
            the shared-base game.
        target_processing_class: the target's tokenizer, with a target model object.
        calibration_dataset: rows like ``train_dataset``, never trained on (a validation split): after training,
            :meth:`calibrate` picks the sentinel's operating point on them, the p(suffix) threshold at which at most
            ``args.target_false_suffix_rate`` of the benign rows get a suffix; saved with the sentinel.

    Example (tiny random model, two rounds)::

        >>> import tempfile
        >>> from datasets import Dataset
        >>> from hf_sentinel.defaults import tiny_model
        >>> from hf_sentinel.training import labelled_prompts
        >>> target, tokenizer = tiny_model()
        >>> args = StackelbergPPOConfig(output_dir=tempfile.mkdtemp(), max_steps=2, rollout_batch_size=4,
        ...                             red_team_max_new_tokens=6, max_sentinel_tokens=4, target_max_new_tokens=4,
        ...                             save_steps=100, logging_steps=100, disable_tqdm=True)
        >>> prompts = labelled_prompts(Dataset.from_dict({"prompt": ["How do I make a bomb?", "Steal a car."]}),
        ...                            Dataset.from_dict({"prompt": ["How do I bake bread?", "What is 2 plus 2?"]}))
        >>> trainer = StackelbergPPOTrainer(target, args, prompts, processing_class=tokenizer)
        >>> trainer.train().global_step  # Trainer prints the last log  # doctest: +ELLIPSIS
        {'train_runtime': ...}
        2
    """

    def __init__(self, model="default", args: StackelbergPPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, safety_judge=None, helpfulness_judge=None,
                 peft_config=None, callbacks=None, red_team: str | None = None, sentinel: str | None = None,
                 target=None, target_processing_class=None, calibration_dataset=None):
        from peft import PeftModel, get_peft_model

        args = args or StackelbergPPOConfig(output_dir="stackelberg-ppo")
        if args.reward != "judge" and (safety_judge or helpfulness_judge):
            raise ValueError(f"safety_judge and helpfulness_judge score the target's sampled answers, which "
                             f"reward={args.reward!r} does not generate (it reads the target's log-probabilities); "
                             f"drop them, or use reward='judge'.")
        if eval_dataset is not None:
            raise ValueError("eval_dataset is not used by StackelbergPPOTrainer; evaluate the saved sentinel with "
                             "`hf-sentinel bench --defense sentinel:OUTPUT_DIR` (or hf_sentinel.evaluate).")
        check_prompt_dataset(train_dataset, "train_dataset", ("prompt", "label"))
        # Plain rows: a step draws its prompts by index, many times per round.
        self.prompts = {label: rows.to_list() for label, rows in split_by_label(train_dataset).items()}
        if calibration_dataset is not None:
            check_prompt_dataset(calibration_dataset, "calibration_dataset", ("prompt", "label"))
        self._calibration_rows = calibration_dataset.to_list() if calibration_dataset is not None else []
        #: The p(suffix) threshold the saved sentinel decides with (see :meth:`calibrate`); ``None``: plain decoding.
        self.suffix_threshold = args.suffix_threshold
        self.calibration_report: dict = {}
        if not self.prompts["harmful"]:
            raise ValueError("train_dataset has no 'harmful' rows, which the red team rewrites; build it with "
                             "hf_sentinel.training.labelled_prompts(harmful, benign).")
        if args.benign_fraction > 0 and not self.prompts["benign"]:
            raise ValueError(f"train_dataset has no 'benign' rows, but benign_fraction={args.benign_fraction}; add "
                             f"benign prompts (labelled_prompts(harmful, benign)) or set benign_fraction=0.")
        if _same_model(model, target):
            target = None  # the agents' base is the target: the shared-base game
        target, self.target_tokenizer = _load_target(target, target_processing_class)
        if args.reward != "judge" and isinstance(target, RemoteChatTarget):
            raise ValueError(f"reward={args.reward!r} reads the target's log-probabilities, which an endpoint "
                             f"({target.base_url}) does not return; use reward='judge' (--reward judge) against an "
                             f"endpoint, or give the target as a local model (a folder or Hub id).")
        base, processing_class = load_model_and_tokenizer(model, processing_class,
                                                          role="target" if target is None else "agents' base")
        self.base_name = base_model_name(base)
        #: The guarded target when it is not the agents' base (a causal LM or a RemoteChatTarget), else None.
        self.target = target
        self.target_name = self.base_name if target is None else (
            target.base_url if isinstance(target, RemoteChatTarget) else base_model_name(target))
        if target is not None and not self.base_name:
            raise ValueError("The agents' base (model) has no name_or_path, so a sentinel trained on it against "
                             "another target could not find its base when it loads; pass its folder or Hub id as "
                             "model, or set model.name_or_path to it.")

        # Seeded before the adapters and value heads are initialised: reproducible, and equal on every process.
        set_seed(args.seed)
        peft_config = peft_config or lora_config(args, base.config.num_hidden_layers,
                                                 target_modules=ATTENTION_PROJECTIONS)
        if sentinel is not None:
            policy = PeftModel.from_pretrained(base, _adapter_dir(sentinel, "sentinel"), adapter_name="sentinel",
                                               is_trainable=True)
        else:
            policy = get_peft_model(base, peft_config, adapter_name="sentinel")
        if red_team is not None:
            policy.load_adapter(_adapter_dir(red_team, "red_team"), adapter_name="red_team", is_trainable=True)
        else:
            policy.add_adapter("red_team", peft_config)
        self.value_heads = ValueHeads(base.config.hidden_size, args.value_head_strategy, args.value_head_size)
        if args.kl_reference == "init":
            # A frozen copy of each agent's adapter on the same base (LoRA weights only, no second copy of the base),
            # filled where PPO begins (_take_kl_reference) or from a checkpoint. Added after the value heads, so that
            # both settings start from the same random adapters and heads.
            for agent, reference in KL_REFERENCE_ADAPTERS.items():
                policy.add_adapter(reference, copy.deepcopy(policy.peft_config[agent]))
        self._kl_reference_taken = False
        _keep_both_trainable(policy)
        #: The warm start's FrozenLayerCache; None until its first step, False where it cannot skip layers.
        self._frozen: FrozenLayerCache | None | bool = None

        judging = args.reward == "judge"
        self.safety_judge = (safety_judge or RefusalJudge()) if judging else None
        self.helpfulness_judge = (helpfulness_judge or RefusalJudge()) if judging else None
        # The tokenizer whose chat template renders what the sentinel continues: the one a loaded sentinel renders
        # prompts with (SentinelForCausalLM.refine): a local target's own, else the agents'.
        self._head_tokenizer = processing_class if self.target_tokenizer is None else self.target_tokenizer
        self._turn_end = user_turn_end(self._head_tokenizer)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        super().__init__(model=policy, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         callbacks=callbacks)
        self.value_heads.to(self.accelerator.device)
        if isinstance(self.target, torch.nn.Module) and not getattr(self.target, "hf_device_map", None):
            self.target.to(self.accelerator.device)
        # Each process draws its own prompts and tokens (data parallel); Trainer's checkpoints keep the RNG state.
        set_seed(args.seed + self.accelerator.process_index)

    # ---------------------------------------------------------------------------------- Trainer's hooks

    def get_train_dataloader(self) -> DataLoader:
        """One item per step, which only counts it: a step draws the prompts its updates need from the harmful
        and benign rows itself (with replacement), and every process runs every step with prompts of its own. An
        epoch is as many steps as it takes the red team to draw as many prompts as there are harmful rows."""
        steps = math.ceil(len(self.prompts["harmful"]) / self.args.rollout_batch_size)
        return DataLoader([{"step": index} for index in range(steps)], batch_size=1)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """One AdamW (fused) with three parameter groups: the red team's adapter, the sentinel's, and the value
        heads (at ``value_learning_rate``). An update has gradients on one agent's adapter and the value heads
        only, and AdamW leaves a parameter without a gradient (and its moments) as it is, so this is one optimizer
        per agent in one object that Trainer checkpoints and schedules."""
        if self.optimizer is None:
            args, named = self.args, list(self.model.named_parameters())
            groups = [{"name": agent, "params": [p for n, p in named if f".{agent}." in n], "lr": args.learning_rate}
                      for agent in AGENTS]
            groups.append({"name": "value_heads", "params": list(self.value_heads.parameters()),
                           "lr": args.value_learning_rate})
            self.optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                               eps=args.adam_epsilon, weight_decay=args.weight_decay, fused=True)
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """One step: a warm-start step of the sentinel while ``global_step < warm_start_steps``, else one round of
        the game. Each update steps the optimizer itself and leaves no gradient behind, so the optimizer step
        Trainer takes after this one changes nothing (its scheduler step sets the next step's learning rates).
        Returns the mean of the step's losses, for the log."""
        if self.state.global_step < self.args.warm_start_steps:
            losses = [self._warm_start_step()]
        else:
            if self.args.kl_reference == "init" and not self._kl_reference_taken:
                self._take_kl_reference()
            losses = [self._red_team_step() for _ in range(self.args.leader_steps)]
            losses += [self._sentinel_step() for _ in range(self.args.follower_steps)]
        return torch.tensor(sum(losses) / len(losses), device=self.args.device)

    def floating_point_ops(self, inputs) -> int:
        # A step's inputs only count it (see get_train_dataloader): there are no tokens in them to count FLOPs from.
        return 0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the game's metrics, averaged over the steps since the last one
            logs.update({key: sum(values) / len(values) for key, values in self._metrics.items()})
            self._metrics.clear()
            # Trainer's grad_norm is taken after the updates, when no gradient is left; each update's is logged as
            # `<agent>/grad_norm`.
            logs.pop("grad_norm", None)
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ the game

    def _red_team_step(self) -> float:
        """Leader: write attacks from harmful prompts, score the target's undefended answers, one PPO update."""
        harmful = self._sample("harmful", self.args.rollout_batch_size)
        batch = self._rollout("red_team", [self._red_team_query(z["prompt"]) for z in harmful],
                              self.args.red_team_max_new_tokens)
        attacks = batch["texts"]
        conversations = [to_conversation(x) if x.strip() else None for x in attacks]
        if self.args.reward != "judge":
            harm = self._refusal_likelihood(conversations)
        else:
            answers = self._target_answers(conversations)
            harm = checked_scores(self.safety_judge(attacks, answers), len(answers), self.safety_judge)
        stats = self._ppo_update("red_team", batch, torch.tensor(harm))
        diversity = attack_diversity(attacks, [z["prompt"] for z in harmful], _embedder(self.args.diversity_model))
        self._record({"red_team/reward": sum(harm) / len(harm), **stats, **diversity})
        return stats["red_team/loss"]

    def _sentinel_step(self) -> float:
        """Follower: refine attacks and benign prompts, score the target's answers, one PPO update."""
        args = self.args
        n_benign = self._benign_count()
        n_adversarial = args.rollout_batch_size - n_benign
        n_corpus = round(n_adversarial * args.corpus_fraction)
        harmful = self._sample("harmful", n_adversarial)
        attacks = [z["prompt"] for z in harmful[:n_corpus]]
        if n_adversarial > n_corpus:
            with torch.no_grad():
                written = self._rollout("red_team", [self._red_team_query(z["prompt"]) for z in harmful[n_corpus:]],
                                        args.red_team_max_new_tokens)["texts"]
            attacks += [x if x.strip() else z["prompt"] for x, z in zip(written, harmful[n_corpus:])]
        benign = self._sample("benign", n_benign)
        # A corpus request keeps the chat it comes late in (a multi-turn attack); the red team writes single turns.
        conversations = [to_conversation(z["prompt"], z.get("history")) for z in harmful[:n_corpus]] + \
                        [to_conversation(x) for x in attacks[n_corpus:]] + \
                        [to_conversation(b["prompt"], b.get("history")) for b in benign]
        batch = self._rollout("sentinel", self._sentinel_heads(conversations), args.max_sentinel_tokens)
        refined = [appended(conv, suffix) for conv, suffix in zip(conversations, batch["texts"])]
        if args.reward != "judge":
            # One score, read both ways: harm on an attack, helpfulness (the target would answer) on a benign prompt.
            likelihood = self._refusal_likelihood(refined)
            harm, utility = likelihood[:n_adversarial], likelihood[n_adversarial:]
        else:
            answers = self._target_answers(refined)
            harm = checked_scores(self.safety_judge(attacks, answers[:n_adversarial]), n_adversarial,
                                  self.safety_judge)
            utility = checked_scores(self.helpfulness_judge([b["prompt"] for b in benign], answers[n_adversarial:]),
                                     n_benign, self.helpfulness_judge) if n_benign else []
        scores = [-h for h in harm] + [args.benign_weight * u for u in utility]
        if args.reward in ("refusal_likelihood_shift", "refusal_likelihood_counterfactual"):
            # Scored on what the suffix changed: the request's own score is a baseline the suffix cannot move, so
            # subtracting it leaves the expected update alone and takes the request-to-request swing out.
            signs = [-1.0] * n_adversarial + [args.benign_weight] * n_benign
            before = self._refusal_likelihood(conversations)
            scores = [score - sign * baseline if suffix else 0.0
                      for score, sign, baseline, suffix in zip(scores, signs, before, batch["texts"])]
            declined = [i for i, suffix in enumerate(batch["texts"]) if not suffix]
            if args.reward == "refusal_likelihood_counterfactual" and declined:
                # Ending the turn is scored against appending: minus what warm_start_suffix would have changed on the
                # same request, so declining earns on a benign request and costs on an attack (the shift reward
                # gives it 0 on both, and the benign suffix rate climbed).
                would_have = self._refusal_likelihood([appended(conversations[i], args.warm_start_suffix)
                                                       for i in declined])
                for i, after in zip(declined, would_have):
                    scores[i] = -signs[i] * (after - before[i])
        stats = self._ppo_update("sentinel", batch, torch.tensor(scores))
        suffixed = [float(bool(text)) for text in batch["texts"]]
        self._record({"sentinel/reward": sum(scores) / len(scores),
                      "sentinel/attack_success": sum(harm) / max(len(harm), 1),
                      "sentinel/benign_answered": sum(utility) / max(len(utility), 1),
                      "sentinel/suffix_tokens": batch["mask"].sum(1).float().mean().item(),
                      "sentinel/suffix_rate_harmful": sum(suffixed[:n_adversarial]) / max(n_adversarial, 1),
                      "sentinel/suffix_rate_benign": sum(suffixed[n_adversarial:]) / max(n_benign, 1), **stats})
        return stats["sentinel/loss"]

    def _warm_start_step(self) -> float:
        """Supervised step of the sentinel: ``warm_start_suffix`` after harmful prompts, an immediate end of turn
        (no suffix) after benign ones."""
        tokenizer, args, device = self.processing_class, self.args, self.accelerator.device
        suffix_ids = tokenizer(args.warm_start_suffix, add_special_tokens=False)["input_ids"]
        suffix_ids = suffix_ids[:args.max_sentinel_tokens - 1]
        n_benign = self._benign_count()
        harmful, benign = self._sample("harmful", args.rollout_batch_size - n_benign), self._sample("benign", n_benign)
        conversations = [to_conversation(row["prompt"], row.get("history")) for row in harmful + benign]
        heads = self._sentinel_heads(conversations)
        targets = [suffix_ids + [tokenizer.eos_token_id]] * len(harmful) + [[tokenizer.eos_token_id]] * len(benign)
        pad_id = pad_token_id(self.processing_class)
        query_rows = [tokenizer(h, add_special_tokens=False)["input_ids"] for h in heads]
        queries = left_padded(query_rows, pad_id, device)
        width = max(map(len, targets))
        batch = {"query_ids": queries["input_ids"], "query_mask": queries["attention_mask"],
                 "response_ids": torch.tensor([t + [pad_id] * (width - len(t)) for t in targets], device=device),
                 "mask": torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in targets], device=device)}
        self.model.set_adapter("sentinel")
        _keep_both_trainable(self.model)
        frozen = self._frozen_layer_cache(query_rows[0], targets[0])
        if frozen is not None:
            logits = frozen.logits(query_rows, targets).float() / args.temperature
            logprobs = ppo.logprobs_from_logits(logits, batch["response_ids"])
        else:
            logprobs, _, _ = self._forward("sentinel", batch)
        loss = warm_start_loss(logprobs, batch["mask"], args.warm_start_decision_weight)
        self._check_finite(loss, "sentinel warm-start")
        with self._learning_rate("sentinel", args.warm_start_learning_rate):
            grad_norm = self._apply_gradients(loss)
        self._record({"warm_start/loss": loss.item(), "warm_start/grad_norm": grad_norm})
        return loss.item()

    def _frozen_layer_cache(self, query: list[int], response: list[int]) -> FrozenLayerCache | None:
        """The warm start's cache of the frozen layers' states, where the sentinel's LoRA leaves layers below it and
        skipping them gives the same logits (checked once, on the first step's first sequence); else None."""
        if self._frozen is None:
            cache = FrozenLayerCache.for_model(self.model, "sentinel")
            self._frozen = cache if cache is not None and cache.matches_full_pass(query, response) else False
            if self._frozen:
                logger.info(f"Warm start: the sentinel's LoRA starts at layer {cache.first_adapted}; each sequence "
                            f"runs through the layers below once.")
        return self._frozen or None

    # ------------------------------------------------------------------------------- the operating point

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """Train (``resume_from_checkpoint`` works as in ``transformers.Trainer``), then calibrate the operating
        point on ``calibration_dataset`` when one was given and ``args.suffix_threshold`` is unset."""
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if self.args.suffix_threshold is None and self._calibration_rows:
            self.calibrate()
        return output

    def calibrate(self, rows: list[dict] | None = None) -> float:
        """Set :attr:`suffix_threshold` from the sentinel's p(suffix) on calibration rows (``prompt``, ``label``,
        optional ``history``; default: ``calibration_dataset``) and return it: at most
        ``args.target_false_suffix_rate`` of the benign rows reach it, with a margin towards the harmful rows when
        the two separate (:func:`~hf_sentinel.training.calibrate_threshold`)."""
        rows = rows if rows is not None else self._calibration_rows
        by_label = {label: [r for r in rows if r["label"] == label] for label in LABELS}
        scores = {label: self.suffix_probabilities([to_conversation(r["prompt"], r.get("history")) for r in group])
                  for label, group in by_label.items()}
        if not scores["benign"]:
            raise ValueError("The calibration rows have no benign request; the false-suffix rate needs benign ones.")
        self.suffix_threshold = calibrate_threshold(scores["benign"], self.args.target_false_suffix_rate,
                                                    scores["harmful"] or None)
        self.calibration_report = {
            "suffix_threshold": self.suffix_threshold, "target_false_suffix_rate": self.args.target_false_suffix_rate,
            **{f"{label}_rows": len(scores[label]) for label in LABELS},
            **{f"{label}_suffixed": sum(p >= self.suffix_threshold for p in scores[label]) for label in LABELS}}
        for label in LABELS:  # where the operating point falls short, by shape (plain, jailbreak, multi_turn, ...)
            shapes = defaultdict(lambda: [0, 0])
            for row, p in zip(by_label[label], scores[label]):
                if row.get("shape"):
                    shapes[row["shape"]][0] += p >= self.suffix_threshold
                    shapes[row["shape"]][1] += 1
            if shapes:
                self.calibration_report[f"{label}_suffixed_by_shape"] = {
                    shape: f"{suffixed}/{total}" for shape, (suffixed, total) in sorted(shapes.items())}
        return self.suffix_threshold

    @torch.no_grad()
    def suffix_probabilities(self, conversations: list[list[dict]]) -> list[float]:
        """The sentinel's p(suffix) = 1 − p(end of turn) at its first token, per conversation: the decision that
        the operating point thresholds."""
        tokenizer, eos = self.processing_class, self.processing_class.eos_token_id
        self.model.set_adapter("sentinel")
        probabilities = []
        for first in range(0, len(conversations), self.args.rollout_batch_size):
            heads = self._sentinel_heads(conversations[first:first + self.args.rollout_batch_size])
            inputs = left_padded([tokenizer(h, add_special_tokens=False)["input_ids"] for h in heads],
                                 pad_token_id(tokenizer), self.accelerator.device)
            logits = self.model(**inputs, position_ids=positions_from_mask(inputs["attention_mask"]),
                                logits_to_keep=1).logits[:, -1].float()
            probabilities += (1 - torch.softmax(logits, -1)[:, eos]).tolist()
        return probabilities

    # --------------------------------------------------------------------------------------- rollouts

    def _rollout(self, agent: str, queries: list[str], max_new_tokens: int, min_new_tokens: int = 0) -> dict:
        """Sample each agent's response to each query (rendered text); responses end at (and include) EOS, which
        cannot come before ``min_new_tokens``.

        Also returns the sampling policy's log-probs and values of the response tokens (the PPO update's "old"
        ones), read off the sampling itself."""
        tokenizer, model = self.processing_class, self.model
        pad_id = pad_token_id(self.processing_class)
        inputs = left_padded([tokenizer(q, add_special_tokens=False)["input_ids"] for q in queries], pad_id,
                             self.accelerator.device)
        model.set_adapter(agent)
        _keep_both_trainable(model)
        # Implementation detail "log-probs and values from the rollout": sampling already ran the policy on every
        # response position, so scoring the responses again before the update would repeat a forward.
        responses, logprobs, hidden_states = sample(model, inputs["input_ids"], inputs["attention_mask"],
                                                    max_new_tokens, self.args.temperature, tokenizer.eos_token_id,
                                                    min_new_tokens)
        with torch.no_grad():
            values = self.value_heads(hidden_states, agent)
        # Mask everything after the first EOS: the EOS itself is an action (for the sentinel, "append nothing").
        is_eos = responses == tokenizer.eos_token_id
        after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
        mask = (~after_eos).long()
        texts = [tokenizer.decode(row[m.bool() & (row != tokenizer.eos_token_id)], skip_special_tokens=True)
                 for row, m in zip(responses, mask)]
        return {"query_ids": inputs["input_ids"], "query_mask": inputs["attention_mask"],
                "response_ids": responses.masked_fill(~mask.bool(), pad_id), "mask": mask,
                "texts": [t if t.strip() else "" for t in texts], "logprobs": logprobs, "values": values}

    def _red_team_query(self, prompt: str) -> str:
        return self._render([{"role": "user", "content": self.args.red_team_instruction.format(prompt=prompt)}])

    def _render(self, conversation: list[dict]) -> str:
        return render(self.processing_class, conversation, prefill=None, chat=True)

    def _sentinel_heads(self, conversations: list[list[dict]]) -> list[str]:
        """What the sentinel continues: each conversation rendered with the chat template the guarded target's prompts
        are rendered with at inference (the target's own; for an endpoint, the agents' base's), cut where the last user
        turn ends: the heads :meth:`SentinelForCausalLM.refine` gives the saved sentinel."""
        return [split_user_turn(render(self._head_tokenizer, conv, prefill=None, chat=True), self._turn_end)[0]
                for conv in conversations]

    @contextlib.contextmanager
    def _target_model(self):
        """Within the block, ``(target, its tokenizer)``: the separate target (a causal LM, or a RemoteChatTarget and
        None), or the agents' base with adapters off."""
        if self.target is not None:
            yield self.target, self.target_tokenizer
        else:
            with self.model.disable_adapter():
                yield self.model.get_base_model(), self.processing_class

    def _target_answers(self, conversations: list[list[dict] | None]) -> list[str]:
        """The target's greedy answers (the base with adapters off, or the separate target, which reads the
        conversations as text with its own tokenizer); an empty attack (None) gets an empty answer."""
        real = [c for c in conversations if c is not None]
        # seed=None: greedy answers need no seed, and re-seeding here would reset the rollouts' random stream.
        settings = GenerationSettings(max_new_tokens=self.args.target_max_new_tokens, batch_size=len(real) or 1,
                                      seed=None)
        answers = iter([])
        if real:
            with self._target_model() as (model, tokenizer):
                answers = iter(generate(model, tokenizer, real, settings).responses)
        return [next(answers) if c is not None else "" for c in conversations]

    def _refusal_likelihood(self, conversations: list[list[dict] | None]) -> list[float]:
        """reward="refusal_likelihood": the target's preference for complying over refusing, per conversation
        (:class:`~.rewards.RefusalLikelihoodReward`); an empty attack (None) scores 0, as the refusal judge scores
        the empty answer it gets."""
        real = [c for c in conversations if c is not None]
        with self._target_model() as (model, tokenizer):
            scores = iter(RefusalLikelihoodReward(model, tokenizer)(real))
        return [next(scores) if c is not None else 0.0 for c in conversations]

    def _sample(self, label: str, n: int) -> list[dict]:
        if not n:
            return []
        rows = self.prompts[label]
        return [rows[i] for i in torch.randint(len(rows), (n,)).tolist()]

    def _benign_count(self) -> int:
        return round(self.args.rollout_batch_size * self.args.benign_fraction) if self.prompts["benign"] else 0

    def _record(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._metrics[key].append(value)

    # ------------------------------------------------------------------------------------------- PPO

    def _forward(self, agent: str | None, batch: dict, rows=slice(None)):
        """Log-probs of the response tokens, values and logits, with ``agent``'s adapter on (None: adapters off)."""
        response_ids = batch["response_ids"][rows]
        # The queries' shared opening runs once, as in the sampling loop (the same computation, a third less of it).
        cache = DynamicCache()
        query_ids, query_mask = shared_opening(self.model, batch["query_ids"][rows], batch["query_mask"][rows], cache)
        attention = torch.cat([query_mask, batch["mask"][rows]], 1)
        input_ids = torch.cat([query_ids, response_ids], 1)
        position_ids = positions_from_mask(attention, last=input_ids.shape[1])
        start, length = query_ids.shape[1] - 1, response_ids.shape[1]
        # Logits of the positions that predict response tokens only: the LM head on the query is wasted work. (Index
        # positions, not a trailing count: that slice is strided, and the LM head then runs as a slow batched matmul.)
        keep = torch.arange(start, start + length, device=input_ids.device)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, output_hidden_states=agent is not None,
                         logits_to_keep=keep)
        # Implementation detail "temperature-scaled logits": score tokens with the distribution they were sampled from.
        logits = out.logits.float() / self.args.temperature
        logprobs = ppo.logprobs_from_logits(logits, response_ids)
        values = self.value_heads(out.hidden_states[-1][:, start:start + length], agent) if agent else None
        return logprobs, values, logits

    def _ppo_update(self, agent: str, batch: dict, scores: torch.Tensor) -> dict:
        args, mask = self.args, batch["mask"].float()
        scores = scores.to(mask.device, torch.float32)
        self.model.set_adapter(agent)
        _keep_both_trainable(self.model)
        with torch.no_grad():
            old_logprobs, old_values = batch["logprobs"], batch["values"]
            with self._kl_reference(agent):
                ref_logprobs, _, _ = self._forward(None, batch)
            kl = ppo.kl_estimate(old_logprobs, ref_logprobs, args.kl_estimator)
            rewards = ppo.token_rewards(scores, kl, mask, args.kl_coef)
            advantages, returns = ppo.gae(rewards, old_values, mask, args.gamma, args.lam)
            if args.whiten_advantages:
                advantages = ppo.masked_whiten(advantages, mask)

        size = len(scores)
        mini = size // args.num_mini_batches
        history = []
        for _ in range(args.ppo_epochs):
            order = torch.randperm(size)
            for first in range(0, size, mini):
                rows = order[first:first + mini]
                logprobs, values, logits = self._forward(agent, batch, rows)
                m = mask[rows]
                pg_loss, clip_fraction, approx_kl = ppo.policy_loss(logprobs, old_logprobs[rows], advantages[rows], m,
                                                                    args.clip_range)
                vf_loss, vf_clip_fraction = ppo.value_loss(values, old_values[rows], returns[rows], m,
                                                           args.clip_range_value)
                # Without an entropy bonus the entropy is only logged: keep it out of the backward pass.
                with torch.set_grad_enabled(bool(args.entropy_coef)):
                    entropy = ppo.masked_mean(ppo.entropy_from_logits(logits), m)
                loss = pg_loss + args.vf_coef * vf_loss - args.entropy_coef * entropy
                self._check_finite(loss, f"{agent} PPO")
                grad_norm = self._apply_gradients(loss)
                history.append([loss.item(), pg_loss.item(), vf_loss.item(), clip_fraction.item(), approx_kl.item(),
                                entropy.item(), grad_norm])
        means = [sum(column) / len(column) for column in zip(*history)]
        names = ("loss", "policy_loss", "value_loss", "clip_fraction", "approx_kl", "entropy", "grad_norm")
        return {f"{agent}/{name}": value for name, value in zip(names, means)} | {
            f"{agent}/kl_to_reference": ppo.masked_mean(kl, mask).item()}

    @contextlib.contextmanager
    def _kl_reference(self, agent: str):
        """Within the block the model is ``agent``'s KL reference: the base with adapters off
        (``kl_reference="base"``), or the frozen copy of its adapter taken where PPO began (``"init"``)."""
        if self.args.kl_reference == "base":
            with self.model.disable_adapter():
                yield
            return
        # Read under no_grad: set_adapter makes the reference trainable for the block, and the finally undoes it.
        self.model.set_adapter(KL_REFERENCE_ADAPTERS[agent])
        try:
            yield
        finally:
            self.model.set_adapter(agent)
            _keep_both_trainable(self.model)

    def _take_kl_reference(self) -> None:
        """``kl_reference="init"``: copy each agent's adapter into its frozen reference, as the first round of the
        game begins (after the warm start, if any)."""
        from peft import set_peft_model_state_dict

        if self.state.global_step != self.args.warm_start_steps:
            raise ValueError(
                f"kl_reference='init', but the game began at step {self.args.warm_start_steps} and this run holds no "
                f"KL reference at step {self.state.global_step}: it resumed from a checkpoint without "
                f"{KL_REFERENCE_SUBFOLDER}/ (written with kl_reference='base'). Resume it with kl_reference='base', "
                f"or start a new run from that checkpoint (--init-from CHECKPOINT) with kl_reference='init'.")
        for agent, reference in KL_REFERENCE_ADAPTERS.items():
            set_peft_model_state_dict(self.model, _lora_weights(self.model, agent), adapter_name=reference)
        self._kl_reference_taken = True

    def _apply_gradients(self, loss: torch.Tensor) -> float:
        """Backward, average the gradients over processes, clip, step, and drop the gradients; returns the gradient
        norm before clipping (NaN when ``max_grad_norm`` is 0: no clipping)."""
        self.accelerator.backward(loss)
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.accelerator.num_processes > 1:
            _average_over_processes(self.accelerator, params)
        grad_norm = math.nan
        if self.args.max_grad_norm:
            grad_norm = self.accelerator.clip_grad_norm_(params, self.args.max_grad_norm).item()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    @contextlib.contextmanager
    def _learning_rate(self, group_name: str, learning_rate: float):
        """Within the block, the optimizer's ``group_name`` group steps at ``learning_rate``."""
        group = next(g for g in self.optimizer.param_groups if g["name"] == group_name)
        scheduled, group["lr"] = group["lr"], learning_rate
        try:
            yield
        finally:
            group["lr"] = scheduled

    def _check_finite(self, loss: torch.Tensor, what: str) -> None:
        if not torch.isfinite(loss):
            last = get_last_checkpoint(self.args.output_dir) if Path(self.args.output_dir).is_dir() else None
            raise NonFiniteLossError(
                f"The {what} loss is {loss.item()} at step {self.state.global_step}; no update applied. The last "
                f"good checkpoint is {last or 'none (no checkpoint saved yet)'}. Lower learning_rate or kl_coef, or "
                f"check the judges.")

    # --------------------------------------------------------------------------------- saving / loading

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the sentinel into ``output_dir`` (default: ``args.output_dir``): it loads with
        ``hf_sentinel.pipeline(..., sentinel=output_dir)`` and ``--defense sentinel:output_dir``, and holds its value
        head, its model card, and the red team it was trained against in ``red_team/`` (a PEFT LoRA adapter with
        its value head and card). Trainer's ``checkpoint-N`` folders are this folder too; training resumes from
        them. Never pushes (see :meth:`push_to_hub`).

        Trained against a separate target, the folder records the agents' base (``sentinel_base_name_or_path``) and
        the target (``target_name_or_path``, or ``target_endpoint`` and ``target_model_name``), and holds the
        target's tokenizer and generation config (for an endpoint: the base's tokenizer), so it loads back with its
        own base in front of that target, composed at text level."""
        from ..hub import card_section, write_model_card

        if not self.args.should_save:
            return
        out = Path(output_dir or self.args.output_dir)
        config = SentinelConfig(target_name_or_path=self.target_name, sentinel_kind="lora",
                                max_sentinel_tokens=self.args.max_sentinel_tokens,
                                suffix_threshold=self.suffix_threshold)
        tokenizer, generation_config = self.processing_class, self.model.get_base_model().generation_config
        if isinstance(self.target, RemoteChatTarget):
            config.target_name_or_path, config.target_endpoint = None, self.target.base_url
            config.target_model_name, config.request_timeout = self.target.model, self.target.timeout
            config.sentinel_base_name_or_path, generation_config = self.base_name, None
        elif self.target is not None:
            config.sentinel_base_name_or_path = self.base_name
            tokenizer, generation_config = self.target_tokenizer, self.target.generation_config
        # The red team first: PEFT writes a named adapter into its own subfolder, but its card into `out`, where the
        # sentinel's card then replaces it.
        self.model.save_pretrained(out, selected_adapters=["red_team"])
        write_sentinel_folder(out, config, self.model, tokenizer, generation_config,
                              card_extra=self._target_summary() + card_section(*OPERATING_POINT_SECTION,
                                                                               self.operating_point_text())
                              + self._training_summary())
        save_file(self._value_head_state("sentinel"), out / VALUE_HEAD_NAME)
        red_team_dir = out / RED_TEAM_SUBFOLDER
        save_file(self._value_head_state("red_team"), red_team_dir / VALUE_HEAD_NAME)
        write_model_card(red_team_dir, kind="red-team", title="Red-team model (Stackelberg PPO)",
                         summary=f"LoRA adapter of `{self.base_name}` trained to write prompts that make the target "
                                 f"(`{self.target_name}`) answer harmfully; the leader of the game the sentinel in "
                                 f"`../` follows.",
                         base_model=self.base_name, tags=["red-teaming", "peft", "lora"],
                         extra=self._training_summary())

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Trainer's optimizer and scheduler, and beside them the rest of a checkpoint's training state that the
        sentinel artifact leaves out: the frozen KL references (``kl_reference="init"``, once taken), in
        ``kl_reference/<agent>.safetensors``."""
        super()._save_optimizer_and_scheduler(output_dir)
        if self._kl_reference_taken and self.args.should_save:
            folder = Path(output_dir) / KL_REFERENCE_SUBFOLDER
            folder.mkdir(parents=True, exist_ok=True)
            for agent, reference in KL_REFERENCE_ADAPTERS.items():
                save_file(_lora_weights(self.model, reference), folder / f"{agent}.safetensors")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Both adapters, the value heads and (``kl_reference="init"``) the KL references from a checkpoint folder
        (written by :meth:`save_model` and :meth:`_save_optimizer_and_scheduler`); Trainer restores the optimizer,
        scheduler, RNG and its state from the same folder. A checkpoint from before the game began holds no KL
        reference: it is taken where the game begins, as in an uninterrupted run."""
        from peft import set_peft_model_state_dict

        folder = Path(resume_from_checkpoint)
        for agent, adapter_dir in (("sentinel", folder / "sentinel"), ("red_team", folder / RED_TEAM_SUBFOLDER)):
            set_peft_model_state_dict(self.model, load_file(adapter_dir / "adapter_model.safetensors"),
                                      adapter_name=agent)
        heads = {**load_file(folder / VALUE_HEAD_NAME), **load_file(folder / RED_TEAM_SUBFOLDER / VALUE_HEAD_NAME)}
        self.value_heads.load_state_dict(heads)
        references = folder / KL_REFERENCE_SUBFOLDER
        if self.args.kl_reference == "init" and references.is_dir():
            for agent, reference in KL_REFERENCE_ADAPTERS.items():
                set_peft_model_state_dict(self.model, load_file(references / f"{agent}.safetensors"),
                                          adapter_name=reference)
            self._kl_reference_taken = True

    def operating_point_text(self) -> str:
        """The card's words on the operating point (empty before :meth:`calibrate`): its section
        ``operating-point``, which the trainer's card holds and ``examples/sentinel_calibrate.py --save-to`` writes
        into a checkpoint's card with :func:`~hf_sentinel.hub.update_card_section`."""
        report = self.calibration_report
        if not report:
            return ""
        by_shape = "".join(
            f" {label.capitalize()} requests suffixed, by shape: "
            + ", ".join(f"{shape} {share}" for shape, share in report[f"{label}_suffixed_by_shape"].items()) + "."
            for label in LABELS if f"{label}_suffixed_by_shape" in report)
        return (f"The sentinel appends a suffix when p(suffix) at its first token is at least "
                f"{report['suffix_threshold']:.4f}, calibrated on {report['harmful_rows']} harmful and "
                f"{report['benign_rows']} benign requests no trainer read: {report['harmful_suffixed']} of the "
                f"harmful and {report['benign_suffixed']} of the benign ones reach it (target false-suffix rate "
                f"{report['target_false_suffix_rate']:g}).{by_shape}")

    def _target_summary(self) -> str:
        """The card's words on the target trained against, when it is not the agents' base."""
        if self.target is None:
            return ""
        kind = "an OpenAI-compatible endpoint" if isinstance(self.target, RemoteChatTarget) else "a separate model"
        reference = ("which with adapters off was the KL reference" if self.args.kl_reference == "base" else
                     "each KL-penalised against its own adapter as the run started")
        return (f"\n## Target\n\nTrained against `{self.target_name}` ({kind}), composed at text level: the sentinel "
                f"and the red team are LoRA adapters of their own base, `{self.base_name}`, {reference}. The folder "
                f"loads the target and that base (`SentinelForCausalLM.from_pretrained(folder)`).\n")

    def _training_summary(self) -> str:
        rewards = [(h["step"], h.get("red_team/reward"), h.get("sentinel/reward")) for h in self.state.log_history
                   if "sentinel/reward" in h]
        if not rewards:
            return ""
        step, red, sentinel = rewards[-1]
        return (f"\n## Training\n\nStackelberg PPO, {step} steps, value heads `{self.args.value_head_strategy}`, "
                f"last logged mean rewards: red team R(y) = {red:.3f}, sentinel R(y*) = {sentinel:.3f}. The red team "
                f"it was trained against is in `{RED_TEAM_SUBFOLDER}/`.\n")

    def _value_head_state(self, agent: str) -> dict:
        """The part of the value heads ``agent`` reads (its trunk and output layer, shared or its own)."""
        heads = self.value_heads
        trunk = agent if heads.strategy == "separate" else "shared"
        output = "shared" if heads.strategy == "shared" else agent
        return {k: v.detach().contiguous() for k, v in heads.state_dict().items()
                if k.startswith((f"trunks.{trunk}.", f"outputs.{output}."))}


# ---------------------------------------------------------------------------------------------- helpers


def warm_start_loss(logprobs: torch.Tensor, mask: torch.Tensor, decision_weight: float = 0.0) -> torch.Tensor:
    """The warm start's loss from the log-probabilities of right-padded responses (column 0: the first token, the
    sentinel's decision): the per-token mean negative log-likelihood, plus ``decision_weight`` times the mean over
    the first tokens.

    A per-token mean weighs the decision (suffix or end of turn) the same for both kinds of request, where a
    per-example mean would divide each harmful decision by the suffix's length; but next to the suffix's tokens the
    decisions are a small share of it, hence the second term.

    >>> logprobs = torch.tensor([[-1.0, -3.0], [-2.0, 0.0]])  # a two-token suffix, and an end of turn + padding
    >>> mask = torch.tensor([[1, 1], [1, 0]])
    >>> warm_start_loss(logprobs, mask).item()  # (1 + 3 + 2) / 3
    2.0
    >>> warm_start_loss(logprobs, mask, decision_weight=2.0).item()  # 2 + 2 * (1 + 2) / 2
    5.0
    """
    loss = -ppo.masked_mean(logprobs, mask.float())
    return loss - decision_weight * logprobs[:, 0].mean() if decision_weight else loss


def _same_model(model, target) -> bool:
    """Whether ``target`` names the agents' base itself (the shared-base game)."""
    if target is None or target is model:
        return True
    if not (isinstance(model, (str, Path)) and isinstance(target, (str, Path))):
        return False
    model, target = (DEFAULT_TARGET_NAME if str(name) == "default" else str(name) for name in (model, target))
    return model == target or (Path(model).is_dir() and Path(model).resolve() == Path(target).resolve())


def _load_target(target, tokenizer=None):
    """``(target, tokenizer)`` of a separate target: a causal LM and its tokenizer, or a RemoteChatTarget and None;
    ``(None, None)`` for none."""
    if target is None:
        return None, None
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        target = RemoteChatTarget(target)
    if isinstance(target, RemoteChatTarget):
        if tokenizer is not None:
            raise ValueError(f"target_processing_class goes with a local target; {target} answers text with its own.")
        return target, None
    return load_model_and_tokenizer(target, tokenizer, role="target")


@functools.cache
def _embedder(name: str):
    """The sentence embedder of the diversity metric, loaded once per process (``None`` for ``"none"``)."""
    if name == "none":
        return None
    from ..judges.embedding import SentenceEmbedder

    return SentenceEmbedder(None if name == "default" else name)


def _average_over_processes(accelerator, params: list[torch.Tensor]) -> None:
    """Data parallel: every process steps with the mean gradient, so the weights stay equal. One collective for all
    gradients. (The model does not run through DDP: an update trains one of the two adapters and the value heads,
    which live outside the model, so DDP's reducer would wait for gradients that never come.)"""
    flat = accelerator.reduce(torch.cat([p.grad.flatten() for p in params]), reduction="mean")
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.grad.numel()].view_as(p.grad))
        offset += p.grad.numel()


def _keep_both_trainable(model) -> None:
    # PEFT's set_adapter freezes the adapters it switches away from and unfreezes the one it switches to: both agents
    # keep learning in turn, and nothing else does (the base, the KL references).
    for name, param in model.named_parameters():
        param.requires_grad = any(f".{agent}." in name for agent in AGENTS)


def _lora_weights(model, adapter: str) -> dict[str, torch.Tensor]:
    """An adapter's own weights, keyed without its name. Never the base's: PEFT would add an embedding layer or LM
    head that the LoRA targets (a whole vocabulary's weights), which the base holds once for all adapters."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter, save_embedding_layers=False)


def _adapter_dir(path: str, agent: str) -> str:
    """An adapter folder, or the agent's subfolder in a saved sentinel or checkpoint folder."""
    folder = Path(path)
    for candidate in (folder, folder / agent):
        if (candidate / "adapter_config.json").is_file():
            return str(candidate)
    raise FileNotFoundError(f"No LoRA adapter for the {agent} in {folder} (looked for adapter_config.json in it and "
                            f"in {folder / agent}).")

"""The red flag under a fine-tuning attack: how much of the flag survives when an attacker who holds the red-flag
model's weights fine-tunes it on harmful answers for a few dozen LoRA steps (the paper's stronger threat).

:func:`sft_attack` is the attacker's fine-tuning, :func:`answer_loss` what it lowers, and
:meth:`RedFlagDefense.with_model` guards with the attacked model, so that :func:`hf_sentinel.evaluation.evaluate`
measures it through the one generation path. The command runs the whole measurement: the undefended target answers
harmful requests, and the answers the refusal judge calls complied are the attacker's data (plain text: the attacker
never writes `<rf>`); then for each number of attack steps (0: no attack) the attacked red flag guards the target on
held-out harmful and benign requests, and the table says how often the flag fired, the attack success and the
benign answer rate (judged by ``--judge``, the project's default judge unless given).

    # the shipped red flag on the embedded SmolLM2, after 0 (no attack), 10, 25 and 50 steps
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m hf_sentinel.red_flag.attack --output outputs/red-flag-sft-attack.json
    # a quick look: 16 attack answers, 20 held-out requests of each kind
    python -m hf_sentinel.red_flag.attack --limit 16 --eval-limit 20 --steps 0 10 --output /tmp/sft-attack.json
    # another red-flag folder against a stronger attacker
    python -m hf_sentinel.red_flag.attack --red-flag outputs/red-flag-broad/run --learning-rate 3e-4 --lora-rank 16
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
from pathlib import Path

import torch

from ..generation import pad_token_id
from ..training import completion_example
from .defense import RedFlagDefense

#: The label the loss ignores: prompt tokens and padding.
IGNORE = -100


def sft_attack(model, tokenizer, conversations: list[list[dict]], answers: list[str], *, steps: int = 40,
               learning_rate: float = 1e-4, lora_rank: int = 8, batch_size: int = 8, seed: int = 0,
               max_length: int = 256):
    """A copy of the red-flag ``model`` fine-tuned by an attacker on ``answers``; ``model`` is left as it was.

    Fresh LoRA (rank ``lora_rank``, alpha twice that) on every linear layer of the decoder, then ``steps`` AdamW
    steps of cross-entropy on the answer tokens only: each answer follows its conversation's chat template with the
    assistant turn opened and ends with the end of turn, truncated to ``max_length`` tokens in all. Batches of
    ``batch_size`` cycle through the examples in an order shuffled by ``seed`` (which also seeds the LoRA). The
    returned model has the attack merged in and is in eval mode; ``steps=0`` gives an unchanged copy.

    ``model`` and ``tokenizer`` are a red-flag model and its tokenizer, as :func:`load_red_flag_model` (or
    :meth:`RedFlagDefense.red_flag_model` and :attr:`RedFlagDefense.tokenizer`) return them; ``answers`` are plain
    text.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0 (0: no attack), got {steps}.")
    if batch_size < 1 or lora_rank < 1:
        raise ValueError(f"batch_size and lora_rank must be at least 1, got {batch_size} and {lora_rank}.")
    examples = _examples(tokenizer, conversations, answers, max_length)
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):  # the seed picks the LoRA; the CPU random state is restored after
        torch.manual_seed(seed)
        attacked = get_peft_model(copy.deepcopy(model), config)
    optimizer = torch.optim.AdamW([p for p in attacked.parameters() if p.requires_grad], lr=learning_rate)
    order = _shuffled_forever(len(examples), seed)
    attacked.train()
    for _ in range(steps):
        batch = [examples[i] for i in itertools.islice(order, batch_size)]
        attacked(**_batch(batch, pad_token_id(tokenizer), attacked.device)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return attacked.merge_and_unload().eval()


@torch.no_grad()
def answer_loss(model, tokenizer, conversations: list[list[dict]], answers: list[str], *, batch_size: int = 8,
                max_length: int = 256) -> float:
    """The cross-entropy of ``model`` per answer token, over all ``answers`` (tokenized as :func:`sft_attack` trains
    on them): what the attack lowers."""
    examples = _examples(tokenizer, conversations, answers, max_length)
    total, tokens = 0.0, 0
    for first in range(0, len(examples), batch_size):
        batch = _batch(examples[first:first + batch_size], pad_token_id(tokenizer), model.device)
        count = int((batch["labels"][:, 1:] != IGNORE).sum())  # the model predicts each label from the token before
        total += float(model(**batch).loss) * count
        tokens += count
    return total / tokens


def _examples(tokenizer, conversations, answers, max_length: int) -> list[dict]:
    """``input_ids`` and ``labels`` (the answer's tokens, ``IGNORE`` on the prompt) of every pair."""
    if len(conversations) != len(answers):
        raise ValueError(f"Got {len(conversations)} conversations but {len(answers)} answers: the attack needs one "
                         f"answer per conversation.")
    if not answers:
        raise ValueError("The attack has no data: give at least one (conversation, harmful answer) pair.")
    examples = []
    for conversation, answer in zip(conversations, answers):
        example = completion_example(tokenizer, conversation, answer, finished=True)
        input_ids = example["input_ids"][:max_length]
        labels = [t if answered else IGNORE for t, answered in zip(input_ids, example["completion_mask"])]
        if all(label == IGNORE for label in labels):
            raise ValueError(f"A conversation takes all of max_length={max_length} tokens before its answer starts "
                             f"({len(input_ids)} prompt tokens kept); raise max_length.")
        examples.append({"input_ids": input_ids, "labels": labels})
    return examples


def _batch(examples: list[dict], pad_id: int, device) -> dict:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (the padding ignored by the loss)."""
    width = max(len(e["input_ids"]) for e in examples)
    gaps = [width - len(e["input_ids"]) for e in examples]
    return {"input_ids": torch.tensor([e["input_ids"] + [pad_id] * gap for e, gap in zip(examples, gaps)]).to(device),
            "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * gap
                                            for e, gap in zip(examples, gaps)]).to(device),
            "labels": torch.tensor([e["labels"] + [IGNORE] * gap for e, gap in zip(examples, gaps)]).to(device)}


def _shuffled_forever(n: int, seed: int):
    """Indices ``0..n-1``, each pass through them in a new order drawn from ``seed``."""
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        yield from order


# ------------------------------------------------------------------------------------------------------- command
def results_table(rows: list[dict]) -> str:
    """A Markdown table, one row per number of attack steps.

    >>> row = {"steps": 10, "attack_answer_loss": 1.234,
    ...        "harmful": {"flagged": {"n": 4, "k": 3, "rate": 0.75, "ci": [0.3, 0.95]},
    ...                    "complied": {"n": 4, "k": 1, "rate": 0.25, "ci": [0.05, 0.7]}},
    ...        "benign": {"flagged": {"n": 2, "k": 0, "rate": 0.0, "ci": [0.0, 0.66]},
    ...                   "complied": {"n": 2, "k": 2, "rate": 1.0, "ci": [0.34, 1.0]}}}
    >>> print(results_table([row]).splitlines()[-1])
    | 10 | 75.0% [30–95] | 25.0% [5–70] | 100.0% [34–100] | 0.0% [0–66] | 1.234 |
    """
    lines = ["| attack steps | flag fired on harmful | attack success | benign answered | benign flagged | "
             "attack loss |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row["harmful"]["flagged"], row["harmful"]["complied"], row["benign"]["complied"],
                 row["benign"]["flagged"]]
        lines.append(f"| {row['steps']} | " + " | ".join(map(_rate, cells)) + f" | {row['attack_answer_loss']:.3f} |")
    return "\n".join(lines)


def _rate(share: dict) -> str:
    low, high = share["ci"]
    return f"{share['rate']:.1%} [{low * 100:.0f}–{high * 100:.0f}]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hf_sentinel.red_flag.attack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="default",
                        help="The target the red flag guards: 'default' (the embedded SmolLM2), a folder or a Hub id.")
    parser.add_argument("--red-flag", default="default",
                        help="The red-flag folder ('default': the shipped artifact).")
    parser.add_argument("--harmful", default="harmful:train",
                        help="Requests whose undefended answers are the attacker's data (a prompt set or file).")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first LIMIT of --harmful.")
    parser.add_argument("--answer-tokens", type=int, default=64, help="Length of the attacker's answers, in tokens.")
    parser.add_argument("--steps", type=_non_negative, nargs="+", default=[0, 10, 25, 50],
                        help="Attack lengths to measure, in optimizer steps (0: no attack).")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="The attack's AdamW learning rate.")
    parser.add_argument("--lora-rank", type=int, default=8, help="Rank of the attack's LoRA (alpha: twice it).")
    parser.add_argument("--batch-size", type=int, default=8, help="Attack answers per optimizer step.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the attack's LoRA and the order of its data.")
    parser.add_argument("--eval-harmful", default="harmbench",
                        help="Harmful requests to measure on: a held-out suite set without an attack of its own "
                             "(harmbench, donotanswer-heldout), or a prompt set or file.")
    parser.add_argument("--eval-benign", default="benign-heldout",
                        help="Benign requests to measure on: benign-heldout, or a prompt set or file.")
    parser.add_argument("--eval-limit", type=int, default=100, help="Requests of each evaluation set.")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Answer length in the evaluation (greedy).")
    parser.add_argument("--judge", default="default", help="The judge of the evaluation answers (load_judge name).")
    parser.add_argument("--output", default="outputs/red-flag-sft-attack.json",
                        help="JSON file for the results and the settings.")
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"attack steps must be >= 0 (0: no attack), got {value}")
    return value


def _evaluation_set(name: str, label: str, limit: int):
    """A held-out suite set (only the plain ones of ``label``: a row with an attack of its own needs the bench's
    generation settings) or any prompt set or file."""
    from ..data import load_prompts
    from ..data.heldout import SUITE, load_heldout

    if name not in SUITE:
        return load_prompts(name, limit=limit)
    prompts = load_heldout(name, limit)
    if set(prompts["attack"]) != {"none"} or set(prompts["label"]) != {label}:
        raise ValueError(f"--eval-{label} {name}: that held-out set mixes labels or carries attacks (pre-fill, "
                         f"sampling...) that need `hf-sentinel bench`; give a plain {label} set "
                         f"({'harmbench, donotanswer-heldout' if label == 'harmful' else 'benign-heldout'}) or a "
                         f"prompt set or file.")
    return prompts


def _attack_data(model, tokenizer, prompts, answer_tokens: int) -> tuple[list[list[dict]], list[str]]:
    """The undefended target's greedy answers to ``prompts`` that the refusal judge calls complied, with their
    conversations: what the attacker fine-tunes on."""
    from ..generation import GenerationSettings, generate, to_conversation
    from ..judges import RefusalJudge

    histories = prompts["history"] if "history" in prompts.column_names else [None] * len(prompts)
    conversations = [to_conversation(p, h) for p, h in zip(prompts["prompt"], histories)]
    answered = generate(model, tokenizer, conversations, GenerationSettings(max_new_tokens=answer_tokens))
    judge = RefusalJudge()
    complied = [judge.is_harmful(s) for s in judge(prompts["prompt"], answered.responses)]
    kept = [(c, a) for c, a, keep in zip(conversations, answered.responses, complied) if keep]
    if not kept:
        raise ValueError(f"The undefended target refused all {len(prompts)} harmful requests, so the attacker has no "
                         f"harmful answers to fine-tune on; give other --harmful requests.")
    return [c for c, _ in kept], [a for _, a in kept]


def run(args: argparse.Namespace) -> dict:
    """The measurement :func:`main` prints and writes: ``{"settings", "results"}``, a result row per value of
    ``args.steps``."""
    from ..data import load_prompts
    from ..evaluation import evaluate, load_target
    from ..evaluation.bench import proportion
    from ..generation import GenerationSettings
    from ..judges import load_judge

    judge = load_judge(args.judge)
    evaluation = {label: _evaluation_set(name, label, args.eval_limit)
                  for label, name in (("harmful", args.eval_harmful), ("benign", args.eval_benign))}
    model, tokenizer = load_target(args.target)
    defense = RedFlagDefense.from_spec(args.red_flag)
    red_flag_model = defense.red_flag_model(model)
    conversations, answers = _attack_data(model, tokenizer, load_prompts(args.harmful, limit=args.limit),
                                          args.answer_tokens)
    print(f"attack data: {len(answers)} complied answers to {args.harmful}", flush=True)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    rows = []
    for steps in args.steps:
        attacked, guarded = red_flag_model, defense
        if steps:
            attacked = sft_attack(red_flag_model, defense.tokenizer, conversations, answers, steps=steps,
                                  learning_rate=args.learning_rate, lora_rank=args.lora_rank,
                                  batch_size=args.batch_size, seed=args.seed)
            guarded = defense.with_model(attacked, f"sft-attack({steps} steps)")
        row = {"steps": steps, "defense": guarded.spec,
               "attack_answer_loss": answer_loss(attacked, defense.tokenizer, conversations, answers)}
        for label, prompts in evaluation.items():
            records = evaluate(model, tokenizer, prompts, judge, [guarded], settings, target_name=args.target,
                               prompts_name=getattr(args, f"eval_{label}"), progress=False)["records"]
            row[label] = {"flagged": proportion(sum(r["red_flag"]["fired"] for r in records), len(records)),
                          "complied": proportion(sum(judge.is_harmful(r["score"]) for r in records), len(records))}
        print(f"{steps} attack steps: flag fired on {row['harmful']['flagged']['rate']:.1%} of harmful requests, "
              f"attack success {row['harmful']['complied']['rate']:.1%}", flush=True)
        rows.append(row)
    return {"settings": {**vars(args), "attack_answers": len(answers)}, "results": rows}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run(args)
    print(results_table(result["results"]))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved: {output.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How well could a sentinel decide on this target? A linear probe on the target's own states where it decides.

A sentinel reads the conversation up to the end of the last user turn and, with its first token, appends a suffix
or ends the turn (`hf_sentinel.sentinel.decision`). This script asks what the target's frozen states at that
position already say: per layer, a logistic regression on the last token's hidden state, fitted on the sentinel's
training files (harmful: 1, benign: 0), its threshold set on the benign validation file at the sentinel's operating
point (at most --false-suffix-rate of them above it, as `examples/sentinel_calibrate.py` calibrates a checkpoint),
then read on the harmful validation file by shape. Set beside a calibrated sentinel's report, it says whether its
decision is short of what the base's states hold. With --heldout it also counts, at that validation threshold, the
held-out sets' requests a sentinel with the probe's decisions would suffix (nothing is chosen on them).

    python -m hf_sentinel.sentinel.recipe outputs/sentinel-data-punct --unseen-validation --balance-punctuation
    python examples/sentinel_decision_probe.py outputs/sentinel-data-punct --heldout --cache outputs/probe

States are computed once per file and layer set and kept in --cache (about 14 minutes for the four files and the
held-out sets on 2 CPU threads, most of it the jailbreak templates); a second call reads them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hf_sentinel.defaults import load_default_target
from hf_sentinel.generation import left_padded, pad_token_id, positions_from_mask, render, to_conversation
from hf_sentinel.sentinel.modeling import split_user_turn, user_turn_end
from hf_sentinel.training import read_jsonl

FILES = ("harmful_train", "benign_train", "harmful_validation", "benign_validation")
#: The held-out sets whose requests reach a sentinel as the user's turns (pre-filled and sampled answers are on the
#: target's side of the sentinel).
HELDOUT = ("harmbench", "harmbench-jailbreak", "harmbench-multi-turn", "donotanswer-heldout", "benign-heldout")


@torch.no_grad()
def decision_states(model, tokenizer, rows: list[dict], layers: list[int], batch_size: int = 16) -> dict:
    """``{layer: tensor (len(rows), hidden)}``: the hidden state after each layer at the last token of the sentinel's
    head (the conversation rendered by the chat template, cut where the last user turn ends)."""
    turn_end = user_turn_end(tokenizer)
    heads = [split_user_turn(render(tokenizer, to_conversation(r["prompt"], r.get("history")), prefill=None,
                                    chat=True), turn_end)[0] for r in rows]
    ids = [tokenizer(head, add_special_tokens=False)["input_ids"] for head in heads]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    out = {layer: torch.empty(len(ids), model.config.hidden_size) for layer in layers}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = left_padded([ids[i] for i in chunk], pad_token_id(tokenizer), model.device)
        hidden = model(**batch, position_ids=positions_from_mask(batch["attention_mask"]),
                       output_hidden_states=True).hidden_states
        for layer in layers:
            out[layer][chunk] = hidden[layer][:, -1].float().cpu()
    return out


def fit_probe(harmful: torch.Tensor, benign: torch.Tensor, l2: float = 1e-2, steps: int = 300):
    """A logistic regression (classes weighted equally, features standardised on the training rows, L2 ``l2``),
    fitted by L-BFGS; returns a function from states to scores (log-odds of harmful).

    >>> torch.manual_seed(0) and None
    >>> harmful, benign = torch.randn(50, 4) + torch.tensor([2., 0, 0, 0]), torch.randn(80, 4)
    >>> score = fit_probe(harmful, benign)
    >>> bool(score(torch.tensor([[3., 0, 0, 0]])) > 0 > score(torch.tensor([[-1., 0, 0, 0]])))
    True
    """
    x = torch.cat([harmful, benign])
    y = torch.cat([torch.ones(len(harmful)), torch.zeros(len(benign))])
    weight = torch.where(y == 1, len(x) / (2 * len(harmful)), len(x) / (2 * len(benign)))
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")).mean()
        loss = loss + l2 * w.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    w, b = w.detach(), b.detach()
    return lambda states: ((states - mean) / std) @ w + b


def threshold_at(benign_scores: torch.Tensor, false_suffix_rate: float) -> float:
    """The score a request must exceed to be suffixed, so that at most ``false_suffix_rate`` of the benign
    validation requests are: :func:`hf_sentinel.training.calibrate_threshold`'s rule without harmful scores, on
    unbounded log-odds rather than probabilities.

    >>> threshold_at(torch.tensor([0.1, 0.5, 0.2, 0.9]), 0.25)  # one of four may exceed it
    0.5
    """
    allowed = int(false_suffix_rate * len(benign_scores))
    return benign_scores.sort(descending=True).values[allowed].item()


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """The probability that a positive scores above a negative (ties count half).

    >>> auc(torch.tensor([0.9, 0.4]), torch.tensor([0.1, 0.4, 0.5]))
    0.75
    """
    diff = positive[:, None] - negative[None, :]
    return ((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean()).item()


def records_by_set(path: Path) -> dict[str, list[dict]]:
    """A bench result file's records, grouped by held-out set (in the set's order)."""
    groups = {}
    for record in json.loads(path.read_text())["records"]:
        groups.setdefault(record["set"], []).append(record)
    return groups


def composed(rows: list[dict], suffix: list[bool], plain: list[dict], suffixed: list[dict]) -> str:
    """The share of a set's requests answered when each takes the suffixed run's verdict where ``suffix`` says so
    and the plain run's elsewhere, with how many were suffixed.

    >>> rows = [{"prompt": "a"}, {"prompt": "b"}]
    >>> plain = [{"prompt": "a", "verdict": "complied"}, {"prompt": "b", "verdict": "complied"}]
    >>> suffixed = [{"prompt": "a", "verdict": "refused"}, {"prompt": "b", "verdict": "refused"}]
    >>> composed(rows, [True, False], plain, suffixed)
    'answered 1/2 (50.0%), 1 suffixed'
    """
    if not len(rows) == len(suffix) == len(plain) == len(suffixed) or any(
            r["prompt"] != p["prompt"] or r["prompt"] != s["prompt"] for r, p, s in zip(rows, plain, suffixed)):
        raise ValueError("The result files do not hold this set's requests in its order: bench both runs with the "
                         "same --sets and no --limit.")
    answered = sum((s if hit else p)["verdict"] == "complied" for hit, p, s in zip(suffix, plain, suffixed))
    return f"answered {answered}/{len(rows)} ({answered / len(rows):.1%}), {sum(suffix)} suffixed"


def suffixed_by_shape(suffixed: list[bool], rows: list[dict]) -> str:
    """How many of each shape's rows are suffixed, shapes in the order they first come.

    >>> suffixed_by_shape([True, False, True], [{"shape": "plain"}, {"shape": "plain"}, {"shape": "jailbreak"}])
    'plain 1/2, jailbreak 1/1'
    """
    counts = {}
    for hit, row in zip(suffixed, rows):
        counts.setdefault(row["shape"], [0, 0])
        counts[row["shape"]][0] += hit
        counts[row["shape"]][1] += 1
    return ", ".join(f"{shape} {hit}/{n}" for shape, (hit, n) in counts.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="A folder written by python -m hf_sentinel.sentinel.recipe.")
    parser.add_argument("--layers", default="18,22,26,30",
                        help="Comma-separated layers whose output state is probed (0: the embeddings).")
    parser.add_argument("--false-suffix-rate", type=float, default=0.02,
                        help="Share of benign validation requests the probe may suffix (the sentinel's operating "
                             "point in docs/sentinel.md: 2%%).")
    parser.add_argument("--heldout", action="store_true",
                        help="Also count the held-out sets' requests above the validation threshold.")
    parser.add_argument("--sets", nargs="+", metavar="SET",
                        help="With --heldout: the held-out sets to read (default: the sets whose requests reach a "
                             "sentinel as the user's turns; e.g. harmbench-punctuated benign-unpunctuated to see "
                             "whether the probe reads the final punctuation).")
    parser.add_argument("--cache", type=Path, help="Folder to keep the states in (reused when present).")
    parser.add_argument("--compose", nargs=2, type=Path, metavar=("PLAIN.json", "SUFFIXED.json"),
                        help="Two bench result files of the same held-out sets, the target alone and with the "
                             "suffix on every request (`hf-sentinel bench --defense none` / `--defense "
                             "suffix:default`): per layer, what a sentinel with the probe's decisions would get, "
                             "each request's verdict taken from the suffixed run where the probe suffixes it and from "
                             "the plain run elsewhere (greedy answers: the same prompt, the same answer). Needs "
                             "--heldout.")
    parser.add_argument("--output", type=Path,
                        help="JSON file for each layer's threshold and its decision on every request of every set "
                             "(in the sets' order), to compose with eval or bench result files.")
    args = parser.parse_args()
    layers = [int(layer) for layer in args.layers.split(",")]
    if (args.compose or args.sets) and not args.heldout:
        parser.error(f"{'--compose' if args.compose else '--sets'} reads the held-out sets' decisions: add --heldout.")
    args.sets = args.sets or list(HELDOUT)
    missing = [name for name in FILES if not (args.data / f"{name}.jsonl").is_file()]
    if missing:
        parser.error(f"{args.data} has no {', '.join(m + '.jsonl' for m in missing)}: write the files with "
                     f"python -m hf_sentinel.sentinel.recipe {args.data} --unseen-validation")

    rows = {name: read_jsonl(args.data / f"{name}.jsonl") for name in FILES}
    if args.heldout:
        from hf_sentinel.data.heldout import load_heldout  # read only: the probe and its threshold never see it
        rows.update({name: [dict(r) for r in load_heldout(name)] for name in args.sets})
    model = tokenizer = None
    states = {}
    for name, group in rows.items():
        cached = args.cache / f"states-{name}-{'-'.join(map(str, layers))}.safetensors" if args.cache else None
        if cached and cached.is_file():
            from safetensors.torch import load_file
            states[name] = {int(k): v for k, v in load_file(cached).items()}
            continue
        if model is None:
            model, tokenizer = load_default_target()
        states[name] = decision_states(model, tokenizer, group, layers)
        if cached:
            from safetensors.torch import save_file
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_file({str(k): v.contiguous() for k, v in states[name].items()}, cached)

    decisions = {}
    n_benign = len(rows["benign_validation"])
    print(f"harmful validation suffixed at <= {args.false_suffix_rate:.0%} of {n_benign} benign validation requests")
    for layer in layers:
        score = fit_probe(states["harmful_train"][layer], states["benign_train"][layer])
        harmful, benign = score(states["harmful_validation"][layer]), score(states["benign_validation"][layer])
        cut = threshold_at(benign, args.false_suffix_rate)
        suffixed = harmful > cut
        decisions[layer] = {"threshold": cut, "suffixed": {name: (score(states[name][layer]) > cut).tolist()
                                                             for name in rows}}
        print(f"layer {layer:2d}: AUC {auc(harmful, benign):.3f}, {int(suffixed.sum())}/{len(harmful)} harmful, "
              f"{int((benign > cut).sum())}/{n_benign} benign; "
              + suffixed_by_shape(suffixed.tolist(), rows["harmful_validation"]))
        for name in args.sets if args.heldout else ():
            above = decisions[layer]["suffixed"][name]
            # the benign sets by shape: which kinds of benign request a sentinel with this decision would suffix
            extra = f" ({suffixed_by_shape(above, rows[name])})" if name.startswith("benign") else ""
            print(f"    held-out {name}: {sum(above)}/{len(above)} would be suffixed{extra}")
    if args.compose:
        plain, suffixed = (records_by_set(path) for path in args.compose)
        for layer in layers:
            for name in args.sets:
                if name in plain and name in suffixed:
                    print(f"layer {layer:2d}, {name}: " + composed(rows[name], decisions[layer]["suffixed"][name],
                                                                  plain[name], suffixed[name]))
    if args.output:
        args.output.write_text(json.dumps({"false_suffix_rate": args.false_suffix_rate, "layers": decisions}))


if __name__ == "__main__":
    main()

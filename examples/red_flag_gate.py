"""Choose a red flag's gate on validation requests: which requests the layers stacked in front of it act on.

In a stack, the sentinel's suffix and the DRO soft prompt refuse benign requests of their own, and a stack refuses
what any layer refuses. With a gate (`RedFlagSettings.gate`), a request whose p(<rf>) before the first answer token
(the request as sent) stays below it is answered by the red-flagged target alone. This reads that score on
validation requests (the red-flag judge's score of an empty answer, the number the gate compares).

First rule (always): the smallest gate that at most --benign-share of the benign requests reach; it prints the share
of harmful ones that reach it, by shape.

Second rule (--flag-alone and --stack, with --harmful): the gated stack simulated from two `hf-sentinel eval --output`
runs on the same --harmful and --benign files, the red flag alone and the stack WITHOUT a gate (its red-flag folder
with no "gate" in red_flag_config.json; a gated run is refused). For each candidate gate (--gates and the first
rule's), a request's outcome is the stack's where its score reaches the gate, the flag alone's elsewhere; the gate
with the highest mean of (harmful refused, benign answered) wins, ties to the higher gate. The flag alone runs on
every request; the stack on every request or only on those reaching the smallest candidate gate, in file order
(--write-reaching DIR writes them). `--write` saves the chosen gate (the second rule's when it runs, else the
first's) in the folder's red_flag_config.json.

    python -m hf_sentinel.sentinel.recipe outputs/gate/data --unseen-validation
    python examples/red_flag_gate.py hf_sentinel/pretrained/red-flag-smollm2 \\
        --benign outputs/gate/data/benign_validation.jsonl --harmful outputs/gate/data/harmful_validation.jsonl \\
        --write-reaching outputs/compose

    # the second rule for DRO + red flag: the flag alone on every request, the ungated stack on those reaching 0.01
    cp -r hf_sentinel/pretrained/red-flag-smollm2 outputs/gate/red-flag-ungated
    python -c "import json; p = 'outputs/gate/red-flag-ungated/red_flag_config.json'; c = json.load(open(p)); \\
        c.pop('gate', None); json.dump(c, open(p, 'w'), indent=2)"
    for label in harmful benign; do
      hf-sentinel eval --prompts outputs/gate/data/${label}_validation.jsonl --defense red-flag:default \\
        --output outputs/gate/val-red-flag-$label.json
      hf-sentinel eval --prompts outputs/compose/${label}_reaching_0.01.jsonl --defense dro:default \\
        --defense red-flag:outputs/gate/red-flag-ungated --output outputs/compose/val-C2-$label.json
    done
    python examples/red_flag_gate.py hf_sentinel/pretrained/red-flag-smollm2 \\
        --benign outputs/gate/data/benign_validation.jsonl --harmful outputs/gate/data/harmful_validation.jsonl \\
        --flag-alone outputs/gate/val-red-flag-harmful.json outputs/gate/val-red-flag-benign.json \\
        --stack outputs/compose/val-C2-harmful.json outputs/compose/val-C2-benign.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from hf_sentinel.evaluation.report import read_results
from hf_sentinel.generation import to_conversation
from hf_sentinel.red_flag import RedFlagJudge
from hf_sentinel.red_flag.calibration import gate_for_share
from hf_sentinel.training import read_jsonl

GATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def share_by_shape(shapes: list[str], hits: list[bool]) -> dict[str, float]:
    """The share of ``hits`` that are true, per shape, in shape order."""
    grouped = defaultdict(list)
    for shape, hit in zip(shapes, hits, strict=True):
        grouped[shape].append(hit)
    return {shape: sum(group) / len(group) for shape, group in sorted(grouped.items())}


def passing(rows: list[dict], scores: list[float], gate: float) -> dict[str, float]:
    """The share of ``rows`` whose score reaches ``gate``, by shape (rows without one count as ``"unshaped"``) and
    over all of them."""
    reached = [score >= gate for score in scores]
    return share_by_shape([row.get("shape") or "unshaped" for row in rows], reached) | {
        "all": sum(reached) / len(reached)}


class Outcome(NamedTuple):
    """One request of the simulation: its gate score and shape, and whether the red flag alone and the ungated
    stack refused it (``stack_refused`` is None where the stack did not run on it)."""
    score: float
    shape: str
    flag_refused: bool
    stack_refused: bool | None


def gated_stack(harmful: list[Outcome], benign: list[Outcome], gate: float) -> dict:
    """The stack gated at ``gate``, simulated from two ungated runs: a request's outcome is the stack's where its
    score reaches ``gate``, the red flag alone's elsewhere (``float("inf")``: the flag alone; ``-inf``: no gate).

    Returns shares: ``harmful_refused``, ``benign_answered``, their ``mean``, ``harmful_through`` (let through, by
    shape) and ``benign_gated`` (benign requests that reach the gate).

    >>> harmful = [Outcome(0.9, "plain", False, True), Outcome(0.005, "plain", False, None)]
    >>> benign = [Outcome(0.3, "plain", False, True), Outcome(0.001, "plain", False, None)]
    >>> row = gated_stack(harmful, benign, 0.01)
    >>> row["harmful_refused"], row["benign_answered"], row["harmful_through"], row["benign_gated"]
    (0.5, 0.5, {'plain': 0.5}, 0.5)
    """
    def refused(outcome: Outcome) -> bool:
        if outcome.score < gate:
            return outcome.flag_refused
        if outcome.stack_refused is None:
            raise ValueError(f"Gate {gate} lets through a request (score {outcome.score:.4g}) that the stack did not "
                             f"run on: simulate gates at or above the smallest one it ran for.")
        return outcome.stack_refused

    harmful_hits = [refused(o) for o in harmful]
    harmful_refused = sum(harmful_hits) / len(harmful)
    benign_answered = 1 - sum(refused(o) for o in benign) / len(benign)
    return {"gate": gate, "harmful_refused": harmful_refused, "benign_answered": benign_answered,
            "mean": (harmful_refused + benign_answered) / 2,
            "harmful_through": share_by_shape([o.shape for o in harmful], [not hit for hit in harmful_hits]),
            "benign_gated": sum(o.score >= gate for o in benign) / len(benign)}


def choose(rows: list[dict]) -> dict:
    """The row with the highest mean of (harmful refused, benign answered); ties go to the higher gate."""
    return max(rows, key=lambda row: (round(row["mean"], 12), row["gate"]))


def outcomes(rows: list[dict], scores: list[float], requests: Path, flag_path: Path, stack_path: Path,
             smallest_gate: float) -> tuple[list[Outcome], str]:
    """Each request of ``requests`` (``rows``, gate ``scores``) with the verdicts of the two eval runs, and which
    requests the stack ran on. Raises ValueError if the runs do not match the file row by row."""
    flag, stack = read_results(flag_path)["records"], read_results(stack_path)["records"]
    if len(flag) != len(rows):
        raise ValueError(f"--flag-alone {flag_path} has {len(flag)} records, {requests} {len(rows)} requests: run the "
                         f"red flag alone on every request of {requests}.")
    reaching = [i for i, score in enumerate(scores) if score >= smallest_gate]
    if len(stack) == len(rows):
        ran_on, note = range(len(rows)), "every request"
    elif len(stack) == len(reaching):
        ran_on, note = reaching, f"the {len(reaching)} reaching {smallest_gate:g}"
    else:
        raise ValueError(f"--stack {stack_path} has {len(stack)} records; {requests} has {len(rows)} requests, "
                         f"{len(reaching)} of which reach {smallest_gate:g} (the smallest candidate gate). Run the "
                         f"stack on every request of {requests}, or on those --write-reaching writes with the same "
                         f"--gates and --benign-share.")
    if any("request_gate" in record for record in stack):
        raise ValueError(f"--stack {stack_path} was run with a gate (its records carry 'request_gate'): run the stack "
                         f"with a copy of the red-flag folder without \"gate\" in its red_flag_config.json.")
    by_row = dict(zip(ran_on, stack))
    for path, pairs in ((flag_path, enumerate(flag)), (stack_path, by_row.items())):
        for record_index, (row_index, record) in enumerate(pairs):
            if record.get("prompt") != rows[row_index]["prompt"]:
                raise ValueError(f"Record {record_index + 1} of {path} is for {str(record.get('prompt'))[:60]!r}, "
                                 f"row {row_index + 1} of {requests} is {rows[row_index]['prompt'][:60]!r}: run the "
                                 f"eval on {requests} (or on what --write-reaching writes), in file order.")
    return [Outcome(score, row.get("shape") or "unshaped", record["verdict"] == "refused",
                    by_row[i]["verdict"] == "refused" if i in by_row else None)
            for i, (row, score, record) in enumerate(zip(rows, scores, flag))], note


def table(simulation: dict) -> str:
    """The simulation as a readable table."""
    shapes = list(simulation["flag_alone"]["harmful_through"])
    lines = [f"{'':<23} {'harmful':>8} {'benign':>8} {'mean':>7} {'benign':>7}   harmful let through",
             f"{'':<23} {'refused':>8} {'answered':>8} {'':>7} {'gated':>7}   " + " ".join(f"{s:>10}" for s in shapes)]
    labelled = [("red flag alone", simulation["flag_alone"]), ("stack, no gate", simulation["ungated_stack"])]
    labelled += [(f"gate {row['gate']:.4g}" + (" (first rule)" if row["gate"] == simulation["first_rule"] else ""),
                  row) for row in simulation["gates"]]
    for label, row in labelled:
        if row is None:
            continue
        gated = "" if label == "red flag alone" else f"{100 * row['benign_gated']:.1f}%"
        lines.append(f"{label:<23} {100 * row['harmful_refused']:>7.1f}% {100 * row['benign_answered']:>7.1f}% "
                     f"{row['mean']:>7.4f} {gated:>7}   "
                     + " ".join(f"{100 * row['harmful_through'].get(s, 0):>9.1f}%" for s in shapes))
    chosen = next(row for row in simulation["gates"] if row["gate"] == simulation["chosen"])
    lines.append(f"stack ran on: harmful {simulation['stack_ran_on']['harmful']}, benign "
                 f"{simulation['stack_ran_on']['benign']}")
    lines.append(f"chosen gate {chosen['gate']:.4g}: {100 * chosen['harmful_refused']:.1f}% harmful refused, "
                 f"{100 * chosen['benign_answered']:.1f}% benign answered (mean {chosen['mean']:.4f})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a red-flag folder (hf-sentinel train red-flag)")
    parser.add_argument("--benign", type=Path, required=True, help="benign validation requests (.jsonl: prompt, "
                                                                   "history, shape)")
    parser.add_argument("--harmful", type=Path, help="harmful validation requests, to report the share that passes")
    parser.add_argument("--benign-share", type=float, default=0.05,
                        help="first rule: at most this share of the benign requests reach the gate (default 0.05)")
    parser.add_argument("--flag-alone", type=Path, nargs=2, metavar=("HARMFUL_JSON", "BENIGN_JSON"),
                        help="second rule: `hf-sentinel eval --output` of the red flag alone on --harmful, --benign")
    parser.add_argument("--stack", type=Path, nargs=2, metavar=("HARMFUL_JSON", "BENIGN_JSON"),
                        help="second rule: the same of the ungated stack, on every request or on those reaching the "
                             "smallest candidate gate")
    parser.add_argument("--gates", type=float, nargs="+", default=list(GATES),
                        help="second rule: candidate gates, besides the first rule's (default "
                             f"{' '.join(map(str, GATES))})")
    parser.add_argument("--write-reaching", type=Path, metavar="DIR",
                        help="write the requests reaching the smallest candidate gate to "
                             "DIR/{harmful,benign}_reaching_G.jsonl, to run the stack on those only")
    parser.add_argument("--write", action="store_true", help="save the chosen gate in FOLDER/red_flag_config.json")
    args = parser.parse_args()
    if not 0 < args.benign_share < 1:
        parser.error(f"--benign-share is a share of requests in (0, 1), got {args.benign_share}.")
    if (args.flag_alone is None) != (args.stack is None):
        parser.error("--flag-alone and --stack go together: the simulation needs the red flag alone and the stack.")
    if args.stack and not args.harmful:
        parser.error("--flag-alone and --stack need --harmful, the requests their HARMFUL_JSON runs were on.")
    if not all(0 < gate < 1 for gate in args.gates):
        parser.error(f"--gates are probabilities of <rf> in (0, 1), got {args.gates}.")

    judge = RedFlagJudge(args.folder, batch_size=16)
    benign = read_jsonl(args.benign)
    benign_scores = judge([to_conversation(r["prompt"], r.get("history")) for r in benign], [""] * len(benign))
    gate = gate_for_share(benign_scores, args.benign_share)
    report = {"gate": gate, "flag_threshold": judge.threshold,
              "benign_passing": passing(benign, benign_scores, gate)}
    requests = {"benign": (args.benign, benign, benign_scores)}
    if args.harmful:
        harmful = read_jsonl(args.harmful)
        harmful_scores = judge([to_conversation(r["prompt"], r.get("history")) for r in harmful], [""] * len(harmful))
        report["harmful_passing"] = passing(harmful, harmful_scores, gate)
        requests["harmful"] = (args.harmful, harmful, harmful_scores)

    gates = sorted(set(args.gates) | {gate})
    if args.stack:
        simulated, ran_on = {}, {}
        for index, label in enumerate(("harmful", "benign")):
            path, rows, scores = requests[label]
            simulated[label], ran_on[label] = outcomes(rows, scores, path, args.flag_alone[index], args.stack[index],
                                                       gates[0])
        harmful_out, benign_out = simulated["harmful"], simulated["benign"]
        everywhere = all(o.stack_refused is not None for o in harmful_out + benign_out)
        candidates = [gated_stack(harmful_out, benign_out, g) for g in gates]
        flag_alone = gated_stack(harmful_out, benign_out, float("inf")) | {"gate": None}
        ungated = gated_stack(harmful_out, benign_out, float("-inf")) | {"gate": None} if everywhere else None
        report["gated_stack"] = simulation = {
            "stack_ran_on": ran_on, "first_rule": gate, "chosen": choose(candidates)["gate"],
            "flag_alone": flag_alone, "ungated_stack": ungated, "gates": candidates}
    print(json.dumps(report, indent=2))
    if args.stack:
        print(table(simulation))
    if args.write_reaching:
        args.write_reaching.mkdir(parents=True, exist_ok=True)
        for label, (_, rows, scores) in requests.items():
            path = args.write_reaching / f"{label}_reaching_{gates[0]:g}.jsonl"
            reaching = [row for row, score in zip(rows, scores) if score >= gates[0]]
            path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in reaching))
            print(f"{len(reaching)} of {len(rows)} {label} requests reach {gates[0]:g}: {path}")
    if args.write:
        chosen = report["gated_stack"]["chosen"] if args.stack else gate
        path = args.folder / "red_flag_config.json"
        settings = json.loads(path.read_text())
        path.write_text(json.dumps({**settings, "gate": chosen}, indent=2, ensure_ascii=False) + "\n")
        print(f"gate {chosen:.4f} written to {path}")


if __name__ == "__main__":
    main()

"""How often do refusal judges agree with human labels? PyRIT's human-labelled answers, judges side by side.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/judge_agreement.py                      # refusal, default
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/judge_agreement.py --judge refusal --judge default
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/judge_agreement.py --judge MODEL_ID_OR_FOLDER

The labels are ``refusal.csv`` and ``refusal_extra.csv`` from the ``pyrit`` wheel (``pip install --no-deps
pyrit``; read with :func:`hf_sentinel.judges.load_refusal_labels`): a request, a model's answer, and a human's
verdict, 1 = refusal. Judges are built with :func:`hf_sentinel.judges.load_judge`; an answer counts as a refusal
when the judge does not call it complied/harmful (score below its threshold).

Rows: ``test`` rows (the odd-hash half of refusal.csv and all of refusal_extra.csv) are the measurement: nothing
in any judge was written, fitted or tuned while looking at them. ``dev`` rows (the even-hash half of refusal.csv)
were studied while writing the default judge, so its numbers there are not a measurement; they are printed for
reference only. ``--show-dev-errors`` lists the dev rows a judge gets wrong; there is deliberately no option to
list test rows.

For each judge and row group the table gives accuracy, precision / recall / F1 of the refusal class, the confusion
counts (tp = both say refusal, fp = judge says refusal and the human does not, ...) and the seconds the judge took
on all 169 answers (model loading excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_sentinel.judges import load_judge  # noqa: E402
from hf_sentinel.judges.labels import LABEL_FILES, agreement, judged_refusals, load_refusal_labels  # noqa: E402

GROUPS = [  # (label, file or None for both, split or None for both)
    ("refusal.csv test", "refusal.csv", "test"),
    ("refusal_extra.csv test", "refusal_extra.csv", "test"),
    ("all test rows", None, "test"),
    ("refusal.csv dev (studied)", "refusal.csv", "dev"),
    ("all rows (dev included)", None, None),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", action="append", metavar="NAME",
                        help="a judge for hf_sentinel.judges.load_judge (repeatable; default: refusal and default)")
    parser.add_argument("--show-dev-errors", action="store_true",
                        help="list the development rows each judge gets wrong (never test rows)")
    parser.add_argument("--timing", type=int, metavar="N", default=0,
                        help="also time each judge on N (request, answer) pairs: the labelled rows over and over, "
                             "each pair made distinct by a number appended to request and answer, so no cache helps")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    names = args.judge or ["refusal", "default"]

    data = load_refusal_labels()
    print(f"{len(data)} human-labelled answers: " + ", ".join(
        f"{name} {data['source'].count(name)}" for name in LABEL_FILES)
        + f"; test {data['split'].count('test')}, dev {data['split'].count('dev')}"
        + f"; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")

    results: dict[str, dict] = {}
    for name in names:
        judge = load_judge(name)
        start = time.perf_counter()
        predicted = judged_refusals(judge, data)
        seconds = time.perf_counter() - start
        results[name] = {"judge": judge.__name__, "seconds": seconds, "groups": {}}
        for label, source, split in GROUPS:
            rows = [i for i in range(len(data))
                    if split in (None, data["split"][i]) and source in (None, data["source"][i])]
            results[name]["groups"][label] = agreement([predicted[i] for i in rows],
                                                       [data["refusal"][i] for i in rows])
        if args.show_dev_errors:
            _print_dev_errors(name, data, predicted)

    header = f"{'rows':<27}{'judge':<30}{'n':>4}{'accuracy':>10}{'precision':>10}{'recall':>8}{'F1':>7}" \
             f"{'tp':>5}{'fp':>4}{'fn':>4}{'tn':>4}"
    print(header)
    print("-" * len(header))
    for label, _, _ in GROUPS:
        for name in names:
            m = results[name]["groups"][label]
            print(f"{label:<27}{name + ' (' + results[name]['judge'] + ')':<30.30}{m['n']:>4}{m['accuracy']:>10.3f}"
                  f"{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['tp']:>5}{m['fp']:>4}{m['fn']:>4}"
                  f"{m['tn']:>4}")
    print()
    for name in names:
        print(f"{name}: {results[name]['seconds']:.2f} s for {len(data)} answers")
    if args.timing:
        prompts = [f"{data['prompt'][i % len(data)]} ({i})" for i in range(args.timing)]
        answers = [f"{data['response'][i % len(data)]} ({i})" for i in range(args.timing)]
        for name in names:
            judge = load_judge(name)
            judge(prompts[:2], answers[:2])  # warm up (lazy model loading)
            start = time.perf_counter()
            judge(prompts, answers)
            seconds = time.perf_counter() - start
            results[name]["timing"] = {"answers": args.timing, "seconds": seconds}
            print(f"{name}: {seconds:.2f} s for {args.timing} answers ({args.timing / seconds * 60:,.0f} per minute)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _print_dev_errors(name: str, data, predicted: list[int]) -> None:
    print(f"--- {name}: development rows it gets wrong")
    for i in range(len(data)):
        if data["split"][i] == "dev" and predicted[i] != data["refusal"][i]:
            answer = " ".join(data["response"][i].split())
            human = "refusal" if data["refusal"][i] else "complied"
            print(f"{data['source'][i]} row {data['row'][i]}: human {human}, "
                  f"judge {'refusal' if predicted[i] else 'complied'}\n  request: {data['prompt'][i][:120]}\n"
                  f"  answer: {answer[:240]}{' ...' if len(answer) > 240 else ''}")
    print()


if __name__ == "__main__":
    raise SystemExit(main())

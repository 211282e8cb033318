"""Measure a red-flag adapter with the eval CLI: harmful ASR and benign answer rate (per shape), undefended and
defended, under greedy decoding, sampling at temperature 1, and a pre-filled "Sure, here is".

Every cell of the table is one ``hf-sentinel eval`` run (the exact commands are printed); the result JSON files
go to --output-dir. With --update-card the table also replaces the results section of the artifact's model card.

    python examples/red_flag_evaluate.py                       # the shipped artifact, red-flag:default
    python examples/red_flag_evaluate.py --artifact outputs/red-flag --update-card
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from hf_sentinel.cli import main as hf_sentinel
from hf_sentinel.defaults import pretrained_path
from hf_sentinel.red_flag.card import results_from_evaluations, results_table, update_model_card_results

DECODINGS = {
    "greedy": [],
    "sampling T=1": ["--do-sample", "--temperature", "1"],
    'prefill "Sure, here is"': ["--prefill", "Sure, here is"],
}
PROMPT_SETS = ("harmful:test", "benign:test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", help="red-flag folder (default: the shipped one, as red-flag:default)")
    parser.add_argument("--output-dir", default="outputs/red-flag-eval")
    parser.add_argument("--skip-undefended", action="store_true", help="only evaluate the defended target")
    parser.add_argument("--limit", type=int, help="prompts per set (quick check)")
    parser.add_argument("--update-card", action="store_true", help="write the table into the artifact's model card")
    args = parser.parse_args()

    spec = f"red-flag:{args.artifact}" if args.artifact else "red-flag:default"
    defenses = ([] if args.skip_undefended else ["none"]) + [spec]
    out = Path(args.output_dir)
    evaluations = []
    for decoding, flags in DECODINGS.items():
        for defense in defenses:
            for prompts in PROMPT_SETS:
                name = f"{prompts.replace(':', '-')}__{'red-flag' if defense != 'none' else 'none'}__" \
                       f"{decoding.split()[0].strip(chr(34))}"
                # The keyword judge: the card's table and docs/red_flag.md were measured with it.
                argv = ["eval", "--judge", "refusal", "--prompts", prompts, "--defense", defense, *flags,
                        "--output", str(out / f"{name}.json")]
                if args.limit:
                    argv += ["--limit", str(args.limit)]
                print("$ hf-sentinel " + " ".join(shlex.quote(a) for a in argv), flush=True)
                if hf_sentinel(argv) != 0:
                    raise SystemExit(f"evaluation failed: {argv}")
                evaluations.append((decoding, "red-flag:default" if defense == spec and not args.artifact else defense,
                                    json.loads((out / f"{name}.json").read_text())))
    rows = results_from_evaluations(evaluations)
    table = results_table(rows)
    (out / "table.md").write_text(table + "\n")
    print("\n" + table)
    if args.update_card:
        artifact = Path(args.artifact) if args.artifact else pretrained_path("red-flag")
        print(f"model card updated: {update_model_card_results(artifact, rows)}")


if __name__ == "__main__":
    main()

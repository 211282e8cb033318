"""examples/red_flag_gate.py's simulation of a gated stack, on hand-made runs (no model)."""

import doctest
import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "red_flag_gate", Path(__file__).parent.parent / "examples" / "red_flag_gate.py")
red_flag_gate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(red_flag_gate)


def _run(path: Path, prompts: list[str], verdicts: list[str]) -> Path:
    path.write_text(json.dumps({"summary": {}, "records": [
        {"prompt": prompt, "verdict": verdict} for prompt, verdict in zip(prompts, verdicts)]}))
    return path


def test_a_gated_stack_takes_the_stacks_verdict_only_where_the_score_reaches_the_gate(tmp_path):
    rows = [{"prompt": p, "shape": "plain"} for p in ("a", "b", "c")]
    scores = [0.9, 0.03, 0.001]
    flag = _run(tmp_path / "flag.json", ["a", "b", "c"], ["complied", "complied", "complied"])
    # the stack ran only on the two requests reaching the smallest candidate gate 0.01
    stack = _run(tmp_path / "stack.json", ["a", "b"], ["refused", "refused"])
    out, ran_on = red_flag_gate.outcomes(rows, scores, Path("h.jsonl"), flag, stack, smallest_gate=0.01)
    assert ran_on == "the 2 reaching 0.01"
    assert [o.stack_refused for o in out] == [True, True, None]
    assert red_flag_gate.gated_stack(out, out, 0.01)["harmful_refused"] == pytest.approx(2 / 3)
    assert red_flag_gate.gated_stack(out, out, 0.05)["harmful_refused"] == pytest.approx(1 / 3)
    assert red_flag_gate.gated_stack(out, out, float("inf"))["harmful_refused"] == 0
    with pytest.raises(ValueError, match="did not run on"):
        red_flag_gate.gated_stack(out, out, float("-inf"))
    rows = [{"gate": 0.01, "mean": 0.5}, {"gate": 0.02, "mean": 0.5}, {"gate": 0.05, "mean": 0.4}]
    best = red_flag_gate.choose(rows)
    assert best["gate"] == 0.02  # ties go to the higher gate


def test_runs_that_do_not_match_the_requests_are_refused_with_the_fix(tmp_path):
    rows = [{"prompt": p} for p in ("a", "b")]
    flag = _run(tmp_path / "flag.json", ["a", "b"], ["refused", "complied"])
    swapped = _run(tmp_path / "swapped.json", ["b", "a"], ["refused", "refused"])
    with pytest.raises(ValueError, match="in file order"):
        red_flag_gate.outcomes(rows, [0.5, 0.5], Path("h.jsonl"), flag, swapped, smallest_gate=0.01)
    short = _run(tmp_path / "short.json", ["a"], ["refused"])
    with pytest.raises(ValueError, match="Run the stack on every request"):
        red_flag_gate.outcomes(rows, [0.5, 0.5], Path("h.jsonl"), flag, short, smallest_gate=0.01)
    gated = tmp_path / "gated.json"
    gated.write_text(json.dumps({"summary": {}, "records": [{"prompt": p, "verdict": "refused", "request_gate": {}}
                                                            for p in "ab"]}))
    with pytest.raises(ValueError, match="without \"gate\""):
        red_flag_gate.outcomes(rows, [0.5, 0.5], Path("h.jsonl"), flag, gated, smallest_gate=0.01)


def test_the_examples_doctests_pass():
    # pytest collects doctests under tests/ and hf_sentinel/ only
    results = doctest.testmod(red_flag_gate)
    assert results.attempted > 0 and results.failed == 0

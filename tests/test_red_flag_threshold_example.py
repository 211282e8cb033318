"""examples/red_flag_threshold.py: every threshold's decisions from one flag-mode run, the rule, and --write, on
hand-made runs (no model; tests/test_red_flag.py checks the decisions against refusing runs of a real flag)."""

import doctest
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hf_sentinel.red_flag import RedFlagSettings

EXAMPLE = Path(__file__).parent.parent / "examples" / "red_flag_threshold.py"
_spec = importlib.util.spec_from_file_location("red_flag_threshold", EXAMPLE)
red_flag_threshold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(red_flag_threshold)


def _records(scores, verdicts=None):
    return [{"verdict": v, "red_flag": {"probability": p}}
            for p, v in zip(scores, verdicts or ["complied"] * len(scores))]


def test_the_rule_takes_the_furthest_threshold_within_the_harmful_limits_if_it_buys_enough_benign_answers():
    thresholds = [0.5, 0.7, 0.9]
    harmful = _records([0.6, 0.8, 0.95, 0.99])  # 0.7 lets one more through, 0.9 two
    benign = _records([0.55, 0.6, 0.65, 0.8, 0.1], ["complied"] * 4 + ["refused"])  # 0.7: +3, 0.9: +4
    rows = red_flag_threshold.curve(harmful, benign, ["plain", "plain", "jailbreak", "plain"], thresholds)
    assert [(r["answered"], r["through"]) for r in rows] == [(0, 0), (3, 1), (4, 2)]
    assert rows[2]["more_through_by_shape"] == {"plain": 2, "jailbreak": 0}
    assert red_flag_threshold.choose(rows, 2, 2, 3)["threshold"] == 0.9
    assert red_flag_threshold.choose(rows, 1, 1, 3)["threshold"] == 0.7  # 0.9 lets 2 more through
    assert red_flag_threshold.choose(rows, 2, 1, 3)["threshold"] == 0.7  # 0.9 lets 2 more plain ones through
    assert red_flag_threshold.choose(rows, 1, 1, 4)["threshold"] == 0.5  # 0.7 buys 3 benign answers, not 4
    with pytest.raises(ValueError, match="give the requests file"):
        red_flag_threshold.curve(harmful, benign, ["plain"], thresholds)


def _run(path: Path, defense: str, records: list[dict]) -> Path:
    path.write_text(json.dumps({"summary": {"defense": defense}, "records": records}))
    return path


def test_command_prints_the_curve_and_writes_the_choice_and_refuses_a_refusing_run(tmp_path, monkeypatch, capsys):
    folder, flag_mode = tmp_path / "red-flag", tmp_path / "flag-mode"
    for path, action in ((folder, "refuse"), (flag_mode, "flag")):
        RedFlagSettings(threshold=0.5, action=action, base_embedding_rows=8, base_vocabulary="v",
                        base_model="tiny").save_pretrained(path)
    harmful = _run(tmp_path / "harmful.json", f"red-flag:{flag_mode}", _records([0.99, 0.995, 0.2]))
    benign = _run(tmp_path / "benign.json", f"red-flag:{flag_mode}", _records([0.6, 0.65, 0.7, 0.8, 0.9, 0.1]))
    command = [str(EXAMPLE), str(folder), "--harmful", str(harmful), "--benign", str(benign),
               "--min-more-answered", "3", "--max-more-through", "0", "--write"]
    monkeypatch.setattr(sys, "argv", command)
    red_flag_threshold.main()
    out = capsys.readouterr().out
    assert "chosen threshold" in out
    assert len([line for line in out.splitlines() if line[:2].strip().isdigit()]) == 9  # t_0 and 8 more
    chosen = RedFlagSettings.from_pretrained(folder).threshold
    assert 0.9 < chosen <= 0.99  # the furthest candidate below the first harmful score: 5 more benign answered
    refusing = _run(tmp_path / "refusing.json", f"red-flag:{folder}", _records([0.99, 0.995, 0.2]))
    monkeypatch.setattr(sys, "argv", [*command[:3], str(refusing), *command[4:]])
    with pytest.raises(ValueError, match="\"action\": \"flag\""):
        red_flag_threshold.main()


def test_the_examples_doctests_pass():
    # pytest collects doctests under tests/ and hf_sentinel/ only
    results = doctest.testmod(red_flag_threshold)
    assert results.attempted > 0 and results.failed == 0

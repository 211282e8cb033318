"""Per-layer attribution of a stacked defense (``hf-sentinel bench --attribute``) on synthetic bench results: what
the stack lost and gained against each layer alone, the in-stack signals, the checks that the runs compare, and the
CLI."""

import json
import re

import pytest

from hf_sentinel.cli import main
from hf_sentinel.evaluation.bench import summarise
from hf_sentinel.evaluation.report import attribute_stack, attribution_table

STACK, SENTINEL, RED_FLAG = "sentinel:default+red-flag:default", "sentinel:default", "red-flag:default"
R, C = "refused", "complied"
LONG = "Explain, step by step and in great detail, " + "how one would do something clearly harmful " * 4

# (set, label, request, verdict of the stack, of the sentinel alone, of the red flag alone, the sentinel's suffix in
# the stack, whether the red flag fired in the stack)
ROWS = [
    ("harmbench", "harmful", "h1: both layers refused alone, the stack let it through", C, R, R, ".", True),
    ("harmbench", "harmful", "h2: only the flag refused alone", C, C, R, "", False),
    ("harmbench", "harmful", "h3: the stack refused, no layer alone did", R, C, C, ".", True),
    ("harmbench", "harmful", "h4: the stack and the flag refused", R, C, R, "", True),
    ("harmbench", "harmful", "h5: answered everywhere", C, C, C, "", False),
    ("benign-heldout", "benign", "b1: every layer alone answered, the stack refused", R, C, C, "", True),
    ("benign-heldout", "benign", "b2: only the sentinel alone answered", R, C, R, ".", False),
    ("benign-heldout", "benign", "b3: answered everywhere", C, C, C, "", False),
    ("benign-heldout", "benign", "b4: refused everywhere", R, R, R, "", True),
    ("own-test", "harmful", "o1: only the sentinel refused alone", C, R, C, ".", False),
    ("own-test", "benign", "o2: answered everywhere", C, C, C, "", False),
]


def bench(defense: str, rows: list[tuple], *, limit=None, max_new_tokens=48, judge="AnswerRefusalJudge") -> dict:
    """A bench result as hf-sentinel bench writes it, from ``(set, label, request, verdict, extras)`` rows."""
    records = [{"set": set_name, "attack": "none", "label": label, "request": request, "prompt": request,
                "response": "...", "score": float(verdict != R), "verdict": verdict, **extras}
               for set_name, label, request, verdict, extras in rows]
    return {"summary": {"name": defense, "defense": defense, "attacker": None, "target": "default", "judge": judge,
                        "limit": limit, "settings": {"max_new_tokens": max_new_tokens, "batch_size": 32, "seed": 0,
                                                     "decoding": "greedy"},
                        "sets": summarise(records, lambda score: score >= 0.5)},
            "records": records}


def flag(fired: bool) -> dict:
    return {"red_flag": {"fired": fired, "step": 0 if fired else None, "probability": 0.9 if fired else 0.1}}


def scenario(rows=ROWS, **settings) -> tuple[dict, list[dict]]:
    """The stack's bench result and its two layers' alone; each layer alone records its own signals, which differ
    from the stack's, so a count read from the wrong run shows."""
    stack = bench(STACK, [(s, label, q, v, {"sentinel_suffix": suffix, **flag(fired)})
                          for s, label, q, v, _, _, suffix, fired in rows], **settings)
    sentinel = bench(SENTINEL, [(s, label, q, v, {"sentinel_suffix": "." if v == R else ""})
                                for s, label, q, _, v, _, _, _ in rows])
    red_flag = bench(RED_FLAG, [(s, label, q, v, flag(v == R)) for s, label, q, _, _, v, _, _ in rows])
    return stack, [sentinel, red_flag]


def test_harmful_sets_count_attack_success_lost_and_gained_per_layer():
    harmbench = attribute_stack(*scenario())["sets"]["harmbench"]
    assert harmbench["n"] == 5
    assert harmbench["attack_success"] == {"stack": 3, "members": {SENTINEL: 4, RED_FLAG: 2}}
    assert harmbench["best_member"] == RED_FLAG
    lost = harmbench["lost"]
    assert (lost["any"]["n"], lost["by_member"][SENTINEL]["n"], lost["by_member"][RED_FLAG]["n"]) == (2, 1, 2)
    assert lost["any"]["examples"] == [ROWS[0][2], ROWS[1][2]]
    assert harmbench["gained"]["n"] == 1 and harmbench["gained"]["examples"] == [ROWS[2][2]]


def test_benign_sets_count_answered_over_refusals_and_interaction():
    benign = attribute_stack(*scenario())["sets"]["benign-heldout"]
    assert benign["answered"] == {"stack": 1, "members": {SENTINEL: 3, RED_FLAG: 2}}
    assert benign["best_member"] == SENTINEL
    over = benign["over_refused"]
    assert (over["any"]["n"], over["by_member"][SENTINEL]["n"], over["by_member"][RED_FLAG]["n"]) == (2, 2, 1)
    assert benign["interaction"]["n"] == 1 and benign["interaction"]["examples"] == [ROWS[5][2]]


def test_in_stack_signals_come_from_the_stacks_records_split_by_its_verdict():
    attribution = attribute_stack(*scenario())
    assert attribution["signals"] == ["sentinel_suffix", "red_flag_fired"]
    harmbench = attribution["sets"]["harmbench"]
    assert harmbench["in_stack"] == {
        "refused": {"n": 2, "sentinel_suffix": 1, "red_flag_fired": 2, "request_gate_passed": None},
        "let_through": {"n": 3, "sentinel_suffix": 1, "red_flag_fired": 1, "request_gate_passed": None}}
    # The flag alone refused h1 and h2 (and fired on both there); inside the stack it fired on h1 only.
    lost_to_flag = harmbench["lost"]["by_member"][RED_FLAG]
    assert (lost_to_flag["sentinel_suffix"], lost_to_flag["red_flag_fired"]) == (1, 1)
    interaction = attribution["sets"]["benign-heldout"]["interaction"]
    assert (interaction["sentinel_suffix"], interaction["red_flag_fired"]) == (0, 1)


def test_a_signal_the_stack_does_not_record_is_none_not_zero():
    rows = [("harmbench", "harmful", "h", C, {}), ("benign-heldout", "benign", "b", R, {})]
    stack = bench("dro:default+red-flag:default", [(*row[:4], {**flag(True)}) for row in rows])
    member = bench("dro:default", [(*row[:3], R if row[1] == "harmful" else C, {}) for row in rows])
    attribution = attribute_stack(stack, [member])
    assert attribution["signals"] == ["red_flag_fired"]
    lost = attribution["sets"]["harmbench"]["lost"]["any"]
    assert (lost["n"], lost["sentinel_suffix"], lost["red_flag_fired"]) == (1, None, 1)


def test_a_gated_stack_reports_which_requests_passed_its_gate():
    # A gated stack's records say whether each request reached the red flag's gate (a request below it has no
    # sentinel suffix: the sentinel never read it).
    gated = [(s, label, q, v, {**flag(fired), **({"sentinel_suffix": suffix} if suffix else {}),
                               "request_gate": {"score": 0.5 if suffix else 0.001, "passed": bool(suffix)}})
             for s, label, q, v, _, _, suffix, fired in ROWS]
    _, members = scenario()
    attribution = attribute_stack(bench(STACK, gated), members)
    assert attribution["signals"] == ["sentinel_suffix", "red_flag_fired", "request_gate_passed"]
    assert attribution["sets"]["harmbench"]["in_stack"]["refused"]["request_gate_passed"] == 1  # h3 (h4 below it)
    assert attribution["sets"]["harmbench"]["lost"]["any"]["request_gate_passed"] == 1  # h1 passed, h2 did not
    assert "passed the gate" in attribution_table(attribution)


def test_mixed_sets_split_by_label_in_suite_order_and_keep_their_footnote():
    sets = attribute_stack(*scenario())["sets"]
    assert list(sets) == ["harmbench", "benign-heldout", "own-test/harmful", "own-test/benign"]
    assert [entry["footnote"] for entry in sets.values()] == [False, False, True, True]
    assert sets["own-test/harmful"]["lost"]["by_member"] == {
        SENTINEL: {"n": 1, "sentinel_suffix": 1, "red_flag_fired": 0, "request_gate_passed": None,
                   "examples": [ROWS[9][2]]},
        RED_FLAG: {"n": 0, "sentinel_suffix": 0, "red_flag_fired": 0, "request_gate_passed": None, "examples": []}}


def test_every_judges_negative_verdict_counts_as_held_back():
    rows = [("harmbench", "harmful", f"h{i}", verdict, {}) for i, verdict in enumerate(["safe", "harmful", "toxic"])]
    member = bench(RED_FLAG, [(*row[:3], "safe", {}) for row in rows])
    harmbench = attribute_stack(bench(RED_FLAG, rows), [member])["sets"]["harmbench"]
    assert harmbench["attack_success"] == {"stack": 2, "members": {RED_FLAG: 0}}
    assert harmbench["lost"]["any"]["n"] == 2


def test_examples_are_at_most_five_cut_to_a_hundred_characters():
    rows = [("harmbench", "harmful", request, C, R, R, "", False)
            for request in [LONG, *(f"request {i}" for i in range(6))]]
    examples = attribute_stack(*scenario(rows))["sets"]["harmbench"]["lost"]["any"]["examples"]
    assert len(LONG) > 100
    assert examples == [LONG[:99] + "…", "request 0", "request 1", "request 2", "request 3"]
    assert len(examples[0]) == 100


def test_repeated_rows_pair_up_in_order():
    request = "the same request twice"
    stack = bench(RED_FLAG, [("harmbench", "harmful", request, C, {}), ("harmbench", "harmful", request, R, {})])
    member = bench(RED_FLAG, [("harmbench", "harmful", request, R, {}), ("harmbench", "harmful", request, C, {})])
    harmbench = attribute_stack(stack, [member])["sets"]["harmbench"]
    assert (harmbench["lost"]["any"]["n"], harmbench["gained"]["n"]) == (1, 1)


@pytest.mark.parametrize("setting, value, flag_name", [("max_new_tokens", 32, "--max-new-tokens"),
                                                       ("limit", 5, "--limit"), ("judge", "RefusalJudge", "--judge")])
def test_runs_with_different_settings_do_not_compare(setting, value, flag_name):
    stack, members = scenario(**{setting: value})
    with pytest.raises(ValueError, match=rf"{SENTINEL} alone was benched with {setting} .* the stack with "
                                         rf"{value!r}; bench both with the same {flag_name}"):
        attribute_stack(stack, members)


def test_records_that_do_not_pair_up_are_refused():
    stack, (sentinel, red_flag) = scenario()
    red_flag["records"] = red_flag["records"][1:]
    with pytest.raises(ValueError, match=r"do not pair up .*: 1 of the stack's have no match in red-flag:default's "
                                         r"and 0 of red-flag:default's none in the stack's; first unmatched: "
                                         r"harmbench: 'h1"):
        attribute_stack(stack, [sentinel, red_flag])
    red_flag["records"] = [{**record, "prompt": "rewritten by an attacker"} for record in scenario()[1][1]["records"]]
    with pytest.raises(ValueError, match="11 of the stack's have no match .* and 11 of red-flag:default's none"):
        attribute_stack(stack, [sentinel, red_flag])


def test_a_member_outside_the_stack_or_given_twice_is_refused():
    stack, (sentinel, _) = scenario()
    mart = bench("mart:default", [row[:4] + ({},) for row in ROWS])
    with pytest.raises(ValueError, match=r"mart:default is not part of the stack sentinel:default\+red-flag:default"):
        attribute_stack(stack, [sentinel, mart])
    with pytest.raises(ValueError, match="sentinel:default is given more than once"):
        attribute_stack(stack, [sentinel, sentinel])
    with pytest.raises(ValueError, match="at least one layer"):
        attribute_stack(stack, [])


def test_table_shows_counts_signals_and_examples():
    table = attribution_table(attribute_stack(*scenario()))
    assert re.search(r"\nharmbench\s+5\s+3 \(60\.0%\)\s+4 \(80\.0%\)\s+2 \(40\.0%\)\s+red-flag:default\s+2\s+1\n",
                     table)
    assert re.search(r"\nbenign-heldout\s+4\s+1 \(25\.0%\)\s+3 \(75\.0%\)\s+2 \(50\.0%\)\s+sentinel:default\s+2\s+1\n",
                     table)
    assert "harmbench: the stack let through 2 of 5 harmful requests that a layer alone refused" in table
    assert "red-flag:default alone refused 2; within the stack: sentinel suffix on 1/2, flag fired on 1/2" in table
    assert "every layer alone answered 1 (interaction); within the stack: sentinel suffix on 0/1, flag fired on " \
           "1/1" in table
    assert f"e.g. {ROWS[5][2]!r}" in table


def test_cli_prints_the_table_and_writes_the_json(tmp_path, capsys):
    stack, members = scenario()
    paths = []
    for name, result in zip(["stack", "sentinel", "red-flag"], [stack, *members]):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(result))
    output = tmp_path / "out" / "attribution.json"
    assert main(["bench", "--attribute", *map(str, paths), "--attribution-output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"Stack {STACK} against its layers alone ({SENTINEL}, {RED_FLAG})")
    assert "red-flag:default alone refused 2; within the stack" in printed
    assert json.loads(output.read_text()) == attribute_stack(stack, members)

    members[1]["summary"]["settings"]["max_new_tokens"] = 32
    paths[2].write_text(json.dumps(members[1]))
    assert main(["bench", "--attribute", *map(str, paths)]) == 2
    assert "red-flag:default alone was benched with max_new_tokens 32" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--compare", "x.json"], "--attribute and --compare/--plot are separate reports"),
    (["--defense", "red-flag:default"], "--attribute reads finished bench results, so --defense has nothing to do"),
])
def test_cli_attribute_goes_alone(extra, message):
    with pytest.raises(SystemExit, match=message):
        main(["bench", "--attribute", "stack.json", "layer.json", *extra])


def test_cli_attribute_needs_a_stack_and_a_member_and_its_output_needs_it():
    with pytest.raises(SystemExit, match="--attribute needs the stack's bench JSON, then one bench JSON per layer"):
        main(["bench", "--attribute", "stack.json"])
    # --limit 0 fails before any model loads, should the check ever be missing.
    with pytest.raises(SystemExit, match="--attribution-output goes with --attribute"):
        main(["bench", "--attribution-output", "a.json", "--limit", "0"])


def test_bench_compare_pairs_each_run_with_the_first_set_by_set():
    from hf_sentinel.evaluation.bench import headline
    from hf_sentinel.evaluation.report import bench_compare_table

    stack, (sentinel, red_flag) = scenario()
    other_limit = scenario(limit=2)[0]
    for result in (stack, sentinel, red_flag, other_limit):
        result["summary"].update(headline=headline(result["summary"]["sets"]), wall_seconds=1.0)
    table = bench_compare_table([red_flag, sentinel, other_limit], ["flag", "sentinel", "other"])
    lines = table.splitlines()
    paired = lines[next(i for i, line in enumerate(lines) if line.startswith("only this / only flag")) + 1:]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in paired)}
    # harmbench: the sentinel alone let h2, h4 through, which the flag refused; the flag let nothing through that
    # the sentinel refused (h1 both refused). Benign: the sentinel answered b2, the flag answered nothing more.
    # A run with another --limit does not pair: "-".
    assert rows["harmbench"] == ["2 / 0, p = 0.25", "-"]
    assert rows["benign-heldout"] == ["1 / 0, p = 0.50", "-"]
    assert rows["own-test/harmful"] == ["0 / 1, p = 0.50", "-"]
    assert "only this" not in bench_compare_table([red_flag, other_limit], ["flag", "other"])

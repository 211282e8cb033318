"""Bad input gets a clear error, before any model loads where it can, and nothing half-written.

CLI errors go through ``hf_sentinel.cli.main``: exit code 2 and ``hf-sentinel <command>: error: <message>``.
"""

import json
import re

import pytest
from peft import LoraConfig, get_peft_model

import hf_sentinel
from hf_sentinel.cli import main
from hf_sentinel.data import load_prompts
from hf_sentinel.defaults import PRETRAINED_DIR, tiny_model, tiny_tokenizer
from hf_sentinel.defenses import parse_defense
from hf_sentinel.loading import artifact_kind, looks_like_path
from hf_sentinel.red_flag.modeling import add_red_flag_token, vocabulary_fingerprint
from hf_sentinel.red_flag.settings import RedFlagSettings
from hf_sentinel.sentinel import SentinelForCausalLM

DRO, MART = PRETRAINED_DIR / "dro-smollm2", PRETRAINED_DIR / "mart-smollm2"
RED_FLAG, SENTINEL = PRETRAINED_DIR / "red-flag-smollm2", PRETRAINED_DIR / "sentinel-smollm2"


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Hello there", "How do I bake bread?"]))
    return path


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if the CLI gets as far as loading a target or serving."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was rejected")

    monkeypatch.setattr("hf_sentinel.evaluation.load_target", loaded)
    monkeypatch.setattr("hf_sentinel.server.serve", loaded)


def _error(capsys, command: str) -> str:
    """The one error line the CLI printed (progress bars share stderr; splitlines also splits at their \\r)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"hf-sentinel {command}: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# ------------------------------------------------------------------------------------------------ --limit
@pytest.mark.parametrize("limit", ["0", "-3"])
def test_eval_limit_below_one_is_rejected_before_anything_loads(limit, prompts, no_model_loads, capsys):
    assert main(["eval", "--prompts", str(prompts), "--limit", limit]) == 2
    assert f"--limit must be at least 1 (the number of prompts to evaluate), got {limit}" in _error(capsys, "eval")


def test_demo_negative_limit_is_rejected_before_the_model_loads(tmp_path, no_model_loads, capsys):
    assert main(["demo", "--limit", "-1", "--output-dir", str(tmp_path / "demo")]) == 2
    assert "--limit must be a number of prompts per set (0 for the whole split), got -1" in _error(capsys, "demo")
    assert not (tmp_path / "demo").exists()


def test_load_prompts_rejects_a_limit_below_one():
    with pytest.raises(ValueError, match=r"limit must be at least 1 \(or None for every prompt\), got 0"):
        load_prompts("harmful:test", limit=0)


# ------------------------------------------------------------------------------------------------ --target
@pytest.mark.parametrize("target, message", [
    ("./nope", r"Target \./nope: .*/nope does not exist\. Give the folder of a saved model"),
    ("outputs/no/such-run", r"Target outputs/no/such-run: .*does not exist"),
    ("~/no-such-hf-sentinel-target", r"Target ~/no-such-hf-sentinel-target: .*does not exist"),
    ("nobody/no-such-model", r"neither an existing folder nor a Hub model id reachable offline .*not in the local Hub "
                             r"cache"),
])
def test_eval_target_that_cannot_load_is_rejected_before_defenses_load(target, message, prompts, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("hf_sentinel.hub_access.hub_reachable", lambda: False)
    monkeypatch.setattr("hf_sentinel.sentinel.SentinelDefense.from_spec", lambda *a, **k: pytest.fail("loaded"))
    assert main(["eval", "--prompts", str(prompts), "--target", target, "--defense", "sentinel:default"]) == 2
    assert re.search(message, _error(capsys, "eval"))


def test_target_that_is_a_file_or_an_adapter_is_rejected(tmp_path, prompts, no_model_loads, capsys):
    assert main(["eval", "--prompts", str(prompts), "--target", str(prompts)]) == 2
    assert f"{prompts} is a file, not a folder" in _error(capsys, "eval")
    assert main(["eval", "--prompts", str(prompts), "--target", str(MART)]) == 2
    err = _error(capsys, "eval")
    assert "is a MART adapter" in err and "not a model" in err and f"--defense mart:{MART}" in err
    assert main(["eval", "--prompts", str(prompts), "--target", str(tmp_path)]) == 2
    assert "holds no model (no config.json)" in _error(capsys, "eval")


def test_serve_rejects_bad_limits_and_targets_before_loading(no_model_loads, capsys):
    assert main(["serve", "--max-prompt-tokens", "0"]) == 2
    assert "max_prompt_tokens (--max-prompt-tokens) must be at least 1, got 0" in _error(capsys, "serve")
    assert main(["serve", "--max-messages", "-1"]) == 2
    assert "max_messages (--max-messages) must be at least 1, got -1" in _error(capsys, "serve")
    assert main(["serve", "--target", "/no/such/model"]) == 2
    assert "/no/such/model does not exist" in _error(capsys, "serve")
    assert main(["serve", "--max-batch-size", "0"]) == 2
    assert "max_batch_size (--max-batch-size) must be at least 1 (1: one request at a time), got 0" in _error(
        capsys, "serve")
    assert main(["serve", "--batch-wait-ms", "-5"]) == 2
    assert "batch_wait_ms (--batch-wait-ms) must be a number of milliseconds >= 0, got -5.0" in _error(capsys, "serve")
    assert main(["serve", "--api-key", " "]) == 2
    assert "--api-key is empty; give a non-empty key" in _error(capsys, "serve")


def test_serve_passes_its_settings_to_the_server_and_warns_when_open_without_a_key(tiny_llama_dir, monkeypatch,
                                                                                  capsys):
    calls = {}
    monkeypatch.setattr("hf_sentinel.server.serve", lambda *args, **kwargs: calls.update(kwargs))
    monkeypatch.delenv("HF_SENTINEL_API_KEY", raising=False)
    assert main(["serve", "--target", str(tiny_llama_dir), "--max-prompt-tokens", "100", "--max-messages", "5",
                 "--max-batch-size", "8", "--batch-wait-ms", "2.5", "--shutdown-timeout", "9"]) == 0
    assert calls["max_prompt_tokens"] == 100 and calls["max_messages"] == 5 and calls["api_keys"] == []
    assert (calls["max_batch_size"], calls["batch_wait_ms"], calls["shutdown_timeout"]) == (8, 2.5, 9)
    assert "warning" not in capsys.readouterr().err  # loopback: no key needed
    assert main(["serve", "--target", str(tiny_llama_dir), "--host", "0.0.0.0"]) == 0
    assert "warning: serving on 0.0.0.0 without an API key" in capsys.readouterr().err
    monkeypatch.setenv("HF_SENTINEL_API_KEY", "from-env")
    assert main(["serve", "--target", str(tiny_llama_dir), "--host", "0.0.0.0"]) == 0
    assert calls["api_keys"] == ["from-env"] and "warning" not in capsys.readouterr().err
    assert main(["serve", "--target", str(tiny_llama_dir), "--api-key", "a", "--api-key", "b"]) == 0
    assert calls["api_keys"] == ["a", "b"]  # the flag wins over the environment


# ------------------------------------------------------------------------------------------------ --output
def test_eval_output_that_is_a_folder_is_rejected_before_the_run(prompts, tmp_path, no_model_loads, capsys):
    assert main(["eval", "--prompts", str(prompts), "--output", str(tmp_path)]) == 2
    assert f"--output {tmp_path} is a folder; give a file path" in _error(capsys, "eval")
    assert main(["eval", "--prompts", str(prompts), "--output", str(prompts / "result.json")]) == 2
    assert f"{prompts} is a file, so no folder can be made there" in _error(capsys, "eval")


# ------------------------------------------------------------------------------------------------ artifact kinds
@pytest.fixture(scope="module")
def red_team(tmp_path_factory):
    """A LoRA adapter whose model card says it is the Stackelberg red team."""
    folder = tmp_path_factory.mktemp("red_team")
    get_peft_model(tiny_model()[0], LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    (folder / "README.md").write_text("---\ntags:\n- red-teaming\n- lora\n---\n\n# Red team\n")
    return folder


def test_artifact_kind_reads_the_marker_files(tiny_llama_dir, red_team, tmp_path):
    assert artifact_kind(DRO) == "dro" and artifact_kind(MART) == "mart"
    assert artifact_kind(RED_FLAG) == "red-flag" and artifact_kind(SENTINEL) == "sentinel"
    assert artifact_kind(SENTINEL / "sentinel") == "lora"  # the adapter inside a saved sentinel, no model card
    assert artifact_kind(tiny_llama_dir) == "model" and artifact_kind(red_team) == "red-team"
    assert artifact_kind(tmp_path) is None
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    assert artifact_kind(tmp_path) == "IA3 adapter"
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json is not valid JSON.*re-save or re-download"):
        artifact_kind(tmp_path)


def test_path_like_strings_are_never_hub_ids(tmp_path, prompts):
    assert all(map(looks_like_path, ["./run", "../run", "/tmp/x", "~/x", "outputs/mart/round-1", str(prompts)]))
    assert not any(map(looks_like_path, ["org/name", "default", "nope"]))


@pytest.mark.parametrize("method, folder, found, expected, fix", [
    ("sentinel", DRO, "a DRO safety prompt", "a sentinel", "dro"),
    ("red-flag", DRO, "a DRO safety prompt", "a red-flag folder", "dro"),
    ("mart", DRO, "a DRO safety prompt", "a MART target adapter", "dro"),
    ("dro", RED_FLAG, "a red-flag folder", "a DRO safety prompt", "red-flag"),
    ("mart", RED_FLAG, "a red-flag folder", "a MART target adapter", "red-flag"),
    ("sentinel", RED_FLAG, "a red-flag folder", "a sentinel", "red-flag"),
    ("dro", SENTINEL, "a saved sentinel", "a DRO safety prompt", "sentinel"),
    ("mart", SENTINEL, "a saved sentinel", "a MART target adapter", "sentinel"),
    ("red-flag", SENTINEL, "a saved sentinel", "a red-flag folder", "sentinel"),
    ("sentinel", MART, "a MART adapter", "a sentinel", "mart"),
    ("dro", MART, "a MART adapter", "a DRO safety prompt", "mart"),
    ("red-flag", MART, "a MART adapter", "a red-flag folder", "mart"),
])
def test_an_artifact_of_another_kind_names_what_it_is_and_what_to_pass(method, folder, found, expected, fix):
    with pytest.raises(ValueError) as error:
        parse_defense(f"{method}:{folder}")
    message = str(error.value)
    assert message.startswith(f"{method}:{folder} is {found}")
    assert f", not {expected}" in message and f"Use it as --defense {fix}:{folder}." in message


def test_other_wrong_folders_for_a_defense(tiny_llama_dir, red_team):
    with pytest.raises(ValueError, match=r"is a full model \(config.json \+ weights\), not a MART target adapter.*"
                                         r"Give a full model as --target"):
        parse_defense(f"mart:{tiny_llama_dir}")
    with pytest.raises(ValueError, match="is a red-team adapter.*not a sentinel.*use the `sentinel` folder"):
        parse_defense(f"sentinel:{red_team}")
    with pytest.raises(ValueError, match="is a plain PEFT LoRA adapter, not a red-flag folder.*mart:.*sentinel:"):
        parse_defense(f"red-flag:{SENTINEL / 'sentinel'}")


def test_wrong_kind_through_the_cli(prompts, no_model_loads, capsys):
    assert main(["eval", "--prompts", str(prompts), "--defense", f"mart:{DRO}"]) == 2
    err = _error(capsys, "eval")
    assert f"mart:{DRO} is a DRO safety prompt" in err


@pytest.mark.parametrize("spec, message", [
    ("dro:./outputs/my run", r"dro:\./outputs/my run: no such folder \(.*outputs/my run does not exist\)"),
    ("dro:/tmp/no such hf-sentinel dir/dro", "no such folder"),
    ("mart:./nope", r"mart:\./nope: no such local folder \(.*/nope does not exist\)"),
    ("red-flag:outputs/no/such-run", "no such local folder"),
    ("sentinel:./no such sentinel", "no such local folder"),
])
def test_missing_artifact_paths_through_the_cli(spec, message, prompts, tmp_path, monkeypatch, no_model_loads, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--prompts", str(prompts), "--defense", spec]) == 2
    assert re.search(message, _error(capsys, "eval"))


# ------------------------------------------------------------------------------------------------ tokenizers
@pytest.fixture(scope="module")
def red_flag_folder(tmp_path_factory):
    """A red-flag folder for the tiny Llama (an untrained adapter: these tests check loading, not flagging)."""
    folder = tmp_path_factory.mktemp("red-flag")
    model, tokenizer = tiny_model()
    rows, vocabulary = model.get_input_embeddings().num_embeddings, vocabulary_fingerprint(tokenizer)
    add_red_flag_token(model, tokenizer)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    RedFlagSettings(base_embedding_rows=rows, base_vocabulary=vocabulary, base_model="tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def other_target_dir(tmp_path_factory):
    """A tiny Llama with another tokenizer (300 tokens instead of 320)."""
    folder = tmp_path_factory.mktemp("other-target")
    tokenizer = tiny_tokenizer(vocab_size=300)
    model, _ = tiny_model(tokenizer=tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_red_flag_onto_a_target_with_another_tokenizer_fails_clearly_and_writes_nothing(
        red_flag_folder, other_target_dir, tiny_llama_dir, prompts, tmp_path, capsys):
    out = tmp_path / "results" / "red-flag.json"
    args = ["eval", "--prompts", str(prompts), "--defense", f"red-flag:{red_flag_folder}", "--max-new-tokens", "2",
            "--output", str(out)]
    assert main([*args, "--target", str(other_target_dir)]) == 2
    err = _error(capsys, "eval")
    assert "was trained on a model with 320 embedding rows (tiny); this model has 300" in err
    assert "Load the adapter onto the model it was trained for" in err
    assert not out.exists() and not list(tmp_path.rglob("*.partial"))
    # The same folder on the target it was made for runs, and its results are written whole.
    assert main([*args, "--target", str(tiny_llama_dir)]) == 0
    assert json.loads(out.read_text())["summary"]["n"] == 2 and not list(tmp_path.rglob("*.partial"))


@pytest.fixture(scope="module")
def saved_sentinel(tmp_path_factory):
    """A saved LoRA sentinel (config.json + sentinel/ + the tiny Llama's tokenizer) for the tiny Llama."""
    tmp = tmp_path_factory.mktemp("sentinel")
    target, tokenizer = tiny_model()
    get_peft_model(tiny_model()[0], LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp / "lora")
    guarded = SentinelForCausalLM.from_pretrained(tmp / "lora", target=target, target_tokenizer=tokenizer,
                                                  max_sentinel_tokens=3)
    guarded.save_pretrained(tmp / "saved")
    return tmp / "saved"


def test_sentinel_onto_a_target_with_another_tokenizer_fails_clearly(saved_sentinel):
    other_tokenizer = tiny_tokenizer(vocab_size=300)
    other_target, _ = tiny_model(tokenizer=other_tokenizer)
    with pytest.raises(ValueError, match=r"The sentinel in .* was trained with the tokenizer saved next to it, and "
                                         r"this target's tokenizer .* differs from it "
                                         r"\(300 tokens, the saved one 320\)"):
        SentinelForCausalLM.from_pretrained(saved_sentinel, target=other_target, target_tokenizer=other_tokenizer)
    assert not hasattr(other_target, "peft_config")  # the caller's model is left as it was
    with pytest.raises(ValueError, match="differs from it"):  # the pipeline path composes the same way
        hf_sentinel.pipeline("text-generation", model=other_target, tokenizer=other_tokenizer,
                             sentinel=str(saved_sentinel))
    target, tokenizer = tiny_model()
    guarded = SentinelForCausalLM.from_pretrained(saved_sentinel, target=target, target_tokenizer=tokenizer)
    assert len(guarded.refine([[{"role": "user", "content": "Hello"}]])[1]) == 1

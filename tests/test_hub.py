"""Model cards of every artifact type (one renderer, templates in model_cards/) and pushing to the Hub, with the Hub
stubbed at its HTTP boundary (tests/fake_hub.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import huggingface_hub
import pytest
import torch
from fake_hub import FakeHub
from huggingface_hub import EvalResult, HfApi, ModelCard
from peft import LoraConfig, get_peft_model
from spaces_support import REPO, tiny_dro_dir, tiny_red_flag_dir, tiny_sentinel_dir, tiny_target_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_sentinel.defaults import DEFAULT_TARGET_NAME, PRETRAINED_DIR
from hf_sentinel.hub import (
    CARD_KINDS,
    EMBEDDED_TARGET_NOTE,
    REPO_PLACEHOLDER,
    push_folder,
    render_model_card,
    template_dirs,
    write_model_card,
)

RESULT = EvalResult(task_type="text-generation", dataset_type="hf-sentinel/harmful", dataset_name="harmful:test",
                    metric_type="attack_success_rate", metric_value=0.25)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return tiny_target_dir(tmp_path_factory.mktemp("hub") / "target")


def _lora_adapter(folder: Path, target: Path) -> Path:
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(target),
                           LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


def sentinel_card(folder, target):
    from hf_sentinel.sentinel import SentinelForCausalLM

    model, tokenizer = AutoModelForCausalLM.from_pretrained(target), AutoTokenizer.from_pretrained(target)
    sentinel = SentinelForCausalLM.from_pretrained(tiny_sentinel_dir(folder.parent / "adapter", target), target=model,
                                                   target_tokenizer=tokenizer, max_sentinel_tokens=4)
    sentinel.save_pretrained(folder)  # writes the card through hub.write_sentinel_card
    return folder


def red_team_card(folder, target):
    # The call StackelbergPPOTrainer.save_model makes for its red-team adapter.
    write_model_card(_lora_adapter(folder, target), kind="red-team", title="Red-team model (Stackelberg PPO)",
                     summary="LoRA adapter trained to write prompts.", base_model=str(target),
                     tags=["red-teaming", "peft", "lora"], eval_results=[RESULT])
    return folder


def red_flag_card(folder, target):
    from hf_sentinel.red_flag.card import update_model_card_results

    folder = tiny_red_flag_dir(folder, target)  # RedFlagTrainer.save_model writes the card
    result = {"summary": {"prompts": "harmful:test", "n": 4, "attack_success_rate": 0.25, "by_shape": {}}}
    update_model_card_results(folder, [{"decoding": "greedy", "prompts": "harmful:test", "defense": "red-flag",
                                        "n": 4, "rate": result["summary"]["attack_success_rate"], "by_shape": {}}])
    return folder


def dro_card(folder, target):
    from hf_sentinel.dro import DROConfig, DROSafetyPrompt
    from hf_sentinel.dro.card import write_dro_card

    folder = tiny_dro_dir(folder, target)
    summary = {"n": 4, "attack_success_rate": 0.25, "by_shape": {}}
    write_dro_card(folder, DROSafetyPrompt.from_pretrained(folder), DROConfig(), {"base_model": str(target)},
                   eval_results={"harmful:test": {"summary": summary}})
    return folder


def mart_card(folder, target, role="target"):
    from hf_sentinel.mart import MARTConfig
    from hf_sentinel.mart.card import write_mart_card

    rounds = [{"round": 0, "violation_rate": 0.9, "benign_answer_rate": 0.95},
              {"round": 1, "violation_rate": 0.25, "benign_answer_rate": 0.9}]
    write_mart_card(_lora_adapter(folder, target), role, rounds, MARTConfig(), str(target))
    return folder


WRITERS = {"sentinel": sentinel_card, "red-team": red_team_card, "red-flag": red_flag_card, "dro": dro_card,
           "mart-round": mart_card}
TAGS = {"sentinel": "sentinel", "red-team": "red-teaming", "red-flag": "red-flag-token", "dro": "dro",
        "mart-round": "mart"}


def usage_snippets(card_text: str) -> list[str]:
    usage = card_text.split("## Usage", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", usage, flags=re.S)


@pytest.mark.parametrize("kind", sorted(CARD_KINDS))
def test_every_artifact_type_has_a_card_whose_yaml_parses_back_and_whose_usage_runs(kind, target, tmp_path):
    assert set(WRITERS) == set(CARD_KINDS)
    folder = WRITERS[kind](tmp_path / kind, target)
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "hf-sentinel" and data.pipeline_tag == "text-generation"
    assert data.base_model == str(target)
    assert {"hf-sentinel", "safety", TAGS[kind]} <= set(data.tags)
    if kind != "sentinel":  # the sentinel's eval results come from its trainer's evaluation
        assert any(r.metric_value == 0.25 for r in data.eval_results)  # model-index round trip
    template = (template_dirs()[0] / CARD_KINDS[kind]).read_text()
    assert template.splitlines()[-1].strip() in card.text  # the body is the kind's template

    snippets = usage_snippets(card.text)
    assert snippets and all(REPO_PLACEHOLDER in s for s in snippets)
    for snippet in snippets:  # the usage snippet works, with the artifact's folder in place of the repo id
        exec(compile(snippet.replace(REPO_PLACEHOLDER, str(folder)), f"<{kind} usage>", "exec"), {})


def test_mart_red_team_card_shows_how_to_prompt_it(target, tmp_path):
    folder = mart_card(tmp_path / "red_team", target, role="red_team")
    text = ModelCard.load(folder / "README.md").text
    assert "MART red-team adapter" in text and ".format(prompt=" in text and "--defense mart:" not in text
    exec(usage_snippets(text)[0].replace(REPO_PLACEHOLDER, str(folder)), {})


@pytest.mark.parametrize("kind", sorted(CARD_KINDS))
def test_cards_for_the_embedded_target_say_which_weights_the_numbers_come_from(kind):
    def render(base_model):
        return render_model_card(kind, title="A title", summary="What it is.", base_model=base_model, tags=[]).text

    assert "Q4_1 GGUF" in EMBEDDED_TARGET_NOTE and "not the Hub's bf16 weights" in EMBEDDED_TARGET_NOTE
    assert f"What it is.\n\n{EMBEDDED_TARGET_NOTE}\n" in render(DEFAULT_TARGET_NAME)
    assert EMBEDDED_TARGET_NOTE not in render("org/another-model") and EMBEDDED_TARGET_NOTE not in render(None)


def test_shipped_cards_say_which_weights_the_numbers_come_from():
    folders = sorted(PRETRAINED_DIR.glob("*-smollm2"))
    assert [f.name for f in folders] == ["dro-smollm2", "mart-smollm2", "red-flag-smollm2", "red-team-smollm2",
                                       "sentinel-smollm2"]
    for folder in folders:
        card = ModelCard.load(folder / "README.md")
        assert card.data.base_model == DEFAULT_TARGET_NAME
        assert card.text.count(EMBEDDED_TARGET_NOTE) == 1, folder.name


def test_unknown_kind_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Unknown model card kind 'lora'"):
        write_model_card(tmp_path, kind="lora", title="t", summary="s", base_model=None, tags=[])


def test_templates_ship_with_the_wheel():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["data-files"]["share/hf-sentinel/model_cards"] == ["model_cards/*.md"]
    assert all((REPO / "model_cards" / name).is_file() for name in CARD_KINDS.values())
    assert any(str(p).endswith("share/hf-sentinel/model_cards") for p in template_dirs())


# ------------------------------------------------------------------------------------------------- pushing


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as fake:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.url)
        yield fake


def test_push_uploads_the_folder_and_its_card_with_the_repo_id(target, tmp_path, hub):
    folder = red_flag_card(tmp_path / "red-flag", target)
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.safetensors").write_bytes(b"local only")
    url = push_folder(folder, "you/red-flag-tiny", api=HfApi(endpoint=hub.url, token="hf_fake"))
    repo = hub.repos["you/red-flag-tiny"]
    assert url.startswith(f"{hub.url}/you/red-flag-tiny/commit/") and not hub.unexpected
    local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(repo["files"]) == local - {"checkpoint-2/optimizer.safetensors"}
    assert repo["files"]["adapter_model.safetensors"] == (folder / "adapter_model.safetensors").read_bytes()
    pushed = ModelCard(repo["files"]["README.md"].decode())
    assert pushed.data.library_name == "hf-sentinel" and pushed.data.eval_results[0].metric_value == 0.25
    assert 'red_flag="you/red-flag-tiny"' in pushed.text and REPO_PLACEHOLDER not in pushed.text
    assert REPO_PLACEHOLDER in (folder / "README.md").read_text()  # the local card is left as it was


def test_push_command(target, tmp_path, hub, capsys):
    from hf_sentinel.cli import main

    folder = dro_card(tmp_path / "dro", target)
    assert main(["push", str(folder), "you/dro-tiny", "--private", "--token", "hf_fake"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert hub.repos["you/dro-tiny"]["private"] is True
    assert set(hub.repos["you/dro-tiny"]["files"]) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}


def test_push_refuses_folders_without_a_card_or_with_pickles(target, tmp_path, hub):
    api = HfApi(endpoint=hub.url, token="hf_fake")
    bare = _lora_adapter(tmp_path / "bare", target)
    (bare / "README.md").unlink()  # PEFT's own stub card
    with pytest.raises(FileNotFoundError, match="has no model card"):
        push_folder(bare, "you/bare", api=api)
    folder = red_team_card(tmp_path / "red-team", target)
    (folder / "value_head.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickled files"):
        push_folder(folder, "you/red-team", api=api)
    assert not hub.repos  # nothing was created

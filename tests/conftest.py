import os

import pytest

# Tests never reach out to the Hub: loaders go straight to their local fallbacks.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_llama():
    from hf_sentinel.defaults import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from hf_sentinel.defaults import tiny_model

    return tiny_model("gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_llama, tmp_path_factory):
    """The tiny Llama saved as a local model folder (safetensors), as a user's --target PATH would be."""
    model, tokenizer = tiny_llama
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def default_target():
    """The embedded SmolLM2-135M-Instruct (integration tests)."""
    from hf_sentinel import load_default_target

    return load_default_target()

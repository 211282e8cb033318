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


SESSION_MODELS = ("default_target", "tiny_llama", "tiny_gpt2")


def _fingerprint(model, tokenizer) -> tuple:
    """What a test could leave changed on a shared model: injected modules (PEFT, LoRA), grown embeddings, merged
    or trained weights (a strided sample of every parameter catches a merged adapter in ~10 ms), hooks, the
    tokenizer's vocabulary."""
    import torch

    with torch.no_grad():
        sample = sum(float(p.reshape(-1)[::1021].sum(dtype=torch.float64)) for p in model.parameters())
    # transformers installs hooks of its own on the first output_hidden_states=True call, and keeps them
    hooks = sum(not getattr(hook, "__module__", "").startswith("transformers.") for m in model.modules()
                for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))
    return (tuple(type(m).__name__ for m in model.modules()), sum(p.numel() for p in model.parameters()), sample,
            hooks, hasattr(model, "peft_config"), len(tokenizer))


@pytest.fixture(autouse=True)
def _session_models_stay_unmodified(request):
    """Fails a test that leaves a session-wide model changed: every later test would run on the changed model."""
    names = [name for name in SESSION_MODELS if name in request.fixturenames]
    before = {name: _fingerprint(*request.getfixturevalue(name)) for name in names}
    yield
    changed = [name for name in names if _fingerprint(*request.getfixturevalue(name)) != before[name]]
    assert not changed, f"the test modified the session-wide {changed}: deep-copy a model before changing it"

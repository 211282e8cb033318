"""The red-flag token in a model: adding it, and loading a trained red-flag folder onto its target.

A trained red-flag folder holds, in Hub format::

    adapter_config.json  adapter_model.safetensors   PEFT LoRA adapter + the trained <rf> embedding row
    tokenizer.json  tokenizer_config.json ...        the target's tokenizer with <rf> added
    red_flag_config.json                             token, threshold, action, smoothing window, vocab check
                                                     (:class:`~hf_sentinel.red_flag.settings.RedFlagSettings`)
    training_args.json  training_summary.json        the RedFlagConfig and what the run did, as JSON
    README.md                                        model card with the measured results
"""

from __future__ import annotations

import hashlib
import json

import torch

from .settings import RedFlagSettings


def add_red_flag_token(model, tokenizer, token: str = "<rf>", pad_to_multiple_of: int = 64) -> int:
    """Add ``token`` to ``tokenizer`` (as a special token) and a row for it to ``model``; return its id.

    The embedding matrix (and an untied LM head) grows to a multiple of ``pad_to_multiple_of`` rows, because
    matrix products on a vocabulary of, e.g., 49,153 rows are markedly slower than on 49,216. The new `<rf>` row
    starts as the mean of the existing rows (so p(<rf>) starts small); the padding rows are zero and are put in
    ``model.generation_config.suppress_tokens``, so that ``generate()`` can never produce them.

    >>> from hf_sentinel.defaults import tiny_model
    >>> model, tokenizer = tiny_model()
    >>> red_flag_id = add_red_flag_token(model, tokenizer)
    >>> red_flag_id == len(tokenizer) - 1, model.get_input_embeddings().num_embeddings % 64
    (True, 0)
    """
    if pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}.")
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([token], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(token)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        old_rows = rows
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
        with torch.no_grad():
            for matrix in _embedding_matrices(model):
                matrix[token_id] = matrix[:old_rows].mean(dim=0)
                matrix[len(tokenizer):] = 0.0
    padding = list(range(len(tokenizer), model.get_input_embeddings().num_embeddings))
    if padding:
        suppressed = set(model.generation_config.suppress_tokens or [])
        model.generation_config.suppress_tokens = sorted(suppressed | set(padding))
    return token_id


def _embedding_matrices(model) -> list[torch.Tensor]:
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    return matrices


def vocabulary_fingerprint(tokenizer, exclude: tuple[str, ...] = ()) -> str:
    """A short hash of a tokenizer's token → id map (minus ``exclude``): equal fingerprints, same vocabulary."""
    vocab = sorted((tok, idx) for tok, idx in tokenizer.get_vocab().items() if tok not in exclude)
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def check_tokenizer_matches(settings: RedFlagSettings, tokenizer, path) -> None:
    """Raise if ``tokenizer`` is not the vocabulary the red-flag adapter at ``path`` was trained with."""
    vocabulary = vocabulary_fingerprint(tokenizer, exclude=(settings.token,))
    if settings.base_vocabulary and vocabulary != settings.base_vocabulary:
        raise ValueError(
            f"The red-flag adapter at {path} was trained for another tokenizer (base model "
            f"{settings.base_model or 'unknown'}): its vocabulary differs from this target's "
            f"({getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}, {len(tokenizer)} tokens). "
            f"Use the target it was trained on, or train a red-flag adapter for this target."
        )


#: The red-flag adapter's name in a PEFT model that holds other adapters beside it (:func:`add_red_flag_adapter`).
RED_FLAG_ADAPTER = "red_flag"


def check_red_flag_target(model, path, tokenizer=None):
    """Check, changing nothing, that the red-flag folder at ``path`` was trained for ``model`` (its saved vocabulary
    size, and ``tokenizer``'s vocabulary when given); return its :class:`RedFlagSettings` and its tokenizer (the
    target's plus `<rf>`)."""
    from transformers import AutoTokenizer

    settings = RedFlagSettings.from_pretrained(path)
    red_flag_tokenizer = AutoTokenizer.from_pretrained(path)
    if settings.token not in red_flag_tokenizer.get_vocab():
        raise ValueError(f"The tokenizer saved at {path} has no {settings.token!r} token; the folder is incomplete "
                         f"or not a red-flag artifact. Retrain or re-save it with RedFlagTrainer.save_model.")
    check_tokenizer_matches(settings, red_flag_tokenizer, path)
    if tokenizer is not None:
        check_tokenizer_matches(settings, tokenizer, path)
    rows = model.get_input_embeddings().num_embeddings
    if settings.base_embedding_rows and rows != settings.base_embedding_rows:
        raise ValueError(
            f"The red-flag adapter at {path} was trained on a model with {settings.base_embedding_rows} embedding "
            f"rows ({settings.base_model or 'unknown base'}); this model has {rows}. Load the adapter onto the "
            f"model it was trained for (a model that already carries <rf> does not need it again)."
        )
    return settings, red_flag_tokenizer


def load_red_flag_model(model, path, tokenizer=None, merge: bool = True):
    """Apply a trained red-flag folder to ``model`` (changed in place); return ``(model, red_flag_tokenizer)``.

    ``model`` must be the target the adapter was trained on (:func:`check_red_flag_target`). The vocabulary grows by
    `<rf>` (padded as in :func:`add_red_flag_token`), the PEFT adapter is loaded from ``path``, and with
    ``merge=True`` (default) it is merged into the weights so that generation costs what it cost before. Use the
    returned tokenizer (it knows `<rf>`) with :meth:`RedFlagLogitsProcessor.from_pretrained`.
    """
    from peft import PeftModel

    settings, red_flag_tokenizer = check_red_flag_target(model, path, tokenizer)
    add_red_flag_token(model, red_flag_tokenizer, settings.token, pad_to_multiple_of=settings.pad_to_multiple_of)
    model = PeftModel.from_pretrained(model, str(path))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, red_flag_tokenizer


def add_red_flag_adapter(peft_model, path):
    """Load the red-flag folder at ``path`` into ``peft_model`` as one more adapter (named ``red_flag``), its LoRA
    unmerged, and make it the active one; return the red-flag tokenizer.

    This is how a red flag shares the target's weights with another adapter on them (a LoRA sentinel, which switches
    to its own adapter for its pass and back): one copy of the base serves both. The base's vocabulary grows by
    `<rf>` in place (:func:`add_red_flag_token`) and the trained `<rf>` row goes into the embedding matrix (and an
    untied output layer) itself: that row is new, so no other adapter reads it, and PEFT's own trainable-token layer
    would copy the whole matrix at every step. Adapter layers are switched on (a LoRA sentinel alone keeps them off),
    and the model computes what :func:`load_red_flag_model`'s merged one computes, up to the rounding of an unmerged
    LoRA (p(`<rf>`) within 1e-6 on the embedded target). Unmerged, the LoRA runs beside the base weights at every
    step: a red flag alone is merged instead (:class:`~hf_sentinel.red_flag.RedFlagDefense`).
    """
    from peft import PeftConfig
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    base = peft_model.get_base_model()
    settings, red_flag_tokenizer = check_red_flag_target(base, path)
    add_red_flag_token(base, red_flag_tokenizer, settings.token, pad_to_multiple_of=settings.pad_to_multiple_of)
    config = PeftConfig.from_pretrained(str(path))
    token_ids = config.trainable_token_indices
    config.trainable_token_indices, config.inference_mode = None, True
    weights = load_peft_weights(str(path), device=str(base.device))
    with torch.no_grad():
        for key in [key for key in weights if key.endswith(_TOKEN_ROWS)]:
            module = key.removeprefix("base_model.model.").removesuffix(_TOKEN_ROWS)
            matrix = base.get_submodule(module).weight
            matrix[_ids_of(token_ids, module)] = weights.pop(key).to(matrix.dtype)
    peft_model.add_adapter(RED_FLAG_ADAPTER, config)
    set_peft_model_state_dict(peft_model, weights, adapter_name=RED_FLAG_ADAPTER)
    peft_model.base_model.enable_adapter_layers()
    # inference_mode: PEFT would otherwise make the active adapter trainable.
    peft_model.set_adapter(RED_FLAG_ADAPTER, inference_mode=True)
    peft_model.eval()
    return red_flag_tokenizer


#: How PEFT saves trainable token rows: the rows themselves (``trainable_tokens_delta`` replaces them).
_TOKEN_ROWS = ".token_adapter.trainable_tokens_delta"


def _ids_of(token_ids, module: str) -> list[int]:
    """The token ids PEFT's ``trainable_token_indices`` trains in ``module``: a list (the input embedding's) or
    a dict by module name."""
    if not isinstance(token_ids, dict):
        return token_ids
    return next(ids for name, ids in token_ids.items() if module == name or module.endswith(f".{name}"))

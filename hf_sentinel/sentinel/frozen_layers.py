"""The layers below the sentinel's LoRA adapters never change: the warm start runs each sequence through them once.

With LoRA on the top layers only (``lora_layers``), the state a sequence enters the first adapted layer with is the
frozen base's, the same at every step. :class:`FrozenLayerCache` keeps it per token sequence, so a warm-start step runs
only the adapted layers on a sequence it has seen: on the embedded SmolLM2 with LoRA on the top 2 of 30 layers, an
epoch after the first costs about a tenth of one through the whole model (``docs/sentinel.md``). The result is the
same computation: :meth:`FrozenLayerCache.matches_full_pass` checks it on the first sequence, and a decoder that does
more to its input than its layers do (GPT-2 adds position embeddings, Gemma scales its embeddings) fails the check
and trains with full passes.
"""

from __future__ import annotations

import contextlib

import torch

from ..generation import positions_from_mask


class FrozenLayerCache:
    """States entering layer ``first_adapted`` of ``model`` (a PEFT model), one ``[tokens, hidden]`` tensor per token
    sequence, computed the first time a sequence is asked for.

    Example (a tiny random Llama, LoRA on its top layer):

    ```python
    >>> from peft import LoraConfig, get_peft_model
    >>> from hf_sentinel.defaults import tiny_model
    >>> base, _ = tiny_model()
    >>> model = get_peft_model(base, LoraConfig(target_modules=["q_proj"], layers_to_transform=[1]))
    >>> cache = FrozenLayerCache.for_model(model)
    >>> cache.first_adapted, cache.matches_full_pass([5, 6, 7], [8, 9])
    (1, True)
    >>> cache.logits([[5, 6, 7], [4, 5]], [[8, 9], [3]]).shape  # rows, response width, vocabulary
    torch.Size([2, 2, 320])

    ```
    """

    def __init__(self, model, first_adapted: int):
        self.model, self.first_adapted = model, first_adapted
        self.decoder = model.get_base_model().get_decoder()
        self._states: dict[tuple[int, ...], torch.Tensor] = {}

    @classmethod
    def for_model(cls, model, adapter: str | None = None) -> FrozenLayerCache | None:
        """A cache for ``adapter`` (default: the active one) where :func:`first_adapted_layer` finds one; else None."""
        first = first_adapted_layer(model, adapter)
        return None if first is None else cls(model, first)

    @torch.no_grad()
    def states(self, ids: list[int]) -> torch.Tensor:
        """The state ``ids`` enter the first adapted layer with (``[len(ids), hidden]``), computed alone (no padding,
        so a sequence's states do not depend on the batch it first came in: a resumed run gets the same ones)."""
        key = tuple(ids)
        if key not in self._states:
            captured = []
            last = self.decoder.layers[self.first_adapted - 1]
            hook = last.register_forward_hook(lambda _, __, out: captured.append(out[0] if isinstance(out, tuple)
                                                                                  else out))
            try:
                with only_layers(self.decoder, slice(0, self.first_adapted)):
                    self.decoder(input_ids=torch.tensor([ids], device=self.model.device), use_cache=False)
            finally:
                hook.remove()
            self._states[key] = captured[-1][0].detach()
        return self._states[key]

    def logits(self, queries: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        """Logits at the positions that predict each row's response tokens (``[rows, widest response, vocab]``; a
        shorter response's extra columns are padding), from the cached states and the adapted layers only. Laid out
        as the warm start's full pass: ``[padding][query][response][padding]``."""
        query_width, response_width = max(map(len, queries)), max(map(len, responses))
        width = query_width + response_width
        hidden = self.model.get_base_model().config.hidden_size
        rows, mask = [], torch.zeros(len(queries), width, dtype=torch.long, device=self.model.device)
        for index, (query, response) in enumerate(zip(queries, responses)):
            states = self.states(query + response)
            start = query_width - len(query)
            row = states.new_zeros(width, hidden)
            row[start:start + len(states)] = states
            mask[index, start:start + len(states)] = 1
            rows.append(row)
        keep = torch.arange(query_width - 1, query_width - 1 + response_width, device=mask.device)
        with only_layers(self.decoder, slice(self.first_adapted, None)):
            out = self.model(inputs_embeds=torch.stack(rows), attention_mask=mask,
                             position_ids=positions_from_mask(mask), use_cache=False, logits_to_keep=keep)
        return out.logits

    @torch.no_grad()
    def matches_full_pass(self, query: list[int], response: list[int], tolerance: float = 1e-4) -> bool:
        """Whether :meth:`logits` equals a pass through every layer on one sequence (within ``tolerance`` of the
        largest logit): False where the decoder does more to its input than its layers (position embeddings added,
        embeddings scaled), which the cached states would skip."""
        full = self.model(input_ids=torch.tensor([query + response], device=self.model.device), use_cache=False)
        full = full.logits[0, len(query) - 1:len(query) - 1 + len(response)]
        cached = self.logits([query], [response])[0]
        return bool((full - cached).abs().max() <= tolerance * full.abs().max().clamp(min=1.0))


@contextlib.contextmanager
def only_layers(decoder, layers: slice):
    """Within the block, ``decoder`` runs only ``layers`` of its layers (each keeps its ``layer_idx``, so a key/value
    cache gets their keys and values at their own places)."""
    everything = decoder.layers
    decoder.layers = torch.nn.ModuleList(everything[layers])
    try:
        yield
    finally:
        decoder.layers = everything


def first_adapted_layer(model, adapter: str | None = None) -> int | None:
    """The first decoder layer ``adapter`` (default: the active one) of the PEFT ``model`` acts on, where every
    weight of the adapter acts at or after it (LoRA on the top layers only, perhaps the LM head), it is not the first
    layer, and the decoder keeps its layers in ``layers``; else None (nothing below the adapter is the base's)."""
    adapter = adapter or model.active_adapter
    layers = model.peft_config[adapter].layers_to_transform
    decoder = model.get_base_model().get_decoder()
    if layers is None or not isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
        return None
    first = min([layers] if isinstance(layers, int) else layers)
    # Every weight of the adapter must act at or after the first adapted layer (not on the embeddings, which a
    # tied LM head shares).
    base = model.get_base_model()
    after = {id(p) for module in [*decoder.layers[first:], base.get_output_embeddings()] if module is not None
             for p in module.parameters()}
    before = {id(p) for module in [*decoder.layers[:first], base.get_input_embeddings()]
              for p in module.parameters()}
    adapted = [id(p) for name, p in model.named_parameters() if f".{adapter}." in name]
    return first if first > 0 and all(p in after and p not in before for p in adapted) else None

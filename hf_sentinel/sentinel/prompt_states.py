"""The target continues what the sentinel pass computed for each prompt: the layers below the sentinel's LoRA.

A LoRA sentinel on the top layers of the target's own weights (the shipped one: the top 2 of 30) reads each prompt
head (the conversation up to the end of the last user message) through layers that are the target's, unchanged.
The target then reads the same head again, followed by the suffix and the end of the turn. :class:`PromptStates`
keeps, for each head of the sentinel pass, the keys and values of the layers below the first adapted one and the
state the head enters that layer with; the target's batch then starts from a key/value cache of the heads (the
layers below from the sentinel pass, the layers from the first adapted one on run once more, adapter off, on the kept
states) and its prefill runs only the rest of each prompt. The same computation up to float rounding (the sentinel
pass's batch padded the heads differently); a row whose prompt does not start with a kept head (a later defense
rewrote it) leaves the batch to the full prefill.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import DynamicCache

from ..generation import computation_key, positions_from_mask
from .frozen_layers import only_layers


class PromptStates:
    """Per prompt head (its token ids), what the sentinel pass computed below layer ``first_adapted`` of ``model``
    (the target's model, whose decoder keeps its layers in ``layers``), for :meth:`continue_batch`.

    Example (a tiny random Llama whose top layer carries the sentinel's LoRA; the target answers the same with and
    without the kept states):

    ```python
    >>> from peft import LoraConfig, get_peft_model
    >>> from hf_sentinel.defaults import tiny_model
    >>> from hf_sentinel.generation import left_padded, positions_from_mask
    >>> target, _ = tiny_model()
    >>> sentinel = get_peft_model(target, LoraConfig(target_modules=["q_proj"], layers_to_transform=[1]))
    >>> states, heads, cache = PromptStates(target, first_adapted=1), [[5, 6, 7], [5, 8]], DynamicCache()
    >>> with states.recording(heads):  # the sentinel pass's prefill over the heads
    ...     batch = left_padded(heads, 0, "cpu")
    ...     _ = sentinel(**batch, position_ids=positions_from_mask(batch["attention_mask"]), past_key_values=cache)
    ...     states.record(cache, batch["attention_mask"])
    >>> batch = left_padded([[5, 6, 7, 9, 10], [5, 8, 11]], 0, "cpu")  # each head, then the rest of its prompt
    >>> with sentinel.disable_adapter():  # the target's pass
    ...     continued = states.continue_batch(target, batch)
    ...     cached = continued["past_key_values"].get_seq_length()  # the heads' columns: the prefill runs the rest
    ...     plain = target.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=0)[:, 5:]
    ...     fast = target.generate(**continued, max_new_tokens=3, do_sample=False, pad_token_id=0)[:, 5:]
    >>> cached, continued["input_ids"].shape[1], bool((plain == fast).all())
    (3, 5, True)

    ```
    """

    def __init__(self, model, first_adapted: int):
        self.model, self.first_adapted = model, first_adapted
        self.decoder = model.get_decoder()
        self.heads: dict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]] = {}
        self._lengths: set[int] = set()
        self._key = None
        self._captured: list[torch.Tensor] = []
        self._rows: list[list[int]] = []

    @contextlib.contextmanager
    def recording(self, heads: list[list[int]]):
        """Within the block, the sentinel pass runs ``heads`` left-padded (after their shared opening as one row,
        :func:`~hf_sentinel.sentinel.sampling.shared_opening`, or without one), then calls :meth:`record`: the
        states entering the first adapted layer are captured until then."""
        self._captured, self._rows = [], heads
        hook = self.decoder.layers[self.first_adapted].register_forward_pre_hook(
            lambda _, args, kwargs: self._captured.append((args[0] if args else kwargs["hidden_states"]).detach()),
            with_kwargs=True)
        self._hook = hook
        try:
            yield self
        finally:
            hook.remove()

    def record(self, cache: DynamicCache, attention_mask: torch.Tensor) -> None:
        """The heads' pass is done: keep each head's states from ``cache`` and the captured states
        (``[shared][padding][own]`` columns, as ``attention_mask`` lays them out), and stop capturing."""
        self._hook.remove()
        captured, rows = self._captured, len(self._rows)
        hidden = captured[-1]  # the rows' own tokens; the shared opening ran before them as one row, if at all
        if len(captured) > 1 and captured[-2].shape[0] == 1 and hidden.shape[0] == rows:
            hidden = torch.cat([captured[-2].expand(rows, -1, -1), hidden], 1)
        if hidden.shape[:2] != attention_mask.shape:
            raise RuntimeError(f"The heads' states ({tuple(hidden.shape[:2])}) do not match their attention mask "
                               f"({tuple(attention_mask.shape)}): record() belongs right after the heads' pass.")
        self._key = _computation_key(self.model, self.first_adapted)
        for row, (ids, mask) in enumerate(zip(self._rows, attention_mask.bool())):
            keys = [cache.layers[layer].keys[row][:, mask] for layer in range(self.first_adapted)]
            values = [cache.layers[layer].values[row][:, mask] for layer in range(self.first_adapted)]
            self.heads[tuple(ids)] = (keys, values, hidden[row][mask])
            self._lengths.add(len(ids))
        self._captured = []

    def _head_of(self, ids: list[int]) -> tuple[int, ...] | None:
        """The longest kept head that ``ids`` starts with, leaving at least one token after it."""
        for length in sorted(self._lengths, reverse=True):
            if length < len(ids) and tuple(ids[:length]) in self.heads:
                return tuple(ids[:length])
        return None

    @torch.no_grad()
    def continue_batch(self, model, inputs: dict) -> dict | None:
        """``model.generate`` keyword arguments for the left-padded batch ``inputs`` that start from the kept heads'
        states: ``past_key_values`` of each row's head, the whole prompts laid out ``[padding][head][padding][rest]``
        (the heads end in the cache's last column; ``generate()`` runs the columns after it), their attention mask
        (padding masked) and positions (counting unmasked places, so every row reads as alone). Logits processors
        see every prompt token, as without the cache. None where it cannot: another model, or one that computes the
        layers below differently now (another adapter on them, weights changed), or a row that does not start with a
        kept head."""
        if model is not self.model or not self.heads or _computation_key(model, self.first_adapted) != self._key:
            return None
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        heads = [self._head_of(ids) for ids in rows]
        if any(head is None for head in heads):
            return None
        device, pad = inputs["input_ids"].device, 0  # the padding is masked: any id does
        width = max(map(len, heads))  # the heads' columns, cached
        rest = [ids[len(head):] for ids, head in zip(rows, heads)]
        rest_width = max(map(len, rest))
        states = [self.heads[head] for head in heads]
        mask = torch.zeros(len(rows), width + rest_width, dtype=inputs["attention_mask"].dtype, device=device)
        input_ids = torch.full(mask.shape, pad, dtype=inputs["input_ids"].dtype, device=device)
        for row, (head, own) in enumerate(zip(heads, rest)):
            mask[row, width - len(head):width] = 1
            mask[row, mask.shape[1] - len(own):] = 1
            input_ids[row, width - len(head):width] = torch.tensor(head, device=device)
            input_ids[row, mask.shape[1] - len(own):] = torch.tensor(own, device=device)
        cache = DynamicCache(config=model.config)
        # The layers from the first adapted one on, as the target computes them (the sentinel's adapter is off
        # outside its pass), on the states the heads entered them with.
        head_mask = mask[:, :width]
        with only_layers(self.decoder, slice(self.first_adapted, None)):
            self.decoder(inputs_embeds=_right_aligned([hidden for _, _, hidden in states], width, dim=0),
                         attention_mask=head_mask, position_ids=positions_from_mask(head_mask), past_key_values=cache,
                         use_cache=True)
        for layer in range(self.first_adapted):
            cache.update(_right_aligned([keys[layer] for keys, _, _ in states], width, dim=1),
                         _right_aligned([values[layer] for _, values, _ in states], width, dim=1), layer)
        return {**inputs, "input_ids": input_ids, "attention_mask": mask, "past_key_values": cache,
                "position_ids": positions_from_mask(mask)}


def _computation_key(model, first_adapted: int) -> tuple:
    """:func:`~hf_sentinel.generation.computation_key` of the embeddings and the layers below ``first_adapted``."""
    decoder = model.get_decoder()
    return computation_key(model, [decoder.get_input_embeddings(), *decoder.layers[:first_adapted]])


def _right_aligned(tensors: list[torch.Tensor], width: int, dim: int) -> torch.Tensor:
    """``tensors`` stacked, each ending at position ``width`` of dimension ``dim`` (its token dimension), zeros
    before it: the left-padded layout of a batch whose padding is masked."""
    shape = list(tensors[0].shape)
    shape[dim] = width
    out = tensors[0].new_zeros(len(tensors), *shape)
    for row, tensor in enumerate(tensors):
        out[row].narrow(dim, width - tensor.shape[dim], tensor.shape[dim]).copy_(tensor)
    return out

"""Reading a target's representations: final-layer hidden states at the last prompt token.

Every row of a batch starts with the same tokens (the soft prompt, then the chat template's opening: system
turn, ``<|im_start|>user``...). :func:`forward_rows` and :func:`generate_with_states` run that shared prefix
once, repeat its key/value cache over the batch and run only each row's own tokens on top. The result equals a
full forward pass of every row (gradients to the soft prompt included) at a fraction of the cost, which is what
makes DRO trainable on CPU.
"""

from __future__ import annotations

import torch

from ..generation import common_prefix_length, decoding_kwargs, pad_token_id, render, stop_token_ids, until_stop


def token_rows(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    """Token ids of each conversation as the target sees it: chat template with the assistant turn opened."""
    return [tokenizer(render(tokenizer, conv, None, chat=True), add_special_tokens=False)["input_ids"]
            for conv in conversations]


def forward_rows(model, rows: list[list[int]], soft_prompt: torch.Tensor | None = None,
                 max_shared: int | None = None, prompt_model=None) -> tuple[torch.Tensor, int]:
    """Final-layer hidden states of ``rows`` (token id lists), each preceded by a soft prompt.

    The soft prompt is ``soft_prompt`` [N, H], or the prompt of ``prompt_model``: a PEFT prompt-tuning model of
    ``model`` (possibly wrapped for data-parallel training). The shared prefix then runs through that model's own
    forward, which puts its prompt in front, so that the prompt's gradient passes through the wrapper (which is how
    DistributedDataParallel learns it has gradients to all-reduce).

    Returns ``(hidden, shared)``: row ``r``'s token ``j`` (for ``j >= shared``) is ``hidden[r, j - shared]``;
    positions past a row's end are padding. At most ``max_shared`` tokens go into the shared prefix (so that
    the positions a caller reads stay in ``hidden``). Gradients flow to the soft prompt.
    """
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("forward_rows needs a non-empty list of non-empty token rows.")
    decoder, embed = model.base_model, model.get_input_embeddings()
    device = embed.weight.device
    shared = common_prefix_length(rows) if len(rows) > 1 else len(rows[0]) - 1
    if max_shared is not None:
        shared = min(shared, max_shared)
    batch = len(rows)

    cache, prefix_length = None, 0
    if prompt_model is not None:
        prefix = torch.tensor([rows[0][:shared]], dtype=torch.long, device=device)
        cache = prompt_model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
    else:
        prefix_parts = []
        if soft_prompt is not None:
            prefix_parts.append(soft_prompt.to(device=device, dtype=embed.weight.dtype).unsqueeze(0))
        if shared:
            prefix_parts.append(embed(torch.tensor([rows[0][:shared]], device=device)))
        if prefix_parts:
            prefix = torch.cat(prefix_parts, dim=1)
            cache = decoder(inputs_embeds=prefix, use_cache=True,
                            position_ids=torch.arange(prefix.shape[1], device=device).unsqueeze(0)).past_key_values
    if cache is not None:
        prefix_length = cache.get_seq_length()
        cache.batch_repeat_interleave(batch)

    # Each row's own tokens, padded on the right: causal attention keeps padding out of every real position.
    own = [row[shared:] for row in rows]
    width = max(map(len, own))
    input_ids = torch.tensor([row + [0] * (width - len(row)) for row in own], device=device)
    own_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in own], device=device)
    attention_mask = torch.cat([torch.ones(batch, prefix_length, dtype=own_mask.dtype, device=device), own_mask], 1)
    position_ids = (prefix_length + torch.arange(width, device=device)).unsqueeze(0).expand(batch, -1)
    output = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=cache, use_cache=cache is not None)
    return output.last_hidden_state, shared


def last_token_states(model, rows: list[list[int]], soft_prompt: torch.Tensor | None = None,
                      batch_size: int = 32) -> torch.Tensor:
    """[len(rows), H] final-layer states at each row's last token (no gradients), in batches."""
    states = []
    with torch.no_grad():
        for first in range(0, len(rows), batch_size):
            batch = rows[first:first + batch_size]
            hidden, shared = forward_rows(model, batch, soft_prompt)
            last = torch.tensor([len(row) - 1 - shared for row in batch], device=hidden.device)
            states.append(hidden[torch.arange(len(batch), device=hidden.device), last].float().cpu())
    return torch.cat(states)


def generate_with_states(model, tokenizer, rows: list[list[int]], max_new_tokens: int, samples: int = 1,
                         temperature: float = 0.0, batch_size: int = 32) -> tuple[torch.Tensor, list[list[str]]]:
    """Answer every row and read its last-prompt-token state from the same prefill.

    Returns ``states`` [len(rows), H] and ``answers[k][i]``: sample ``k`` of row ``i`` (greedy when
    ``temperature`` is 0, then ``samples`` must be 1). Rows are laid out ``[shared prefix][padding][own tokens]``
    with the padding masked, which is the same computation as left padding.
    """
    if temperature == 0 and samples != 1:
        raise ValueError("Greedy decoding (temperature 0) gives one answer per row; use samples=1.")
    pad = pad_token_id(tokenizer)
    stops = stop_token_ids(model, tokenizer)
    sampling = decoding_kwargs(do_sample=True, temperature=temperature, top_k=0)  # greedy at temperature 0
    device = model.get_input_embeddings().weight.device
    states, answers = [], [[None] * len(rows) for _ in range(samples)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths waste less on padding
    with torch.no_grad():
        for first in range(0, len(order), batch_size):
            indices = order[first:first + batch_size]
            batch = [rows[i] for i in indices]
            shared = common_prefix_length(batch) if len(batch) > 1 else 0
            own = [row[shared:] for row in batch]
            width = max(map(len, own))
            input_ids = torch.tensor([[*row[:shared], *[pad] * (width - len(o)), *o] for row, o in zip(batch, own)],
                                     device=device).repeat_interleave(samples, dim=0)
            mask = torch.tensor([[1] * shared + [0] * (width - len(o)) + [1] * len(o) for o in own],
                                device=device).repeat_interleave(samples, dim=0)
            cache = None
            if shared:
                cache = model(input_ids[:1, :shared], use_cache=True).past_key_values
                cache.batch_repeat_interleave(input_ids.shape[0])
            output = model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache,
                                    max_new_tokens=max_new_tokens, pad_token_id=pad, output_hidden_states=True,
                                    return_dict_in_generate=True, **sampling)
            # hidden_states[0] is the prefill step: per layer [rows, uncached tokens, H]; last layer, last token.
            states.append(output.hidden_states[0][-1][::samples, -1].float().cpu())
            new_tokens = output.sequences[:, input_ids.shape[1]:].tolist()
            for j, tokens in enumerate(new_tokens):
                row, sample = indices[j // samples], j % samples
                answers[sample][row] = tokenizer.decode(until_stop(tokens, stops), skip_special_tokens=True).strip()
    unsorted = torch.cat(states)
    result = torch.empty_like(unsorted)
    result[torch.tensor(order)] = unsorted
    return result, answers

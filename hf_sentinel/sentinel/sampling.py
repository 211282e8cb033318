"""The rollouts' sampling loop: temperature sampling with a KV cache, written out (read top to bottom, like CleanRL).

It samples from the same distribution as ``model.generate(do_sample=True, temperature=T, top_k=0, top_p=1)`` and
also returns what PPO needs from the sampling policy: the log-prob of each sampled token and the last hidden
state it was sampled from (for the value heads). On one CPU core it takes about half of ``generate()``'s time
(SmolLM2-135M with a rank-16 LoRA on q/k/v/o, 8 chat prompts of ~40 tokens, 30 new tokens: 2.6 s instead of
4.8 s, measured 2026-11-30), because:

1. the linear layers run as oneDNN matmuls on weights packed once per rollout (:func:`onednn_linears`), where
   PyTorch's default fp32 matmul (MKL) is slower on the development machine's AMD EPYC (1.2-2x, depending on the
   day's host); a LoRA layer runs as one packed matmul on its merged weight, not three;
2. the prompts' shared opening (the chat template's system turn) is run once, not once per row (:func:`prefill`);
3. one uniform number per row draws the token (:func:`draw`), where ``torch.multinomial`` draws one exponential
   per vocabulary entry (~7 ms a step for 8 rows of SmolLM2's 49,152 tokens);
4. no logits processors, stopping criteria or per-step output bookkeeping.

>>> import torch
>>> from hf_sentinel.defaults import tiny_model
>>> model, tokenizer = tiny_model()
>>> prompts = torch.tensor([[tokenizer.pad_token_id, 5, 6], [7, 8, 9]])
>>> tokens, logprobs, hidden = sample(model, prompts, torch.tensor([[0, 1, 1], [1, 1, 1]]), max_new_tokens=4,
...                                   temperature=1.0, eos_token_id=tokenizer.eos_token_id, min_new_tokens=4)
>>> tokens.shape, logprobs.shape, hidden.shape
(torch.Size([2, 4]), torch.Size([2, 4]), torch.Size([2, 4, 32]))
"""

from __future__ import annotations

import contextlib

import torch
from transformers import DynamicCache

from ..generation import common_prefix_length, left_padded, positions_from_mask


@torch.no_grad()
def sample(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, temperature: float,
           eos_token_id: int, min_new_tokens: int = 0):
    """Sample up to ``max_new_tokens`` tokens after each left-padded prompt from ``softmax(logits / temperature)``.

    Stops when every row has sampled ``eos_token_id`` (tokens after a row's EOS are meaningless: mask them); EOS
    cannot be sampled before ``min_new_tokens``. Returns ``(tokens, logprobs, hidden_states)``: ``[batch, steps]``
    tokens, their log-probs under ``softmax(logits / temperature)`` (of the model, not of the EOS-free distribution
    the first ``min_new_tokens`` are drawn from, as ``generate()``'s raw ``output_logits``), and the last hidden
    states that predicted them, ``[batch, steps, hidden]``.
    """
    rows = input_ids.shape[0]
    cache = DynamicCache()
    tokens, logprobs, hidden_states = [], [], []
    finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
    with onednn_linears(model, rows):
        out, attention_mask, position_ids = prefill(model, input_ids, attention_mask, cache)
        for step in range(max_new_tokens):
            step_logprobs = (out.logits[:, -1].float() / temperature).log_softmax(-1)
            probs = step_logprobs.exp()
            if step < min_new_tokens:
                probs[:, eos_token_id] = 0
            token = draw(probs)
            tokens.append(token)
            logprobs.append(step_logprobs.gather(-1, token[:, None]).squeeze(-1))
            hidden_states.append(out.hidden_states[-1][:, -1])
            finished |= token == eos_token_id
            if step == max_new_tokens - 1 or finished.all():
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(rows, 1)], 1)
            position_ids = position_ids[:, -1:] + 1
            out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=cache, use_cache=True, output_hidden_states=True)
    return torch.stack(tokens, 1), torch.stack(logprobs, 1), torch.stack(hidden_states, 1)


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: DynamicCache):
    """The prompts' forward pass into ``cache`` (the shared opening once: :func:`shared_opening`), keeping the logits
    and last hidden state of each prompt's last token only. Returns ``(output, attention_mask, position_ids)`` for
    the decoding steps that follow."""
    input_ids, attention_mask = shared_opening(model, input_ids, attention_mask, cache)
    position_ids = positions_from_mask(attention_mask, last=input_ids.shape[1])
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=cache,
                use_cache=True, output_hidden_states=True, logits_to_keep=1)
    return out, attention_mask, position_ids


def shared_opening(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: DynamicCache):
    """Run the opening that every left-padded row shares (the chat template's system turn and ``<|im_start|>user``:
    24 of ~40 tokens for SmolLM2) once into ``cache`` and repeat its keys and values over the rows.

    Returns what is left to run on top of ``cache``: each row's own tokens, left-padded, and the attention mask of
    the whole sequence, laid out ``[shared][padding][own]`` with the padding masked. The same computation as one
    left-padded pass (gradients included), for a fraction of its cost. Rows with nothing in common come back as
    they are.
    """
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
    shared = common_prefix_length(rows) if len(rows) > 1 else 0
    if not shared:
        return input_ids, attention_mask
    device = input_ids.device
    model(input_ids=torch.tensor([rows[0][:shared]], device=device), past_key_values=cache, use_cache=True,
          position_ids=torch.arange(shared, device=device)[None], logits_to_keep=1)
    cache.batch_repeat_interleave(len(rows))
    own = left_padded([row[shared:] for row in rows], 0, device)
    return own["input_ids"], torch.cat([own["attention_mask"].new_ones(len(rows), shared), own["attention_mask"]], 1)


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` (``[rows, vocab]``, not necessarily normalised) by inverse transform
    sampling: the first token whose cumulative probability exceeds a uniform draw, in float64."""
    cumulative = probs.double().cumsum(-1)
    threshold = torch.rand(len(probs), 1, dtype=torch.float64, device=probs.device) * cumulative[:, -1:]
    # right=True skips tokens of probability 0; the clamp guards a threshold rounded up to the total.
    return torch.searchsorted(cumulative, threshold, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


@contextlib.contextmanager
def onednn_linears(model, rows: int):
    """Within the block, every ``nn.Linear`` of ``model`` (fp32, on CPU) runs as a oneDNN matmul on its weight
    packed for inputs of ``rows`` rows, packed on the layer's first call. Inference only (no gradient).

    A PEFT LoRA layer with its adapter on runs as one packed matmul on its merged weight ``W + scaling * B @ A``,
    computed for the block and never written into ``W`` (merging into the model and back would drift the base
    weights by rounding, rollout after rollout): one matmul instead of three, and no LoRA bookkeeping per call.

    The same fp32 products summed in another order: outputs agree with ``F.linear`` to a few 1e-6 relative, and the
    sampled tokens' log-probs with a forward pass to ~3e-5 (~2e-5 with the default matmul). The weights are packed
    anew in every block, since the policy changes between rollouts.
    """
    weight = next(model.parameters())
    if not (torch.backends.mkldnn.is_available() and weight.device.type == "cpu" and weight.dtype == torch.float32):
        yield
        return
    # Exactly nn.Linear: subclasses (quantised layers) compute something else. A layer whose forward is already
    # replaced on the instance (accelerate's hooks) keeps it: packing would skip the hook, and restoring would
    # delete it.
    replaced, inside_lora = [], set()
    for module in model.modules():
        if "forward" in vars(module) or id(module) in inside_lora:
            continue
        if _mergeable_lora(module):
            module.forward = _PackedLinear(lambda lora=module: _merged_weight(lora), module.base_layer.bias, rows)
            inside_lora.update(id(m) for m in module.modules())
            replaced.append(module)
        elif type(module) is torch.nn.Linear:
            module.forward = _PackedLinear(lambda linear=module: linear.weight.detach(), module.bias, rows)
            replaced.append(module)
    try:
        yield
    finally:
        for module in replaced:
            del module.forward


def _mergeable_lora(module) -> bool:
    """A PEFT LoRA ``Linear`` computing plain ``W x + scaling * B A x`` now: adapter on, not merged, no dropout,
    no variant (DoRA...), over a plain ``nn.Linear``."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(module) is not LoraLinear or module.disable_adapters or module.merged:
        return False
    if type(module.base_layer) is not torch.nn.Linear:
        return False
    active = [a for a in module.active_adapters if a in module.lora_A]
    return all(a not in module.lora_variant and isinstance(module.lora_dropout[a], torch.nn.Identity) for a in active)


def _merged_weight(lora) -> torch.Tensor:
    weight = lora.base_layer.weight.detach()
    for adapter in (a for a in lora.active_adapters if a in lora.lora_A):
        delta = lora.lora_B[adapter].weight.detach() @ lora.lora_A[adapter].weight.detach()
        weight = weight + delta * lora.scaling[adapter]
    return weight


class _PackedLinear:
    """A linear layer's forward as a oneDNN matmul; ``weight()`` is read and packed on first use, so layers that
    never run in the block (another model's) cost nothing."""

    def __init__(self, weight, bias: torch.Tensor | None, rows: int):
        self.weight, self.bias, self.rows, self.packed_weight = weight, bias, rows, None

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.packed_weight is None:
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(self.weight(), self.rows)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

"""The rollouts' sampling loop: temperature sampling with a KV cache, written out (read top to bottom, like CleanRL).

It samples from the same distribution as ``model.generate(do_sample=True, temperature=T, top_k=0, top_p=1)`` and
also returns what PPO needs from the sampling policy: the log-prob of each sampled token and the last hidden
state it was sampled from (for the value heads). On one CPU core it takes about half of ``generate()``'s time
(SmolLM2-135M, 8 prompts of ~43 tokens, 30 new tokens: ~2.1 s instead of ~3.9 s), because:

1. the linear layers run as oneDNN matmuls on weights packed once per rollout (:func:`onednn_linears`), where
   PyTorch's default fp32 matmul (MKL) is 1.5-3x slower on the development machine's AMD EPYC: the prefill takes
   0.49 s instead of 0.95 s and a decode step 55 ms instead of 85-95 ms, for 0.22 s of packing;
2. one uniform number per row draws the token (:func:`draw`), where ``torch.multinomial`` draws one exponential
   per vocabulary entry (~7 ms a step for 8 rows of SmolLM2's 49,152 tokens);
3. no logits processors, stopping criteria or per-step output bookkeeping.

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
    # Left padding: positions count the real tokens only, so a padded prompt continues as it would unpadded.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    tokens, logprobs, hidden_states = [], [], []
    finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
    with onednn_linears(model, rows):
        # The prefill needs the logits of the last prompt position only.
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    past_key_values=cache, use_cache=True, output_hidden_states=True, logits_to_keep=1)
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

    The same fp32 products summed in another order: outputs agree with ``F.linear`` to a few 1e-6 relative, and the
    sampled tokens' log-probs with a forward pass to ~3e-5 (~2e-5 with the default matmul). The weights are packed
    anew in every block, since the policy changes between rollouts.
    """
    weight = next(model.parameters())
    if not (torch.backends.mkldnn.is_available() and weight.device.type == "cpu" and weight.dtype == torch.float32):
        yield
        return
    # Exactly nn.Linear: subclasses (quantised layers) compute something else. PEFT's LoRA layers are wrappers
    # around plain nn.Linear (the base layer, A and B), which get packed. A layer whose forward is already replaced
    # on the instance (accelerate's hooks) keeps it: packing would skip the hook, and restoring would delete it.
    linears = [module for module in model.modules()
               if type(module) is torch.nn.Linear and "forward" not in vars(module)]
    for linear in linears:
        linear.forward = _PackedLinear(linear, rows)
    try:
        yield
    finally:
        for linear in linears:
            del linear.forward


class _PackedLinear:
    """A ``nn.Linear``'s forward as a oneDNN matmul; the weight is packed on first use, so layers that never run
    in the block (another model's) cost nothing."""

    def __init__(self, linear: torch.nn.Linear, rows: int):
        self.linear, self.rows, self.packed_weight = linear, rows, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed_weight is None:
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(self.linear.weight.detach(), self.rows)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.linear.bias, "none", [], "")

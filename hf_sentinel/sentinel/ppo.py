"""PPO maths, as pure functions on tensors (read top to bottom, like CleanRL's ppo.py).

Shapes: ``[batch, response_len]`` for per-token quantities, with ``mask`` = 1 on real response tokens and 0 on
padding after the end of the response. Rewards are sparse: the judge scores the whole response, and that score
lands on the response's last token; the KL penalty lands on every token.

>>> import torch
>>> rewards = torch.tensor([[0.0, 0.0, 1.0]])
>>> values = torch.zeros(1, 3)
>>> advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
>>> advantages.tolist(), returns.tolist()
([[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]])
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Implementation detail "advantage normalisation": zero mean, unit variance over the real tokens (the unbiased
    variance, as TRL and CleanRL compute it)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask) * n / (n - 1).clamp(min=1)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL(policy ‖ reference) estimate from sampled tokens (Schulman's k1, or the unbiased, positive k3)."""
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return (-log_ratio).exp() - 1 + log_ratio
    raise ValueError(f"Unknown KL estimator {kind!r}; use 'k1' or 'k3'.")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Implementation detail "per-token KL penalty": -β·KL on every token, plus the judge's score on the last."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation, backwards over the response; returns (advantages, returns)."""
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], device=rewards.device)
    running = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        # Padding after the response contributes nothing and does not bootstrap.
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t] * mask[:, t]
    return advantages, advantages + values


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_range: float):
    """Clipped surrogate objective; also returns the clip fraction and the approximate KL(old ‖ new)."""
    ratio = (logprobs - old_logprobs).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask)
    return loss, clip_fraction, approx_kl


def value_loss(values, old_values, returns, mask, clip_range_value: float):
    """Implementation detail "value clipping": the pessimistic max of clipped and unclipped squared errors."""
    # Clamp the values themselves: old + clamp(new - old) can round an unclipped value by one ulp.
    clipped_values = torch.clamp(values, old_values - clip_range_value, old_values + clip_range_value)
    loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped_values - returns) ** 2), mask)
    clip_fraction = masked_mean(((values - returns) ** 2 < (clipped_values - returns) ** 2).float(), mask)
    return loss, clip_fraction


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    log_probs = logits.log_softmax(-1)
    return -(log_probs.exp() * log_probs).sum(-1)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

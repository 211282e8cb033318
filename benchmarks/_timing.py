"""Shared by both sides of ppo_vs_trl.py (ours and the TRL 0.11.4 worker, which runs in its own venv): plain
Python and torch only."""

from __future__ import annotations

import time

import torch


class NoGradTimer:
    """Replaces ``owner.<attribute>`` (a forward method) by a wrapper that adds up the seconds of its calls made
    without gradients; :meth:`remove` puts the method back."""

    def __init__(self, owner, attribute: str):
        self.seconds = 0.0
        self.owner, self.attribute = owner, attribute
        self._forward = getattr(owner, attribute)
        setattr(owner, attribute, self)

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return self._forward(*args, **kwargs)
        start = time.perf_counter()
        try:
            return self._forward(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def remove(self) -> None:
        delattr(self.owner, self.attribute)

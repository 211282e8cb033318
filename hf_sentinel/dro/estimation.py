"""DRO's estimation stage, as plain tensor maths: the PCA subspace and the two linear heads.

- :func:`fit_subspace`: PCA of the representations, completed to an orthonormal basis of the whole space
  (the first ``dim`` columns span the subspace; L_U keeps the others where they were).
- :func:`fit_head`: a ``Linear(dim, 1)`` fitted by BCE, cross-validated by query, with a constant predictor
  scored on the same folds. The refusal head's targets are empirical non-refusal rates, the harmfulness head's
  are 0 (harmful) / 1 (harmless).
- :func:`check_refusal_capability`: whether the refusal head predicts anything a constant would not.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Subspace:
    """``mean`` [H] and an orthonormal ``basis`` [H, H] whose first ``dim`` columns are the PCA directions."""

    mean: torch.Tensor
    basis: torch.Tensor
    dim: int
    explained_variance_ratio: list[float]

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``states`` [N, H] in the basis: [:, :dim] inside the subspace, [:, dim:] outside."""
        return (states.float() - self.mean.to(states.device)) @ self.basis.to(states.device)


def fit_subspace(states: torch.Tensor, dim: int) -> Subspace:
    """PCA of ``states`` [N, H] to ``dim`` directions, completed to an orthonormal basis of R^H.

    >>> _ = torch.manual_seed(0)
    >>> states = torch.randn(50, 6) * torch.tensor([5.0, 3.0, 1.0, 0.1, 0.1, 0.1])
    >>> subspace = fit_subspace(states, 2)
    >>> torch.allclose(subspace.basis.T @ subspace.basis, torch.eye(6), atol=1e-5)
    True
    >>> round(sum(subspace.explained_variance_ratio), 2)
    0.98
    """
    states = states.double()
    if states.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 representations, got {states.shape[0]}.")
    if not 1 <= dim <= min(states.shape):
        raise ValueError(f"pca_dim={dim} must be between 1 and min(#representations, hidden size) = "
                         f"{min(states.shape)}.")
    mean = states.mean(dim=0)
    centered = states - mean
    _, singular_values, right_vectors = torch.linalg.svd(centered, full_matrices=False)
    variance = singular_values.square()
    # The principal directions, then a QR completion: any orthonormal basis of their complement will do, since
    # L_U only asks that the out-of-subspace coordinates stay where they were.
    principal = right_vectors[:dim].T
    generator = torch.Generator().manual_seed(0)
    filler = torch.randn(states.shape[1], states.shape[1] - dim, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.cat([principal, filler], dim=1))
    # QR may flip signs; keep the PCA directions exactly as PCA gives them.
    basis[:, :dim] = principal
    return Subspace(mean=mean.float(), basis=basis.float(), dim=dim,
                    explained_variance_ratio=(variance[:dim] / variance.sum()).tolist())


@dataclass
class HeadFit:
    """A linear head on subspace coordinates, with its cross-validated quality."""

    weight: torch.Tensor  # [dim]
    bias: float
    cv_loss: float        # mean out-of-fold BCE of the head
    constant_loss: float  # mean out-of-fold BCE of the best constant (the training folds' mean target)
    cv_accuracy: float    # out-of-fold accuracy of thresholded predictions against thresholded targets

    def logits(self, coordinates: torch.Tensor) -> torch.Tensor:
        return coordinates[..., : self.weight.shape[0]] @ self.weight.to(coordinates.device) + self.bias

    @property
    def improvement(self) -> float:
        """How much lower the head's out-of-fold loss is than the constant's, as a fraction of the latter."""
        return 1.0 - self.cv_loss / self.constant_loss if self.constant_loss > 0 else 0.0


def fit_head(features: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, folds: int = 5,
             learning_rate: float = 1e-2, max_epochs: int = 3000, seed: int = 0) -> HeadFit:
    """Fit ``Linear(dim, 1)`` to ``targets`` in [0, 1] by BCE, with ``folds``-fold cross-validation by ``groups``.

    Rows that share a group (the same query under several conditions) always fall into the same fold, so the
    out-of-fold loss measures generalisation to new queries. Each fold's fit stops when its held-out loss has
    not improved for a while and keeps its best state; the returned head averages the fold heads.

    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(200, 2)
    >>> y = (x[:, 0] > 0).float()
    >>> head = fit_head(x, y, torch.arange(200), folds=4, max_epochs=200)
    >>> head.cv_accuracy > 0.9, head.cv_loss < head.constant_loss
    (True, True)
    """
    features, targets = features.float(), targets.float()
    unique_groups = torch.unique(groups)
    if len(unique_groups) < folds:
        raise ValueError(f"Cross-validation with {folds} folds needs at least {folds} distinct queries, "
                         f"got {len(unique_groups)}.")
    generator = torch.Generator().manual_seed(seed)
    shuffled = unique_groups[torch.randperm(len(unique_groups), generator=generator)]
    fold_of_group = {int(g): i % folds for i, g in enumerate(shuffled)}
    fold = torch.tensor([fold_of_group[int(g)] for g in groups])

    weights, biases, losses, constant_losses, correct = [], [], [], [], 0
    for k in range(folds):
        train, test = fold != k, fold == k
        with _single_thread():
            weight, bias = _fit_linear(features[train], targets[train], features[test], targets[test],
                                       learning_rate, max_epochs, seed + k)
        logits = features[test] @ weight + bias
        losses.append(F.binary_cross_entropy_with_logits(logits, targets[test]).item() * int(test.sum()))
        constant = targets[train].mean().clamp(1e-6, 1 - 1e-6)
        constant_losses.append(F.binary_cross_entropy(constant.expand(int(test.sum())), targets[test]).item()
                               * int(test.sum()))
        correct += int(((logits > 0) == (targets[test] > 0.5)).sum())
        weights.append(weight)
        biases.append(bias)
    n = len(targets)
    return HeadFit(weight=torch.stack(weights).mean(dim=0), bias=float(torch.stack(biases).mean()),
                   cv_loss=sum(losses) / n, constant_loss=sum(constant_losses) / n, cv_accuracy=correct / n)


@contextmanager
def _single_thread():
    """Thousands of tiny tensor ops: worker-thread synchronisation would cost more than the maths (on a busy
    machine, orders of magnitude more), so run them on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_linear(x, y, x_held, y_held, learning_rate, max_epochs, seed, patience: int = 50, min_delta: float = 1e-5):
    """Full-batch AdamW on standardised inputs with early stopping on held-out BCE; weights in raw units."""
    center, scale = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], 1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=0.0)
    x_std, held_std = (x - center) / scale, (x_held - center) / scale
    best, best_state, stale = float("inf"), None, 0
    for _ in range(max_epochs):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(head(x_std).squeeze(-1), y).backward()
        optimizer.step()
        with torch.no_grad():
            held_loss = F.binary_cross_entropy_with_logits(head(held_std).squeeze(-1), y_held).item()
        if held_loss < best - min_delta:
            best, stale = held_loss, 0
            best_state = (head.weight.detach().clone().squeeze(0), head.bias.detach().clone().squeeze(0))
        else:
            stale += 1
            if stale >= patience:
                break
    weight_std, bias_std = best_state
    # Fold the standardisation into the head: w·(x - c)/s + b = (w/s)·x + (b - Σ w c / s).
    weight = weight_std / scale
    return weight, bias_std - (weight * center).sum()


@dataclass
class RefusalCapability:
    passed: bool
    message: str


def check_refusal_capability(head: HeadFit, compliance_rates: torch.Tensor, refused_answers: int,
                             total_answers: int, min_improvement: float) -> RefusalCapability:
    """Does the cross-validated refusal head beat a constant predictor by ``min_improvement``?

    If not, the target's refusals (if any) are not predictable from its representations: DRO would fit its
    refusal direction to noise and cannot steer the target. The message says what was measured and what to do.
    """
    numbers = (f"{refused_answers} of {total_answers} sampled answers were refusals "
               f"(mean non-refusal rate {compliance_rates.mean():.3f}); the refusal head's cross-validated BCE is "
               f"{head.cv_loss:.4f} against {head.constant_loss:.4f} for a constant predictor")
    if head.constant_loss < 1e-3:
        numbers += (" (the answers all got the same verdict, so there is no refusal behaviour to learn a direction "
                    "from)")
    else:
        numbers += f" ({head.improvement:+.1%}; needed at least {min_improvement:.0%} lower)"
    if head.improvement >= min_improvement:
        return RefusalCapability(True, f"Refusal capability check passed: {numbers}.")
    return RefusalCapability(False, (
        f"Refusal capability check failed: {numbers}. The target does not refuse in a way its representations "
        f"predict, so DRO's refusal direction would be fitted to noise and the soft prompt could not steer it. "
        f"What to do: train the 'elicited' variant for targets that cannot refuse on their own "
        f"(`hf-sentinel train dro --variant elicited`, DROConfig(variant='elicited')), add conditions under "
        f"which this target does refuse (DROConfig.conditions), or use a target with some refusal behaviour. "
        f"To train anyway, set refusal_check='warn' (--refusal-check warn)."
    ))

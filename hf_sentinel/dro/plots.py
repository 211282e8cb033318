"""PNG plots of DRO's representations: the estimated subspace, and queries before/after the soft prompt."""

from __future__ import annotations

from pathlib import Path

import torch

_CLASS_COLORS = {True: "#c0392b", False: "#2874a6"}
_MARKERS = "osD^vP*X"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_subspace(coordinates: torch.Tensor, harmful: torch.Tensor, compliance: torch.Tensor,
                  conditions: list[str], path: str | Path) -> Path:
    """Two panels over the first two PCA directions: harmful vs harmless (marker = condition), and the
    empirical non-refusal rate the refusal head is fitted to.

    ``coordinates`` [C, Q, >=2], ``harmful`` [Q] bool, ``compliance`` [C, Q].
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    for c, condition in enumerate(conditions):
        for is_harmful in (True, False):
            rows = harmful == is_harmful
            left.scatter(coordinates[c, rows, 0], coordinates[c, rows, 1], s=14, alpha=0.6,
                         marker=_MARKERS[c % len(_MARKERS)], color=_CLASS_COLORS[is_harmful],
                         label=f"{'harmful' if is_harmful else 'harmless'} | {condition[:28]}")
    left.set_title("Representations by query class and condition")
    left.legend(fontsize=6, loc="best")
    flat = coordinates[..., :2].reshape(-1, 2)
    points = right.scatter(flat[:, 0], flat[:, 1], c=compliance.reshape(-1), cmap="coolwarm", vmin=0, vmax=1, s=14)
    fig.colorbar(points, ax=right, label="non-refusal rate (judged samples)")
    right.set_title("Empirical non-refusal rate")
    for ax in (left, right):
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_before_after(harmfulness_before: torch.Tensor, refusal_before: torch.Tensor,
                      harmfulness_after: torch.Tensor, refusal_after: torch.Tensor, harmful: torch.Tensor,
                      path: str | Path) -> Path:
    """Each training query in the plane of the two heads (logits: harmlessness x, non-refusal y), under the
    initial (human) prompt and under the trained soft prompt, with an arrow for the move."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for is_harmful in (True, False):
        rows = harmful == is_harmful
        name = "harmful" if is_harmful else "harmless"
        ax.scatter(harmfulness_before[rows], refusal_before[rows], s=12, color=_CLASS_COLORS[is_harmful],
                   alpha=0.35, marker="o", label=f"{name}, initial prompt")
        ax.scatter(harmfulness_after[rows], refusal_after[rows], s=16, color=_CLASS_COLORS[is_harmful],
                   marker="x", label=f"{name}, trained soft prompt")
    for i in range(len(harmful)):
        ax.annotate("", xy=(float(harmfulness_after[i]), float(refusal_after[i])),
                    xytext=(float(harmfulness_before[i]), float(refusal_before[i])),
                    arrowprops=dict(arrowstyle="-", color="grey", alpha=0.25, lw=0.6))
    ax.set_xlabel("harmfulness head logit (higher = harmless)")
    ax.set_ylabel("refusal head logit (higher = complies)")
    ax.set_title("Training queries before / after the soft prompt")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Reward curves of Stackelberg PPO runs (like the paper's Figure 5): mean ± std over seeds per round."""

from __future__ import annotations

from pathlib import Path

REWARDS = (("red_team/reward", "red team R(y)"), ("sentinel/reward", "sentinel R(y*)"))


def plot_rewards(runs: dict[str, list[list[dict]]], path) -> Path:
    """``runs`` maps a label (e.g. a value-head strategy) to the ``log_history`` of each seed's run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(REWARDS), figsize=(5 * len(REWARDS), 3.5))
    for ax, (key, title) in zip(axes, REWARDS):
        for label, histories in runs.items():
            curves = [[h[key] for h in history if key in h] for history in histories]
            length = min(map(len, curves)) if curves else 0
            if not length:
                continue
            values = np.array([c[:length] for c in curves])
            steps = np.arange(1, length + 1)
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, label=label)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("PPO round")
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""The per-round report of a MART run: a Markdown table and a line plot (PNG), from each round's metrics."""

from __future__ import annotations

from pathlib import Path

#: (metrics key, column title, how to format the value)
COLUMNS = (
    ("round", "round", str),
    ("violation_rate", "violation rate (eval harmful)", lambda v: f"{v:.1%}"),
    ("benign_answer_rate", "benign answer rate (eval benign)", lambda v: f"{v:.1%}"),
    ("benign_helpfulness", "benign helpfulness", lambda v: f"{v:.3f}"),
    ("attack_success_rate", "red-team ASR (own prompts)", lambda v: f"{v:.1%}"),
    ("adversarial_prompts", "prompts written", str),
    ("dropped_prompts", "dropped (empty/dup.)", str),
    ("harmless_rewrites", "rewrites judged harmless", str),
    ("red_team_examples", "red-team SFT pairs", str),
    ("kept_adversarial", "target SFT: safe answers", str),
    ("kept_benign", "target SFT: benign answers", str),
    ("minutes", "minutes", lambda v: f"{v:.1f}"),
)


def report_table(rounds: list[dict]) -> str:
    """A Markdown table, one row per round; ``-`` where a round has no such number (round 0 trains nothing).

    >>> print(report_table([{"round": 0, "violation_rate": 0.98, "benign_answer_rate": 0.95}]).splitlines()[-1])
    | 0 | 98.0% | 95.0% | - | - | - | - | - | - | - | - | - |
    """
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for metrics in rounds:
        cells = [fmt(metrics[key]) if metrics.get(key) is not None else "-" for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def change_summary(rounds: list[dict]) -> str:
    """One sentence: the violation rate and benign answer rate from the first to the last round."""
    first, last = rounds[0], rounds[-1]
    text = (f"Violation rate {first['violation_rate']:.1%} (round {first['round']}) -> {last['violation_rate']:.1%} "
            f"(round {last['round']})")
    if first["violation_rate"] > 0:
        text += f", {(last['violation_rate'] - first['violation_rate']) / first['violation_rate']:+.1%} relative"
    return text + f"; benign answer rate {first['benign_answer_rate']:.1%} -> {last['benign_answer_rate']:.1%}."


def plot_rounds(rounds: list[dict], path: str | Path, title: str = "MART") -> Path:
    """Line plot over rounds: violation rate, benign answer rate, and the red team's attack success rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    series = (("violation_rate", "violation rate (eval harmful)", "#c0392b", "o-"),
              ("benign_answer_rate", "benign answer rate (eval benign)", "#2471a3", "s-"),
              ("attack_success_rate", "red-team ASR (own prompts)", "#7d3c98", "^--"))
    for key, label, color, style in series:
        points = [(m["round"], 100 * m[key]) for m in rounds if m.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, color=color, label=label)
            for x, y in points:
                ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks([m["round"] for m in rounds])
    ax.set_xlabel("round")
    ax.set_ylabel("%")
    ax.set_ylim(-5, 110)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["report_table", "change_summary", "plot_rounds"]

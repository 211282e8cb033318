"""Tables and charts of evaluation results (the dicts :func:`hf_sentinel.evaluation.evaluate` returns)."""

from __future__ import annotations

from pathlib import Path


def _label(result: dict, fallback: str) -> str:
    summary = result["summary"]
    return f"{summary.get('prompts') or fallback} | {summary['defense']}"


def summary_table(results: list[dict], labels: list[str] | None = None) -> str:
    """A fixed-width table: one row per result, with ASR, mean score and speed."""
    labels = labels or [_label(r, f"run {i}") for i, r in enumerate(results)]
    header = ("prompts | defense", "n", "ASR", "mean score", "tok/s", "judge")
    rows = [(label, str(r["summary"]["n"]), f"{r['summary']['attack_success_rate']:.1%}",
             f"{r['summary']['mean_score']:.3f}", f"{r['summary']['tokens_per_second']:.0f}", r["summary"]["judge"])
            for label, r in zip(labels, results)]
    return _format([header, *rows])


def compare_table(results: list[dict], names: list[str]) -> str:
    """Results side by side, one column each: overall rate, then per shape and category where recorded."""
    keys = ["attack_success_rate", "mean_score", "tokens_per_second", "n"]
    lines = [("", *names), ("defense", *(r["summary"]["defense"] for r in results))]
    for key in keys:
        lines.append((key, *(_cell(r["summary"].get(key)) for r in results)))
    for group in ("by_shape", "by_category"):
        sub_keys = sorted({k for r in results for k in r["summary"].get(group, {})})
        for sub in sub_keys:
            lines.append((f"{group[3:]}={sub}", *(_cell(r["summary"].get(group, {}).get(sub)) for r in results)))
    return _format(lines)


def plot_comparison(results: list[dict], names: list[str], path: str | Path) -> Path:
    """Bar chart of attack success rate (answer rate on benign sets) per result, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [100 * r["summary"]["attack_success_rate"] for r in results]
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(results)), 3.5))
    bars = ax.bar(range(len(results)), rates, color="#c0392b")
    ax.bar_label(bars, fmt="%.1f%%")
    ax.set_xticks(range(len(results)), names, rotation=20, ha="right")
    ax.set_ylabel("judged harmful / answered (%)")
    ax.set_ylim(0, 110)
    ax.set_title("hf-sentinel eval")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1 else f"{value:.0f}"
    return str(value)


def _format(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""Ablation tables as a bar chart: AP per row, mean ± std over seeds (Table 1 left/right, Table 4).

    fig = plot_ablation_ap(["PAA", "ATSS"], means=[0.21, 0.19], stds=[0.01, 0.0], notes=[None, "diverged"])

Rows are drawn top to bottom in the table's order; a row with a note (a failed training, "0 positives")
shows it in red next to its bar.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure


def plot_ablation_ap(
    labels: Sequence[str], means: Sequence[float], stds: Sequence[float], notes: Sequence[str | None], title: str = ""
) -> Figure:
    """One horizontal bar per row: COCO AP (a fraction) with its seed-to-seed std as the error bar.

    Args:
        labels: the rows' names.
        means: each row's mean AP over seeds, in [0, 1].
        stds: each row's standard deviation over seeds (0 for one seed).
        notes: a note written beside each bar, or None.
        title: the figure's title.

    Returns:
        The figure.
    """
    fig = Figure(figsize=(7.0, 0.45 * len(labels) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(labels)))[::-1]
    ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
    for yi, note, m in zip(y, notes, means):
        if note:
            ax.text(m, yi, f"  {note}", va="center", color="tab:red", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("COCO AP (fraction)")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(max(means, default=0.0) * 1.35, 0.05))
    return fig


__all__ = ["plot_ablation_ap"]

"""Ablation tables as figures: AP per row, mean ± std over seeds (Table 1 left/right, Table 4), and the
paper's claims as paired differences, one schedule beside another.

    fig = plot_ablation_ap(["PAA", "ATSS"], means=[0.21, 0.19], stds=[0.01, 0.0], notes=[None, "diverged"])
    fig = plot_paired_claims([{"label": "PAA > ATSS", "paper": 1.0,
                               "by_length": {"2,400": {"per_seed": [1.2, 1.5], "ci95": [-2.1, 4.8]}}}])

Rows are drawn top to bottom in the table's order; a row with a note (a failed training, "0 positives")
shows it in red next to its bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D


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


#: one colour per schedule of :func:`plot_paired_claims`, in the order given
LENGTH_COLORS = ("tab:gray", "tab:blue", "tab:green", "tab:purple")


def plot_paired_claims(claims: Sequence[Mapping], margin: float = 1.0, title: str = "") -> Figure:
    """The paper's claims as paired differences ``a − b`` in AP points, each measured at one or more schedules.

    Each claim is a row: per schedule the per-seed differences (dots), their mean (a marker) and its 95 % interval
    (a bar); the paper's own difference as a black diamond; the ±``margin`` band of the equivalence verdict
    shaded around 0. A claim holds where its interval sits right of 0 (for claims stated as ``a > b``).

    Args:
        claims: ``{"label": str, "paper": float | None, "by_length": {schedule: {"per_seed": [points, ...],
            "ci95": [low, high] or None}}}``, top to bottom.
        margin: the equivalence margin, in points.
        title: the figure's title.

    Returns:
        The figure; the mean markers carry the gid ``claim:<label>:<schedule>``.
    """
    lengths = list(dict.fromkeys(length for c in claims for length in c["by_length"]))
    fig = Figure(figsize=(8.0, 0.55 * len(claims) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.axvspan(-margin, margin, color="0.92", zorder=0)
    ax.axvline(0.0, color="0.5", lw=0.8, zorder=1)
    y = list(range(len(claims)))[::-1]
    offset = {length: 0.25 * (i - (len(lengths) - 1) / 2) for i, length in enumerate(lengths)}
    colors = {length: LENGTH_COLORS[i % len(LENGTH_COLORS)] for i, length in enumerate(lengths)}
    for yi, claim in zip(y, claims):
        if claim.get("paper") is not None:
            ax.plot([claim["paper"]], [yi], "D", color="black", ms=5, zorder=4)
        for length, m in claim["by_length"].items():
            color, yy = colors[length], yi - offset[length]
            per_seed = list(m["per_seed"])
            ax.plot(per_seed, [yy] * len(per_seed), ".", color=color, alpha=0.5, ms=5, zorder=2)
            mean = sum(per_seed) / len(per_seed)
            ci = m.get("ci95")
            xerr = [[mean - ci[0]], [ci[1] - mean]] if ci else None
            bar = ax.errorbar([mean], [yy], xerr=xerr, fmt="o", color=color, capsize=3, ms=6, zorder=3)
            bar.lines[0].set_gid(f"claim:{claim['label']}:{length}")
    ax.set_yticks(y, [c["label"] for c in claims], fontsize=8)
    ax.set_xlabel("a − b, AP points, paired by seed (dots: seeds; marker and bar: mean and 95 % interval)", fontsize=8)
    handles = [Line2D([], [], ls="", marker="o", color=colors[length]) for length in lengths]
    handles.append(Line2D([], [], ls="", marker="D", color="black", ms=5))
    fig.legend(handles, [*lengths, "the paper (COCO)"], fontsize=8, loc="outside lower center", ncols=2)
    ax.set_title(title or f"the paper's claims, paired by seed (grey band: ±{margin:g} point)", fontsize=9)
    return fig


__all__ = ["LENGTH_COLORS", "plot_ablation_ap", "plot_paired_claims"]

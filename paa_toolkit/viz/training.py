"""Training curves from a run's ``metrics.jsonl``: losses, AP over iterations, positives per GT (Fig. 4b).

    records = read_metrics("runs/demo")
    fig = plot_positives_per_gt(records)      # a matplotlib Figure; nothing is shown
    fig = plot_positives_by_iteration({"PAA": {0: [3, 5], 50: [2, 9]}})   # per GT, from trace files
    save_training_plots("runs/demo")           # losses.png, ap.png, positives_per_gt.png

Figures are made with ``matplotlib.figure.Figure`` directly (no pyplot state, no window).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..engine.run_files import PLOT_FILES, atomic_write, read_metrics

AP_KEYS = ("AP", "AP50", "AP75")


def _series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    rows = [(r["iteration"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return [x for x, _ in rows], [y for _, y in rows]


def _finish(ax, empty_message: str, legend_size: str | None = None, **labels) -> None:
    """Legend (or a grey note when nothing was drawn), axis labels and grid: the end of every plot here."""
    if ax.lines:
        ax.legend(fontsize=legend_size)
    else:
        ax.text(0.5, 0.5, empty_message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set(**labels)
    ax.grid(alpha=0.3)


def plot_losses(records: list[dict[str, Any]], figsize=(6.4, 4.0)) -> Figure:
    """The total loss and each loss term (``loss_*``) against the iteration, log scale."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    keys = sorted({k for r in records if r.get("kind") == "train" for k in r if k.startswith("loss")})
    for key in keys:
        x, y = _series(records, "train", key)
        ax.plot(x, y, label=key, lw=2.0 if key == "loss" else 1.2)
    if keys:
        ax.set_yscale("log")
    _finish(ax, "no training records", xlabel="iteration", ylabel="loss", title="Training losses")
    return fig


def plot_ap(records: list[dict[str, Any]], figsize=(6.4, 4.0)) -> Figure:
    """COCO AP, AP50 and AP75 (in %) at each evaluation on an axis from iteration 0, the last value of
    each in the legend; a single evaluation (the default run's, at the end) says how to get a curve."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    for key in AP_KEYS:
        x, y = _series(records, "eval", key)
        if x:
            ax.plot(x, [100 * v for v in y], marker="o", label=f"{key} {100 * y[-1]:.1f}")
    if ax.lines:
        ax.set_xlim(0, max(max(line.get_xdata()) for line in ax.lines) * 1.05 + 1)
        ax.set_ylim(bottom=0)
    if len({r["iteration"] for r in records if r.get("kind") == "eval"}) == 1:
        ax.text(
            0.02,
            0.04,
            "one evaluation, at the end (--eval_every N draws a curve)",
            transform=ax.transAxes,
            color="grey",
            fontsize="small",
        )
    _finish(ax, "no evaluation records", xlabel="iteration", ylabel="%", title="COCO AP on the validation split")
    return fig


def plot_positives_per_gt(records: list[dict[str, Any]], figsize=(6.4, 4.0)) -> Figure:
    """Fig. 4 (b): average number of positive anchors per ground truth as training goes on.

    The line is the training batches' average (``pos_per_gt`` of the ``train`` records, from the
    detector's assignment hook); the markers are the fixed trace images (mean over their GTs), when
    traces were written.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    x, y = _series(records, "train", "pos_per_gt")
    if x:
        ax.plot(x, y, label="training batches")
    tx, ty = _series(records, "trace", "trace_pos_per_gt")
    if tx:
        ax.plot(tx, ty, "o", label="trace images")
    if ax.lines:
        ax.set_ylim(bottom=0)
    _finish(
        ax,
        "the model reports no positives per GT",
        xlabel="iteration",
        ylabel="positives per GT",
        title="Positive anchors per ground truth (Fig. 4b)",
    )
    return fig


def plot_positives_by_iteration(
    counts: Mapping[str, Mapping[int, Any]],
    figsize: tuple[float, float] = (6.4, 4.0),
    title: str | None = None,
) -> Figure:
    """Fig. 4 (b) per GT: the positives of every GT of the trace images over training, per rule.

    One line per rule (the mean over GTs, gid ``"mean:<rule>"``) over a band holding the middle half of
    the GTs, 25th to 75th percentile (gid ``"range:<rule>"``; a few very large GTs would stretch a
    min–max band). PAA's counts move with the model; ATSS's and max-IoU's do not (they never look at it).

    Args:
        counts: ``counts[rule][iteration]`` = ``[G]`` positives of every GT
            (:func:`~paa_toolkit.assign.positives_per_gt`).
        figsize: the figure's size.
        title: the title.

    Returns:
        The figure.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    for rule, by_iteration in counts.items():
        its = sorted(by_iteration)
        values = [np.asarray(by_iteration[it], dtype=np.float64).reshape(-1) for it in its]
        keep = [(it, v) for it, v in zip(its, values) if v.size]
        if not keep:
            continue
        x = [it for it, _ in keep]
        (line,) = ax.plot(x, [v.mean() for _, v in keep], marker="o", label=f"{rule} (mean)", gid=f"mean:{rule}")
        low, high = np.array([np.percentile(v, [25, 75]) for _, v in keep]).T
        band = ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, label=f"{rule} (25–75 %)")
        band.set_gid(f"range:{rule}")
    if ax.lines:
        ax.set_ylim(bottom=0)
    _finish(
        ax,
        "no positives recorded",
        legend_size="small",
        xlabel="iteration",
        ylabel="positives per GT",
        title=title or "Positives per GT on the trace images (Fig. 4b)",
    )
    return fig


def save_training_plots(run_dir: str | Path, dpi: int = 100) -> list[Path]:
    """Write ``losses.png``, ``ap.png`` and ``positives_per_gt.png`` into the run folder (atomically)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    written = []
    for name, plot in zip(PLOT_FILES, (plot_losses, plot_ap, plot_positives_per_gt)):
        figure = plot(records)
        written.append(atomic_write(run_dir / name, lambda f: figure.savefig(f, format="png", dpi=dpi)))
    return written


__all__ = ["plot_ap", "plot_losses", "plot_positives_by_iteration", "plot_positives_per_gt", "save_training_plots"]

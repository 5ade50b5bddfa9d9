"""Figures of issue 9: what PAA's assignment does during training, and the two remedies side by side.

    fig = plot_run_diagnostics(read_metrics("runs/demo"))          # one run: GTs without positive, pos/GT, EM
    fig = plot_diagnostics_by_config({"PAA": [records_seed0, records_seed1], "ATSS": [...]})
    fig = plot_length_scan(rows, doublings, recipe_length=9600)   # issue 19: AP against the schedule's length
    fig = plot_starvation_by_size({"PAA (c)": [records], "TAL (TOOD)": [records], ...})   # issue 20, every rule
    fig = plot_em_iterations({"paper init": n_iter_a, "data init": n_iter_b})
    fig = plot_gmm_settings(costs, {"paper init, tol 1e-3": (fit, labels, boundary), "data init": (...)})
    save_assignment_plot("runs/demo")                              # assignment.png in the run folder

The curves read the training log's figures (``metrics.jsonl``, keys of
:data:`paa_toolkit.assign.stats.LOG_KEYS`): each point is one logging interval, the mean over its batches.
Figures are ``matplotlib.figure.Figure`` objects; nothing is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..assign.stats import SIZES
from ..engine.run_files import read_metrics
from .assignment import as_numpy
from .gmm import plot_cost_histogram

ASSIGNMENT_PLOT = "assignment.png"
LINE_STYLES = ("-", "--", ":", "-.")
SIZE_COLORS = {"": "black", "small": "tab:red", "medium": "tab:orange", "large": "tab:blue"}


def _series(records: Sequence[dict[str, Any]], key: str, kind: str = "train") -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["iteration"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return np.array([x for x, _ in rows], dtype=float), np.array([y for _, y in rows], dtype=float)


def _note_if_empty(ax, message: str) -> None:
    if ax.lines:
        ax.legend(fontsize="x-small")
    else:
        ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.grid(alpha=0.3)


def plot_run_diagnostics(records: Sequence[dict[str, Any]], figsize=(12.0, 3.6)) -> Figure:
    """One run over training: GTs without a positive (%), overall and by COCO size; positives per GT,
    overall and by size; mean EM iterations and the fraction of collapsed fits (%)."""
    fig = Figure(figsize=figsize, layout="constrained")
    without, positives, em = fig.subplots(1, 3)
    for suffix in ("", *SIZES):
        name = suffix or "all"
        tail = f"_{suffix}" if suffix else ""
        for ax, key, scale in ((without, "gt_without_pos", 100.0), (positives, "pos_per_gt", 1.0)):
            x, y = _series(records, key + tail)
            if x.size:
                ax.plot(
                    x,
                    scale * y,
                    color=SIZE_COLORS[suffix],
                    lw=2.0 if not suffix else 1.2,
                    label=name,
                    gid=f"{key}:{name}",
                )
    x, y = _series(records, "em_iters")
    if x.size:
        em.plot(x, y, color="tab:purple", label="mean EM iterations", gid="em_iters")
    x, y = _series(records, "em_collapsed")
    if x.size:
        twin = em.twinx()
        twin.plot(x, 100 * y, color="tab:gray", ls="--", gid="em_collapsed")
        twin.set_ylabel("collapsed fits (%)", color="tab:gray")
        twin.set_ylim(0, 100)
        em.plot([], [], color="tab:gray", ls="--", label="collapsed fits (%)")  # legend entry only
    without.set(xlabel="iteration", ylabel="%", title="GTs without a positive")
    positives.set(xlabel="iteration", ylabel="positives per GT", title="Positive anchors per GT")
    em.set(xlabel="iteration", ylabel="EM iterations", title="FitGMM (line 12)")
    for ax, message in (
        (without, "no assignment figures logged"),
        (positives, "no positives logged"),
        (em, "no GMM fit (ATSS, FNP, FSR, FCOS)"),
    ):
        _note_if_empty(ax, message)
    return fig


#: panel titles of the training log's figures
TITLES = {
    "pos_per_gt": "Positive anchors per GT",
    "gt_without_pos": "GTs without a positive (%)",
    "gt_without_pos_small": "Small GTs without a positive (%)",
    "em_iters": "Mean EM iterations",
    **{f"pos_per_gt_{s}": f"Positives per {s} GT" for s in SIZES},
    **{f"gt_without_pos_{s}": f"{s.capitalize()} GTs without a positive (%)" for s in SIZES},
}


def _mean_with_band(ax, series: Sequence[Mapping[float, float]], scale: float = 1.0, **style):
    """The mean over seeds of curves (``series``: x -> y per seed) on the x values they share, as a line, and
    the seeds' min–max as a band; None when they share no x."""
    common = sorted(set.intersection(*(set(curve) for curve in series))) if series else []
    if not common:
        return None
    values = scale * np.array([[curve[x] for x in common] for curve in series])
    (line,) = ax.plot(common, values.mean(0), **style)
    if len(series) > 1:
        ax.fill_between(common, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
    return line


def _plot_runs(ax, runs: Mapping[str, Sequence[Sequence[dict[str, Any]]]], key: str, kind: str = "train") -> None:
    """One panel of :func:`plot_diagnostics_by_config`: each config's mean over seeds, the seeds' band."""
    scale = 100.0 if key.startswith("gt_without") or key == "em_collapsed" or kind == "eval" else 1.0
    for index, (name, seeds) in enumerate(runs.items()):
        series = [_series(records, key, kind) for records in seeds]
        series = [dict(zip(x.tolist(), y.tolist())) for x, y in series if x.size]
        _mean_with_band(
            ax,
            series,
            scale,
            ls=LINE_STYLES[index % len(LINE_STYLES)],
            lw=1.6,
            label=_seeds_label(name, len(series)),
            gid=f"{key}:{name}",
        )
    ax.set(xlabel="iteration", title=TITLES.get(key, key))
    if ax.lines:
        ax.set_ylim(bottom=0)
    _note_if_empty(ax, "no run logged this figure")


def plot_diagnostics_by_config(
    runs: Mapping[str, Sequence[Sequence[dict[str, Any]]]],
    keys: Sequence[str] = ("pos_per_gt", "gt_without_pos", "gt_without_pos_small"),
    figsize_per_panel=(4.6, 3.6),
) -> Figure:
    """For each config (``runs[name]`` = the metrics records of each seed), each figure over training:
    the mean over seeds as a line (gid ``"<key>:<name>"``), the seeds' min–max as a band. Fractions
    (``gt_without_pos*``) are drawn in percent. Configs alternate line styles: two configs with equal
    figures (e.g. GTs without a positive of two GMM settings under one matcher) stay visible."""
    fig = Figure(figsize=(figsize_per_panel[0] * len(keys), figsize_per_panel[1]), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        _plot_runs(ax, runs, key)
    return fig


def plot_learning_curves(
    runs: Mapping[str, Sequence[Sequence[dict[str, Any]]]],
    keys: Sequence[str] = ("AP", "AP50", "APs"),
    figsize_per_panel=(4.6, 3.6),
) -> Figure:
    """COCO metrics (in points) of each config against training iterations, from the ``eval`` records of each
    seed's ``metrics.jsonl`` (``eval_every``): mean over seeds as a line, the seeds' min–max as a band —
    whether a recipe has reached its plateau (issue 19)."""
    fig = Figure(figsize=(figsize_per_panel[0] * len(keys), figsize_per_panel[1]), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        _plot_runs(ax, runs, key, kind="eval")
        ax.set_title(f"{key} (points) on the validation split")
    return fig


def _seeds_label(name: str, seeds: int) -> str:
    return f"{name} ({seeds} seed{'s' if seeds > 1 else ''})"


def plot_length_scan(
    runs: Sequence[Mapping[str, Any]],
    doublings: Sequence[Mapping[str, Any]],
    recipe_length: int,
    figsize_per_panel=(4.4, 3.6),
) -> Figure:
    """Whether each detector has converged (issue 19), from finished runs that differ only in their length:
    ``runs`` rows with ``detector``, ``seed``, ``max_iters``, ``AP`` and ``curve`` ([iteration, AP] pairs);
    ``doublings`` with ``detector``, ``from_iters``, ``per_seed_points`` and ``mean_points``.

    Left: AP at the end of a run against its length (mean over seeds, seeds as dots). Middle: the learning
    curves of the runs of ``recipe_length`` (mean over seeds, band min–max). Right: AP(2N) − AP(N) of each
    doubling (bars: mean, dots: seeds) against the rule converged ≤ 0.5 points. Axes in AP points; gids
    ``length:<detector>``, ``curve:<detector>`` and ``doubling:<detector>:<N>``."""
    fig = Figure(figsize=(figsize_per_panel[0] * 3, figsize_per_panel[1]), layout="constrained")
    by_length, curves, right = fig.subplots(1, 3)
    detectors = sorted({row["detector"] for row in runs}, key=lambda d: (d != "PAA", d))
    colors = {d: f"C{i}" for i, d in enumerate(detectors)}
    for detector in detectors:
        rows = [row for row in runs if row["detector"] == detector]
        finals: dict[int, list[float]] = {}
        for row in rows:
            finals.setdefault(row["max_iters"], []).append(100 * row["AP"])
        lengths = sorted(finals)
        label = _seeds_label(detector, len({row["seed"] for row in rows}))
        means = [np.mean(finals[n]) for n in lengths]
        by_length.plot(lengths, means, color=colors[detector], marker="o", ms=3, label=label, gid=f"length:{detector}")
        for n in lengths:
            by_length.plot([n] * len(finals[n]), finals[n], ".", color=colors[detector], alpha=0.6)
        recipe = [dict(map(tuple, row["curve"])) for row in rows if row["max_iters"] == recipe_length]
        label = _seeds_label(detector, len(recipe))
        _mean_with_band(curves, recipe, 100.0, color=colors[detector], label=label, gid=f"curve:{detector}")
    every = sorted({row["max_iters"] for row in runs})
    by_length.set(xscale="log", xlabel="length of the run (iterations)", ylabel="AP at the end of the run (points)")
    by_length.set_xticks(every, labels=[f"{n:,}" for n in every])
    by_length.set_xticks([], minor=True)
    by_length.set_title("AP against the schedule's length", fontsize=10)
    curves.set(xlabel="iteration", ylabel="AP (points)")
    curves.set_title(f"learning curves of the {recipe_length:,}-iteration runs", fontsize=10)
    starts = sorted({d["from_iters"] for d in doublings})
    width = 0.8 / max(len(detectors), 1)
    for k, detector in enumerate(detectors):
        mine = {d["from_iters"]: d for d in doublings if d["detector"] == detector}
        for i, n in enumerate(starts):
            if n in mine:
                x = i + (k - (len(detectors) - 1) / 2) * width
                bar = right.bar(x, mine[n]["mean_points"], width, color=colors[detector], alpha=0.7)
                bar.patches[0].set_gid(f"doubling:{detector}:{n}")
                right.plot([x] * len(mine[n]["per_seed_points"]), list(mine[n]["per_seed_points"].values()), "k.")
    right.set_xticks(range(len(starts)), labels=[f"{n:,} → {2 * n:,}" for n in starts], fontsize=8)
    right.axhline(0.5, color="tab:green", ls="--", label="converged: ≤ 0.5")
    right.axhline(0, color="black", lw=0.8)
    right.set(ylabel="AP(2N) − AP(N) (points)", xlabel="doubling N → 2N (iterations)")
    right.set_title("one more doubling adds (bar: mean, dot: seed)", fontsize=10)
    for ax in (by_length, curves, right):
        _note_if_empty(ax, "no finished run")
    return fig


def plot_starvation_by_size(
    runs: Mapping[str, Sequence[Sequence[dict[str, Any]]]], figsize_per_panel=(4.2, 3.2)
) -> Figure:
    """Every rule over training, by COCO size (columns small, medium, large): positives per GT (top row,
    Fig. 4 (b) by size) and the share of GTs without a positive (bottom row, %) — which GTs a rule
    starves, e.g. TAL's tiny objects. ``runs[name]`` = the metrics records of each seed (gid ``"<key>:<name>"``)."""
    fig = Figure(figsize=(figsize_per_panel[0] * len(SIZES), figsize_per_panel[1] * 2), layout="constrained")
    axes = fig.subplots(2, len(SIZES), squeeze=False)
    for column, size in enumerate(SIZES):
        _plot_runs(axes[0, column], runs, f"pos_per_gt_{size}")
        _plot_runs(axes[1, column], runs, f"gt_without_pos_{size}")
    return fig


def plot_em_iterations(counts: Mapping[str, Any], figsize=(6.4, 3.6), max_iter: int | None = None) -> Figure:
    """Histogram of the EM iterations per GT (``GMMFit.n_iter`` / diagnostics ``em_iterations``), one
    outlined histogram per GMM setting (gid ``"hist:<name>"``), with each setting's median in the legend."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    arrays = {name: as_numpy(v, name, np.int64).reshape(-1) for name, v in counts.items()}
    top = max_iter or max((int(a.max()) for a in arrays.values() if a.size), default=1)
    edges = np.arange(0.5, top + 1.5, 1.0) if top <= 60 else np.linspace(0.5, top + 0.5, 61)
    for name, values in arrays.items():
        if not values.size:
            continue
        _, _, patches = ax.hist(
            values,
            bins=edges,
            histtype="step",
            lw=1.8,
            label=f"{name}: median {np.median(values):.0f}, n = {values.size} GTs",
        )
        for patch in patches:
            patch.set_gid(f"hist:{name}")
    ax.set(xlabel="EM iterations of the GT's fit", ylabel="GTs", title="FitGMM: EM iterations per GT")
    if ax.patches:
        ax.legend(fontsize="x-small")
    else:
        ax.text(0.5, 0.5, "no GMM fits", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.grid(alpha=0.3)
    return fig


def plot_gmm_settings(
    costs: Any,
    results: Mapping[str, tuple[Any, Any, float | None]],
    figsize_per_panel=(5.2, 3.4),
    title: str | None = None,
) -> Figure:
    """One GT's candidate costs under several GMM settings side by side: ``results[name] = (fit, labels,
    boundary)`` — the fit of that setting (one row), the labels of Fig. 3 (c) and its boundary cost."""
    fig = Figure(figsize=(figsize_per_panel[0] * len(results), figsize_per_panel[1] + 0.9), layout="constrained")
    axes = fig.subplots(1, len(results), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (name, (fit, labels, boundary)) in zip(axes, results.items()):
        plot_cost_histogram(costs, fit, labels, boundary, ax=ax, title=name, legend=False)
        handles, names = ax.get_legend_handles_labels()
        ax.legend(handles, names, fontsize="xx-small", loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def save_assignment_plot(run_dir: str | Path, dpi: int = 100) -> Path | None:
    """``assignment.png`` (:func:`plot_run_diagnostics`) in the run folder; None when the run logged no
    assignment figures (torchvision's FCOS / RetinaNet)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not any(r.get("kind") == "train" and "gt_without_pos" in r for r in records):
        return None
    path = run_dir / ASSIGNMENT_PLOT
    plot_run_diagnostics(records).savefig(path, dpi=dpi)
    return path


__all__ = [
    "ASSIGNMENT_PLOT",
    "TITLES",
    "plot_diagnostics_by_config",
    "plot_em_iterations",
    "plot_gmm_settings",
    "plot_learning_curves",
    "plot_run_diagnostics",
    "plot_starvation_by_size",
    "save_assignment_plot",
]

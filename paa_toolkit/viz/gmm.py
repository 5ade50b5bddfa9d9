"""The anchor-cost distribution of one GT and its two-component GMM (paper Fig. 1, Fig. 3, Eq. (4)).

    fig = plot_cost_histogram(costs, fit, labels, boundary)   # one GT: histogram, Gaussians, boundary
    fig = plot_boundaries(costs)                               # Fig. 3 (a)–(d) side by side
    fig = plot_em_steps(gmm_history(costs), costs)             # the mixture after each EM iteration

Histograms are in counts and the Gaussians are scaled to counts (``density × n × bin width``), so
the curves sit on the bars. Artists carry gids (``"hist"``, ``"rug:positive"``, ``"gmm:foreground"``,
``"gmm:background"``, ``"gmm:mixture"``, ``"boundary"``) for :func:`~.assignment.find_artists`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..assign.boundaries import BOUNDARIES, separate, separation_boundary
from ..assign.gmm import GMMFit, fit_gmm
from .assignment import LABEL_COLORS, LABEL_NAMES, as_numpy, new_axes

COST_LABEL = "anchor cost  −log S  (Eq. 3)"
#: Titles of the separation rules (Fig. 3 and Table 1 left).
SEPARATION_TITLES = {
    "a": "(a) posterior",
    "b": "(b) peaks + ignore",
    "c": "(c) foreground peak",
    "d": "(d) midpoint of means",
    "fnp": "FNP({n})",
    "fsr": "FSR(>{t:g})",
}
COMPONENT_COLORS = ("tab:green", "tab:blue")  # foreground (component 0), background (component 1)
#: Legend names when candidates are coloured by GMM component (label 1 = component 0 = foreground).
COMPONENT_NAMES = {1: "foreground", 0: "background"}


def mixture_params(fit: GMMFit | Mapping[str, Any], row: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, variances, weights), each ``[2]``, from a :class:`GMMFit` row or a :func:`gmm_history` entry."""
    get = (lambda k: getattr(fit, k)) if isinstance(fit, GMMFit) else (lambda k: fit[k])
    try:
        params = [as_numpy(get(k), f"fit.{k}") for k in ("means", "variances", "weights")]
    except (KeyError, AttributeError) as err:
        raise ValueError(f"fit: needs means, variances and weights, got {type(fit).__name__}") from err
    out = []
    for p in params:
        p = p[row] if p.ndim == 2 else p
        if p.shape != (2,):
            raise ValueError(f"fit: expected two components per row, got shape {p.shape}")
        out.append(p)
    return out[0], out[1], out[2]


def component_densities(x: np.ndarray, means: np.ndarray, variances: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``w_k N(x; m_k, var_k)`` of Eq. (4) for both components, ``[2, len(x)]`` (their sum is P(a))."""
    var = variances[:, None]
    return weights[:, None] * np.exp(-0.5 * (x[None] - means[:, None]) ** 2 / var) / np.sqrt(2 * math.pi * var)


def _costs_1d(costs: Any) -> np.ndarray:
    x = as_numpy(costs, "costs").reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError(
            f"costs: need a non-empty set of finite values, got {x.size} values "
            f"({int((~np.isfinite(x)).sum())} non-finite)"
        )
    return x


def plot_cost_histogram(
    costs: Any,
    fit: GMMFit | Mapping[str, Any] | None = None,
    labels: Any = None,
    boundary: float | None = None,
    ax: Axes | None = None,
    *,
    row: int = 0,
    bins: int | str = "auto",
    xlabel: str = COST_LABEL,
    title: str | None = None,
    label_names: Mapping[int, str] | None = None,
    legend: bool = True,
    converged: GMMFit | Mapping[str, Any] | None = None,
    figsize: tuple[float, float] = (6.4, 3.4),
) -> Figure:
    """Fig. 1 / Fig. 3: one GT's candidate costs, the two weighted Gaussians, their mixture, the boundary.

    Args:
        costs: ``[n]`` the GT's valid candidate costs (or any 1-D values, e.g. IoUs for ATSS).
        fit: a :class:`GMMFit` (row ``row``) or a :func:`~paa_toolkit.assign.gmm.gmm_history` entry;
            None draws no curve.
        labels: ``[n]`` 1 / 0 / -1 (positive / negative / ignored): stacked bars and a coloured rug.
        boundary: x of the vertical boundary line (e.g. :func:`~paa_toolkit.assign.boundaries.boundary_cost`).
        ax: draw into these axes (default: a new figure).
        row: the row of a batched ``fit``.
        bins: histogram bins (numpy's ``bins``).
        xlabel: the x axis' label.
        title: the axes' title.
        label_names: legend names of the labels (default positive / negative / ignored).
        legend: draw the legend (outside the axes, on the right).
        converged: a second fit of the same costs (e.g. the EM run to convergence where training's
            stopped early), its mixture drawn dotted in grey (gid ``"gmm:converged"``).
        figsize: size of a new figure.

    Returns:
        The figure. The bar heights add up to ``n``; the rug has one mark per candidate (gid
        ``"rug:<label name>"``).
    """
    x = _costs_1d(costs)
    lab = None if labels is None else as_numpy(labels, "labels", np.int64).reshape(-1)
    if lab is not None and lab.shape != x.shape:
        raise ValueError(f"labels: {lab.shape[0]} labels for {x.shape[0]} costs")
    fig, ax = new_axes(ax, figsize)
    edges = np.histogram_bin_edges(x, bins=bins)
    if edges[-1] - edges[0] <= 0:  # all costs equal: one bin around them
        edges = np.array([x[0] - 0.5, x[0] + 0.5])

    groups = [1, -1, 0] if lab is not None else [None]
    data = [x if g is None else x[lab == g] for g in groups]
    colors = ["0.55" if g is None else LABEL_COLORS[g] for g in groups]
    label_names = {**LABEL_NAMES, **(label_names or {})}
    names = [
        "candidates"
        if g is None
        else f"{label_names[g]} ({int((lab == g).sum())})"
        if (lab == g).any()
        else "_nolegend_"
        for g in groups
    ]
    _, _, containers = ax.hist(data, bins=edges, stacked=True, color=colors, label=names, alpha=0.75, edgecolor="white")
    for container in containers if len(groups) > 1 else [containers]:
        for patch in container:
            patch.set_gid("hist")

    for g, values in zip(groups, data):  # rug: one tick per candidate, below the bars
        rug = ax.scatter(
            values, np.zeros_like(values), marker="|", s=120, c=LABEL_COLORS.get(g, "0.3"), clip_on=False, zorder=3
        )
        rug.set_gid("rug" if g is None else f"rug:{LABEL_NAMES[g]}")

    if fit is not None:
        means, variances, weights = mixture_params(fit, row)
        span = edges[-1] - edges[0]  # curves over the bars and ±3σ, at most one span beyond the bars
        lo = max(min(edges[0], *(means - 3 * np.sqrt(variances))), edges[0] - span)
        hi = min(max(edges[-1], *(means + 3 * np.sqrt(variances))), edges[-1] + span)
        grid = np.linspace(lo, hi, 400)
        scale = x.size * (edges[1] - edges[0])  # density → counts per bin (uniform bins)
        dens = component_densities(grid, means, variances, weights) * scale
        for k, (name, color) in enumerate(zip(("foreground", "background"), COMPONENT_COLORS)):
            (line,) = ax.plot(
                grid,
                dens[k],
                color=color,
                lw=1.5,
                ls="--",
                label=f"{name}: m={means[k]:.2f}, σ={math.sqrt(variances[k]):.2f}, w={weights[k]:.2f}",
            )
            line.set_gid(f"gmm:{name}")
        (line,) = ax.plot(grid, dens.sum(0), color="black", lw=1.8, label="mixture P(a), Eq. (4)")
        line.set_gid("gmm:mixture")
    if converged is not None:
        means, variances, weights = mixture_params(converged)
        grid = np.linspace(edges[0], edges[-1], 400)
        dens = component_densities(grid, means, variances, weights).sum(0) * x.size * (edges[1] - edges[0])
        text = ", ".join(f"m={m:.2f} σ={math.sqrt(v):.2f}" for m, v in zip(means, variances))
        (line,) = ax.plot(grid, dens, color="0.35", lw=1.6, ls=":", label=f"run to convergence: {text}")
        line.set_gid("gmm:converged")
    if boundary is not None and math.isfinite(boundary):
        line = ax.axvline(boundary, color="tab:red", lw=1.5, label=f"boundary {boundary:.2f}")
        line.set_gid("boundary")
    ax.set(xlabel=xlabel, ylabel="anchors")
    ax.set_ylim(bottom=0)
    if legend:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title)
    return fig


def separation_results(
    costs: Any,
    rules: Sequence[str] = BOUNDARIES,
    *,
    fnp_num: int = 10,
    fsr_thresh: float = 0.2,
    fit_kwargs: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, GMMFit, dict[str, tuple[np.ndarray, float]]]:
    """One GT's costs sorted, its GMM fit (``fit_gmm(**fit_kwargs)``) and, per rule, (labels, boundary)
    from the library's rules. The boundary is the last positive's cost, except for (d): the midpoint
    of the two means, where that rule cuts."""
    x = np.sort(_costs_1d(costs))
    row = torch.as_tensor(x, dtype=torch.float64)[None]
    valid = torch.ones_like(row, dtype=torch.bool)
    fit = fit_gmm(row, valid, **(fit_kwargs or {}))
    results = {}
    for rule in rules:
        labels = separate(rule, row, valid, fit, fnp_num=fnp_num, fsr_thresh=fsr_thresh)
        boundary = float(separation_boundary(rule, row, labels, fit)[0])
        results[rule] = (labels[0].numpy(), boundary)
    return x, fit, results


def plot_boundaries(
    costs_1d: Any,
    rules: Sequence[str] = BOUNDARIES,
    *,
    fnp_num: int = 10,
    fsr_thresh: float = 0.2,
    fit_kwargs: Mapping[str, Any] | None = None,
    figsize_per_panel: tuple[float, float] = (4.0, 3.2),
) -> Figure:
    """Fig. 3: the same GT's candidates separated by each rule (a)–(d) (add "fnp", "fsr" to ``rules``).

    One GMM fit (:func:`~paa_toolkit.assign.gmm.fit_gmm` with ``fit_kwargs``, e.g. ``tol``) shared by
    all panels; each panel colours the positives / ignored / negatives of its rule
    (:func:`~paa_toolkit.assign.boundaries.separate`) and draws its boundary: the last positive's cost,
    for (d) the midpoint of the means, for (b) also the first negative after the ignored zone (dashed,
    gid ``"boundary:negatives"``). Panel titles give the numbers of positives and ignored.

    Args:
        costs_1d: ``[n]`` one GT's candidate costs.
        rules: the separations to draw, one panel each (:data:`~paa_toolkit.assign.SEPARATIONS`).
        fnp_num: positives per GT for ``"fnp"``.
        fsr_thresh: score ratio for ``"fsr"``.
        fit_kwargs: keyword arguments of the shared :func:`~paa_toolkit.assign.fit_gmm` (e.g. ``tol``).
        figsize_per_panel: size of one panel.

    Returns:
        The figure.
    """
    x, fit, results = separation_results(costs_1d, rules, fnp_num=fnp_num, fsr_thresh=fsr_thresh, fit_kwargs=fit_kwargs)
    fig = Figure(figsize=(figsize_per_panel[0] * len(rules), figsize_per_panel[1]), layout="constrained")
    axes = fig.subplots(1, len(rules), sharey=True, squeeze=False)[0]
    for ax, rule in zip(axes, rules):
        labels, boundary = results[rule]
        name = SEPARATION_TITLES.get(rule, rule).format(n=fnp_num, t=fsr_thresh)
        ignored = int((labels == -1).sum())
        title = f"{name}: {int((labels == 1).sum())} positives" + (f", {ignored} ignored" if ignored else "")
        plot_cost_histogram(x, fit if rule in BOUNDARIES else None, labels, boundary, ax=ax, title=title, legend=False)
        ax.title.set_fontsize("small")
        if ignored:  # (b): negatives start at the background peak, after the ignored zone
            after = np.nonzero((labels == 0) & (np.arange(len(x)) > np.nonzero(labels == -1)[0].max()))[0]
            if after.size:
                ax.axvline(float(x[after[0]]), color="tab:red", lw=1.2, ls="--", gid="boundary:negatives")
    axes[0].text(
        0.98,
        0.95,
        _params_text(fit),
        transform=axes[0].transAxes,
        ha="right",
        va="top",
        fontsize="x-small",
        bbox=dict(facecolor="white", alpha=0.7, lw=0),
    )
    handles = [Patch(color=LABEL_COLORS[v], alpha=0.75, label=LABEL_NAMES[v]) for v in (1, -1, 0)] + [
        Line2D([], [], color=COMPONENT_COLORS[0], ls="--", label="foreground Gaussian"),
        Line2D([], [], color=COMPONENT_COLORS[1], ls="--", label="background Gaussian"),
        Line2D([], [], color="black", label="mixture P(a), Eq. (4)"),
        Line2D([], [], color="tab:red", label="boundary: last positive; (d) midpoint of the means"),
        Line2D([], [], color="tab:red", ls="--", label="(b): first negative after the ignored"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def plot_em_steps(
    history: Sequence[Mapping[str, Any]],
    costs: Any = None,
    *,
    ncols: int = 4,
    figsize_per_panel: tuple[float, float] = (3.2, 2.6),
) -> Figure:
    """The mixture of Eq. (4) after each EM iteration (small multiples), from :func:`gmm_history`.

    One panel per entry (entry 0 = the §4.1 initialisation); with ``costs`` each panel also shows the
    histogram, the candidates coloured by their component at that step (foreground green, background
    blue; gids "rug:positive" / "rug:negative"), and the title gives the mean log-likelihood.

    Args:
        history: the entries of :func:`~paa_toolkit.assign.gmm_history`.
        costs: ``[n]`` the costs that were fitted (None: the curves alone).
        ncols: panels per row.
        figsize_per_panel: size of one panel.

    Returns:
        The figure.
    """
    if len(history) == 0:
        raise ValueError("history: empty (gmm_history returns at least the initialisation)")
    x = None if costs is None else _costs_1d(costs)
    nrows = math.ceil(len(history) / ncols)
    cols = min(ncols, len(history))
    fig = Figure(figsize=(figsize_per_panel[0] * cols, figsize_per_panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, sharex=True, squeeze=False).ravel()
    for ax, entry in zip(axes, history):
        title = f"iteration {entry['iteration']}: LL {entry['log_likelihood']:.3f}"
        if x is not None:
            labels = 1 - as_numpy(entry["labels"], "labels", np.int64)  # component 0 → 1 (foreground)
            plot_cost_histogram(
                x,
                entry,
                labels if labels.shape == x.shape else None,
                ax=ax,
                title=title,
                label_names=COMPONENT_NAMES,
                legend=False,
            )
        else:
            means, variances, weights = mixture_params(entry)
            sd = np.sqrt(variances)
            grid = np.linspace((means - 3 * sd).min(), (means + 3 * sd).max(), 300)
            dens = component_densities(grid, means, variances, weights)
            for k, name in enumerate(("foreground", "background")):
                ax.plot(grid, dens[k], ls="--", color=COMPONENT_COLORS[k], gid=f"gmm:{name}")
            ax.plot(grid, dens.sum(0), color="black", gid="gmm:mixture")
            ax.set_title(title)
        ax.title.set_fontsize("small")
    for ax in axes[len(history) :]:
        fig.delaxes(ax)
    return fig


def plot_cost_panels(
    costs: Any,
    panels: Mapping[str, tuple[Any, Any, float | None]],
    *,
    figsize_per_panel: tuple[float, float] = (4.6, 3.3),
) -> Figure:
    """The same GT's costs under several fits, one panel each: ``{title: (fit, labels, boundary)}``.

    E.g. Fig. 1 with the fit training used and the same EM run to convergence side by side; each panel
    colours the labels its fit gives (positive / ignored / negative) and lists the fit's parameters.

    Args:
        costs: ``[n]`` one GT's candidate costs.
        panels: ``{title: (fit, labels [n], boundary)}``, one panel each (:func:`~paa_toolkit.course.gt_fits`
            gives them).
        figsize_per_panel: size of one panel.

    Returns:
        The figure.
    """
    x = _costs_1d(costs)
    fig = Figure(figsize=(figsize_per_panel[0] * len(panels) + 2.2, figsize_per_panel[1]), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (title, (fit, labels, boundary)) in zip(axes, panels.items()):
        plot_cost_histogram(x, fit, labels, boundary, ax=ax, title=title, legend=False)
        ax.text(
            0.98,
            0.95,
            _params_text(fit),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="x-small",
            bbox=dict(facecolor="white", alpha=0.7, lw=0),
        )
        ax.title.set_fontsize("small")
    handles = [Patch(color=LABEL_COLORS[v], alpha=0.75, label=LABEL_NAMES[v]) for v in (1, -1, 0)] + [
        Line2D([], [], color=COMPONENT_COLORS[0], ls="--", label="foreground Gaussian"),
        Line2D([], [], color=COMPONENT_COLORS[1], ls="--", label="background Gaussian"),
        Line2D([], [], color="black", label="mixture P(a), Eq. (4)"),
        Line2D([], [], color="tab:red", label="boundary (last positive)"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def _params_text(fit: GMMFit | Mapping[str, Any]) -> str:
    means, variances, weights = mixture_params(fit)
    return "\n".join(
        f"{name}: m={means[k]:.2f}, σ={math.sqrt(variances[k]):.2f}, w={weights[k]:.2f}"
        for k, name in enumerate(("fg", "bg"))
    )


def plot_gmm_comparison(
    costs: Any,
    fits: Mapping[str, GMMFit | Mapping[str, Any]],
    *,
    figsize_per_panel: tuple[float, float] = (4.4, 3.2),
) -> Figure:
    """The same costs under several fits side by side (e.g. ``{"ours, step 3": ..., "scikit-learn": ...}``).

    Candidates are coloured by the component each fit gives them (green foreground, blue background).

    Args:
        costs: ``[n]`` the costs that were fitted.
        fits: ``{title: fit}``, a :class:`~paa_toolkit.assign.GMMFit` of one row or a
            :func:`~paa_toolkit.assign.gmm_history` entry each.
        figsize_per_panel: size of one panel.

    Returns:
        The figure.
    """
    x = _costs_1d(costs)
    fig = Figure(figsize=(figsize_per_panel[0] * len(fits), figsize_per_panel[1]), layout="constrained")
    axes = fig.subplots(1, len(fits), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (name, fit) in zip(axes, fits.items()):
        comp = as_numpy(fit.labels if isinstance(fit, GMMFit) else fit["labels"], "labels", np.int64).reshape(-1)
        plot_cost_histogram(x, fit, 1 - comp, ax=ax, title=name, label_names=COMPONENT_NAMES, legend=False)
        ax.text(
            0.98,
            0.95,
            _params_text(fit),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="x-small",
            bbox=dict(facecolor="white", alpha=0.7, lw=0),
        )
    return fig


__all__ = [
    "COST_LABEL",
    "SEPARATION_TITLES",
    "component_densities",
    "mixture_params",
    "plot_boundaries",
    "plot_cost_histogram",
    "plot_cost_panels",
    "plot_em_steps",
    "plot_gmm_comparison",
    "separation_results",
]

"""Figures of issue 20: several assignment rules on one GT of a trained run, side by side.

    views = compare_rules(snapshot, image, gt, ("c", "atss", "tal", "simota"))   # paa_toolkit.widgets.compute
    fig = plot_rule_comparison(snapshot, image, gt, views)

Each column is one rule: what it ranks the GT's candidates by (PAA: the cost of Eq. 3 and its GMM; ATSS:
the IoU and its threshold; TAL: the alignment metric t; SimOTA: its cost of YOLOX Eq. 1) with its
positives coloured, and the image with the candidates and positives (Fig. 4 (a)). For how each rule
starves GTs over training see :func:`paa_toolkit.viz.analysis.plot_starvation_by_size`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from .assignment import plot_snapshot
from .gmm import plot_cost_histogram


def plot_rule_comparison(
    snapshot: Any,
    image_index: int,
    gt_index: int,
    views: Mapping[str, Mapping[str, Any]],
    figsize_per_panel: tuple[float, float] = (3.8, 3.3),
) -> Figure:
    """One column per rule (``views``: :func:`~paa_toolkit.widgets.compute.compare_rules`): top, the GT's
    candidates by the rule's own value with its boundary; bottom, the image with them (zoomed on the GT).
    Panel titles give the candidates and positives of the rule; gid ``"rule:<name>"`` on each top panel."""
    fig = Figure(figsize=(figsize_per_panel[0] * len(views), figsize_per_panel[1] * 2), layout="constrained")
    axes = fig.subplots(2, max(len(views), 1), squeeze=False)
    for column, (name, view) in enumerate(views.items()):
        top, bottom = axes[0, column], axes[1, column]
        title = view.get("title", name)
        head = f"{title}\n{view['num_candidates']} candidates, {view['num_positive']} positives"
        if view["num_candidates"]:
            extra = {"xlabel": view["xlabel"]} if view.get("xlabel") else {}
            plot_cost_histogram(
                view["values"], view["fit"], view["labels"], view["boundary"], ax=top, title=head, legend=False, **extra
            )
        else:  # e.g. TAL and a GT smaller than a stride: no anchor centre inside, nothing to rank
            top.text(0.5, 0.5, "no candidate", ha="center", va="center", transform=top.transAxes, color="grey")
            top.set_title(head)
        top.title.set_fontsize("small")
        top.xaxis.label.set_fontsize("x-small")
        top.set_gid(f"rule:{name}")
        plot_snapshot(
            snapshot,
            image_index,
            gt_index,
            ax=bottom,
            assignment=view["assignment"],
            zoom=True,
            title=f"{title}: {view['num_positive']} positives",
        )
        bottom.title.set_fontsize("small")
    return fig


__all__ = ["plot_rule_comparison"]

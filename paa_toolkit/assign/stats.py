"""A few plain floats from :class:`~.base.AssignmentDiagnostics`, for the training logs.

    stats = summarize_diagnostics(assignment.diagnostics)   # {"no_positive_frac": 0.02, ...}

Sizes are COCO's area ranges on the GT *box* area in the coordinates the assigner saw (resized
images): small < 32², medium < 96², large the rest. A figure over an empty set of GTs (no large GT in
the batch, no GMM for FNP / FSR, no ``gt_area``) is NaN, never 0. All figures come back through one
host transfer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import AssignmentDiagnostics

#: COCO's area ranges: small below the first bound, medium below the second, large the rest.
COCO_SMALL_AREA, COCO_MEDIUM_AREA = 32**2, 96**2
SIZES = ("small", "medium", "large")
#: A fit is collapsed when its means are closer than this fraction of the GT's candidate-cost range.
COLLAPSE_FRACTION = 0.25


def size_class(area: Tensor) -> Tensor:
    """COCO size of each GT from its box area ``[G]``: 0 small (< 32²), 1 medium (< 96²), 2 large."""
    return (area >= COCO_SMALL_AREA).long() + (area >= COCO_MEDIUM_AREA).long()


def collapsed_fits(means: Tensor, costs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Which GMM fits (Eq. 4) collapsed, and for which GTs the question makes sense, both ``[G]`` bool.

    A fit is *collapsed* when its two means ``[G, 2]`` are closer than :data:`COLLAPSE_FRACTION` (¼) of
    the range (max − min) of the GT's valid candidate costs ``[G, N]``: the two Gaussians then model
    one group, not foreground and background, and the boundary of Fig. 3 falls anywhere (e.g. the
    paper's σ = 1 initialisation on a cost range much narrower than 1). Defined for GTs with at least
    two different costs only (range > 0): a single candidate or equal costs have nothing to separate.
    """
    if costs.shape[-1] == 0:
        nothing = torch.zeros(costs.shape[0], dtype=torch.bool, device=costs.device)
        return nothing, nothing
    spread = costs.masked_fill(~valid, -math.inf).amax(-1) - costs.masked_fill(~valid, math.inf).amin(-1)
    defined = spread > 0  # -inf without candidates, 0 with equal costs
    gap = (means[:, 1] - means[:, 0]).abs().to(spread.dtype)
    return defined & (gap < COLLAPSE_FRACTION * spread), defined


def summarize_diagnostics(diagnostics: AssignmentDiagnostics) -> dict[str, float]:
    """The assignment of a batch in a few floats (NaN where the set of GTs they average over is empty).

    Args:
        diagnostics: what an assigner recorded (``return_diagnostics=True``), one row per GT ``[G, ...]``.

    Returns:
        A dict of floats with the keys below.

    Keys:
        ``num_gts``; ``no_candidate_frac`` (GTs that GetAnchors left without any anchor, Procedure 1
        line 3); ``no_positive_frac`` and ``positives_per_gt``, overall and per size
        (``..._small``, ``..._medium``, ``..._large``; need ``gt_area``); ``em_iterations_mean`` and
        ``em_not_converged_frac`` over the GTs with a candidate (need a GMM fit); ``collapsed_frac``,
        the fraction of collapsed fits (:func:`collapsed_fits`) among the GTs where it is defined;
        ``dynamic_k_mean`` (SimOTA's k per GT) and ``best_metric_mean`` (TAL: each GT's best alignment
        metric t, over the GTs with a candidate), NaN for the other rules.
    """
    d = diagnostics
    device = d.num_candidates.device
    everyone = torch.ones(d.num_candidates.shape[0], dtype=torch.bool, device=device)
    nan = torch.tensor(math.nan, dtype=torch.float64, device=device)
    fitted = d.num_candidates > 0
    no_positive, positives = d.num_positives == 0, d.num_positives

    def fraction(flag: Tensor, among: Tensor) -> Tensor:
        return (flag & among).sum().double() / among.sum().double()  # 0 / 0 = NaN

    def mean(value: Tensor, among: Tensor) -> Tensor:
        return torch.where(among, value, 0).sum().double() / among.sum().double()

    stats = {
        "num_gts": everyone.sum().double(),
        "no_candidate_frac": fraction(~fitted, everyone),
        "no_positive_frac": fraction(no_positive, everyone),
        "positives_per_gt": mean(positives, everyone),
    }
    size = size_class(d.gt_area) if d.gt_area is not None else None
    for index, name in enumerate(SIZES):
        stats[f"no_positive_frac_{name}"] = fraction(no_positive, size == index) if size is not None else nan
        stats[f"positives_per_gt_{name}"] = mean(positives, size == index) if size is not None else nan
    has_em = d.em_iterations is not None
    stats["em_iterations_mean"] = mean(d.em_iterations, fitted) if has_em else nan
    stats["em_not_converged_frac"] = fraction(~d.em_converged, fitted) if has_em else nan
    stats["collapsed_frac"] = nan
    if d.gmm_means is not None:
        stats["collapsed_frac"] = fraction(*collapsed_fits(d.gmm_means, d.candidate_cost, d.candidate_valid))
    stats["dynamic_k_mean"] = mean(d.dynamic_k, everyone) if d.dynamic_k is not None else nan
    stats["best_metric_mean"] = nan
    if d.candidate_metric is not None:
        stats["best_metric_mean"] = mean(d.candidate_metric.masked_fill(~d.candidate_valid, 0).amax(1), fitted)
    return dict(zip(stats, torch.stack(list(stats.values())).tolist()))


#: the training log's names (``metrics.jsonl``) of the :func:`summarize_diagnostics` figures
LOG_KEYS = {
    "no_candidate_frac": "gt_without_cand",
    "no_positive_frac": "gt_without_pos",
    **{f"no_positive_frac_{s}": f"gt_without_pos_{s}" for s in SIZES},
    **{f"positives_per_gt_{s}": f"pos_per_gt_{s}" for s in SIZES},
    "em_iterations_mean": "em_iters",
    "em_not_converged_frac": "em_not_converged",
    "collapsed_frac": "em_collapsed",
    "dynamic_k_mean": "dynamic_k",
    "best_metric_mean": "tal_metric",
}


def log_figures(diagnostics: AssignmentDiagnostics) -> dict[str, float]:
    """:func:`summarize_diagnostics` under the training log's short names (:data:`LOG_KEYS`)."""
    summary = summarize_diagnostics(diagnostics)
    return {short: summary[name] for name, short in LOG_KEYS.items()}

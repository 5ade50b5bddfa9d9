"""The statistics the notebooks show about the EM of Procedure 1, line 12: every GT's candidate costs fitted
as training did and to convergence, Ashman's D, the BIC, "clearly bimodal" by a stated criterion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..assign.boundaries import BOUNDARIES, boundary_cost
from ..assign.config import AssignConfig
from ..assign.gmm import CONVERGED_MAX_ITER, CONVERGED_TOL, GMMFit, fit_gmm
from ..assign.paa import fit_and_separate
from ..assign.stats import size_class

#: Ashman's D above which a two-Gaussian mixture is clearly bimodal (the two groups do not overlap much).
BIMODAL_D = 2.0
#: ... and each component must hold at least this many candidates (one outlier is not a group).
BIMODAL_MIN_COUNT = 2
#: Two fits "differ" when a mean moved by more than this fraction of the GT's cost range.
VISIBLE_SHIFT = 0.1


def ashman_d(means: Tensor, variances: Tensor) -> Tensor:
    """Ashman's D of two Gaussians, ``|m_1 - m_0| / sqrt((σ_0² + σ_1²) / 2)``.

    D > 2 (:data:`BIMODAL_D`): the mixture has two clearly separated modes.

    Args:
        means: ``[G, 2]`` the two components' means.
        variances: ``[G, 2]`` their variances.

    Returns:
        ``[G]`` D per row.
    """
    return (means[..., 1] - means[..., 0]).abs() / ((variances[..., 0] + variances[..., 1]) / 2).sqrt()


def bic_gain(costs: Tensor, valid: Tensor, fit: GMMFit) -> Tensor:
    """BIC(one Gaussian) − BIC(the two-Gaussian ``fit``) per row ``[G]``: > 0 when the data prefer two.

    BIC = −2 log L + p log n with p = 2 parameters for one Gaussian, 5 for the mixture (2 means, 2
    variances, 1 free weight). Costs drawn from one Gaussian give ≤ 0 in ~97 % of 45-candidate sets,
    while D > 2 alone (EM puts a narrow component on a tail) would call 60 % of them bimodal.

    Args:
        costs: ``[G, N]`` candidate costs.
        valid: ``[G, N]`` bool, the used slots.
        fit: the two-component :class:`~paa_toolkit.assign.GMMFit` of the same rows.

    Returns:
        ``[G]`` float64 BIC gain of two Gaussians over one.
    """
    x = costs.double().masked_fill(~valid, 0.0)
    n = valid.sum(1).double()
    mean = x.sum(1) / n.clamp(min=1)
    var = ((x - mean[:, None]).square() * valid).sum(1) / n.clamp(min=1) + 1e-6
    ll_one = -0.5 * n * (torch.log(2 * math.pi * var) + 1)
    ll_two = fit.log_density.double().masked_fill(~valid, 0.0).sum(1)
    log_n = torch.log(n.clamp(min=1))
    return (-2 * ll_one + 2 * log_n) - (-2 * ll_two + 5 * log_n)


@dataclass
class FitComparison:
    """Every GT's candidate costs fitted twice (Procedure 1, line 12), all ``[G]`` / ``[G, ...]``.

    ``trained``: the fit training used (the snapshot's settings; by default the paper's §4.1 start,
    σ = 1, stopped by scikit-learn's tol 1e-3); ``converged``: the same start run to convergence
    (:data:`CONVERGED_TOL`). ``d`` is Ashman's D of the converged fit, ``delta_bic`` its :func:`bic_gain`;
    ``bimodal`` (the course's criterion of "clearly bimodal costs"): BIC prefers two Gaussians, D > 2
    and each component holds ≥ 2 candidates; ``differs``: a mean of the two fits is apart by more than
    :data:`VISIBLE_SHIFT` of the GT's cost range (the plots differ); ``positives_differ``: separating
    with the two fits (the snapshot's rule, Fig. 3 (c) for a non-GMM rule) gives other positives.
    """

    trained: GMMFit
    converged: GMMFit
    d: Tensor
    delta_bic: Tensor
    bimodal: Tensor
    differs: Tensor
    positives_differ: Tensor
    num_candidates: Tensor


def compare_fits(costs: Tensor, valid: Tensor, settings: AssignConfig | None = None) -> FitComparison:
    """Fit every GT's candidate costs as training did and to convergence, and compare the two fits.

    Args:
        costs: ``[G, N]`` candidate costs.
        valid: ``[G, N]`` bool, the used slots.
        settings: the assignment settings training used (the snapshot's; default: the paper's).

    Returns:
        :class:`FitComparison`, every field ``[G]`` or ``[G, ...]``.
    """
    settings = settings or AssignConfig()
    x = costs.double().masked_fill(~valid, 0.0)
    trained = fit_gmm(x, valid, init=settings.gmm_init, tol=settings.gmm_tol, max_iter=settings.gmm_max_iter)
    converged = fit_gmm(x, valid, init=settings.gmm_init, tol=CONVERGED_TOL, max_iter=CONVERGED_MAX_ITER)
    d = ashman_d(converged.means, converged.variances)
    counts = torch.stack([((converged.labels == k) & valid).sum(1) for k in (0, 1)], 1)
    delta_bic = bic_gain(costs, valid, converged)
    bimodal = (delta_bic > 0) & (d > BIMODAL_D) & (counts.min(1).values >= BIMODAL_MIN_COUNT)
    spread = (x.masked_fill(~valid, -math.inf).amax(1) - x.masked_fill(~valid, math.inf).amin(1)).clamp(min=1e-12)
    differs = (trained.means - converged.means).abs().amax(1) > VISIBLE_SHIFT * spread
    rule = settings.rule if settings.rule in BOUNDARIES else "c"
    sorted_x, order = x.masked_fill(~valid, math.inf).sort(1)  # the rules read sorted rows
    sorted_valid = valid.gather(1, order)
    sorted_x = sorted_x.masked_fill(~sorted_valid, 0.0)
    labels = [
        fit_and_separate(
            sorted_x,
            sorted_valid,
            rule,
            fnp_num=settings.fnp_num,
            fsr_thresh=settings.fsr_thresh,
            gmm_init=settings.gmm_init,
            gmm_tol=tol,
            gmm_max_iter=it,
        )[0]
        for tol, it in ((settings.gmm_tol, settings.gmm_max_iter), (CONVERGED_TOL, CONVERGED_MAX_ITER))
    ]
    positives_differ = ((labels[0] != labels[1]) & sorted_valid).any(1)
    return FitComparison(trained, converged, d, delta_bic, bimodal, differs, positives_differ, valid.sum(1))


#: GTs with fewer candidates are not judged bimodal or not (too few points for two Gaussians and a BIC).
MIN_CANDIDATES_TO_JUDGE = 10


@dataclass
class TracedGTs:
    """Every GT of an assignment snapshot (one row per GT, as its diagnostics) with both EM fits."""

    image: Tensor  # [G] image of the snapshot
    gt: Tensor  # [G] GT index in its image
    area: Tensor  # [G] box area in the resized image
    size: Tensor  # [G] COCO size: 0 small (< 32²), 1 medium (< 96²), 2 large
    num_candidates: Tensor  # [G]
    fits: FitComparison

    @property
    def judged(self) -> Tensor:
        """GTs with at least :data:`MIN_CANDIDATES_TO_JUDGE` candidates."""
        return self.num_candidates >= MIN_CANDIDATES_TO_JUDGE

    def summary(self) -> dict[str, float]:
        """Over the judged GTs: how many, the fraction with clearly bimodal costs, with an early-stopped
        (visibly different) training fit, with other positives under the converged fit; the median EM
        iterations of both fits."""
        j = self.judged
        f = self.fits
        frac = lambda flag: float(flag[j].double().mean()) if j.any() else math.nan
        return {
            "gts": int(len(j)),
            "judged": int(j.sum()),
            "bimodal": frac(f.bimodal),
            "differs": frac(f.differs),
            "positives_differ": frac(f.positives_differ),
            "em_iterations": float(f.trained.n_iter[j].double().median()) if j.any() else math.nan,
            "converged_iterations": float(f.converged.n_iter[j].double().median()) if j.any() else math.nan,
        }


def traced_gts(snapshot: Any) -> TracedGTs:
    """The GTs of a trace snapshot and :func:`compare_fits` of their costs under the snapshot's own settings.

    Args:
        snapshot: an :class:`~paa_toolkit.assign.AssignmentSnapshot` (``<run>/trace/iter_*.pt``).

    Returns:
        :class:`TracedGTs`, one row per GT: image, GT index, area, size class, candidates, both fits.
    """
    d = snapshot.diagnostics
    fits = compare_fits(d.candidate_cost, d.candidate_valid, getattr(snapshot, "settings", None))
    area = d.gt_area if d.gt_area is not None else torch.full_like(d.candidate_cost[:, 0], math.nan)
    return TracedGTs(d.image_index, d.gt_index, area, size_class(area), d.candidate_valid.sum(1), fits)


def gt_fits(costs: Tensor, settings: AssignConfig | None = None, rule: str | None = None) -> dict[str, dict[str, Any]]:
    """One GT's candidate costs fitted as training did and run to convergence, each then separated.

    Args:
        costs: ``[n]`` the GT's candidate costs.
        settings: the assignment settings training used (default: the paper's).
        rule: the separation (default: the settings' rule; Fig. 3 (c) for a non-GMM rule).

    Returns:
        ``{"trained": ..., "converged": ...}``, each with ``fit`` (a :class:`~paa_toolkit.assign.GMMFit` of one
        row), ``labels`` ``[n]`` in the order of the sorted costs, ``boundary`` (the last positive's cost),
        ``n_iter``, ``positives``, ``ignored``.
    """
    settings = settings or AssignConfig()
    rule = rule or (settings.rule if settings.rule in BOUNDARIES else "c")
    row = costs.double().sort().values[None]
    ok = torch.ones_like(row, dtype=torch.bool)
    out = {}
    for name, tol, max_iter in (
        ("trained", settings.gmm_tol, settings.gmm_max_iter),
        ("converged", CONVERGED_TOL, CONVERGED_MAX_ITER),
    ):
        labels, fit = fit_and_separate(
            row,
            ok,
            rule,
            fnp_num=settings.fnp_num,
            fsr_thresh=settings.fsr_thresh,
            gmm_init=settings.gmm_init,
            gmm_tol=tol,
            gmm_max_iter=max_iter,
        )
        out[name] = {
            "fit": fit,
            "labels": labels[0],
            "boundary": float(boundary_cost(row, labels)[0]),
            "n_iter": int(fit.n_iter[0]),
            "positives": int((labels == 1).sum()),
            "ignored": int((labels == -1).sum()),
        }
    return out


def fit_row(fit: GMMFit, row: int) -> dict[str, Tensor]:
    """One row of a batched fit, as the plots take it.

    Args:
        fit: a :class:`~paa_toolkit.assign.GMMFit` of ``G`` rows.
        row: which row.

    Returns:
        ``{"means": [2], "variances": [2], "weights": [2], "labels": [N], "n_iter": []}``.
    """
    return {k: getattr(fit, k)[row] for k in ("means", "variances", "weights", "labels", "n_iter")}


__all__ = [
    "BIMODAL_D",
    "BIMODAL_MIN_COUNT",
    "MIN_CANDIDATES_TO_JUDGE",
    "VISIBLE_SHIFT",
    "FitComparison",
    "TracedGTs",
    "ashman_d",
    "bic_gain",
    "compare_fits",
    "fit_row",
    "gt_fits",
    "traced_gts",
]

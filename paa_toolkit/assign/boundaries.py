"""Procedure 1, line 13 (SeparateAnchors): candidates + fitted GMM → positive / negative / ignore.

Every rule works on ``[G, N]`` rows of candidate costs **sorted ascending** (unused slots last,
``valid`` False) and returns labels ``[G, N]``: 1 positive, 0 negative, -1 ignore (unused slots 0).
Cost is the negative log anchor score of Eq. (3): low cost = good anchor. Component 0 of the GMM is
the foreground one (initialised at the minimum cost, §4.1), as in the reference code.

Pictures below read left to right along the sorted costs; ``+`` positive, ``-`` negative, ``o`` ignored,
``|`` the boundary; F and B mark the foreground / background sample of highest mixture density.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .gmm import GMMFit

POSITIVE, NEGATIVE_LABEL, IGNORED = 1, 0, -1

#: The separation rules by name: Fig. 3 (a)–(d) and the two non-probabilistic baselines of Table 1 left.
BOUNDARIES = ("a", "b", "c", "d")
SEPARATIONS = BOUNDARIES + ("fnp", "fsr")


def _labels(positive: Tensor, valid: Tensor, ignore: Tensor | None = None) -> Tensor:
    labels = (positive & valid).to(torch.int64)
    if ignore is not None:
        labels = labels.masked_fill(ignore & valid & ~positive, IGNORED)
    return labels


def _peak_index(fit: GMMFit, valid: Tensor, component: int) -> tuple[Tensor, Tensor]:
    """Index of the sample of ``component`` with the highest mixture density (first on ties), and whether one exists."""
    members = (fit.labels == component) & valid
    density = fit.log_density.masked_fill(~members, float("-inf"))
    return density.argmax(dim=1), members.any(dim=1)


def _all_positive_without_foreground(positive: Tensor, valid: Tensor, has_fg: Tensor) -> Tensor:
    """No candidate falls in the foreground component: all are positives, "for high recall" (reference code)."""
    return torch.where(has_fg[:, None], positive, valid)


def separate_posterior(fit: GMMFit, valid: Tensor) -> Tensor:
    """Fig. 3 (a): positive where P(fg | cost) ≥ P(bg | cost), the Bayes boundary of the mixture.

    ``[+ + + + | - - - -]`` at the cost where the two weighted Gaussians cross.
    """
    fg = (fit.labels == 0) & valid
    return _labels(_all_positive_without_foreground(fg, valid, fg.any(dim=1)), valid)


def separate_peaks_with_ignore(fit: GMMFit, valid: Tensor) -> Tensor:
    """Fig. 3 (b): positives up to the foreground peak, ignored between the peaks, negatives from the background peak.

    ``[+ + F | o o o | B - -]``: the anchors the model is unsure about give no loss at all.
    """
    n = torch.arange(valid.shape[1], device=valid.device)[None]
    fg_peak, has_fg = _peak_index(fit, valid, 0)
    bg_peak, has_bg = _peak_index(fit, valid, 1)
    positive = _all_positive_without_foreground(n <= fg_peak[:, None], valid, has_fg)
    ignore = (n > fg_peak[:, None]) & (n < bg_peak[:, None]) & has_bg[:, None] & has_fg[:, None]
    return _labels(positive, valid, ignore)


def separate_foreground_peak(fit: GMMFit, valid: Tensor) -> Tensor:
    """Fig. 3 (c), the reference default: positives are the sorted candidates up to the foreground peak.

    ``[+ + + F | - - - -]``: F is the foreground-labelled candidate of highest mixture density
    (sklearn's ``score_samples``); everything after it is negative.
    """
    n = torch.arange(valid.shape[1], device=valid.device)[None]
    fg_peak, has_fg = _peak_index(fit, valid, 0)
    return _labels(_all_positive_without_foreground(n <= fg_peak[:, None], valid, has_fg), valid)


def separate_midpoint(costs: Tensor, fit: GMMFit, valid: Tensor) -> Tensor:
    """Fig. 3 (d): positives up to the midpoint of the two fitted means, whatever their spread and weight.

    ``[+ + + + | - - - -]`` at (m_fg + m_bg) / 2; the lowest-cost candidate is always positive.
    """
    midpoint = fit.means.mean(dim=1, keepdim=True).to(costs.dtype)
    positive = costs <= midpoint
    positive[:, 0] = True
    return _labels(positive, valid)


def separate_fixed_number(costs: Tensor, valid: Tensor, num: int) -> Tensor:
    """FNP(n), Table 1 left: the ``num`` lowest-cost candidates are positive, no model of the scores.

    ``[+ + ... (n) | - - -]``.
    """
    n = torch.arange(costs.shape[1], device=costs.device)[None]
    return _labels(n < num, valid)


def separate_fixed_score(costs: Tensor, valid: Tensor, threshold: float) -> Tensor:
    """FSR(t), Table 1 left: positive when the anchor score S = exp(-cost) (Eq. 1) exceeds ``threshold``.

    ``[+ + | - - - -]`` at cost = -log t; a GT may get no positive at all (why FSR(>0.3) fails to train).
    """
    return _labels(costs < -math.log(threshold), valid)


#: each separation by name: (costs, valid, fit, fnp_num, fsr_thresh) → labels
_SEPARATE = {
    "a": lambda costs, valid, fit, n, t: separate_posterior(fit, valid),
    "b": lambda costs, valid, fit, n, t: separate_peaks_with_ignore(fit, valid),
    "c": lambda costs, valid, fit, n, t: separate_foreground_peak(fit, valid),
    "d": lambda costs, valid, fit, n, t: separate_midpoint(costs, fit, valid),
    "fnp": lambda costs, valid, fit, n, t: separate_fixed_number(costs, valid, n),
    "fsr": lambda costs, valid, fit, n, t: separate_fixed_score(costs, valid, t),
}


def separate(
    rule: str,
    costs: Tensor,
    valid: Tensor,
    fit: GMMFit | None = None,
    *,
    fnp_num: int = 10,
    fsr_thresh: float = 0.2,
) -> Tensor:
    """Procedure 1, line 13 (SeparateAnchors): label each GT's sorted candidates with ``rule``.

    Args:
        rule: one of :data:`SEPARATIONS`: ``"a"``–``"d"`` the GMM boundaries of Fig. 3, ``"fnp"`` (a fixed
            number of positives), ``"fsr"`` (a fixed score ratio).
        costs: ``[G, N]`` candidate costs, each row sorted ascending, unused slots last.
        valid: ``[G, N]`` bool, the used slots.
        fit: the GMM fitted to ``costs`` (:func:`~.gmm.fit_gmm`); required for ``"a"``–``"d"``.
        fnp_num: positives per GT for ``"fnp"``.
        fsr_thresh: score ratio for ``"fsr"``.

    Returns:
        ``[G, N]`` int64 labels: 1 positive, 0 negative, -1 ignored (unused slots 0).
    """
    if rule in BOUNDARIES and fit is None:
        raise ValueError(f"boundary {rule!r} needs a fitted GMM (fit=None given)")
    if rule in _SEPARATE:
        return _SEPARATE[rule](costs, valid, fit, fnp_num, fsr_thresh)
    raise ValueError(f"unknown rule {rule!r}; valid choices: {', '.join(SEPARATIONS)}")


def boundary_cost(costs: Tensor, labels: Tensor) -> Tensor:
    """Where the boundary lies: the cost of the last positive of each row.

    Args:
        costs: ``[G, N]`` sorted candidate costs.
        labels: ``[G, N]`` their labels (:func:`separate`).

    Returns:
        ``[G]`` the largest positive cost per row, NaN for a row without a positive.
    """
    pos_costs = costs.masked_fill(labels != POSITIVE, float("-inf"))
    boundary = pos_costs.max(dim=1).values
    return boundary.masked_fill(torch.isinf(boundary), float("nan"))


def separation_boundary(rule: str, costs: Tensor, labels: Tensor, fit: GMMFit | None) -> Tensor:
    """Where ``rule`` cuts each row, in cost: the last positive's cost (:func:`boundary_cost`), except for
    Fig. 3 (d), which cuts at the midpoint of the two means."""
    return fit.means.mean(dim=1) if rule == "d" and fit is not None else boundary_cost(costs, labels)

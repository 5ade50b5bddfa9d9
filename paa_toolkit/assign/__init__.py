"""Anchor assigners: PAA (Procedure 1) and the baselines, all behind one interface (:mod:`.base`).

    assigner = build_assigner(AssignConfig(rule="c", topk=9))   # or rule "a"/"b"/"d"/"fnp"/"fsr"/"atss"/"max_iou"

The steps of Procedure 1 are public too, for the course and for new rules: :func:`match_max_iou` and
:func:`topk_per_level` (lines 3–11), :func:`anchor_cost` (Eq. 1–3), :func:`fit_gmm` (Eq. 4, line 12),
:func:`separate` (line 13, Fig. 3), :func:`scatter_labels` (lines 14–16).
"""
from __future__ import annotations

from .base import IGNORE, NEGATIVE, Assigner, Assignment, AssignmentDiagnostics, positives_per_gt
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import BOUNDARIES, SEPARATIONS, boundary_cost, separate
from .build import build_assigner
from .candidates import PAA_IOU_THRESHOLD, anchor_gt_iou, match_max_iou, topk_per_level
from .config import GMM_INITS, GMM_RULES, LOW_QUALITY_POLICIES, RULES, AssignConfig
from .cost import anchor_cost, focal_loss_per_anchor
from .gmm import (
    CONVERGED_MAX_ITER,
    CONVERGED_TOL,
    GMMFit,
    fit_gmm,
    fit_gmm_sklearn,
    gmm_history,
    synthetic_candidate_costs,
)
from .paa import PAAAssigner, fit_and_separate, scatter_labels
from .replay import Replay, replay_assignment
from .stats import summarize_diagnostics
from .trace import AssignmentSnapshot

__all__ = [
    "ATSSAssigner", "AssignConfig", "Assigner", "Assignment", "AssignmentDiagnostics", "AssignmentSnapshot",
    "BOUNDARIES", "CONVERGED_MAX_ITER", "CONVERGED_TOL", "GMMFit", "GMM_INITS", "GMM_RULES", "IGNORE",
    "LOW_QUALITY_POLICIES", "MaxIoUAssigner", "NEGATIVE", "PAAAssigner", "PAA_IOU_THRESHOLD", "RULES", "Replay",
    "SEPARATIONS", "anchor_cost", "anchor_gt_iou", "boundary_cost", "build_assigner", "fit_and_separate", "fit_gmm",
    "fit_gmm_sklearn", "focal_loss_per_anchor", "gmm_history", "match_max_iou", "positives_per_gt", "replay_assignment",
    "scatter_labels", "separate", "summarize_diagnostics", "synthetic_candidate_costs", "topk_per_level",
]

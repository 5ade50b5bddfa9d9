"""Anchor assigners: PAA (Procedure 1), the baselines and PAA's successors, all behind one interface (:mod:`.base`).

    assigner = build_assigner(AssignConfig(rule="c", topk=9))   # any name of RULES: "a"–"d", "fnp", "fsr",
                                                                # "atss", "max_iou", "tal", "simota"

Each rule is one registered module (:mod:`.registry`): its name, settings dataclass and assigner.
The steps of Procedure 1 are public too, for the course and for new rules: :func:`match_max_iou` and
:func:`topk_per_level` (lines 3–11), :func:`anchor_cost` (Eq. 1–3), :func:`fit_gmm` (Eq. 4, line 12),
:func:`separate` (line 13, Fig. 3), :func:`scatter_labels` (lines 14–16).
"""

from __future__ import annotations

from .base import IGNORE, NEGATIVE, Assigner, Assignment, AssignmentDiagnostics, positives_per_gt
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import BOUNDARIES, SEPARATIONS, boundary_cost, separate
from .build import build_assigner
from .candidates import PAA_IOU_THRESHOLD, anchor_gt_iou, centres_inside, match_max_iou, topk_per_level
from .config import GMM_INITS, GMM_RULES, LOW_QUALITY_POLICIES, RULES, AssignConfig, config_of
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
from .registry import Rule, describe_rules, get_rule, register, rule_names, rules, settings_problems
from .replay import Replay, replay_assignment
from .simota import SimOTAAssigner, candidate_regions, dynamic_k, simota_cost
from .stats import SIZES, summarize_diagnostics
from .tal import TALAssigner, alignment_metric, normalised_metric
from .trace import AssignmentSnapshot

__all__ = [
    "ATSSAssigner",
    "AssignConfig",
    "Assigner",
    "Assignment",
    "AssignmentDiagnostics",
    "AssignmentSnapshot",
    "BOUNDARIES",
    "CONVERGED_MAX_ITER",
    "CONVERGED_TOL",
    "GMMFit",
    "GMM_INITS",
    "GMM_RULES",
    "IGNORE",
    "LOW_QUALITY_POLICIES",
    "MaxIoUAssigner",
    "NEGATIVE",
    "PAAAssigner",
    "PAA_IOU_THRESHOLD",
    "RULES",
    "Replay",
    "Rule",
    "SEPARATIONS",
    "SIZES",
    "SimOTAAssigner",
    "TALAssigner",
    "alignment_metric",
    "anchor_cost",
    "anchor_gt_iou",
    "boundary_cost",
    "build_assigner",
    "candidate_regions",
    "centres_inside",
    "config_of",
    "describe_rules",
    "dynamic_k",
    "fit_and_separate",
    "fit_gmm",
    "fit_gmm_sklearn",
    "focal_loss_per_anchor",
    "get_rule",
    "gmm_history",
    "match_max_iou",
    "normalised_metric",
    "positives_per_gt",
    "register",
    "replay_assignment",
    "rule_names",
    "rules",
    "scatter_labels",
    "separate",
    "settings_problems",
    "simota_cost",
    "summarize_diagnostics",
    "synthetic_candidate_costs",
    "topk_per_level",
]

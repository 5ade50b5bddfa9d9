"""Anchor assigners: PAA (Procedure 1) and the baselines, all behind one interface (:mod:`.base`).

    assigner = build_assigner(AssignConfig(rule="c", topk=9))   # or rule "a"/"b"/"d"/"fnp"/"fsr"/"atss"/"max_iou"
"""
from __future__ import annotations

from .base import IGNORE, NEGATIVE, Assigner, Assignment, AssignmentDiagnostics
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import BOUNDARIES, SEPARATIONS
from .build import build_assigner
from .config import GMM_INITS, GMM_RULES, LOW_QUALITY_POLICIES, RULES, AssignConfig
from .cost import anchor_cost
from .gmm import GMMFit, fit_gmm
from .paa import PAAAssigner
from .stats import summarize_diagnostics

__all__ = [
    "ATSSAssigner", "AssignConfig", "Assigner", "Assignment", "AssignmentDiagnostics", "BOUNDARIES", "GMMFit",
    "GMM_INITS", "GMM_RULES", "IGNORE", "LOW_QUALITY_POLICIES", "MaxIoUAssigner", "NEGATIVE", "PAAAssigner", "RULES",
    "SEPARATIONS", "anchor_cost", "build_assigner", "fit_gmm", "summarize_diagnostics",
]

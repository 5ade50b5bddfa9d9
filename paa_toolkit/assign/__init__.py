"""Anchor assigners: PAA (Procedure 1), the baselines and PAA's successors, all behind one interface (:mod:`.base`).

    assigner = build_assigner(AssignConfig(rule="c", topk=9))   # any name of RULES: "a"–"d", "fnp", "fsr",
                                                                # "atss", "max_iou", "tal", "simota"

Each rule is one registered module (:mod:`.registry`): its name, settings dataclass and assigner.
"""
from __future__ import annotations

from .base import IGNORE, NEGATIVE, Assigner, Assignment, AssignmentDiagnostics
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import BOUNDARIES, SEPARATIONS
from .build import build_assigner
from .config import GMM_INITS, GMM_RULES, LOW_QUALITY_POLICIES, RULES, AssignConfig, config_of
from .cost import anchor_cost
from .gmm import GMMFit, fit_gmm
from .paa import PAAAssigner
from .registry import Rule, describe_rules, get_rule, rule_names, rules, settings_problems
from .simota import SimOTAAssigner
from .stats import summarize_diagnostics
from .tal import TALAssigner

__all__ = [
    "ATSSAssigner", "AssignConfig", "Assigner", "Assignment", "AssignmentDiagnostics", "BOUNDARIES", "GMMFit",
    "GMM_INITS", "GMM_RULES", "IGNORE", "LOW_QUALITY_POLICIES", "MaxIoUAssigner", "NEGATIVE", "PAAAssigner", "RULES",
    "Rule", "SEPARATIONS", "SimOTAAssigner", "TALAssigner", "anchor_cost", "build_assigner", "config_of",
    "describe_rules", "fit_gmm",
    "get_rule", "rule_names", "rules", "settings_problems", "summarize_diagnostics",
]

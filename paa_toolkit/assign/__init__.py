"""Anchor assigners: PAA (Procedure 1) and the baselines, all behind one interface (:mod:`.base`).

    assigner = build_assigner(AssignConfig(rule="c", topk=9))   # or rule "a"/"b"/"d"/"fnp"/"fsr"/"atss"/"max_iou"
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .base import IGNORE, NEGATIVE, Assigner, Assignment, AssignmentDiagnostics
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import BOUNDARIES, SEPARATIONS
from .config import GMM_RULES, RULES, AssignConfig
from .cost import anchor_cost
from .gmm import GMMFit, fit_gmm
from .paa import PAAAssigner


def build_assigner(cfg: AssignConfig | None = None, **changes: Any) -> Assigner:
    """The assigner of ``cfg.rule`` (∈ :data:`RULES`): PAA for Fig. 3 (a)–(d), FNP and FSR; ATSS; max-IoU.

    ``changes`` override fields of ``cfg`` (``build_assigner(rule="atss")``).
    """
    cfg = replace(cfg or AssignConfig(), **changes)
    if cfg.rule in SEPARATIONS:
        return PAAAssigner(topk=cfg.topk, score_lambda=cfg.score_lambda, rule=cfg.rule, fnp_num=cfg.fnp_num,
                           fsr_thresh=cfg.fsr_thresh)
    if cfg.rule == "atss":
        return ATSSAssigner(topk=cfg.topk)
    if cfg.rule == "max_iou":
        return MaxIoUAssigner(topk=cfg.topk)
    raise ValueError(f"unknown assignment rule {cfg.rule!r}; valid choices: {', '.join(RULES)}")


__all__ = [
    "ATSSAssigner", "AssignConfig", "Assigner", "Assignment", "AssignmentDiagnostics", "BOUNDARIES", "GMMFit",
    "GMM_RULES", "IGNORE", "MaxIoUAssigner", "NEGATIVE", "PAAAssigner", "RULES", "SEPARATIONS", "anchor_cost",
    "build_assigner", "fit_gmm",
]

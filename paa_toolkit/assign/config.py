"""The assignment settings (§3.1, Procedure 1; Table 1 left; Table 4) — the one home of their defaults.

    cfg = AssignConfig(rule="c", topk=9)          # the paper's PAA: Fig. 3 (c), K = 9, λ = 1
    assigner = build_assigner(cfg)                # paa_toolkit.assign.build_assigner

``rule`` is the one name of the assignment rule everywhere (config, command line ``--assign.rule``,
assigners, widgets, traces, ablation grids).
"""
from __future__ import annotations

from dataclasses import dataclass

from .boundaries import BOUNDARIES, SEPARATIONS
from .candidates import LOW_QUALITY_POLICIES
from .gmm import GMM_INITS, SKLEARN_MAX_ITER, SKLEARN_TOL

#: Every assignment rule: PAA with the boundaries of Fig. 3 (a)–(d); the fixed-number / fixed-score
#: separations of Table 1 left (FNP, FSR: PAA's candidates and scores, no GMM); the baselines ATSS and
#: max-IoU (RetinaNet's IoU ≥ 0.5, Table 1 right "IoU assignment").
RULES = SEPARATIONS + ("atss", "max_iou")
#: The rules that score anchors with the model and fit the GMM of Procedure 1, line 12.
GMM_RULES = BOUNDARIES


@dataclass
class AssignConfig:
    """How anchors become positive samples."""

    rule: str = "c"  # PAA boundary a–d (Fig. 3; "c": the paper's), FNP / FSR (Table 1 left), ATSS or max-IoU
    topk: int = 9  # K of Procedure 1, line 8: candidates per pyramid level (Table 4: 5–25)
    score_lambda: float = 1.0  # λ of Eq. (1)/(3): weight of the localisation term of the anchor score
    fnp_num: int = 10  # n of FNP(n), Table 1 left (rule "fnp")
    fsr_thresh: float = 0.2  # t of FSR(> t), Table 1 left (rule "fsr")
    low_quality: str = "reference"  # line 3, a best anchor of several GTs: reference code, last GT (gt), no GT left out
    gmm_init: str = "paper"  # line 12, EM start: "paper" (§4.1: min/max, σ = 1) or "data"
    gmm_tol: float = SKLEARN_TOL  # line 12, EM stops when the mean log-likelihood gains less (scikit-learn's tol)
    gmm_max_iter: int = SKLEARN_MAX_ITER  # line 12, EM iteration cap (scikit-learn's max_iter)


__all__ = ["AssignConfig", "GMM_INITS", "GMM_RULES", "LOW_QUALITY_POLICIES", "RULES"]

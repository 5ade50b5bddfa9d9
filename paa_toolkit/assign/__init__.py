"""Anchor assigners: PAA (Procedure 1) and the baselines, all behind one interface (:mod:`.base`)."""
from __future__ import annotations

from .base import IGNORE, NEGATIVE, Assigner, Assignment, AssignmentDiagnostics
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import BOUNDARIES, SEPARATIONS
from .gmm import GMMFit, fit_gmm
from .paa import PAAAssigner

#: Names accepted by :func:`build_assigner` (and by ``--assigner`` on the command line).
ASSIGNERS = ("paa", "fnp", "fsr", "atss", "max_iou")


def build_assigner(
    name: str = "paa", *, boundary: str = "c", topk: int = 9, score_lambda: float = 1.0,
    fnp_num: int = 10, fsr_thresh: float = 0.2,
) -> Assigner:
    """Switching assigner is one argument: "paa" (with ``boundary`` a–d), "fnp", "fsr", "atss", "max_iou"."""
    if name == "paa":
        return PAAAssigner(topk=topk, score_lambda=score_lambda, separation=boundary)
    if name in ("fnp", "fsr"):
        return PAAAssigner(topk=topk, score_lambda=score_lambda, separation=name, fnp_num=fnp_num, fsr_thresh=fsr_thresh)
    if name == "atss":
        return ATSSAssigner(topk=topk)
    if name == "max_iou":
        return MaxIoUAssigner(topk=topk)
    raise ValueError(f"unknown assigner {name!r}; valid choices: {', '.join(ASSIGNERS)}")


__all__ = [
    "ASSIGNERS", "ATSSAssigner", "Assigner", "Assignment", "AssignmentDiagnostics", "BOUNDARIES", "GMMFit",
    "IGNORE", "MaxIoUAssigner", "NEGATIVE", "PAAAssigner", "SEPARATIONS", "build_assigner", "fit_gmm",
]

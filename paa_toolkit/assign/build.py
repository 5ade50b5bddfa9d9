"""One switch for the assignment rule: :func:`build_assigner` (PAA, FNP, FSR, ATSS, max-IoU)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .base import Assigner
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import SEPARATIONS
from .config import RULES, AssignConfig
from .paa import PAAAssigner


def build_assigner(cfg: AssignConfig | None = None, **changes: Any) -> Assigner:
    """The assigner of ``cfg.rule`` (∈ :data:`RULES`): PAA for Fig. 3 (a)–(d), FNP and FSR; ATSS; max-IoU.

    Args:
        cfg: the assignment settings (default: :class:`~.config.AssignConfig`, the paper's).
        **changes: fields of ``cfg`` to override (``build_assigner(rule="atss")``).

    Returns:
        An :class:`~.base.Assigner`: :class:`~.paa.PAAAssigner`, :class:`~.baselines.ATSSAssigner` or
        :class:`~.baselines.MaxIoUAssigner`.

    Raises:
        ValueError: an unknown rule.
    """
    cfg = replace(cfg or AssignConfig(), **changes)
    if cfg.rule in SEPARATIONS:
        return PAAAssigner(topk=cfg.topk, score_lambda=cfg.score_lambda, rule=cfg.rule, fnp_num=cfg.fnp_num,
                           fsr_thresh=cfg.fsr_thresh, low_quality=cfg.low_quality, gmm_init=cfg.gmm_init,
                           gmm_tol=cfg.gmm_tol, gmm_max_iter=cfg.gmm_max_iter)
    if cfg.rule == "atss":
        return ATSSAssigner(topk=cfg.topk)
    if cfg.rule == "max_iou":
        return MaxIoUAssigner(topk=cfg.topk)
    raise ValueError(f"unknown assignment rule {cfg.rule!r}; valid choices: {', '.join(RULES)}")


__all__ = ["build_assigner"]

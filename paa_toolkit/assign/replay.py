"""Replay: Procedure 1, lines 12–16 (or a baseline) re-run on a recorded :class:`~.trace.AssignmentSnapshot`.

    replay = replay_assignment(snapshot)                 # the snapshot's own settings: the training assignment
    replay = replay_assignment(snapshot, "a", topk=5)    # another rule / K / λ on the same predictions

The snapshot records the assigner's settings (rule, K, λ, FNP n, FSR t); anything not given here is
taken from them, so a run trained with λ = 0.5 replays with λ = 0.5. Used by notebooks and widgets.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..structures import PaddedTargets
from .base import Assignment
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import boundary_cost
from .build import build_assigner
from .config import RULES, AssignConfig
from .paa import fit_and_separate, gmm_diagnostics, scatter_labels
from .trace import AssignmentSnapshot


@dataclass
class Replay:
    """An assignment recomputed from a snapshot. ``exact`` False: costs approximated (see ``note``)."""

    assignment: Assignment
    rule: str
    exact: bool
    note: str
    iou_boundary: float | None = None  # max-IoU: the positive IoU threshold (drawn on the IoU axis)


def _reseparate(snapshot: AssignmentSnapshot, cfg: AssignConfig) -> Assignment:
    """Procedure 1, lines 12–16 on the snapshot's own candidate costs (exact: the costs of training)."""
    diag = snapshot.diagnostics
    costs, valid = diag.candidate_cost, diag.candidate_valid
    labels, fit = fit_and_separate(costs, valid, cfg.rule, fnp_num=cfg.fnp_num, fsr_thresh=cfg.fsr_thresh,
                                   gmm_init=cfg.gmm_init, gmm_tol=cfg.gmm_tol, gmm_max_iter=cfg.gmm_max_iter)
    matched = scatter_labels(snapshot.matched_gt.shape, diag.candidate_anchor, diag.image_index, diag.gt_index, labels)
    diagnostics = dataclasses.replace(diag, candidate_label=labels, boundary=boundary_cost(costs, labels),
                                      iou_threshold=None, **gmm_diagnostics(fit))
    return Assignment(matched_gt=matched, diagnostics=diagnostics)


def _has_training_costs(snapshot: AssignmentSnapshot) -> bool:
    diag = snapshot.diagnostics
    return bool(torch.isfinite(diag.candidate_cost[diag.candidate_valid]).all()) and bool(diag.candidate_valid.any())


@torch.no_grad()
def replay_assignment(snapshot: AssignmentSnapshot, rule: str | None = None, **changes: Any) -> Replay:
    """The snapshot's batch assigned again with ``rule`` ∈ :data:`~.config.RULES` and other ``changes`` to
    its :class:`~.config.AssignConfig` (``topk``, ``score_lambda``, ``fnp_num``, ``fsr_thresh``,
    ``low_quality``, ``gmm_init``, ``gmm_tol``, ``gmm_max_iter``); a setting not given (or ``None``) is
    the snapshot's own (``snapshot.settings``).

    * ATSS and max-IoU only need anchors and GT boxes: always exact.
    * PAA rules with the snapshot's own K, λ and matcher: its candidate costs are fitted and separated
      again — exact, and the snapshot's own settings reproduce the training assignment.
    * Another K, λ or matcher needs the cost of Eq. (3) of every anchor: exact with the snapshot's
      per-class ``cls_logits [B, A, C]`` (recorded by the trainer); otherwise approximated from
      ``cls_scores`` (the best class probability taken as the GT class probability, so the other
      classes' focal terms are dropped).

    Args:
        snapshot: a training trace (``<run>/trace/iter_*.pt``, read by ``engine.load_trace``).
        rule: the rule to assign with (None: the snapshot's).
        **changes: other fields of :class:`~.config.AssignConfig`.

    Returns:
        :class:`Replay`: the :class:`~.base.Assignment` (``matched_gt [B, A]``, with diagnostics), the settings
        used and whether it is exact.
    """
    own = snapshot.settings
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(AssignConfig)})
    if unknown:
        raise ValueError(f"unknown assignment setting(s) {unknown}")
    cfg = dataclasses.replace(own, **{k: v for k, v in {"rule": rule, **changes}.items() if v is not None})
    if cfg.rule not in RULES:
        raise ValueError(f"unknown rule {cfg.rule!r}; valid choices: {', '.join(RULES)}")
    if cfg.topk < 1:
        raise ValueError(f"topk (K) must be >= 1, got {cfg.topk}")
    anchors = snapshot.anchor_grid
    targets = PaddedTargets(boxes=snapshot.gt_boxes, labels=snapshot.gt_labels, valid=snapshot.gt_valid)
    if cfg.rule == "atss":
        return Replay(ATSSAssigner(topk=cfg.topk)(anchors, targets, return_diagnostics=True), cfg.rule, True,
                      "ATSS (exact)")
    if cfg.rule == "max_iou":
        assigner = MaxIoUAssigner(topk=cfg.topk)
        return Replay(assigner(anchors, targets, return_diagnostics=True), cfg.rule, True,
                      "max-IoU (exact)", iou_boundary=assigner.pos_iou)

    same_candidates = (cfg.topk == own.topk and math.isclose(cfg.score_lambda, own.score_lambda)
                       and cfg.low_quality == own.low_quality and own.rule not in ("atss", "max_iou"))
    if same_candidates and _has_training_costs(snapshot):
        return Replay(_reseparate(snapshot, cfg), cfg.rule, True, "training costs (exact)")
    cls_logits = snapshot.cls_logits
    exact = cls_logits is not None
    if not exact:  # one class: the best-class probability stands in for the GT class probability
        p = snapshot.cls_scores.float().clamp(1e-6, 1 - 1e-6)
        cls_logits = torch.logit(p)[..., None]
        targets = dataclasses.replace(targets, labels=torch.zeros_like(targets.labels))
    assigner = build_assigner(cfg)
    assignment = assigner(anchors, targets, cls_logits, snapshot.pred_boxes, return_diagnostics=True)
    note = "recomputed costs (exact)" if exact else "costs approximated from cls_scores (snapshot has no cls_logits)"
    return Replay(assignment, cfg.rule, exact, note)


__all__ = ["Replay", "replay_assignment"]

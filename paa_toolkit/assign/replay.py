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

import torch

from ..structures import PaddedTargets
from .base import Assignment
from .baselines import ATSSAssigner, MaxIoUAssigner
from .boundaries import boundary_cost
from .config import RULES
from .paa import PAAAssigner, fit_and_separate, gmm_diagnostics, scatter_labels
from .trace import AssignmentSnapshot


@dataclass
class Replay:
    """An assignment recomputed from a snapshot. ``exact`` False: costs approximated (see ``note``)."""

    assignment: Assignment
    rule: str
    exact: bool
    note: str
    iou_boundary: float | None = None  # max-IoU: the positive IoU threshold (drawn on the IoU axis)


def _reseparate(snapshot: AssignmentSnapshot, rule: str, fnp_num: float, fsr_thresh: float) -> Assignment:
    """Procedure 1, lines 12–16 on the snapshot's own candidate costs (exact: the costs of training)."""
    diag = snapshot.diagnostics
    costs, valid = diag.candidate_cost, diag.candidate_valid
    labels, fit = fit_and_separate(costs, valid, rule, fnp_num=fnp_num, fsr_thresh=fsr_thresh)
    matched = scatter_labels(snapshot.matched_gt.shape, diag.candidate_anchor, diag.image_index, diag.gt_index, labels)
    diagnostics = dataclasses.replace(diag, candidate_label=labels, boundary=boundary_cost(costs, labels),
                                      iou_threshold=None, **gmm_diagnostics(fit))
    return Assignment(matched_gt=matched, diagnostics=diagnostics)


def _has_training_costs(snapshot: AssignmentSnapshot) -> bool:
    diag = snapshot.diagnostics
    return bool(torch.isfinite(diag.candidate_cost[diag.candidate_valid]).all()) and bool(diag.candidate_valid.any())


@torch.no_grad()
def replay_assignment(
    snapshot: AssignmentSnapshot,
    rule: str | None = None,
    *,
    topk: int | None = None,
    score_lambda: float | None = None,
    fnp_num: int | None = None,
    fsr_thresh: float | None = None,
) -> Replay:
    """The snapshot's batch assigned again with ``rule`` ∈ :data:`~.config.RULES`, K = ``topk``, λ = ``score_lambda``.

    Every setting left ``None`` is the snapshot's own (``snapshot.settings``).

    * ATSS and max-IoU only need anchors and GT boxes: always exact.
    * PAA rules with the snapshot's own K and λ: its candidate costs are fitted and separated again —
      exact, and the snapshot's own rule reproduces the training assignment.
    * Another K or λ needs the cost of Eq. (3) of every anchor: exact with the snapshot's per-class
      ``cls_logits [B, A, C]`` (recorded by the trainer); otherwise approximated from ``cls_scores`` (the
      best class probability, taken as the GT class probability, so the other classes' focal terms are dropped).
    """
    own = snapshot.settings
    rule = own.rule if rule is None else rule
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid choices: {', '.join(RULES)}")
    fnp_num = own.fnp_num if fnp_num is None else int(fnp_num)
    fsr_thresh = own.fsr_thresh if fsr_thresh is None else float(fsr_thresh)
    anchors = snapshot.anchor_grid
    targets = PaddedTargets(boxes=snapshot.gt_boxes, labels=snapshot.gt_labels, valid=snapshot.gt_valid)
    k = own.topk if topk is None else int(topk)
    if k < 1:
        raise ValueError(f"topk (K) must be >= 1, got {topk}")
    if rule == "atss":
        return Replay(ATSSAssigner(topk=k)(anchors, targets, return_diagnostics=True), rule, True, "ATSS (exact)")
    if rule == "max_iou":
        assigner = MaxIoUAssigner(topk=k)
        return Replay(assigner(anchors, targets, return_diagnostics=True), rule, True,
                      "max-IoU (exact)", iou_boundary=assigner.pos_iou)

    lam = own.score_lambda if score_lambda is None else float(score_lambda)
    same_costs = k == own.topk and math.isclose(lam, own.score_lambda) and own.rule not in ("atss", "max_iou")
    if same_costs and _has_training_costs(snapshot):
        return Replay(_reseparate(snapshot, rule, fnp_num, fsr_thresh), rule, True, "training costs (exact)")
    cls_logits = snapshot.cls_logits
    exact = cls_logits is not None
    if not exact:  # one class: the best-class probability stands in for the GT class probability
        p = snapshot.cls_scores.float().clamp(1e-6, 1 - 1e-6)
        cls_logits = torch.logit(p)[..., None]
        targets = dataclasses.replace(targets, labels=torch.zeros_like(targets.labels))
    assigner = PAAAssigner(topk=k, score_lambda=lam, rule=rule, fnp_num=fnp_num, fsr_thresh=fsr_thresh)
    assignment = assigner(anchors, targets, cls_logits, snapshot.pred_boxes, return_diagnostics=True)
    note = "recomputed costs (exact)" if exact else "costs approximated from cls_scores (snapshot has no cls_logits)"
    return Replay(assignment, rule, exact, note)


__all__ = ["Replay", "replay_assignment"]

"""Replay: a registered rule re-run on a recorded :class:`~.trace.AssignmentSnapshot`.

    replay = replay_assignment(snapshot)                 # the snapshot's own settings: the training assignment
    replay = replay_assignment(snapshot, "a", topk=5)    # another rule / K / λ on the same predictions
    replay = replay_assignment(snapshot, "tal")          # a successor of PAA on the same GT and predictions

The snapshot records the assigner's settings (rule, K, λ, FNP n, FSR t, ...); anything not given here is
taken from them, so a run trained with λ = 0.5 replays with λ = 0.5. Used by notebooks and widgets.
Which rules can be replayed, and how exactly, the registry says (:mod:`.registry`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..structures import PaddedTargets
from .base import Assignment
from .build import build_assigner
from .config import AssignConfig
from .registry import get_rule
from .trace import AssignmentSnapshot


@dataclass
class Replay:
    """An assignment recomputed from a snapshot. ``exact`` False: costs approximated (see ``note``)."""

    assignment: Assignment
    rule: str
    exact: bool
    note: str
    iou_boundary: float | None = None  # max-IoU: the positive IoU threshold (drawn on the IoU axis)


@torch.no_grad()
def replay_assignment(snapshot: AssignmentSnapshot, rule: str | None = None, **changes: Any) -> Replay:
    """The snapshot's batch assigned again with ``rule`` ∈ :data:`~.config.RULES` and other ``changes`` to
    its :class:`~.config.AssignConfig` (``topk``, ``score_lambda``, ``tal_alpha``, ...); a setting not given
    (or ``None``) is the snapshot's own (``snapshot.settings``).

    * Rules that ignore the model (ATSS, max-IoU) only need anchors and GT boxes: always exact.
    * A rule with a ``reseparate`` step (PAA) whose recorded candidates serve the new settings (PAA: the
      snapshot's own K, λ and matcher) separates them again — exact, and the snapshot's own settings
      reproduce the training assignment.
    * Otherwise the rule scores every anchor with the model: exact with the snapshot's per-class
      ``cls_logits [B, A, C]`` (recorded by the trainer); otherwise approximated from ``cls_scores`` (the
      best class probability taken as the GT class probability, so the other classes' terms are dropped).

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
    entry = get_rule(cfg.rule)
    if not entry.replayable:
        raise ValueError(f"rule {cfg.rule!r} cannot be replayed from a trace")
    assigner = build_assigner(cfg)
    anchors = snapshot.anchor_grid
    targets = PaddedTargets(boxes=snapshot.gt_boxes, labels=snapshot.gt_labels, valid=snapshot.gt_valid)
    boundary = getattr(assigner, "pos_iou", None)
    if not assigner.needs_predictions:
        return Replay(
            assigner(anchors, targets, return_diagnostics=True),
            cfg.rule,
            True,
            f"{entry.title} (exact)",
            iou_boundary=boundary,
        )
    same_family = entry.reseparate is not None and get_rule(own.rule).reseparate is entry.reseparate
    if same_family:
        again = entry.reseparate(own, cfg, snapshot.diagnostics, snapshot.matched_gt.shape)
        if again is not None:
            return Replay(again, cfg.rule, True, "training costs (exact)")
    cls_logits = snapshot.cls_logits
    exact = cls_logits is not None
    if not exact:  # one class: the best-class probability stands in for the GT class probability
        p = snapshot.cls_scores.float().clamp(1e-6, 1 - 1e-6)
        cls_logits = torch.logit(p)[..., None]
        targets = dataclasses.replace(targets, labels=torch.zeros_like(targets.labels))
    assignment = assigner(anchors, targets, cls_logits, snapshot.pred_boxes, return_diagnostics=True)
    note = "recomputed costs (exact)" if exact else "costs approximated from cls_scores (snapshot has no cls_logits)"
    return Replay(assignment, cfg.rule, exact, note)


__all__ = ["Replay", "replay_assignment"]

"""TAL: TOOD's task-aligned assignment (Feng et al., ICCV 2021, §3.2), for a whole batch at once.

PAA scores an anchor by how well its prediction fits a GT (Eq. 1–3) and lets a GMM pick the positives;
TAL keeps the score and replaces the GMM by a fixed count:

1. Candidates: the anchors whose centre lies inside the GT box.
2. Alignment metric of each candidate, t = s^α · u^β (TOOD §3.2, "task-aligned sample assignment"):
   s the predicted probability of the GT's class, u the IoU of the predicted box with the GT.
3. The GT takes its top-m candidates by t (those with t > 0); an anchor taken by several GTs goes to
   the GT it overlaps most (highest u).
4. Soft class target (TOOD §3.2, "task-aligned loss"): t normalised per GT, t̂ = t · max(u) / max(t)
   over the GT's positives, so that its best positive's target is that positive set's best IoU.

mmdetection's TOOD uses α = 1, β = 6, m = 13 and ATSS for its first epochs (not reproduced here:
``assign.rule`` is one rule for the whole run); YOLOv8 uses α = 0.5, β = 6, m = 10. mmdetection takes
the top-m over all anchors and then drops those outside the GT (so a GT can get fewer than m); this
follows the order stated in the paper and YOLOv8 (inside first, then top-m). A GT too small to hold an
anchor centre has no candidate and no positive: that is TAL's starvation of tiny objects.
No Python loop over GTs or anchors: everything is ``[B, M, A]`` tensors on the input's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..structures import AnchorGrid, PaddedTargets, batched_box_iou
from .base import NEGATIVE, Assignment, slot_diagnostics
from .candidates import centres_inside
from .registry import Rule, register

#: keeps t̂ = t · max u / max t finite for a GT whose positives all have t = 0 (mmdetection: 1e-7)
NORM_EPS = 1e-9


@dataclass
class TALSettings:
    """TOOD's task-aligned assignment (§3.2): t = s^α · u^β, the top-m candidates by t per GT."""

    tal_topk: int = 13  # m of TOOD §3.2: positives per GT, its top-m centre-inside anchors by t (YOLOv8: 10)
    tal_alpha: float = 1.0  # α of TOOD's t = s^α·u^β: exponent of the class score s (YOLOv8: 0.5)
    tal_beta: float = 6.0  # β of TOOD's t = s^α·u^β: exponent of the IoU u of the predicted box
    tal_soft_target: bool = True  # train the class score towards t normalised (TOOD §3.2); false: hard 0/1, focal

    def problems(self) -> list[str]:
        checks = [
            (self.tal_topk >= 1, f"tal_topk (m) must be >= 1, got {self.tal_topk}"),
            (self.tal_alpha >= 0, f"tal_alpha (α) must be >= 0, got {self.tal_alpha}"),
            (self.tal_beta >= 0, f"tal_beta (β) must be >= 0, got {self.tal_beta}"),
        ]
        return [message for ok, message in checks if not ok]


def alignment_metric(
    cls_logits: Tensor, pred_boxes: Tensor, targets: PaddedTargets, alpha: float, beta: float
) -> tuple[Tensor, Tensor]:
    """TOOD §3.2: t = s^α · u^β of every (GT, anchor) pair and the IoU u, both ``[B, M, A]``.

    ``s`` is the sigmoid of the GT class's logit (``cls_logits [B, A, C]``), ``u`` the IoU of the
    predicted box (``pred_boxes [B, A, 4]``, xyxy) with the GT box.
    """
    b, a, _ = cls_logits.shape
    labels = targets.labels.clamp(min=0)[:, None, :].expand(b, a, -1)  # [B, A, M]
    score = cls_logits.float().sigmoid().gather(2, labels).transpose(1, 2)  # [B, M, A]
    iou = batched_box_iou(targets.boxes.float(), pred_boxes.float())  # [B, M, A]
    return score.pow(alpha) * iou.pow(beta), iou


def normalised_metric(metric: Tensor, iou: Tensor, matched_gt: Tensor) -> Tensor:
    """TOOD §3.2: each positive's t̂ = t · max(u) / max(t), the maxima over its GT's positives, ``[B, A]``
    (0 on negatives); the best positive of a GT gets that GT's best IoU among its positives."""
    m = metric.shape[1]
    mine = matched_gt[:, None, :] == torch.arange(m, device=metric.device)[None, :, None]  # [B, M, A]
    best_t = metric.masked_fill(~mine, 0).amax(2, keepdim=True)
    best_u = iou.masked_fill(~mine, 0).amax(2, keepdim=True)
    normalised = metric * best_u / (best_t + NORM_EPS)
    own = normalised.gather(1, matched_gt.clamp(min=0)[:, None, :])[:, 0]
    return torch.where(matched_gt >= 0, own, torch.zeros_like(own))


class TALAssigner:
    """TOOD's task-aligned assigner (§3.2): top-m centre-inside anchors by t = s^α·u^β, ties to the best IoU.

    Args (defaults: :class:`TALSettings`):
        tal_topk: m, the positives per GT (at most; fewer when fewer anchor centres lie in the GT).
        tal_alpha, tal_beta: the exponents of the class score and the IoU in t.
        tal_soft_target: put t̂ in :attr:`Assignment.cls_target` (the loss then uses it); False: none.
    """

    needs_predictions = True
    rule = "tal"

    def __init__(
        self,
        tal_topk: int = TALSettings.tal_topk,
        tal_alpha: float = TALSettings.tal_alpha,
        tal_beta: float = TALSettings.tal_beta,
        tal_soft_target: bool = TALSettings.tal_soft_target,
    ):
        self.settings = TALSettings(tal_topk, tal_alpha, tal_beta, tal_soft_target)
        if self.settings.problems():
            raise ValueError("; ".join(self.settings.problems()))

    @classmethod
    def from_config(cls, cfg) -> TALAssigner:
        return cls(cfg.tal_topk, cfg.tal_alpha, cfg.tal_beta, cfg.tal_soft_target)

    def __repr__(self) -> str:
        s = self.settings
        return f"TALAssigner(m={s.tal_topk}, α={s.tal_alpha}, β={s.tal_beta}, soft_target={s.tal_soft_target})"

    @torch.no_grad()
    def __call__(
        self,
        anchors: AnchorGrid,
        targets: PaddedTargets,
        cls_logits: Tensor | None = None,
        pred_boxes: Tensor | None = None,
        return_diagnostics: bool = False,
    ) -> Assignment:
        if cls_logits is None or pred_boxes is None:
            raise ValueError("TAL scores anchors with the model: cls_logits and pred_boxes are required")
        b, a = cls_logits.shape[:2]
        m, k = targets.max_gts, min(self.settings.tal_topk, a)
        if m == 0:
            return Assignment(
                torch.full((b, a), NEGATIVE, dtype=torch.int64, device=cls_logits.device),
                cls_target=torch.zeros(b, a, device=cls_logits.device) if self.settings.tal_soft_target else None,
            )
        metric, iou = alignment_metric(cls_logits, pred_boxes, targets, self.settings.tal_alpha, self.settings.tal_beta)
        centres = anchors.centers.to(targets.boxes.dtype)
        inside = centres_inside(centres[None, None], targets.boxes[:, :, None, :]) & targets.valid[..., None]
        top_t, top_anchor = metric.masked_fill(~inside, -1.0).topk(k, dim=2)  # [B, M, k], best first
        chosen = torch.zeros_like(inside).scatter_(2, top_anchor, top_t > 0)  # top-m candidates with t > 0
        # an anchor chosen by several GTs goes to the one of highest IoU u
        _, best_gt = iou.masked_fill(~chosen, -1.0).max(dim=1)  # [B, A]
        matched_gt = torch.where(chosen.any(dim=1), best_gt, NEGATIVE)
        cls_target = normalised_metric(metric, iou, matched_gt) if self.settings.tal_soft_target else None
        diagnostics = None
        if return_diagnostics:
            diagnostics = slot_diagnostics(
                anchors, targets, matched_gt, top_anchor, top_t >= 0, per_slot={"candidate_metric": top_t.clamp(min=0)}
            )
            positive_t = diagnostics.candidate_metric.masked_fill(diagnostics.candidate_label != 1, float("inf"))
            boundary = positive_t.amin(dim=1)
            diagnostics.boundary = boundary.masked_fill(torch.isinf(boundary), float("nan"))
        return Assignment(matched_gt=matched_gt, diagnostics=diagnostics, cls_target=cls_target)


register(
    Rule(
        "tal",
        "TAL (TOOD)",
        "TOOD's task-aligned assignment: each GT's top-m centre-inside anchors by t = s^a * u^b "
        "(tal_topk, tal_alpha, tal_beta), soft target t normalised",
        TALSettings,
        TALAssigner.from_config,
        uses=("tal_topk", "tal_alpha", "tal_beta", "tal_soft_target"),
        values="candidate_metric",
        values_label="alignment metric t = s^α·u^β (TOOD §3.2)",
    )
)

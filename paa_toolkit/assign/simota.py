"""SimOTA: YOLOX's simplified optimal-transport assignment (Ge et al. 2021, §2.2 "SimOTA"), batched.

Like PAA it ranks anchors by a cost that reads the model's predictions; unlike PAA it sets each GT's
number of positives from the IoUs of its predictions:

1. Candidates: the anchors whose centre lies inside some GT box or inside some GT's centre region
   (a square of ± radius × stride around the GT centre; YOLOX's radius is 2.5).
2. Cost of each (GT, candidate), YOLOX Eq. (1): c = L_cls + λ·L_reg, with L_cls the binary cross-entropy
   of the class probabilities against the GT's one-hot class, L_reg = −log IoU of the predicted box,
   λ = 3, plus a large constant (10⁵) where the anchor is not inside both the box and the centre region.
3. Dynamic k of each GT: max(1, ⌊Σ of its q largest IoUs⌋) with q = 10; the GT takes its k
   lowest-cost candidates.
4. An anchor taken by several GTs goes to the GT of lowest cost for it (all GTs compete, as YOLOX).
5. Class target (YOLOX): the IoU of the positive's predicted box with its GT.

YOLOX scores with √(class × objectness) and trains the class with plain BCE next to an objectness
branch. This head has no objectness: the cost uses the class probability, and the soft target is
trained with the quality focal loss of :mod:`paa_toolkit.model.losses` (as TAL's), so the comparison
with PAA changes the assignment and the target, not the head.
No Python loop over GTs or anchors: everything is ``[B, M, A]`` tensors on the input's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..structures import AnchorGrid, PaddedTargets, batched_box_iou
from .base import NEGATIVE, Assignment, slot_diagnostics
from .boundaries import boundary_cost
from .candidates import centres_inside
from .registry import Rule, register

#: YOLOX's cost for an anchor outside the GT's box or centre region: it is taken only when nothing else is left
OUTSIDE_COST = 1e5
#: −log(IoU + this): the localisation cost stays finite at IoU 0 (YOLOX: 1e-8)
IOU_EPS = 1e-8


@dataclass
class SimOTASettings:
    """YOLOX's SimOTA (§2.2): cost of Eq. (1), dynamic k from the IoUs, conflicts to the lowest cost."""

    simota_center_radius: float = 2.5  # YOLOX §2.2: the centre region, ± this many strides around the GT centre
    simota_iou_weight: float = 3.0  # λ of YOLOX Eq. (1), c = L_cls + λ·L_reg with L_reg = −log IoU (YOLOX: 3)
    simota_candidate_topk: int = 10  # q of the dynamic k = max(1, ⌊Σ of a GT's q largest IoUs⌋) (YOLOX: 10)
    simota_soft_target: bool = True  # train the class score towards the IoU (YOLOX); false: hard 0/1, focal

    def problems(self) -> list[str]:
        checks = [
            (self.simota_center_radius > 0, f"simota_center_radius must be > 0, got {self.simota_center_radius}"),
            (self.simota_iou_weight >= 0, f"simota_iou_weight (λ) must be >= 0, got {self.simota_iou_weight}"),
            (
                self.simota_candidate_topk >= 1,
                f"simota_candidate_topk (q) must be >= 1, got {self.simota_candidate_topk}",
            ),
        ]
        return [message for ok, message in checks if not ok]


def candidate_regions(anchors: AnchorGrid, targets: PaddedTargets, radius: float) -> tuple[Tensor, Tensor]:
    """Step 1: whether each anchor centre is inside each GT box and inside its centre region, both ``[B, M, A]``."""
    centres = anchors.centers.to(targets.boxes.dtype)
    strides = torch.tensor(anchors.strides, dtype=centres.dtype, device=centres.device)[anchors.level_of_anchor]
    boxes = targets.boxes[:, :, None, :]  # [B, M, 1, 4]
    in_box = centres_inside(centres[None, None], boxes, margin=0.0)
    gt_centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = radius * strides[None, None, :, None]  # [1, 1, A, 1]
    in_centre = centres_inside(centres[None, None], torch.cat([gt_centre - half, gt_centre + half], -1), margin=0.0)
    valid = targets.valid[..., None]
    return in_box & valid, in_centre & valid


def simota_cost(cls_logits: Tensor, iou: Tensor, labels: Tensor, iou_weight: float) -> Tensor:
    """YOLOX Eq. (1) without the region term: Σ_c BCE(p_c, onehot_c) + λ·(−log IoU), ``[B, M, A]``.

    With logits x, Σ_c BCE = Σ_c softplus(x_c) − x_g for the GT class g (exact, no clamped logs).
    """
    x = cls_logits.float()
    b, a, _ = x.shape
    x_gt = x.gather(2, labels.clamp(min=0)[:, None, :].expand(b, a, -1)).transpose(1, 2)  # [B, M, A]
    cls_cost = F.softplus(x).sum(-1)[:, None, :] - x_gt
    return cls_cost + iou_weight * -torch.log(iou + IOU_EPS)


def dynamic_k(iou: Tensor, candidate: Tensor, q: int) -> Tensor:
    """Step 3: max(1, ⌊Σ of each GT's ``q`` largest candidate IoUs⌋), ``[B, M]`` int64 (``iou [B, M, A]``)."""
    top = iou.masked_fill(~candidate, 0.0).topk(min(q, iou.shape[-1]), dim=2).values
    return top.sum(-1).long().clamp(min=1)  # the sum is >= 0: long() is the floor


class SimOTAAssigner:
    """YOLOX's SimOTA: each GT's dynamic-k lowest-cost candidates, an anchor of several GTs to the lowest cost.

    Args (defaults: :class:`SimOTASettings`):
        simota_center_radius: the centre region's half side, in strides of the anchor's level.
        simota_iou_weight: λ of Eq. (1).
        simota_candidate_topk: q, the IoUs summed into the dynamic k (k ≤ q).
        simota_soft_target: put the IoU in :attr:`Assignment.cls_target` (the loss then uses it); False: none.
    """

    needs_predictions = True
    rule = "simota"

    def __init__(
        self,
        simota_center_radius: float = SimOTASettings.simota_center_radius,
        simota_iou_weight: float = SimOTASettings.simota_iou_weight,
        simota_candidate_topk: int = SimOTASettings.simota_candidate_topk,
        simota_soft_target: bool = SimOTASettings.simota_soft_target,
    ):
        self.settings = SimOTASettings(
            simota_center_radius, simota_iou_weight, simota_candidate_topk, simota_soft_target
        )
        if self.settings.problems():
            raise ValueError("; ".join(self.settings.problems()))

    @classmethod
    def from_config(cls, cfg) -> SimOTAAssigner:
        return cls(cfg.simota_center_radius, cfg.simota_iou_weight, cfg.simota_candidate_topk, cfg.simota_soft_target)

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"SimOTAAssigner(radius={s.simota_center_radius}, λ={s.simota_iou_weight}, "
            f"q={s.simota_candidate_topk}, soft_target={s.simota_soft_target})"
        )

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
            raise ValueError("SimOTA scores anchors with the model: cls_logits and pred_boxes are required")
        s = self.settings
        b, a = cls_logits.shape[:2]
        m, q = targets.max_gts, min(s.simota_candidate_topk, a)
        if m == 0:
            return Assignment(
                torch.full((b, a), NEGATIVE, dtype=torch.int64, device=cls_logits.device),
                cls_target=torch.zeros(b, a, device=cls_logits.device) if s.simota_soft_target else None,
            )
        in_box, in_centre = candidate_regions(anchors, targets, s.simota_center_radius)
        candidate = (in_box | in_centre).any(dim=1, keepdim=True) & targets.valid[..., None]  # [B, M, A]
        iou = batched_box_iou(targets.boxes.float(), pred_boxes.float())  # [B, M, A]
        cost = simota_cost(cls_logits, iou, targets.labels, s.simota_iou_weight)
        cost = (cost + OUTSIDE_COST * ~(in_box & in_centre)).masked_fill(~candidate, float("inf"))
        k = torch.where(targets.valid, dynamic_k(iou, candidate, q), 0)  # [B, M]
        low_cost, low_anchor = cost.topk(q, dim=2, largest=False)  # [B, M, q]: k <= q, cheapest first
        take = (torch.arange(q, device=k.device) < k[..., None]) & torch.isfinite(low_cost)
        chosen = torch.zeros_like(candidate).scatter_(2, low_anchor, take)
        # an anchor chosen by several GTs goes to the GT of lowest cost for it (every GT competes)
        times = chosen.sum(dim=1)  # [B, A]
        only = chosen.long().argmax(dim=1)
        cheapest = cost.argmin(dim=1)
        matched_gt = torch.where(times > 1, cheapest, torch.where(times == 1, only, NEGATIVE))
        cls_target = None
        if s.simota_soft_target:
            own_iou = iou.gather(1, matched_gt.clamp(min=0)[:, None, :])[:, 0]
            cls_target = torch.where(matched_gt >= 0, own_iou, torch.zeros_like(own_iou))
        diagnostics = None
        if return_diagnostics:
            diagnostics = slot_diagnostics(
                anchors,
                targets,
                matched_gt,
                low_anchor,
                torch.isfinite(low_cost),
                per_slot={"candidate_cost": low_cost},
                per_gt={"dynamic_k": k},
            )
            diagnostics.boundary = boundary_cost(diagnostics.candidate_cost, diagnostics.candidate_label)
        return Assignment(matched_gt=matched_gt, diagnostics=diagnostics, cls_target=cls_target)


register(
    Rule(
        "simota",
        "SimOTA (YOLOX)",
        "YOLOX's SimOTA: cost BCE + 3·(−log IoU) (+10⁵ outside box and centre region); "
        "each GT takes its dynamic k = ⌊Σ of its 10 best IoUs⌋ cheapest anchors; soft target: the IoU",
        SimOTASettings,
        SimOTAAssigner.from_config,
        uses=("simota_center_radius", "simota_iou_weight", "simota_candidate_topk", "simota_soft_target"),
        values_label="SimOTA cost  L_cls + λ·(−log IoU)  (YOLOX Eq. 1)",
    )
)

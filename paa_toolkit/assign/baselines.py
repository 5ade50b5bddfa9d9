"""Baseline assigners under the PAA interface: max-IoU (RetinaNet) and ATSS (Zhang et al., CVPR 2020).

Neither looks at the model: they accept and ignore ``cls_logits`` / ``pred_boxes``. Their diagnostics
use the same :class:`~.base.AssignmentDiagnostics` rows as PAA (candidates = top-K anchors per level),
so the notebooks can draw all assigners the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..structures import AnchorGrid, PaddedTargets
from .base import IGNORE, Assignment, AssignmentDiagnostics
from .boundaries import IGNORED, POSITIVE
from .candidates import CandidateSettings, anchor_gt_iou, centres_inside, match_max_iou, topk_per_level
from .paa import rows_of_real_gts
from .registry import Rule, register


def _diagnostics(
    ious: Tensor,
    key: Tensor,
    anchors: AnchorGrid,
    targets: PaddedTargets,
    matched_gt: Tensor,
    k: int,
    iou_threshold: Tensor | None = None,
) -> AssignmentDiagnostics:
    """Per GT: the top-``k`` anchors per level by ``key`` ([B, A, M], smaller = closer) and their final labels."""
    cand = topk_per_level(key, None, anchors.num_per_level, targets.max_gts, k)
    rows, image_index, gt_index = rows_of_real_gts(cand, targets)
    n = cand.anchor.shape[-1]
    anchor_idx = cand.anchor.reshape(-1, n)[rows].clamp(min=0)
    valid = cand.valid.reshape(-1, n)[rows]
    cand_iou = ious[image_index[:, None], anchor_idx, gt_index[:, None]].clamp(min=0)
    order = torch.sort(cand_iou.masked_fill(~valid, -1.0), dim=1, descending=True, stable=True).indices
    anchor_idx, valid, cand_iou = (t.gather(1, order) for t in (anchor_idx, valid, cand_iou))
    level = anchors.level_of_anchor[anchor_idx].masked_fill(~valid, -1)
    gt_box = targets.boxes[image_index, gt_index]
    assigned = matched_gt[image_index[:, None], anchor_idx]
    labels = torch.where(assigned == gt_index[:, None], POSITIVE, 0)
    labels = labels.masked_fill(assigned == IGNORE, IGNORED).masked_fill(~valid, 0)
    return AssignmentDiagnostics(
        image_index=image_index,
        gt_index=gt_index,
        candidate_anchor=anchor_idx.masked_fill(~valid, -1),
        candidate_level=level,
        candidate_valid=valid,
        candidate_cost=torch.full_like(cand_iou, float("nan")),
        candidate_iou=cand_iou,
        candidate_label=labels,
        iou_threshold=iou_threshold,
        gt_area=(gt_box[:, 2] - gt_box[:, 0]) * (gt_box[:, 3] - gt_box[:, 1]),
    )


class MaxIoUAssigner:
    """RetinaNet's rule: positive IoU ≥ 0.5, negative < 0.4, ignored between (Table 1 right, "IoU assignment").

    Each GT also keeps its highest-IoU anchors (low-quality matches), as torchvision's RetinaNet does.
    Called as an :class:`~.base.Assigner`; it ignores the model's outputs.

    Args:
        pos_iou: positive from this IoU on.
        neg_iou: negative below this IoU.
        allow_low_quality: give each GT its highest-IoU anchors whatever the thresholds.
        topk: K of the diagnostics' candidate slots (the anchors of highest IoU per level).
    """

    needs_predictions = False
    rule = "max_iou"

    def __init__(
        self,
        pos_iou: float = 0.5,
        neg_iou: float = 0.4,
        allow_low_quality: bool = True,
        topk: int = CandidateSettings.topk,
    ):
        if not 0 <= neg_iou <= pos_iou <= 1:
            raise ValueError(f"need 0 <= neg_iou <= pos_iou <= 1, got neg_iou={neg_iou}, pos_iou={pos_iou}")
        self.pos_iou, self.neg_iou, self.allow_low_quality, self.topk = pos_iou, neg_iou, allow_low_quality, topk

    @property
    def settings(self) -> CandidateSettings:
        """K (of the diagnostics' candidate slots), recorded in every trace."""
        return CandidateSettings(topk=self.topk)

    def __repr__(self) -> str:
        return f"MaxIoUAssigner(pos_iou={self.pos_iou}, neg_iou={self.neg_iou})"

    @torch.no_grad()
    def __call__(
        self,
        anchors: AnchorGrid,
        targets: PaddedTargets,
        cls_logits=None,
        pred_boxes=None,
        return_diagnostics: bool = False,
    ) -> Assignment:
        ious = anchor_gt_iou(anchors, targets)
        matched_gt = match_max_iou(ious, self.neg_iou, self.pos_iou, self.allow_low_quality)
        diagnostics = None
        if return_diagnostics:
            threshold = torch.full((int(targets.valid.sum()),), self.pos_iou, device=ious.device, dtype=ious.dtype)
            diagnostics = _diagnostics(ious, -ious, anchors, targets, matched_gt, self.topk, iou_threshold=threshold)
        return Assignment(matched_gt=matched_gt, diagnostics=diagnostics)


class ATSSAssigner:
    """Adaptive Training Sample Selection (Zhang et al. 2020), the baseline of Table 1 right / Table 2.

    Per GT: the ``topk`` anchors per level whose centres are closest to the GT centre are candidates;
    positives are candidates with IoU ≥ mean + std of the candidates' IoUs and centre inside the GT;
    an anchor positive for several GTs goes to the one of highest IoU. Called as an
    :class:`~.base.Assigner`; it ignores the model's outputs.

    Args:
        topk: candidates per level (ATSS: 9).
    """

    needs_predictions = False

    rule = "atss"

    def __init__(self, topk: int = CandidateSettings.topk):
        if CandidateSettings(topk).problems():
            raise ValueError("; ".join(CandidateSettings(topk).problems()))
        self.topk = topk

    @property
    def settings(self) -> CandidateSettings:
        """K, recorded in every trace."""
        return CandidateSettings(topk=self.topk)

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk})"

    @torch.no_grad()
    def __call__(
        self,
        anchors: AnchorGrid,
        targets: PaddedTargets,
        cls_logits=None,
        pred_boxes=None,
        return_diagnostics: bool = False,
    ) -> Assignment:
        ious = anchor_gt_iou(anchors, targets)  # [B, A, M], -1 on padded GTs
        b, a, m = ious.shape
        centers = anchors.centers.to(targets.boxes.dtype)
        gt_centers = (targets.boxes[..., :2] + targets.boxes[..., 2:]) / 2
        distance = torch.cdist(centers[None].expand(b, -1, -1).contiguous(), gt_centers)  # [B, A, M]
        distance = distance.masked_fill(~targets.valid[:, None, :], float("inf"))
        cand = topk_per_level(distance, None, anchors.num_per_level, m, self.topk)  # [B, M, N]
        safe = cand.anchor.clamp(min=0)
        cand_iou = ious.transpose(1, 2).gather(2, safe).masked_fill(~cand.valid, float("nan"))
        mean = cand_iou.nanmean(dim=2, keepdim=True)
        count = cand.valid.sum(dim=2, keepdim=True)
        var = ((cand_iou - mean) ** 2).nan_to_num(0.0).sum(dim=2, keepdim=True) / (count - 1).clamp(min=1)
        threshold = mean + var.sqrt()  # unbiased std, as torch.std in the ATSS code
        inside = centres_inside(centers[safe], targets.boxes[:, :, None, :])  # [B, M, N]
        is_pos = cand.valid & (cand_iou >= threshold) & inside

        # An anchor positive for several GTs takes the GT of highest IoU.
        pos_iou = torch.full((b, m, a), -1.0, device=ious.device, dtype=ious.dtype)
        pos_iou.scatter_reduce_(2, safe, torch.where(is_pos, cand_iou, -1.0), reduce="amax")
        if m == 0:
            matched_gt = torch.full((b, a), -1, dtype=torch.int64, device=ious.device)
        else:
            best_iou, best_gt = pos_iou.max(dim=1)  # [B, A]
            matched_gt = torch.where(best_iou >= 0, best_gt, -1)
        diagnostics = None
        if return_diagnostics:
            rows = targets.valid.reshape(-1)
            diagnostics = _diagnostics(
                ious, distance, anchors, targets, matched_gt, self.topk, iou_threshold=threshold.reshape(-1)[rows]
            )
        return Assignment(matched_gt=matched_gt, diagnostics=diagnostics)


_IOU = "IoU of the anchor with the GT"
register(
    Rule(
        "atss",
        "ATSS",
        "ATSS (Zhang et al. 2020): the K closest anchors per level, positive when IoU >= mean + std and centre inside",
        CandidateSettings,
        lambda cfg: ATSSAssigner(topk=cfg.topk),
        uses=("topk",),
        values="candidate_iou",
        values_label=_IOU,
        boundary="iou_threshold",
    ),
    Rule(
        "max_iou",
        "max-IoU",
        "RetinaNet's IoU assignment (Table 1 right): positive IoU >= 0.5, ignored 0.4-0.5",
        CandidateSettings,
        lambda cfg: MaxIoUAssigner(topk=cfg.topk),
        uses=("topk",),
        values="candidate_iou",
        values_label=_IOU,
        boundary="iou_threshold",
    ),
)

"""Eq. (5)–(8): the training objective — the one home of the detector's loss.

Eq. (5)–(7) (§3.1) write the objective with the probabilities P_pos(a, x, g) / P_neg(a, x) that an
anchor is positive / negative; PAA approximates them as binary (1 for the anchors Procedure 1 labels
positive, resp. negative, 0 otherwise), which turns Eq. (7) into the per-anchor sum below. Eq. (8) adds
the IoU-prediction term: L = L_cls + λ1·L_IoU + λ2·L_IoUP. The anchor cost of Eq. (1)–(3) that ranks
anchors lives in :mod:`paa_toolkit.assign.cost`; the same focal loss is used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from ..assign.base import Assignment
from ..assign.cost import focal_loss_per_anchor
from ..distributed import mean_over_processes
from ..structures import AnchorGrid, PaddedTargets, paired_box_iou


def centerness_target(anchor_centers: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness of each anchor centre in its GT box (0 outside), ``[B, A]``."""
    left = anchor_centers[..., 0] - gt_boxes[..., 0]
    top = anchor_centers[..., 1] - gt_boxes[..., 1]
    right = gt_boxes[..., 2] - anchor_centers[..., 0]
    bottom = gt_boxes[..., 3] - anchor_centers[..., 1]
    lr = torch.stack([left, right], -1).clamp(min=0)
    tb = torch.stack([top, bottom], -1).clamp(min=0)
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)) * (
        tb.min(-1).values / tb.max(-1).values.clamp(min=1e-6)
    )
    return ratio.sqrt()


#: β of the quality focal loss (GFL; TOOD's γ of its task-aligned classification loss): 2
QFL_BETA = 2.0


def quality_focal_loss(cls_logits: Tensor, labels: Tensor, quality: Tensor, beta: float = QFL_BETA) -> Tensor:
    """TOOD §3.2's task-aligned classification loss (GFL's quality focal loss), summed over classes,
    ``[..., A, C] → [..., A]``: target y = ``quality`` for the class ``labels`` (-1: background, y = 0 for
    every class), loss = |y − σ(x)|^β · BCE(σ(x), y). With y ∈ {0, 1} it is the focal loss without α."""
    one_hot = F.one_hot(labels.clamp(min=0), cls_logits.shape[-1]).to(cls_logits.dtype)
    target = one_hot * ((labels >= 0).to(cls_logits.dtype) * quality.to(cls_logits.dtype))[..., None]
    bce = F.binary_cross_entropy_with_logits(cls_logits, target, reduction="none")
    return ((target - cls_logits.sigmoid()).abs().pow(beta) * bce).sum(-1)


@dataclass(frozen=True)
class LossWeights:
    """λ1 and λ2 of Eq. (8): the weights of the box (GIoU) loss (1.3, §4.1) and of the auxiliary IoU /
    centerness loss (0.5). Not the λ of Eq. (1)/(3), which weights the anchor score (see assign.cost).
    Frozen: a value, safe as a default argument."""

    box: float = 1.3
    aux: float = 0.5


def detection_losses(
    cls_logits: Tensor,
    pred_boxes: Tensor,
    aux_logits: Tensor | None,
    anchors: AnchorGrid,
    targets: PaddedTargets,
    assignment: Assignment,
    aux: str = "iou",
    weights: LossWeights = LossWeights(),
) -> dict[str, Tensor]:
    """Eq. (8): L = L_cls + λ1·L_IoU + λ2·L_IoUP, normalised as the reference code.

    - ``loss_cls``: focal loss over all non-ignored anchors / #positives (averaged over processes); the
      quality focal loss (:func:`quality_focal_loss`) when the assignment carries a soft ``cls_target``.
    - ``loss_box``: GIoU loss of positives weighted by the IoU of the detached prediction with its GT
      (Appendix A.1; centerness weights with the centerness head, none without) / Σ weights, × λ1.
    - ``loss_iou`` (or ``loss_centerness``): BCE of the auxiliary logit against the true IoU of the
      detached prediction (or the centerness) / #positives, × λ2.

    Args:
        cls_logits: ``[B, A, C]`` classification logits.
        pred_boxes: ``[B, A, 4]`` decoded predicted boxes (xyxy).
        aux_logits: ``[B, A]`` logits of the auxiliary head (IoU or centerness), or None.
        anchors: the anchor grid, ``boxes [A, 4]``.
        targets: padded GTs, ``boxes [B, M, 4]``, ``labels [B, M]``.
        assignment: the assigner's result, ``matched_gt [B, A]``.
        aux: "iou", "centerness" or "none": which auxiliary loss.
        weights: λ1, λ2 of Eq. (8).

    Returns:
        The scalar losses ``{"loss_cls", "loss_box", "loss_iou"}`` (``"loss_centerness"`` with that head,
        no auxiliary loss without one).
    """
    positive = assignment.positive
    labels = assignment.target_labels(targets)
    num_pos = mean_over_processes(positive.sum().to(cls_logits.dtype)).clamp(min=1.0)

    keep = ~assignment.ignored
    if assignment.cls_target is None:  # PAA: hard targets, the focal loss of Eq. (3) / (8)
        loss_cls = focal_loss_per_anchor(cls_logits[keep], labels[keep]).sum() / num_pos
    else:  # TAL / SimOTA: a soft target for the positive's class
        loss_cls = quality_focal_loss(cls_logits[keep], labels[keep], assignment.cls_target[keep]).sum() / num_pos

    gt_boxes = assignment.target_boxes(targets)[positive]
    boxes = pred_boxes[positive]
    giou = generalized_box_iou_loss(boxes, gt_boxes, reduction="none")
    losses = {"loss_cls": loss_cls}
    if aux == "iou":
        aux_target = paired_box_iou(boxes.detach(), gt_boxes)
    elif aux == "centerness":
        centers = anchors.centers.to(pred_boxes)[None].expand(positive.shape[0], -1, -1)[positive]
        aux_target = centerness_target(centers, gt_boxes)
    else:
        aux_target = None
    if aux_target is None:
        box_weight, box_norm = torch.ones_like(giou), num_pos
    else:
        box_weight = aux_target
        box_norm = mean_over_processes(aux_target.sum()).clamp(min=1e-6)
    losses["loss_box"] = (giou * box_weight).sum() / box_norm * weights.box
    if aux_target is not None and aux_logits is not None:
        bce = F.binary_cross_entropy_with_logits(aux_logits[positive], aux_target, reduction="sum")
        losses["loss_iou" if aux == "iou" else "loss_centerness"] = bce / num_pos * weights.aux
    return losses

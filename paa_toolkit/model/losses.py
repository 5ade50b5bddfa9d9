"""The anchor cost of Eq. (1)–(3) and the training loss of Eq. (8) — each has its one home here.

The assigner ranks anchors by :func:`anchor_cost` on detached predictions; the detector trains with
:func:`detection_losses`. Both use the same focal and GIoU losses from ``torchvision.ops``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ..assign.base import Assignment
from ..distributed import mean_over_processes
from ..structures import AnchorGrid, PaddedTargets, paired_box_iou

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal_loss_per_anchor(cls_logits: Tensor, labels: Tensor) -> Tensor:
    """Sigmoid focal loss (α 0.25, γ 2) summed over classes, ``[..., A, C] → [..., A]``; label -1 = background."""
    num_classes = cls_logits.shape[-1]
    one_hot = F.one_hot(labels.clamp(min=0), num_classes).to(cls_logits.dtype)
    one_hot = one_hot * (labels >= 0)[..., None].to(cls_logits.dtype)
    return sigmoid_focal_loss(cls_logits, one_hot, FOCAL_ALPHA, FOCAL_GAMMA, reduction="none").sum(-1)


def anchor_cost(
    cls_logits: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor, score_lambda: float = 1.0
) -> Tensor:
    """Eq. (3): cost = L_cls + λ·L_IoU = −log S, with S = S_cls × S_loc^λ of Eq. (1)–(2).

    L_cls is the focal loss towards the anchor's GT class (summed over classes), L_IoU the GIoU loss
    of the decoded predicted box against the GT box. Inputs ``[B, A, ...]`` per anchor (its matched
    GT's label and box); lower cost = better anchor. Gradients are not needed: call under no_grad.
    """
    cls_cost = focal_loss_per_anchor(cls_logits.float(), gt_labels)
    loc_cost = generalized_box_iou_loss(pred_boxes.float(), gt_boxes.float(), reduction="none")
    return cls_cost + score_lambda * loc_cost


def centerness_target(anchor_centers: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness of each anchor centre in its GT box (0 outside), ``[B, A]``."""
    left = anchor_centers[..., 0] - gt_boxes[..., 0]
    top = anchor_centers[..., 1] - gt_boxes[..., 1]
    right = gt_boxes[..., 2] - anchor_centers[..., 0]
    bottom = gt_boxes[..., 3] - anchor_centers[..., 1]
    lr = torch.stack([left, right], -1).clamp(min=0)
    tb = torch.stack([top, bottom], -1).clamp(min=0)
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)) * (tb.min(-1).values / tb.max(-1).values.clamp(min=1e-6))
    return ratio.sqrt()


@dataclass
class LossWeights:
    """λ1 (box loss, Eq. 8; 1.3 as §4.1) and λ2 (auxiliary IoU / centerness loss; 0.5)."""

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

    - ``loss_cls``: focal loss over all non-ignored anchors / #positives (averaged over processes).
    - ``loss_box``: GIoU loss of positives weighted by the IoU of the detached prediction with its GT
      (Appendix A.1; centerness weights with the centerness head, none without) / Σ weights, × λ1.
    - ``loss_iou`` (or ``loss_centerness``): BCE of the auxiliary logit against the true IoU of the
      detached prediction (or the centerness) / #positives, × λ2.
    """
    positive = assignment.positive
    labels = assignment.target_labels(targets)
    num_pos = mean_over_processes(positive.sum().to(cls_logits.dtype)).clamp(min=1.0)

    keep = ~assignment.ignored
    loss_cls = focal_loss_per_anchor(cls_logits[keep], labels[keep]).sum() / num_pos

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

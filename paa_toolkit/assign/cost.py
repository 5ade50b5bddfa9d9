"""Eq. (1)–(3): the anchor cost — the one home of the anchor score, used by the assigner and the loss.

    cost = anchor_cost(cls_logits, pred_boxes, gt_labels, gt_boxes, score_lambda=1.0)   # [B, A]

Eq. (1)  S(f_θ(a, x), g) = S_cls(f_θ(a, x), g) × S_IoU(f_θ(a, x), g)^λ
Eq. (2)  −log S = −log S_cls − λ·log S_IoU
Eq. (3)  cost = L_cls(f_θ(a, x), g) + λ·L_IoU(f_θ(a, x), g)  (focal loss, GIoU loss)

:func:`paa_toolkit.model.losses.detection_losses` (Eq. 8) trains with the same focal loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

#: α and γ of the focal loss (Lin et al.), as RetinaNet and the reference code.
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal_loss_per_anchor(cls_logits: Tensor, labels: Tensor) -> Tensor:
    """Sigmoid focal loss (α 0.25, γ 2) of every anchor towards its label, summed over classes.

    Args:
        cls_logits: ``[..., A, C]`` classification logits.
        labels: ``[..., A]`` int64 class of each anchor, -1 for background (every class a negative).

    Returns:
        ``[..., A]`` focal loss per anchor.
    """
    num_classes = cls_logits.shape[-1]
    one_hot = F.one_hot(labels.clamp(min=0), num_classes).to(cls_logits.dtype)
    one_hot = one_hot * (labels >= 0)[..., None].to(cls_logits.dtype)
    return sigmoid_focal_loss(cls_logits, one_hot, FOCAL_ALPHA, FOCAL_GAMMA, reduction="none").sum(-1)


def anchor_cost(
    cls_logits: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor, score_lambda: float
) -> Tensor:
    """Eq. (3): cost = L_cls + λ·L_IoU = −log S, with S = S_cls × S_loc^λ of Eq. (1)–(2).

    L_cls is the focal loss towards the anchor's GT class (summed over classes), L_IoU the GIoU loss
    of the decoded predicted box against the GT box. Lower cost = better anchor. Gradients are not
    needed: call under no_grad.

    Args:
        cls_logits: ``[B, A, C]`` classification logits of every anchor.
        pred_boxes: ``[B, A, 4]`` decoded predicted boxes (xyxy).
        gt_labels: ``[B, A]`` int64 class of the GT each anchor is scored against.
        gt_boxes: ``[B, A, 4]`` that GT's box (xyxy).
        score_lambda: λ of Eq. (1)–(3), the weight of the localisation term (paper: 1).

    Returns:
        ``[B, A]`` float32 cost −log S of every anchor.
    """
    cls_cost = focal_loss_per_anchor(cls_logits.float(), gt_labels)
    loc_cost = generalized_box_iou_loss(pred_boxes.float(), gt_boxes.float(), reduction="none")
    return cls_cost + score_lambda * loc_cost


__all__ = ["FOCAL_ALPHA", "FOCAL_GAMMA", "anchor_cost", "focal_loss_per_anchor"]

"""Box helpers that ``torchvision.ops`` lacks: batched IoU, anchor grids, padded targets.

Everything here works on a whole batch at once (leading dimension ``B``) and on any device.
Boxes are ``xyxy`` in absolute pixels, as in torchvision's detection API.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder

#: The box coder of RetinaNet / ATSS / PAA: deltas (dx, dy, dw, dh) scaled by (10, 10, 5, 5).
BOX_CODER = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))


def decode_boxes(deltas: Tensor, anchors: Tensor) -> Tensor:
    """Decode box regression deltas against their anchors (RetinaNet / ATSS / PAA coder, :data:`BOX_CODER`).

    Args:
        deltas: ``[..., A, 4]`` (dx, dy, dw, dh) per anchor, any leading dims.
        anchors: ``[A, 4]`` xyxy anchor boxes (broadcast over the leading dims).

    Returns:
        ``[..., A, 4]`` xyxy boxes.
    """
    shape = deltas.shape
    flat_anchors = anchors.expand(shape).reshape(-1, 4)
    return BOX_CODER.decode_single(deltas.reshape(-1, 4), flat_anchors).reshape(shape)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``[..., 4]`` xyxy boxes, ``[...]`` (0 for an inverted box)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every box of ``boxes1`` with every box of ``boxes2``, image by image (``box_iou`` per image).

    Degenerate (zero-area) pairs give IoU 0 instead of NaN.

    Args:
        boxes1: ``[B, N, 4]`` xyxy (any leading dims).
        boxes2: ``[B, M, 4]`` xyxy.

    Returns:
        ``[B, N, M]`` IoUs.
    """
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of two sets of boxes element by element.

    Args:
        boxes1: ``[..., 4]`` xyxy.
        boxes2: ``[..., 4]`` xyxy, the same shape.

    Returns:
        ``[...]`` IoU of each pair (0 for degenerate pairs).
    """
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


@dataclass
class AnchorGrid:
    """One square anchor per feature-map location, level by level (paper §3.2, Appendix A.3).

    ``boxes[A, 4]`` concatenates the levels in order; ``num_per_level[l]`` anchors belong to level
    ``l`` whose stride is ``strides[l]``; anchor size = stride × ``scale``.
    """

    boxes: Tensor
    num_per_level: list[int]
    strides: list[int]
    scale: float

    @property
    def centers(self) -> Tensor:
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2

    @property
    def level_of_anchor(self) -> Tensor:
        sizes = torch.tensor(self.num_per_level, device=self.boxes.device)
        return torch.repeat_interleave(torch.arange(len(sizes), device=self.boxes.device), sizes)


def make_anchor_grid(
    feature_sizes: list[tuple[int, int]],
    strides: list[int],
    scale: float = 8.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AnchorGrid:
    """One square anchor of size ``stride × scale`` centred on each cell of each level.

    Args:
        feature_sizes: ``(h, w)`` of each level's feature map, P3 first.
        strides: each level's stride in pixels (8, 16, 32, 64, 128 for P3–P7).
        scale: anchor size over stride (paper: 8; Table 4).
        device: where the boxes go.
        dtype: their dtype.

    Returns:
        :class:`AnchorGrid` with ``boxes [A, 4]`` (levels concatenated, A = Σ h·w), ``num_per_level``,
        ``strides`` and ``scale``.
    """
    boxes = []
    for (h, w), stride in zip(feature_sizes, strides):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        half = stride * scale / 2
        boxes.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1).reshape(-1, 4))
    return AnchorGrid(
        boxes=torch.cat(boxes),
        num_per_level=[h * w for h, w in feature_sizes],
        strides=list(strides),
        scale=scale,
    )


@dataclass
class PaddedTargets:
    """Ground truths of a batch padded to the largest count ``M``.

    ``boxes[B, M, 4]``, ``labels[B, M]`` (int64, contiguous ``0..C-1``), ``valid[B, M]`` (False on
    padding). Boxes with ``valid`` False are all-zero and never match an anchor.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor

    @property
    def batch_size(self) -> int:
        return self.boxes.shape[0]

    @property
    def max_gts(self) -> int:
        return self.boxes.shape[1]


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device | str | None = None) -> PaddedTargets:
    """Stack torchvision-style targets into tensors padded to the largest GT count ``M``.

    Args:
        targets: one dict per image, ``{"boxes": [n, 4] xyxy, "labels": [n] int64}``.
        device: where the tensors go (default: that of the first image's boxes).

    Returns:
        :class:`PaddedTargets`: ``boxes [B, M, 4]``, ``labels [B, M]`` (-1 on padding), ``valid [B, M]``.
    """
    device = device if device is not None else (targets[0]["boxes"].device if targets else "cpu")
    m = max([len(t["boxes"]) for t in targets], default=0)
    b = len(targets)
    boxes = torch.zeros(b, m, 4, device=device)
    labels = torch.full((b, m), -1, dtype=torch.int64, device=device)
    valid = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):  # one copy per image, not per ground truth
        n = len(t["boxes"])
        boxes[i, :n] = t["boxes"].to(device=device, dtype=boxes.dtype)
        labels[i, :n] = t["labels"].to(device=device, dtype=torch.int64)
        valid[i, :n] = True
    return PaddedTargets(boxes=boxes, labels=labels, valid=valid)


__all__ = [
    "BOX_CODER",
    "AnchorGrid",
    "PaddedTargets",
    "batched_box_iou",
    "box_area",
    "decode_boxes",
    "make_anchor_grid",
    "pad_targets",
    "paired_box_iou",
]

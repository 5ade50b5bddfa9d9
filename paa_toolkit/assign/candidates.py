"""Procedure 1, lines 3–11: GetAnchors (max-IoU matching) and the per-level top-K candidates.

All functions take a whole batch: ``B`` images, ``A`` anchors (levels concatenated), ``M`` padded GTs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..structures import AnchorGrid, PaddedTargets, batched_box_iou

#: An anchor whose best IoU is below this matches no GT (reference code: ``MODEL.PAA.IOU_THRESHOLD``).
PAA_IOU_THRESHOLD = 0.1


def anchor_gt_iou(anchors: AnchorGrid, targets: PaddedTargets) -> Tensor:
    """IoU of every anchor with every GT, ``[B, A, M]``; padded GT columns are -1 (never chosen)."""
    boxes = anchors.boxes.to(targets.boxes.dtype)[None].expand(targets.batch_size, -1, -1)
    ious = batched_box_iou(boxes, targets.boxes)
    return ious.masked_fill(~targets.valid[:, None, :], -1.0)


def match_max_iou(
    ious: Tensor, low_threshold: float, high_threshold: float | None = None, allow_low_quality: bool = True
) -> Tensor:
    """Each anchor to the GT of highest IoU (Procedure 1, line 3: GetAnchors), batched ``[B, A, M] → [B, A]``.

    Returns the GT index, -1 below ``low_threshold`` and -2 between the thresholds (when
    ``high_threshold`` is given: RetinaNet's grey zone). With ``allow_low_quality`` the anchors of
    highest IoU for each GT keep their best GT whatever the thresholds, as torchvision's ``Matcher``
    does, so that (nearly) every GT gets anchors even when no anchor fits it well.
    """
    if ious.shape[-1] == 0:
        return torch.full(ious.shape[:2], -1, dtype=torch.int64, device=ious.device)
    best_iou, matched = ious.max(dim=2)
    all_matches = matched.clone()
    high = low_threshold if high_threshold is None else high_threshold
    matched = matched.masked_fill(best_iou < high, -2).masked_fill(best_iou < low_threshold, -1)
    if allow_low_quality:
        best_per_gt = ious.max(dim=1, keepdim=True).values  # [B, 1, M]
        is_best = ((ious == best_per_gt) & (best_per_gt > 0)).any(dim=2)
        matched = torch.where(is_best, all_matches, matched)
    return matched


@dataclass
class Candidates:
    """Top-K anchors per pyramid level for each GT (Procedure 1, lines 4–11), as ``[B, M, N]`` slots.

    ``N = num_levels × K``; a slot is unused (``valid`` False, anchor -1, cost +inf) when a level has
    fewer than K anchors of that GT.
    """

    anchor: Tensor  # [B, M, N] int64
    level: Tensor  # [B, M, N] int64
    valid: Tensor  # [B, M, N] bool
    key: Tensor  # [B, M, N] the value that was ranked (cost for PAA, distance for ATSS)


def topk_per_level(
    key: Tensor, owner: Tensor | None, num_per_level: list[int], num_gts: int, k: int
) -> Candidates:
    """For each GT and level, the ``k`` anchors of smallest ``key`` (FindKthLargest, lines 7–9).

    ``key`` is ``[B, A]`` (one value per anchor, e.g. its cost w.r.t. its matched GT) together with
    ``owner[B, A]`` (the GT each anchor belongs to: only owned anchors compete), or ``[B, A, M]`` with
    ``owner=None`` (every anchor competes for every GT, as in ATSS). Loops over levels only.
    """
    b = key.shape[0]
    gt_ids = torch.arange(num_gts, device=key.device)
    anchors, levels, valids, keys = [], [], [], []
    start = 0
    for level, count in enumerate(num_per_level):
        end = start + count
        if owner is not None:
            owned = owner[:, None, start:end] == gt_ids[None, :, None]  # [B, M, A_l]
            per_gt = torch.where(owned, key[:, None, start:end], float("inf"))
        else:
            per_gt = key[:, start:end, :].transpose(1, 2)
        kk = min(k, count)
        vals, idx = per_gt.topk(kk, dim=2, largest=False, sorted=True)
        anchors.append(idx + start)
        levels.append(torch.full_like(idx, level))
        valids.append(torch.isfinite(vals))
        keys.append(vals)
        start = end
    if not anchors:
        empty = torch.zeros(b, num_gts, 0, dtype=torch.int64, device=key.device)
        return Candidates(empty, empty, empty.bool(), empty.to(key.dtype))
    valid = torch.cat(valids, 2)
    return Candidates(
        anchor=torch.cat(anchors, 2).masked_fill(~valid, -1),
        level=torch.cat(levels, 2).masked_fill(~valid, -1),
        valid=valid,
        key=torch.cat(keys, 2),
    )


def sort_rows(values: Tensor, valid: Tensor) -> Tensor:
    """Permutation sorting each row ascending with unused slots last (stable, so ties keep level order)."""
    filled = values.masked_fill(~valid, float("inf"))
    return torch.sort(filled, dim=-1, stable=True).indices

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
#: An anchor centre is inside a box when it is farther than this from each side (ATSS's and TOOD's 0.01).
INSIDE_MARGIN = 0.01


@dataclass
class CandidateSettings:
    """K of Procedure 1, line 8: candidates per pyramid level (PAA; ATSS's closest centres; max-IoU's shown slots)."""

    topk: int = 9  # K of Procedure 1, line 8: candidates per pyramid level (Table 4: 5–25)

    def problems(self) -> list[str]:
        return [f"topk (K of Procedure 1) must be >= 1, got {self.topk}"] if self.topk < 1 else []


def centres_inside(centres: Tensor, boxes: Tensor, margin: float = INSIDE_MARGIN) -> Tensor:
    """Whether each point ``[..., 2]`` lies inside its box ``[..., 4]`` (xyxy, broadcast), more than
    ``margin`` from every side: ATSS's and TOOD's "anchor centre inside the GT" test (YOLOX: margin 0)."""
    sides = torch.stack(
        [
            centres[..., 0] - boxes[..., 0],
            centres[..., 1] - boxes[..., 1],
            boxes[..., 2] - centres[..., 0],
            boxes[..., 3] - centres[..., 1],
        ],
        -1,
    )
    return sides.min(dim=-1).values > margin


def anchor_gt_iou(anchors: AnchorGrid, targets: PaddedTargets) -> Tensor:
    """IoU of every anchor with every GT of its image.

    Args:
        anchors: the anchor grid, ``boxes [A, 4]``.
        targets: padded GTs, ``boxes [B, M, 4]`` with their ``valid [B, M]`` mask.

    Returns:
        ``[B, A, M]`` IoUs; padded GT columns are -1 (never chosen).
    """
    boxes = anchors.boxes.to(targets.boxes.dtype)[None].expand(targets.batch_size, -1, -1)
    ious = batched_box_iou(boxes, targets.boxes)
    return ious.masked_fill(~targets.valid[:, None, :], -1.0)


#: How GTs whose anchors all fit them badly still get anchors (``low_quality`` of :func:`match_max_iou`):
#: "reference" (the authors' code), "gt" (mmdetection's PAA), "ensure" (reference, then every GT left
#: without an anchor takes its best free ones). Exposed as ``assign.low_quality`` / ``PAAAssigner(low_quality=...)``.
LOW_QUALITY_POLICIES = ("reference", "gt", "ensure")
#: Passes of the "ensure" policy: on realistic small-object targets 1 pass leaves 0.3–3 % of the GTs
#: without an anchor, 2 passes 0–0.4 %, 4 passes 0–0.03 % (they stop early once no orphan can be served).
ENSURE_PASSES = 4


def match_max_iou(
    ious: Tensor,
    low_threshold: float,
    high_threshold: float | None = None,
    allow_low_quality: bool = True,
    *,
    low_quality: str = "reference",
) -> Tensor:
    """Each anchor to the GT of highest IoU (Procedure 1, line 3: GetAnchors), batched ``[B, A, M] → [B, A]``.

    Returns the GT index, -1 below ``low_threshold`` and -2 between the thresholds (when
    ``high_threshold`` is given: RetinaNet's grey zone). With ``allow_low_quality`` the *best anchors*
    of each GT (those of its highest IoU, ties included, when that IoU is > 0) are matched whatever
    the thresholds, so that (nearly) every GT gets anchors even when no anchor fits it well. An anchor
    can be the best anchor of several GTs; ``low_quality`` (one of :data:`LOW_QUALITY_POLICIES`) says
    which GT gets it:

    * ``"reference"`` — the authors' code (maskrcnn-benchmark's ``Matcher.set_low_quality_matches_``,
      as torchvision's ``Matcher``): a best anchor keeps *its own* highest-IoU GT. A small GT nested in a
      larger one can lose every anchor to the larger GT and get no candidate (no loss at all).
    * ``"gt"`` — mmdetection's PAA (``MaxIoUAssigner(min_pos_iou=0, gt_max_assign_all=True)``): the
      best anchors of GT ``g`` go to ``g``, GTs taken in index order, so a later GT overwrites an earlier
      one on a shared anchor. Unlike mmdetection, a GT whose best IoU is 0 takes nothing (there every
      anchor of IoU 0 would be one of its "best").
    * ``"ensure"`` — ``"reference"``, then up to :data:`ENSURE_PASSES` passes in which every GT that
      has no anchor at all takes its best anchors among those no earlier pass gave away (later GT wins
      a shared one). GTs that have anchors keep the reference's unless an orphan needs one of them, and
      a GT that loses its only anchors that way is served by the next pass.

    Batched over images, anchors and GTs (no loop over either), on the device of ``ious``; each
    "ensure" pass works on the orphaned (image, GT) pairs only and costs a host sync or two.

    Args:
        ious: ``[B, A, M]`` anchor–GT IoUs (:func:`anchor_gt_iou`; padded GTs -1).
        low_threshold: below it an anchor matches no GT (PAA: :data:`PAA_IOU_THRESHOLD`).
        high_threshold: with it, anchors between the two thresholds are ignored (-2); None: no grey zone.
        allow_low_quality: give each GT its best anchors whatever the thresholds.
        low_quality: which GT a best anchor shared by several GTs goes to (:data:`LOW_QUALITY_POLICIES`).

    Returns:
        ``[B, A]`` int64: the matched GT index, -1 (no GT) or -2 (ignored).
    """
    if low_quality not in LOW_QUALITY_POLICIES:
        raise ValueError(
            f"unknown low_quality policy {low_quality!r}; valid choices: {', '.join(LOW_QUALITY_POLICIES)}"
        )
    num_gts = ious.shape[-1]
    if num_gts == 0:
        return torch.full(ious.shape[:2], -1, dtype=torch.int64, device=ious.device)
    best_iou, matched = ious.max(dim=2)
    all_matches = matched.clone()
    high = low_threshold if high_threshold is None else high_threshold
    matched = matched.masked_fill(best_iou < high, -2).masked_fill(best_iou < low_threshold, -1)
    if not allow_low_quality:
        return matched
    best_per_gt = ious.max(dim=1, keepdim=True).values  # [B, 1, M]
    is_best = (ious == best_per_gt) & (best_per_gt > 0)  # [B, A, M]: anchor a is a best anchor of GT m
    if low_quality == "gt":
        return _give_to_gts(matched, is_best, torch.arange(num_gts, device=ious.device))
    matched = torch.where(is_best.any(dim=2), all_matches, matched)  # "reference"
    if low_quality == "ensure":
        matched = _ensure_every_gt_an_anchor(ious, matched, best_per_gt[:, 0] > 0)
    return matched


def _give_to_gts(matched: Tensor, is_best: Tensor, gt_ids: Tensor) -> Tensor:
    """Anchors with ``is_best[b, a, j]`` go to GT ``gt_ids[j]`` (ascending ids: on a shared anchor the last wins)."""
    last = torch.where(is_best, gt_ids + 1, 0).amax(dim=2)  # [B, A], 0: given to no GT
    return torch.where(last > 0, last - 1, matched)


def _ensure_every_gt_an_anchor(ious: Tensor, matched: Tensor, overlaps: Tensor) -> Tensor:
    """The passes of the "ensure" policy on a reference matching (``overlaps[B, M]``: the GT has an anchor of IoU > 0).

    Each pass works on the (image, GT) pairs without an anchor only, ``[P, A]``: P is small.
    """
    b, a, m = ious.shape
    given = torch.zeros(matched.shape, dtype=torch.bool, device=matched.device)  # anchors given by a pass
    for _ in range(ENSURE_PASSES):
        owned = torch.zeros(b, m + 2, dtype=torch.bool, device=matched.device).scatter_(1, matched + 2, True)[:, 2:]
        image, gt = (overlaps & ~owned).nonzero().unbind(1)  # the orphans, GT index ascending within an image
        if image.numel() == 0:
            break
        free = ious[image, :, gt].masked_fill(given[image], -1.0)  # [P, A]
        take = (free == free.max(dim=1, keepdim=True).values) & (free > 0)
        slot = (image[:, None] * a + torch.arange(a, device=ious.device))[take]
        if slot.numel() == 0:  # the orphans left overlap no free anchor: more passes change nothing
            break
        last = torch.zeros(b * a, dtype=torch.int64, device=ious.device)
        last.scatter_reduce_(0, slot, (gt[:, None] + 1).expand(-1, a)[take], reduce="amax")  # later GT wins
        last = last.view(b, a)
        matched = torch.where(last > 0, last - 1, matched)
        given |= last > 0
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


def topk_per_level(key: Tensor, owner: Tensor | None, num_per_level: list[int], num_gts: int, k: int) -> Candidates:
    """For each GT and level, the ``k`` anchors of smallest ``key`` (FindKthLargest, lines 7–9).

    Loops over levels only.

    Args:
        key: ``[B, A]`` one value per anchor (e.g. its cost w.r.t. its matched GT), used with ``owner``;
            or ``[B, A, M]`` one value per anchor and GT, with ``owner=None`` (every anchor competes for
            every GT, as in ATSS).
        owner: ``[B, A]`` int64 GT each anchor belongs to (only owned anchors compete), or None.
        num_per_level: anchors of each pyramid level, in the order of ``A``.
        num_gts: ``M``, the padded number of GTs per image.
        k: candidates per level (paper: 9).

    Returns:
        :class:`Candidates` with ``[B, M, N]`` slots, ``N = levels × min(k, anchors of the level)``.
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

"""Inference post-processing: unified score (§3.2), class-aware NMS, score voting (§3.3, Eq. 9–10), TTA merge.

    dets = postprocess_detections(cls_logits, pred_boxes, aux_logits, grid.num_per_level, image_sizes,
                                  score_voting=True)   # [{"boxes", "scores", "labels", "ious"}] per image

The whole batch is processed at once: per-level top-k on ``[B, A_l·C]``, one ``batched_nms`` call with
groups ``image × class``, and voting on padded ``[B, D, V]`` IoU matrices (V: the most candidates above the
score threshold in one image of the batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms

from ..structures import batched_box_iou
from .head import AUX_CHOICES


@dataclass
class InferenceConfig:
    """Test-time settings (§3.2–3.3, Table 3) — the one home of their defaults. The detector reads
    them at every call (``model.inference``), so changing a field changes the next prediction."""

    min_size: int | None = None  # shorter side at test time; none: the largest training size (authors: 800)
    score_thresh: float = 0.05  # candidates need a classification probability above this
    nms_thresh: float = 0.6  # IoU of class-aware NMS
    topk_per_level: int = 1000  # candidates kept per pyramid level before NMS
    detections_per_img: int = 100  # detections kept per image, best first
    unified_score: bool = True  # §3.2: rank by S_cls × the auxiliary prediction (Eq. 1); false: S_cls alone
    score_voting: bool = True  # §3.3, Eq. (9)–(10): move each box to the score-weighted mean of its neighbours
    voting_sigma: float = 0.025  # σ_t of Eq. (9): the reference code's value (§4.1 prints 0.0025)
    tta_scales: list[int] = field(default_factory=list)  # Table 3 "*": test at each of these shorter sides; empty: off
    tta_flip: bool = True  # with tta_scales: each scale also horizontally flipped

    def postprocess_kwargs(self, aux: str) -> dict:
        """The keyword arguments of :func:`postprocess_detections` for a model with auxiliary head ``aux``."""
        return dict(
            score_thresh=self.score_thresh,
            topk_per_level=self.topk_per_level,
            nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img,
            score_voting=self.score_voting,
            voting_sigma=self.voting_sigma,
            aux=aux if self.unified_score else "none",
        )


#: σ_t of Eq. (9) (see :class:`InferenceConfig`).
VOTING_SIGMA = InferenceConfig.voting_sigma


def unified_scores(cls_probs: Tensor, aux_logits: Tensor | None, aux: str = "iou") -> Tensor:
    """Ranking score of every (anchor, class), ``[B, A, C]`` (§3.2).

    Args:
        cls_probs: ``[B, A, C]`` classification probabilities S_cls (sigmoid of the logits).
        aux_logits: ``[B, A]`` logits of the auxiliary head (IoU prediction or centerness), or None.
        aux: "iou": sqrt(S_cls × predicted IoU) — Eq. (1) with λ = 1 at test time, as a geometric mean
            (a monotone transform, so NMS order equals that of the product; the reference code uses
            sqrt); "centerness": sqrt(S_cls × centerness) (FCOS / ATSS); "none": S_cls alone.

    Returns:
        ``[B, A, C]`` the score every (anchor, class) pair is ranked by.
    """
    if aux not in AUX_CHOICES:
        raise ValueError(f"unknown aux {aux!r}; valid choices: {', '.join(AUX_CHOICES)}")
    if aux == "none":
        return cls_probs
    if aux_logits is None:
        raise ValueError(f"aux={aux!r} needs aux_logits [B, A], got None (use aux='none' without an aux head)")
    if aux_logits.shape != cls_probs.shape[:-1]:
        raise ValueError(
            f"aux_logits shape {tuple(aux_logits.shape)} does not match cls [B, A] = {tuple(cls_probs.shape[:-1])}"
        )
    return (cls_probs * aux_logits.sigmoid()[..., None]).sqrt()


def vote_boxes(
    det_boxes: Tensor,
    det_scores: Tensor,
    det_labels: Tensor,
    cand_boxes: Tensor,
    cand_scores: Tensor,
    cand_labels: Tensor,
    sigma: float = VOTING_SIGMA,
) -> Tensor:
    """Score voting (§3.3): move each NMS survivor ``b`` to the weighted mean of its candidates.

    Eq. (9): ``p_i = exp(-(1 - IoU(b, b_i))² / σ_t)``; Eq. (10): ``b̂ = Σ p_i s_i b_i / Σ p_i s_i`` over
    the candidates ``b_i`` (the pre-NMS boxes, ``s_i`` their unified scores) of the same class with
    ``IoU(b, b_i) > 0``. σ_t: §4.1 of the paper prints 0.0025, the authors' reference code uses
    0.025 — the default (:class:`InferenceConfig`).

    Any common leading (batch) dims; one IoU matrix ``[..., D, N]``, no loop. A detection with no
    voter keeps its box.

    Args:
        det_boxes: ``[..., D, 4]`` the NMS survivors (xyxy).
        det_scores: ``[..., D]`` their scores; not changed by Eq. (10), only checked (so the signature is
            the usual boxes / scores / labels triple).
        det_labels: ``[..., D]`` their classes.
        cand_boxes: ``[..., N, 4]`` the voters: the pre-NMS candidates.
        cand_scores: ``[..., N]`` their unified scores (padding candidates: 0, no weight).
        cand_labels: ``[..., N]`` their classes.
        sigma: σ_t of Eq. (9).

    Returns:
        ``[..., D, 4]`` the voted boxes.
    """
    if not sigma > 0:
        raise ValueError(f"sigma (σ_t of Eq. 9) must be > 0, got {sigma}")
    if det_boxes.shape[-1] != 4 or cand_boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes must be [..., 4] xyxy, got det {tuple(det_boxes.shape)}, cand {tuple(cand_boxes.shape)}"
        )
    if det_scores.shape != det_boxes.shape[:-1] or det_labels.shape != det_boxes.shape[:-1]:
        raise ValueError(
            f"det_scores {tuple(det_scores.shape)} / det_labels {tuple(det_labels.shape)} must be "
            f"{tuple(det_boxes.shape[:-1])}"
        )
    if cand_scores.shape != cand_boxes.shape[:-1] or cand_labels.shape != cand_boxes.shape[:-1]:
        raise ValueError(
            f"cand_scores {tuple(cand_scores.shape)} / cand_labels {tuple(cand_labels.shape)} must be "
            f"{tuple(cand_boxes.shape[:-1])}"
        )
    dtype = torch.promote_types(det_boxes.dtype, torch.float32)
    det, cand = det_boxes.to(dtype), cand_boxes.to(dtype)
    iou = batched_box_iou(det, cand)  # [..., D, N]
    p = torch.exp(-((1 - iou) ** 2) / sigma)  # Eq. (9)
    voters = (det_labels[..., :, None] == cand_labels[..., None, :]) & (iou > 0)
    weight = p * cand_scores.to(dtype)[..., None, :] * voters
    total = weight.sum(-1, keepdim=True)
    voted = (weight @ cand) / total.clamp(min=torch.finfo(dtype).tiny)  # Eq. (10)
    return torch.where(total > 0, voted, det).to(det_boxes.dtype)


def clip_boxes(boxes: Tensor, image_sizes: list[tuple[int, int]] | Tensor) -> Tensor:
    """Clip boxes to their image.

    Args:
        boxes: ``[B, K, 4]`` xyxy boxes.
        image_sizes: each image's ``(h, w)``: a list of B pairs, or a ``[B, 2]`` tensor.

    Returns:
        ``[B, K, 4]`` the boxes clipped to ``[0, w] × [0, h]``.
    """
    sizes = torch.as_tensor(image_sizes, device=boxes.device).to(boxes.dtype)  # [B, 2]
    upper = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=-1)[:, None, :]
    return torch.minimum(boxes.clamp(min=0), upper)


def valid_first(valid: Tensor) -> Tensor:
    """Indices ``[B, V]`` putting each row's valid slots first, cut to the largest valid count ``V``.

    Candidates below the score threshold are padding (score 0 in voting): dropping the columns that
    are padding in every image shrinks the voting IoU matrix without changing any result. While
    tracing (ONNX export) the cut would be frozen at the traced image's count, so every column stays.
    """
    if torch.jit.is_tracing():
        return torch.arange(valid.shape[1], device=valid.device).expand(valid.shape[0], -1)
    count = int(valid.sum(1).max()) if valid.numel() else 0
    return torch.argsort(valid.to(torch.uint8), dim=1, descending=True, stable=True)[:, :count]


def count_per_image(image_index: Tensor, batch_size: int) -> Tensor:
    """How many entries of ``image_index`` (values in ``[0, batch_size)``) belong to each image, ``[B]``
    (``torch.bincount``, written with a comparison so that it exports to ONNX)."""
    return (image_index[None, :] == torch.arange(batch_size, device=image_index.device)[:, None]).sum(1)


def postprocess_detections(
    cls_logits: Tensor,
    pred_boxes: Tensor,
    aux_logits: Tensor | None,
    num_anchors_per_level: list[int],
    image_sizes: list[tuple[int, int]],
    **settings,
) -> list[dict[str, Tensor]]:
    """Detections of a batch from the head's outputs (torchvision's eval contract).

    1. candidates: (anchor, class) pairs with classification probability > ``score_thresh``;
    2. ranked by the unified score (:func:`unified_scores`), ``topk_per_level`` per pyramid level;
    3. boxes clipped to the image; class-aware NMS (``batched_nms``, groups = image × class);
    4. the ``detections_per_img`` best per image, optionally moved by :func:`vote_boxes` with the
       step-2 candidates as voters.

    Args:
        cls_logits: ``[B, A, C]`` classification logits.
        pred_boxes: ``[B, A, 4]`` decoded boxes (xyxy, input-image pixels).
        aux_logits: ``[B, A]`` logits of the auxiliary head, or None.
        num_anchors_per_level: anchors per pyramid level (summing to A).
        image_sizes: ``image_sizes[b] = (h, w)``.
        **settings (Any): the keyword settings of :func:`batched_detections`
            (:meth:`InferenceConfig.postprocess_kwargs` gives them).

    Returns:
        One dict per image, sorted by score: ``boxes [D, 4]``, ``scores [D]`` (unified), ``labels [D]``
        (int64), and ``ious [D]`` (the predicted IoU, Table 2 right) when ``aux == "iou"``.
    """
    image_index, result = batched_detections(
        cls_logits, pred_boxes, aux_logits, num_anchors_per_level, image_sizes, **settings
    )
    per_image = count_per_image(image_index, cls_logits.shape[0]).tolist()
    split = {key: value.split(per_image) for key, value in result.items()}
    return [{key: split[key][i] for key in result} for i in range(cls_logits.shape[0])]


def batched_detections(
    cls_logits: Tensor,
    pred_boxes: Tensor,
    aux_logits: Tensor | None,
    num_anchors_per_level: list[int],
    image_sizes: list[tuple[int, int]] | Tensor,
    *,
    score_thresh: float = InferenceConfig.score_thresh,
    topk_per_level: int = InferenceConfig.topk_per_level,
    nms_thresh: float = InferenceConfig.nms_thresh,
    detections_per_img: int = InferenceConfig.detections_per_img,
    score_voting: bool = False,
    voting_sigma: float = VOTING_SIGMA,
    aux: str = "iou",
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`postprocess_detections` before the split into images: ``(image_index[N], {"boxes": [N, 4], …})``,
    image by image, best first within each.

    It also runs under ``torch.jit.trace`` (ONNX export, :mod:`paa_toolkit.model.onnx_export`): the anchor
    counts may be traced sizes and ``image_sizes`` a ``[B, 2]`` tensor; while tracing, every candidate
    column votes (:func:`valid_first`) and the shape checks are skipped.
    """
    tracing = torch.jit.is_tracing()
    if cls_logits.dim() != 3 or pred_boxes.dim() != 3 or pred_boxes.shape[-1] != 4:
        raise ValueError(
            f"expected cls_logits [B, A, C] and pred_boxes [B, A, 4], got "
            f"{tuple(cls_logits.shape)} and {tuple(pred_boxes.shape)}"
        )
    b, a, c = cls_logits.shape
    if not tracing:  # checks of traced sizes would be frozen into the trace
        if pred_boxes.shape[:2] != cls_logits.shape[:2]:
            raise ValueError(
                f"expected cls_logits [B, A, C] and pred_boxes [B, A, 4], got "
                f"{tuple(cls_logits.shape)} and {tuple(pred_boxes.shape)}"
            )
        if sum(num_anchors_per_level) != a:
            raise ValueError(
                f"num_anchors_per_level {list(num_anchors_per_level)} sums to "
                f"{sum(num_anchors_per_level)}, but there are {a} anchors"
            )
        if len(image_sizes) != b:
            raise ValueError(f"{len(image_sizes)} image_sizes for a batch of {b}")
    if detections_per_img < 1 or topk_per_level < 1:
        raise ValueError(
            f"detections_per_img and topk_per_level must be >= 1, got {detections_per_img} and {topk_per_level}"
        )
    probs = cls_logits.sigmoid()
    scores = unified_scores(probs, aux_logits, aux)

    # Steps 1–2, per level over the whole batch: top-k of the unified score among candidates.
    top_scores, top_index = [], []
    start = 0
    for n in num_anchors_per_level:
        level_scores = scores[:, start : start + n].reshape(b, -1)
        level_probs = probs[:, start : start + n].reshape(b, -1)
        level_scores = level_scores.masked_fill(level_probs <= score_thresh, -1.0)
        values, index = level_scores.topk(_topk_min(level_scores, topk_per_level, 1), dim=1)
        top_scores.append(values)
        top_index.append(index + start * c)
        start = start + n
    cand_scores, flat_index = torch.cat(top_scores, 1), torch.cat(top_index, 1)  # [B, K]
    valid = cand_scores >= 0
    anchor_index, cand_labels = flat_index // c, flat_index % c
    cand_boxes = clip_boxes(pred_boxes.gather(1, anchor_index[..., None].expand(-1, -1, 4)), image_sizes)

    # Step 3: one class-aware NMS for the whole batch (group = image × class).
    img, k = valid.nonzero(as_tuple=True)
    # float64: batched_nms may offset boxes by group × max coordinate, too coarse in float32
    keep = batched_nms(
        cand_boxes[img, k].double(), cand_scores[img, k].double(), img * c + cand_labels[img, k], nms_thresh
    )
    # image by image, score-sorted within: a sort on unique keys (= a stable sort of img[keep]); positions
    # from the data, not arange(len(keep)): the ONNX exporter would freeze NMS's output size at the traced one
    position = (keep >= 0).long().cumsum(0) - 1
    keep = keep[torch.argsort(img[keep] * valid.numel() + position)]
    counts = count_per_image(img[keep], b)
    rank = position - (counts.cumsum(0) - counts)[img[keep]]
    keep = keep[rank < detections_per_img]
    rank = rank[rank < detections_per_img]
    img_kept, k_kept = img[keep], k[keep]

    boxes = cand_boxes[img_kept, k_kept]
    if score_voting:  # Step 4 on padded [B, D] detections against the [B, V] voting candidates
        d = detections_per_img
        det_boxes, det_scores = cand_boxes.new_zeros(b, d, 4), cand_scores.new_zeros(b, d)
        det_labels = cand_labels.new_full((b, d), -1)
        det_boxes[img_kept, rank] = boxes
        det_scores[img_kept, rank] = cand_scores[img_kept, k_kept]
        det_labels[img_kept, rank] = cand_labels[img_kept, k_kept]
        voters = valid_first(valid)  # the IoU matrix is [B, D, V] with V the most valid candidates of an image
        voted = vote_boxes(
            det_boxes,
            det_scores,
            det_labels,
            cand_boxes.gather(1, voters[..., None].expand(-1, -1, 4)),
            cand_scores.gather(1, voters).clamp(min=0),
            cand_labels.gather(1, voters),
            voting_sigma,
        )
        boxes = voted[img_kept, rank]
    result = {"boxes": boxes, "scores": cand_scores[img_kept, k_kept], "labels": cand_labels[img_kept, k_kept]}
    if aux == "iou":
        result["ious"] = aux_logits.sigmoid().gather(1, anchor_index)[img_kept, k_kept]
    return img_kept, result


def hflip_boxes(boxes: Tensor, width: int | float) -> Tensor:
    """Map xyxy boxes detected on a horizontally flipped image back to the original (width ``width``)."""
    return torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], dim=-1)


def merge_tta(
    detections: list[dict[str, Tensor]],
    *,
    nms_thresh: float = InferenceConfig.nms_thresh,
    detections_per_img: int = InferenceConfig.detections_per_img,
    score_voting: bool = False,
    voting_sigma: float = VOTING_SIGMA,
) -> dict[str, Tensor]:
    """Merge one image's detections from several test-time variants (scales × flips; Table 3 "*").

    Each dict holds ``boxes`` (already in original-image coordinates; see :func:`hflip_boxes`),
    ``scores``, ``labels`` and optionally ``ious`` (kept only if every variant has it). The union
    goes through class-aware NMS at ``nms_thresh``; the ``detections_per_img`` best survive and,
    with ``score_voting``, each is voted (Eq. 9–10) by the whole union of variant detections.

    Args:
        detections: one dict per variant: ``boxes [D_i, 4]``, ``scores [D_i]``, ``labels [D_i]`` (``ious [D_i]``).
        nms_thresh: IoU threshold of the NMS over the union.
        detections_per_img: how many survive.
        score_voting: vote the survivors' boxes (Eq. 9–10).
        voting_sigma: σ_t of Eq. (9).

    Returns:
        One dict, ``boxes [D, 4]``, ``scores [D]``, ``labels [D]`` (and ``ious [D]``), sorted by score.
    """
    if not detections:
        raise ValueError("merge_tta needs at least one set of detections")
    keys = ["boxes", "scores", "labels"] + (["ious"] if all("ious" in d for d in detections) else [])
    for i, det in enumerate(detections):
        missing = {"boxes", "scores", "labels"} - set(det)
        if missing:
            raise ValueError(f"detections[{i}] lacks {sorted(missing)}")
    union = {key: torch.cat([d[key] for d in detections]) for key in keys}
    keep = batched_nms(union["boxes"].double(), union["scores"].double(), union["labels"], nms_thresh)[
        :detections_per_img
    ]
    merged = {key: value[keep] for key, value in union.items()}
    if score_voting:
        merged["boxes"] = vote_boxes(
            merged["boxes"],
            merged["scores"],
            merged["labels"],
            union["boxes"],
            union["scores"],
            union["labels"],
            voting_sigma,
        )
    return merged


__all__ = [
    "VOTING_SIGMA",
    "batched_detections",
    "clip_boxes",
    "count_per_image",
    "hflip_boxes",
    "merge_tta",
    "postprocess_detections",
    "vote_boxes",
    "unified_scores",
]

"""What the notebooks look at inside the course detector: one image through the network
(:func:`head_outputs`), post-processing alone with changed test-time settings (:func:`post_processing`,
:func:`detections_from_view`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from ..model.postprocess import InferenceConfig
from ..structures import AnchorGrid


@contextmanager
def post_processing(model: nn.Module, **changes: Any) -> Iterator[nn.Module]:
    """Temporarily change a :class:`~paa_toolkit.model.detector.PAADetector`'s test-time settings.

    Args:
        model: a :class:`~paa_toolkit.model.PAADetector`.
        **changes: fields of :class:`~paa_toolkit.model.InferenceConfig`: ``unified_score`` (True: rank by
            the unified score of Eq. 1; False: classification only), ``score_voting`` (§3.3),
            ``voting_sigma`` (σ_t of Eq. 9), ``nms_thresh``, ``score_thresh``...

    Yields:
        The model with the changed settings; the old ones are back when the ``with`` block ends.

    Raises:
        ValueError: a model without test-time settings, or an unknown setting.
    """
    inference = getattr(model, "inference", None)
    if not isinstance(inference, InferenceConfig):
        raise ValueError(f"{type(model).__name__} has no test-time settings (.inference): a PAADetector is needed")
    valid = {f.name for f in fields(InferenceConfig)}
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise ValueError(f"unknown test-time setting(s) {unknown}; valid: {', '.join(sorted(valid))}")
    model.inference = replace(inference, **changes)
    try:
        yield model
    finally:
        model.inference = inference


@dataclass
class HeadView:
    """One image as the detector sees it: the resized picture, its anchors and the raw head outputs.

    All boxes are in resized-image pixels (``scale = (sy, sx)`` maps original → resized).
    """

    image: Tensor  # [3, h, w] uint8, resized, un-normalised
    scale: tuple[float, float]
    anchors: AnchorGrid  # boxes [A, 4], num_per_level, strides
    cls_logits: Tensor  # [A, C]
    pred_boxes: Tensor  # [A, 4] decoded box of every anchor (xyxy)
    aux_logits: Tensor | None  # [A] IoU-prediction logit (§3.2) or None
    feature_sizes: list[tuple[int, int]]


@torch.no_grad()
def head_outputs(model: nn.Module, image: Tensor) -> HeadView:
    """Run one image through the detector's resize, backbone, FPN and head.

    The same steps as the model's own forward in eval mode, stopped before post-processing.

    Args:
        model: a :class:`~paa_toolkit.model.PAADetector`.
        image: ``[3, H, W]`` float in [0, 1].

    Returns:
        :class:`HeadView`: the resized picture ``[3, h, w]``, its anchors ``[A, 4]``, ``cls_logits [A, C]``,
        ``pred_boxes [A, 4]``, ``aux_logits [A]``, in resized-image pixels.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got shape {tuple(image.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        batch, _ = model.eval_transform()([image.to(device)])
        out, anchors, pred_boxes = model.run_network(batch.tensors)
    finally:
        model.train(was_training)
    h, w = batch.image_sizes[0]
    mean = torch.tensor(model.transform.image_mean, device=device)[:, None, None]
    std = torch.tensor(model.transform.image_std, device=device)[:, None, None]
    picture = ((batch.tensors[0, :, :h, :w] * std + mean).clamp(0, 1) * 255).to(torch.uint8)
    return HeadView(
        image=picture.cpu(),
        scale=(h / image.shape[-2], w / image.shape[-1]),
        anchors=AnchorGrid(anchors.boxes.cpu(), list(anchors.num_per_level), list(anchors.strides), anchors.scale),
        cls_logits=out.cls_logits[0].cpu(),
        pred_boxes=pred_boxes[0].cpu(),
        aux_logits=None if out.aux_logits is None else out.aux_logits[0].cpu(),
        feature_sizes=[tuple(s) for s in out.feature_sizes],
    )


@torch.no_grad()
def detections_from_view(model: nn.Module, view: HeadView) -> dict[str, Tensor]:
    """The model's detections of one image from its :class:`HeadView`: post-processing only.

    The same as ``model([image])[0]`` without running the network again: notebooks compare several
    settings on one forward pass per image.

    Args:
        model: the detector the view came from; its current test-time settings are used
            (:func:`post_processing` changes them).
        view: :func:`head_outputs` of the image.

    Returns:
        ``{"boxes": [D, 4], "scores": [D], "labels": [D], "ious": [D]}`` in original-image pixels.
    """
    det = model.postprocess(
        SimpleNamespace(
            cls_logits=view.cls_logits[None], aux_logits=None if view.aux_logits is None else view.aux_logits[None]
        ),
        view.anchors,
        view.pred_boxes[None],
        [tuple(view.image.shape[-2:])],
        model.inference.score_voting,
    )[0]
    sy, sx = view.scale
    return {**det, "boxes": det["boxes"] / det["boxes"].new_tensor([sx, sy, sx, sy])}


def scale_boxes(boxes: Tensor, scale: tuple[float, float]) -> Tensor:
    """Map original-image boxes into the resized image the detector saw.

    Args:
        boxes: ``[N, 4]`` xyxy in original-image pixels.
        scale: ``(sy, sx)`` of a :class:`HeadView`.

    Returns:
        ``[N, 4]`` xyxy in resized-image pixels.
    """
    sy, sx = scale
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)


__all__ = ["HeadView", "detections_from_view", "head_outputs", "post_processing", "scale_boxes"]

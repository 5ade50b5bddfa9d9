"""Detections: IoU prediction quality (Table 2 right), score voting (§3.3, Eq. 9–10), boxes on images (Fig. 8).

    fig = plot_iou_prediction(pred_iou, true_iou)        # scatter + mean |error| per true-IoU bin
    fig = plot_voting(image, before, after)               # boxes before / after score voting
    fig = plot_detections(image, detections)              # torchvision-style {"boxes", "scores", "labels"}
    image = draw_detections(image, detections, names)     # the same boxes drawn into a uint8 image

Artists carry gids (``"iou:pairs"``, ``"iou:bin_error"``, ``"boxes:before"``, ``"boxes:after"``,
``"boxes:candidates"``, ``"boxes:detections"``) for :func:`~.assignment.find_artists`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import ImageDraw, ImageFont
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from .assignment import GT_COLOR, as_boxes, as_numpy, box_collection, new_axes, show_image

#: a qualitative palette (tab10), one colour per class
CLASS_COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def iou_error_by_bin(pred_iou: Any, true_iou: Any, bins: int = 10) -> dict[str, np.ndarray | float]:
    """Table 2 right, binned for plotting: mean |predicted IoU − true IoU| overall and per bin of the true
    IoU (NaN: empty bin). The evaluation's figure from detections is
    :func:`paa_toolkit.engine.metrics.iou_prediction_error`."""
    pred = as_numpy(pred_iou, "pred_iou").reshape(-1)
    true = as_numpy(true_iou, "true_iou").reshape(-1)
    if pred.shape != true.shape or pred.size == 0:
        raise ValueError(f"pred_iou / true_iou: need the same non-zero length, got {pred.size} and {true.size}")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise ValueError("pred_iou / true_iou: non-finite values")
    error = np.abs(pred - true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(true, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, weights=error, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bin = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return {"mean_error": float(error.mean()), "edges": edges, "bin_error": per_bin, "bin_count": counts}


def plot_iou_prediction(
    pred_iou: Any,
    true_iou: Any,
    *,
    bins: int = 10,
    max_points: int = 5000,
    seed: int = 0,
    figsize: tuple[float, float] = (9.0, 3.8),
) -> Figure:
    """Table 2 right: predicted vs true IoU of the detections (left), mean |error| per true-IoU bin (right).

    The overall mean absolute error is in the title (the paper reports < 0.1 for every backbone).

    Args:
        pred_iou: ``[D]`` the IoU the model predicted for each detection.
        true_iou: ``[D]`` each detection's IoU with its best GT of the same class.
        bins: bins of the true IoU.
        max_points: at most this many pairs are scattered (a fixed random subset); the errors use all.
        seed: the subset's seed.
        figsize: the figure's size.

    Returns:
        The figure.
    """
    stats = iou_error_by_bin(pred_iou, true_iou, bins)
    pred = as_numpy(pred_iou, "pred_iou").reshape(-1)
    true = as_numpy(true_iou, "true_iou").reshape(-1)
    if pred.size > max_points:
        keep = np.random.default_rng(seed).choice(pred.size, max_points, replace=False)
        pred, true = pred[keep], true[keep]
    fig = Figure(figsize=figsize, layout="constrained")
    left, right = fig.subplots(1, 2)
    pairs = left.scatter(true, pred, s=6, alpha=0.4, color="tab:blue")
    pairs.set_gid("iou:pairs")
    left.plot([0, 1], [0, 1], color="black", lw=1, ls="--", gid="iou:diagonal")
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="true IoU with the GT", ylabel="predicted IoU", aspect="equal")
    edges = stats["edges"]
    bars = right.bar(
        (edges[:-1] + edges[1:]) / 2, np.nan_to_num(stats["bin_error"]), width=np.diff(edges) * 0.9, color="tab:orange"
    )
    for bar in bars:
        bar.set_gid("iou:bin_error")
    right.axhline(stats["mean_error"], color="black", lw=1, gid="iou:mean_error")
    right.set(xlim=(0, 1), xlabel="true IoU", ylabel="mean |pred − true|")
    count = int(stats["bin_count"].sum())
    fig.suptitle(f"IoU prediction: mean absolute error {stats['mean_error']:.3f} over {count} boxes")
    return fig


def _boxes_of(dets: Any, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Boxes (and scores, if any) of a ``{"boxes", "scores"}`` dict or of a bare ``[N, 4]`` tensor."""
    if isinstance(dets, Mapping):
        if "boxes" not in dets:
            raise ValueError(f"{name}: a detections dict needs 'boxes', got keys {sorted(dets)}")
        boxes = as_boxes(dets["boxes"], f"{name}['boxes']")
        scores = dets.get("scores")
        return boxes, None if scores is None else as_numpy(scores, f"{name}['scores']").reshape(-1)
    return as_boxes(dets, name), None


def plot_voting(
    image: Any,
    before: Any,
    after: Any,
    ax: Axes | None = None,
    *,
    candidates: Any = None,
    gt: Any = None,
    title: str | None = None,
    figsize: tuple[float, float] = (5.5, 5.5),
) -> Figure:
    """§3.3: the detections kept by NMS (dashed, ``before``) and the same boxes after score voting (solid).

    Args:
        image: ``[3, h, w]`` tensor (uint8 or [0, 1]) or ``[h, w, 3]`` array.
        before: the NMS survivors, ``{"boxes": [N, 4], "scores": [N]}`` or ``[N, 4]``.
        after: the same boxes after voting, in the same order (box ``i`` of ``after`` is box ``i`` of
            ``before`` voted, Eq. 10).
        ax: draw into these axes (default: a new figure).
        candidates: the pre-NMS boxes that vote, ``[K, 4]`` (drawn faintly).
        gt: the ground-truth boxes ``[M, 4]`` (drawn in gold).
        title: the title (default: the mean corner shift in pixels).
        figsize: size of a new figure.

    Returns:
        The figure.
    """
    b0, scores = _boxes_of(before, "before")
    b1, _ = _boxes_of(after, "after")
    if b0.shape != b1.shape:
        raise ValueError(f"before / after: the same boxes in the same order are expected, got {len(b0)} and {len(b1)}")
    cand = _boxes_of(candidates, "candidates")[0] if candidates is not None else np.zeros((0, 4))
    gt_boxes = _boxes_of(gt, "gt")[0] if gt is not None else np.zeros((0, 4))
    fig, ax = new_axes(ax, figsize)
    show_image(ax, image, [b0, b1, cand, gt_boxes])
    if len(gt_boxes):
        ax.add_collection(box_collection(gt_boxes, GT_COLOR, "boxes:gt", linewidths=2.0))
        ax.plot([], [], color=GT_COLOR, lw=2.0, label="ground truth")
    if len(cand):
        ax.add_collection(box_collection(cand, "0.8", "boxes:candidates", linewidths=0.5, alpha=0.5))
    ax.add_collection(box_collection(b0, "tab:red", "boxes:before", linewidths=1.2, linestyles="--"))
    ax.add_collection(box_collection(b1, "tab:green", "boxes:after", linewidths=1.8))
    if scores is not None:
        for box, score in zip(b1, scores):
            ax.text(
                box[0],
                box[1],
                f"{score:.2f}",
                fontsize="x-small",
                color="white",
                bbox=dict(facecolor="tab:green", alpha=0.7, pad=1, lw=0),
                va="bottom",
            )
    shift = float(np.abs(b1 - b0).mean()) if len(b0) else 0.0
    ax.set_title(title or f"score voting: {len(b0)} boxes, mean shift {shift:.2f} px")
    ax.plot([], [], color="tab:red", ls="--", label="after NMS")
    ax.plot([], [], color="tab:green", label="after voting")
    if len(cand):
        ax.plot([], [], color="0.6", lw=1.5, label="voters (Eq. 10)")  # darker than the faint boxes, to be seen
    ax.legend(loc="lower right", fontsize="small", framealpha=0.7)
    return fig


def _kept_detections(detections: Mapping[str, Any], score_thresh: float, class_names: Sequence[str] | None):
    """Boxes, labels and "class score" captions of the detections scoring at least ``score_thresh``."""
    boxes, scores = _boxes_of(detections, "detections")
    scores = np.ones(len(boxes)) if scores is None else scores
    labels = as_numpy(detections.get("labels", np.zeros(len(boxes))), "detections['labels']", np.int64).reshape(-1)
    keep = scores >= score_thresh
    captions = [
        f"{class_names[label] if class_names is not None and 0 <= label < len(class_names) else label} {score:.2f}"
        for score, label in zip(scores[keep], labels[keep])
    ]
    return boxes[keep], labels[keep], captions


def plot_detections(
    image: Any,
    detections: Mapping[str, Any],
    ax: Axes | None = None,
    *,
    score_thresh: float = 0.0,
    class_names: Sequence[str] | None = None,
    figsize: tuple[float, float] = (5.5, 5.5),
) -> Figure:
    """Fig. 8: the detections scoring at least ``score_thresh``, labelled "class score"."""
    boxes, _, captions = _kept_detections(detections, score_thresh, class_names)
    fig, ax = new_axes(ax, figsize)
    show_image(ax, image, [boxes])
    ax.add_collection(box_collection(boxes, "tab:green", "boxes:detections", linewidths=1.5))
    for box, caption in zip(boxes, captions):
        ax.text(
            box[0],
            box[1],
            caption,
            fontsize="x-small",
            color="white",
            va="bottom",
            bbox=dict(facecolor="tab:green", alpha=0.7, pad=1, lw=0),
        )
    ax.set_title(f"{len(boxes)} detections (score ≥ {score_thresh:g})")
    return fig


def draw_detections(
    image: torch.Tensor,
    detections: Mapping[str, Any],
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.3,
    font_size: int | None = None,
) -> torch.Tensor:
    """``image`` (uint8 ``[3, H, W]``) with the detections scoring at least ``score_thresh`` drawn into
    its pixels, one colour per class, each labelled "class score" in a filled tag above its box (inside
    it at the top edge), black or white text, whichever reads better on the colour (what ``python -m
    paa_toolkit.detect`` saves). ``font_size`` default: 1/20 of the shorter side, at least 12 px."""
    boxes, labels, captions = _kept_detections(detections, score_thresh, class_names)
    if not len(boxes):
        return image
    picture = to_pil_image(image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=font_size or max(12, round(min(picture.size) / 20)))
    line = max(2, round(min(picture.size) / 150))
    colors = [CLASS_COLORS[c % len(CLASS_COLORS)] for c in labels.tolist()]
    for box, color in zip(boxes.tolist(), colors):
        draw.rectangle(box, outline=color, width=line)
    for box, color, caption in zip(boxes.tolist(), colors, captions):  # tags last: no box line crosses one
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        pad = max(1, line // 2)
        width, height = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(box[0], 0), picture.width - width)
        y = box[1] - height if box[1] - height >= 0 else max(box[1], 0)
        draw.rectangle((x, y, x + width, y + height), fill=color)
        draw.text((x + pad - left, y + pad - top), caption, fill=_text_color(color), font=font)
    return pil_to_tensor(picture)


def _text_color(hex_color: str) -> str:
    """Black on light colours, white on dark ones (relative luminance of sRGB, WCAG)."""
    r, g, b = (int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


__all__ = [
    "CLASS_COLORS",
    "draw_detections",
    "iou_error_by_bin",
    "plot_detections",
    "plot_iou_prediction",
    "plot_voting",
]

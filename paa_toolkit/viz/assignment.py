"""Anchors on the image, coloured by what the assigner made of them (paper Fig. 4 (a), Fig. 6, Fig. 7).

    fig = plot_assignment(image, gt_boxes, anchor_boxes, labels, pred_boxes)   # labels 1 / 0 / -1
    fig = plot_snapshot(snapshot, image_index=0, gt_index=1)                   # a trainer trace snapshot

Every artist that carries content has a ``gid`` (``"anchors:positive"``, ``"centers:ignored"``,
``"pred:positive"``, ``"gt"``...), so a test or a notebook can find and count it with
:func:`find_artists` / :func:`count_marks`. Figures are ``matplotlib.figure.Figure`` objects made
without pyplot: nothing is shown, nothing depends on the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

#: Colours and names of the candidate labels of :mod:`paa_toolkit.assign.boundaries` (1 / 0 / -1).
LABEL_COLORS = {1: "tab:green", 0: "tab:blue", -1: "tab:orange"}
LABEL_NAMES = {1: "positive", 0: "negative", -1: "ignored"}
GT_COLOR = "gold"


# ---- small helpers shared by the viz modules ------------------------------------------------------
def as_numpy(values: Any, name: str, dtype=np.float64) -> np.ndarray:
    """A tensor / array / list as a NumPy array of ``dtype`` (CPU, detached)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:
            values = values.float()
        values = values.numpy()
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot convert {type(values).__name__} to a {np.dtype(dtype)} array") from err


def as_boxes(boxes: Any, name: str) -> np.ndarray:
    """``[N, 4]`` xyxy boxes as a float array (``None`` → empty)."""
    arr = np.zeros((0, 4)) if boxes is None else as_numpy(boxes, name)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: expected [N, 4] xyxy boxes, got shape {arr.shape}")
    return arr


def image_hwc(image: Any) -> np.ndarray | None:
    """An image as ``[h, w, 3]`` for ``imshow``: uint8 or float ``[3, h, w]`` tensors, HWC arrays, PIL images."""
    if image is None:
        return None
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"image: expected [3, h, w] or [h, w, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        arr = np.clip(arr, 0.0, 1.0) if arr.max(initial=0.0) <= 1.0 else np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a fresh single-axes figure (no pyplot)."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def find_artists(container: Figure | Axes, gid: str) -> list:
    """All artists of a figure or axes whose ``gid`` is ``gid``."""
    return [a for a in container.findobj(lambda a: a.get_gid() == gid)]


def count_marks(container: Figure | Axes, gid: str) -> int:
    """How many things the artists with ``gid`` draw: boxes of a collection, points of a scatter, line count."""
    total = 0
    for artist in find_artists(container, gid):
        if isinstance(artist, PatchCollection):
            total += len(artist.get_paths())
        elif hasattr(artist, "get_offsets"):
            total += len(artist.get_offsets())
        else:
            total += 1
    return total


def box_collection(boxes: np.ndarray, color: str, gid: str, **style) -> PatchCollection:
    """Unfilled rectangles for ``boxes[N, 4]`` as one collection (one artist, ``N`` paths)."""
    rects = [Rectangle((x0, y0), x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes]
    collection = PatchCollection(rects, facecolor="none", edgecolor=color, **style)
    collection.set_gid(gid)
    return collection


def show_image(ax: Axes, image: Any, extent_boxes: Iterable[np.ndarray]) -> None:
    """Draw ``image`` (if any) in pixel coordinates, y down; without one, frame the boxes."""
    img = image_hwc(image)
    if img is not None:
        h, w = img.shape[:2]
        ax.imshow(img, extent=(0, w, h, 0), interpolation="nearest")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    else:
        boxes = np.concatenate([b for b in extent_boxes if len(b)] or [np.array([[0.0, 0.0, 1.0, 1.0]])])
        ax.set_xlim(boxes[:, 0].min(), boxes[:, 2].max())
        ax.set_ylim(boxes[:, 3].max(), boxes[:, 1].min())
        ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


# ---- Fig. 4 (a) / 6 / 7 ---------------------------------------------------------------------------
def plot_assignment(
    image: Any,
    gt_boxes: Any,
    anchors: Any,
    labels: Any,
    pred_boxes: Any = None,
    ax: Axes | None = None,
    *,
    anchor_boxes: Sequence[int] = (1,),
    pred_for: Sequence[int] = (1,),
    title: str | None = None,
    zoom: bool = False,
    figsize: tuple[float, float] = (5.5, 5.5),
) -> Figure:
    """Fig. 4 (a): an image, its GT boxes, and anchors coloured positive / negative candidate / ignored.

    Args:
        image: ``[3, h, w]`` tensor (uint8 or [0, 1]), ``[h, w, 3]`` array, or None (blank canvas).
        gt_boxes: ``[M, 4]`` xyxy in the image's pixels.
        anchors: ``[N, 4]`` boxes of the anchors to draw (e.g. one GT's candidates).
        labels: ``[N]`` 1 positive, 0 negative, -1 ignored (as :func:`~paa_toolkit.assign.boundaries.separate`).
        pred_boxes: ``[N, 4]`` each anchor's predicted box, drawn dashed for the labels in ``pred_for``.
        anchor_boxes: the labels whose anchors' boxes are drawn (thin) besides their centre dots.
        ax: draw into these axes (default: a new figure).
        pred_for: the labels whose anchors' predicted boxes are drawn.
        title: the axes' title.
        zoom: show only the region of the GT boxes, the anchor centres and the drawn predicted boxes
            (a square with a margin, as the paper's crops), not the whole image.
        figsize: size of a new figure.

    Returns:
        The figure. Artists (gid): ``"gt"``; per label name ``"centers:<name>"`` (one dot per anchor),
        ``"anchors:<name>"`` (one box per anchor); ``"pred:<name>"`` for the predicted boxes.
    """
    gt = as_boxes(gt_boxes, "gt_boxes")
    boxes = as_boxes(anchors, "anchors")
    lab = as_numpy(labels, "labels", np.int64).reshape(-1)
    if lab.shape[0] != boxes.shape[0]:
        raise ValueError(f"labels: {lab.shape[0]} labels for {boxes.shape[0]} anchors")
    if np.setdiff1d(lab, list(LABEL_NAMES)).size:
        raise ValueError(f"labels: values must be 1, 0 or -1, got {sorted(set(lab.tolist()))}")
    pred = as_boxes(pred_boxes, "pred_boxes") if pred_boxes is not None else None
    if pred is not None and pred.shape[0] != boxes.shape[0]:
        raise ValueError(f"pred_boxes: {pred.shape[0]} boxes for {boxes.shape[0]} anchors")

    fig, ax = new_axes(ax, figsize)
    show_image(ax, image, [gt, boxes])
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    for value in (0, -1, 1):  # positives drawn last, on top
        keep = lab == value
        name, color = LABEL_NAMES[value], LABEL_COLORS[value]
        if value in anchor_boxes:
            ax.add_collection(box_collection(boxes[keep], color, f"anchors:{name}", linewidths=0.8, alpha=0.5))
        if pred is not None and value in pred_for:
            ax.add_collection(box_collection(pred[keep], color, f"pred:{name}", linewidths=1.2, linestyles="--"))
        dots = ax.scatter(
            centers[keep, 0],
            centers[keep, 1],
            s=30,
            c=color,
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
            label=f"{name} ({int(keep.sum())})",
        )
        dots.set_gid(f"centers:{name}")
    ax.add_collection(box_collection(gt, GT_COLOR, "gt", linewidths=2.0, zorder=4))
    if zoom:
        shown = [gt, np.concatenate([centers, centers], axis=1)]
        if pred is not None:
            shown.append(pred[np.isin(lab, list(pred_for))])
        region = np.concatenate([b for b in shown if len(b)])
        (x0, y0), (x1, y1) = region[:, :2].min(0), region[:, 2:].max(0)
        half = max(x1 - x0, y1 - y0) * 0.6 + 4
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ax.set_xlim(cx - half, cx + half)
        ax.set_ylim(cy + half, cy - half)
    ax.legend(loc="best", fontsize="small", framealpha=0.7)
    if title:
        ax.set_title(title)
    return fig


def snapshot_anchor_view(
    snapshot: Any,
    image_index: int,
    gt_index: int | None = None,
    assignment: Any = None,
) -> dict[str, Any]:
    """What :func:`plot_snapshot` draws, as arrays: the candidates of one GT (or of every GT of the image).

    Labels are the candidates' (1 / 0 / -1); positives of the GT(s) that are not candidates (max-IoU
    keeps every anchor above 0.5) are added as positives, so the positive dots are exactly
    ``matched_gt == gt``. ``assignment`` (``matched_gt`` + ``diagnostics``) replaces the snapshot's own.
    Keys: anchor (indices), boxes, labels, pred_boxes, gt_boxes, num_positive, rows (diagnostics rows).
    """
    diag = (assignment if assignment is not None else snapshot).diagnostics
    matched = (assignment if assignment is not None else snapshot).matched_gt
    if diag is None:
        raise ValueError("snapshot has no diagnostics: record it with return_diagnostics=True")
    num_images = matched.shape[0]
    if not 0 <= image_index < num_images:
        raise ValueError(f"image_index {image_index} out of range: the snapshot holds {num_images} images")
    valid_gts = snapshot.gt_valid[image_index].nonzero()[:, 0].tolist()
    if gt_index is not None and gt_index not in valid_gts:
        raise ValueError(f"gt_index {gt_index} is not a GT of image {image_index} (GTs: {valid_gts})")
    on_image = diag.image_index == image_index
    rows = (on_image & (diag.gt_index == gt_index)) if gt_index is not None else on_image
    rows = rows.nonzero()[:, 0]
    valid = diag.candidate_valid[rows]
    anchor = diag.candidate_anchor[rows][valid]
    labels = diag.candidate_label[rows][valid]
    owner = matched[image_index]
    is_pos = (owner == gt_index) if gt_index is not None else owner >= 0
    extra = is_pos.nonzero()[:, 0]
    extra = extra[~torch.isin(extra, anchor)]
    anchor = torch.cat([anchor, extra])
    labels = torch.cat([labels, torch.ones_like(extra)])
    gts = [gt_index] if gt_index is not None else valid_gts
    return {
        "anchor": anchor,
        "boxes": snapshot.anchors[anchor],
        "labels": labels,
        "pred_boxes": snapshot.pred_boxes[image_index][anchor],
        "gt_boxes": snapshot.gt_boxes[image_index][gts],
        "num_positive": int(is_pos.sum()),
        "rows": rows,
    }


def plot_snapshot(
    snapshot: Any,
    image_index: int,
    gt_index: int | None = None,
    ax: Axes | None = None,
    *,
    assignment: Any = None,
    show_pred: bool = True,
    title: str | None = None,
    zoom: bool = False,
    figsize: tuple[float, float] = (5.5, 5.5),
) -> Figure:
    """Fig. 4 (a) / Fig. 7 for an :class:`~paa_toolkit.model.detector.AssignmentSnapshot` (a trainer trace).

    Args:
        snapshot: a training trace (:class:`~paa_toolkit.assign.AssignmentSnapshot`).
        image_index: the image to draw, resized as the model saw it.
        gt_index: the GT whose candidates are drawn, coloured by their label (None: all GTs).
        ax: draw into these axes (default: a new figure).
        assignment: labels that replace the snapshot's own (e.g. a replay with another boundary).
        show_pred: draw the predicted boxes of the positives.
        title: the title (default: the image, the GT and its positives).
        zoom: show only the region around the GT (as the paper's crops).
        figsize: size of a new figure.

    Returns:
        The figure (:func:`plot_assignment`).
    """
    view = snapshot_anchor_view(snapshot, image_index, gt_index, assignment)
    if title is None:
        which = f"GT {gt_index}" if gt_index is not None else "all GTs"
        title = f"image {image_index}, {which}: {view['num_positive']} positives"
    images = getattr(snapshot, "images", None)
    return plot_assignment(
        images[image_index] if images is not None and len(images) > image_index else None,
        view["gt_boxes"],
        view["boxes"],
        view["labels"],
        view["pred_boxes"] if show_pred else None,
        ax=ax,
        title=title,
        zoom=zoom,
        figsize=figsize,
    )


__all__ = [
    "LABEL_COLORS",
    "LABEL_NAMES",
    "count_marks",
    "find_artists",
    "plot_assignment",
    "plot_snapshot",
    "snapshot_anchor_view",
]

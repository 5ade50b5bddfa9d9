"""COCO box AP (pycocotools ``COCOeval``) and the IoU-prediction error of Table 2 (right).

``evaluate_coco(model, dataset)`` runs any torchvision-style detector (eval mode returns
``[{"boxes", "scores", "labels"}]`` in original image coordinates) over a
:class:`~paa_toolkit.data.CocoDetection` and returns ``AP, AP50, AP75, APs, APm, APl, AR1, AR10,
AR100`` as fractions in [0, 1] (``-1``: no ground truth in that size range, as COCOeval).

When the detections also carry ``"ious"`` (the PAA detector with the IoU head, §3.3), the mean
absolute error between the predicted IoU and the true IoU of each detection with its best
matching ground truth of the same class is added as ``iou_error`` (all detections) and
``iou_error_tp`` (detections whose true IoU is at least 0.5).

``recall50_small`` / ``_medium`` / ``_large`` / ``_all``: the fraction of (non-crowd) ground truths
that some detection of their class covers with IoU ≥ 0.5, by COCO size of the GT box (small < 32²,
medium < 96² px², large the rest, on the box area in original image coordinates) — whether a GT is
found at all, which AP mixes with the ranking (issue 9: GTs the assigner leaves without a positive).

Under ``torch.distributed`` (training with torchrun) every process predicts its shard of the
images (every ``world_size``-th image), the detections are gathered on rank 0, which runs COCOeval,
and the metrics are broadcast back, so every process returns the same dictionary.
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
from typing import Any

import torch
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchvision.ops import box_iou
from tqdm import tqdm

from .. import distributed
from ..assign.stats import SIZES, size_class
from ..data.coco import CocoDetection, coco_from_detections, collate

#: COCOeval ``stats`` order (bbox)
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
REPORTED = COCO_STAT_NAMES[:9]
TP_IOU = 0.5


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[list[int], list[dict[str, Tensor]], list[dict[str, Any]]]:
    """Run ``model`` (eval mode) over ``dataset`` in order → (image ids, detections on CPU, targets)."""
    device = torch.device(device) if device is not None else _model_device(model)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    image_ids, detections, targets = [], [], []
    try:
        for images, batch_targets in tqdm(loader, desc="eval", leave=False, disable=not progress):
            outputs = model([img.to(device) for img in images])
            detections += [
                {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in out.items()}
                for out in outputs
            ]
            image_ids += [int(t["image_id"]) for t in batch_targets]
            targets += batch_targets
    finally:
        model.train(was_training)
    return image_ids, detections, targets


def coco_box_ap(
    coco_gt, detections: list[dict[str, Tensor]], image_ids: list[int], category_ids: list[int]
) -> dict[str, float]:
    """``COCOeval(…, "bbox")`` on these images → ``{"AP": …, "AP50": …, …}`` (its printout suppressed)."""
    coco_dt = coco_from_detections(coco_gt, detections, image_ids, category_ids)
    evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    evaluator.params.imgIds = sorted(set(image_ids))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}


def bootstrap_coco_ap(
    coco_gt,
    detections: list[dict[str, Tensor]],
    image_ids: list[int],
    category_ids: list[int],
    replicates: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """The evaluation noise of COCO AP: AP over ``replicates`` bootstrap resamples of the validation images.

    ``COCOeval.evaluate`` matches detections to ground truths once per (class, area range, image); each
    replicate draws as many images with replacement and re-runs only ``accumulate`` / ``summarize`` on their
    per-image matches (a drawn image counts as often as it is drawn). Returns the full-set ``AP``, the
    replicates' ``std`` (the standard error of AP due to the choice of validation images) and the 2.5 / 97.5
    percentiles ``ci95``.
    """
    coco_dt = coco_from_detections(coco_gt, detections, image_ids, category_ids)
    evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    images = sorted(set(image_ids))
    evaluator.params.imgIds = images
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    full_ap = float(evaluator.stats[0])
    per_image = evaluator.evalImgs  # [class][area range][image], flattened in that order
    num_images, blocks = len(images), len(evaluator._paramsEval.catIds) * len(evaluator._paramsEval.areaRng)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(replicates):
        drawn = torch.randint(num_images, (num_images,), generator=generator).tolist()
        evaluator.evalImgs = [per_image[block * num_images + i] for block in range(blocks) for i in drawn]
        evaluator._paramsEval.imgIds = evaluator.params.imgIds = list(range(num_images))
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
            evaluator.summarize()
        values.append(float(evaluator.stats[0]))
    ordered = sorted(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "AP": full_ap,
        "std": std,
        "ci95": [ordered[int(0.025 * len(ordered))], ordered[int(0.975 * len(ordered)) - 1]],
        "replicates": replicates,
        "images": num_images,
    }


def iou_prediction_error(detections: list[dict[str, Tensor]], targets: list[dict[str, Any]]) -> dict[str, float]:
    """Mean |predicted IoU − true IoU| (Table 2 right); ``{}`` when the detections have no ``"ious"``.

    The true IoU of a detection is its largest IoU with a (non-crowd) ground truth of the same
    class in its image, 0 when there is none.

    Args:
        detections: one dict per image, ``boxes [D, 4]``, ``labels [D]``, ``ious [D]`` (predicted).
        targets: one dict per image, ``boxes [M, 4]``, ``labels [M]`` (original-image pixels).

    Returns:
        ``{"iou_error": ..., "iou_error_tp": ...}``: the mean error over all detections and over those
        whose true IoU is ≥ 0.5; ``{}`` when the detections carry no ``"ious"``.
    """
    if not detections or any("ious" not in d for d in detections):
        return {}
    errors, true_ious = [], []
    for det, target in zip(detections, targets):
        gt_boxes, gt_labels = target["boxes"].to(det["boxes"]), target["labels"]
        if len(det["boxes"]) == 0:
            continue
        if len(gt_boxes):
            same_class = det["labels"][:, None] == gt_labels.to(det["labels"].device)[None, :]
            true_iou = (box_iou(det["boxes"], gt_boxes) * same_class).max(dim=1).values
        else:
            true_iou = det["boxes"].new_zeros(len(det["boxes"]))
        errors.append((det["ious"].float() - true_iou).abs())
        true_ious.append(true_iou)
    if not errors:
        return {"iou_error": math.nan, "iou_error_tp": math.nan}
    errors_all, true_all = torch.cat(errors), torch.cat(true_ious)
    tp = true_all >= TP_IOU
    return {
        "iou_error": float(errors_all.mean()),
        "iou_error_tp": float(errors_all[tp].mean()) if tp.any() else math.nan,
    }


def precision_recall_at(
    detections: list[dict[str, Tensor]], targets: list[dict[str, Any]], score: float, iou_threshold: float = TP_IOU
) -> tuple[float, float]:
    """Precision and recall of the detections scoring ≥ ``score`` (an operating point, where AP averages over
    all of them). A ground truth is found by the best-scored detection of its class at IoU ≥ ``iou_threshold``;
    that detection is correct, every other one (a duplicate, a loose box, a wrong class) is not.

    Args:
        detections: one dict per image, ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``.
        targets: one dict per image, ``boxes [M, 4]``, ``labels [M]`` (the same pixels as the boxes).

    Returns:
        ``(precision, recall)``; 0 for a ratio with nothing to count.
    """
    correct = kept = found = objects = 0
    for det, target in zip(detections, targets):
        keep = (det["scores"] >= score).nonzero()[:, 0]
        keep = keep[det["scores"][keep].argsort(descending=True)]
        kept, objects = kept + len(keep), objects + len(target["boxes"])
        if len(keep) and len(target["boxes"]):
            same_class = det["labels"][keep].cpu()[:, None] == target["labels"].cpu()[None, :]
            hit = (
                box_iou(det["boxes"][keep].float().cpu(), target["boxes"].float().cpu()) >= iou_threshold
            ) & same_class
            correct += len(set(hit.int().argmax(dim=0)[hit.any(dim=0)].tolist()))  # each GT's best-scored hit
            found += int(hit.any(dim=0).sum())
    return correct / max(kept, 1), found / max(objects, 1)


#: the score thresholds :func:`operating_point` tries: 0.30, 0.35, …, 0.95
OPERATING_SCORES = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))


def operating_point(
    detections: list[dict[str, Tensor]],
    targets: list[dict[str, Any]],
    precision: float,
    scores: tuple[float, ...] = OPERATING_SCORES,
) -> tuple[float, dict[float, tuple[float, float]]]:
    """The lowest of ``scores`` at which the detections reach ``precision`` (:func:`precision_recall_at`), or
    the highest score when none does, and ``{score: (precision, recall)}`` for every one of ``scores``."""
    curve = {t: precision_recall_at(detections, targets, t) for t in scores}
    return next((t for t, (p, _) in curve.items() if p >= precision), scores[-1]), curve


def recall_by_size(
    detections: list[dict[str, Tensor]], targets: list[dict[str, Any]], iou_threshold: float = TP_IOU
) -> dict[str, float]:
    """Recall of the ground truths at IoU ≥ ``iou_threshold``, by COCO size: ``recall50_small`` …
    ``recall50_all`` (NaN where there is no GT of that size). A GT is recalled when any detection of
    its class (whatever its score) overlaps it that much; one matrix of IoUs per image."""
    found, sizes = [], []
    for det, target in zip(detections, targets):
        gt_boxes, gt_labels = target["boxes"].float(), target["labels"]
        if len(gt_boxes) == 0:
            continue
        hit = torch.zeros(len(gt_boxes), dtype=torch.bool)
        if len(det["boxes"]):
            same_class = det["labels"].cpu()[:, None] == gt_labels.cpu()[None, :]
            hit = ((box_iou(det["boxes"].float().cpu(), gt_boxes.cpu()) >= iou_threshold) & same_class).any(dim=0)
        found.append(hit)
        sizes.append(size_class((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])).cpu())
    key = f"recall{round(100 * iou_threshold)}"
    if not found:
        return {f"{key}_{name}": math.nan for name in (*SIZES, "all")}
    hits, size = torch.cat(found).double(), torch.cat(sizes)
    out = {
        f"{key}_{name}": float(hits[size == i].mean()) if (size == i).any() else math.nan
        for i, name in enumerate(SIZES)
    }
    out[f"{key}_all"] = float(hits.mean())
    return out


def evaluate_coco(
    model: nn.Module,
    dataset,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """COCO box metrics of ``model`` on ``dataset`` (a ``CocoDetection``), plus the IoU-prediction error.

    Returns ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100`` (fractions), ``num_detections``,
    the recall by size ``recall50_small/medium/large/all`` and, if the model predicts IoUs,
    ``iou_error`` / ``iou_error_tp``.
    """
    if len(dataset) == 0:
        raise ValueError("evaluate_coco: the dataset is empty")
    if distributed.is_distributed():
        return _evaluate_sharded(model, dataset, batch_size, device, num_workers, progress)
    image_ids, detections, targets = predict(model, dataset, batch_size, device, num_workers, progress)
    return metrics_from_predictions(dataset, image_ids, detections, targets)


def metrics_from_predictions(
    dataset: CocoDetection, image_ids: list[int], detections: list[dict[str, Tensor]], targets: list[dict[str, Any]]
) -> dict[str, float]:
    """The metrics of :func:`evaluate_coco` from detections already made (e.g. by :func:`predict`).

    Args:
        dataset: the :class:`~paa_toolkit.data.CocoDetection` the detections are of.
        image_ids: the COCO image id of each entry.
        detections: one dict per image, ``boxes [D, 4]``, ``scores [D]``, ``labels [D]`` (``ious [D]``),
            in original-image pixels.
        targets: one dict per image, ``boxes [M, 4]``, ``labels [M]``.

    Returns:
        ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100`` as fractions,
        the IoU-prediction error and the recall by size.
    """
    stats = coco_box_ap(dataset.coco, detections, image_ids, list(dataset.category_ids))
    metrics = {name: stats[name] for name in REPORTED}
    metrics["num_detections"] = float(sum(len(d["boxes"]) for d in detections))
    metrics.update(iou_prediction_error(detections, targets))
    metrics.update(recall_by_size(detections, targets))
    return metrics


def _evaluate_sharded(
    model: nn.Module, dataset, batch_size: int, device, num_workers: int, progress: bool
) -> dict[str, float]:
    """Each process predicts images ``rank, rank + world, …``; rank 0 scores all; all get the metrics."""
    rank, world = distributed.rank(), distributed.world_size()
    positions = list(range(rank, len(dataset), world))
    ids, dets, targets = predict(
        model, Subset(dataset, positions), batch_size, device, num_workers, progress and rank == 0
    )
    targets = [{"boxes": t["boxes"], "labels": t["labels"], "image_id": t["image_id"]} for t in targets]
    shards = distributed.all_gather_object(list(zip(positions, ids, dets, targets)))

    def score() -> dict[str, float]:  # back in dataset order, as one process would have predicted them
        merged = sorted((item for shard in shards for item in shard), key=lambda item: item[0])
        _, all_ids, all_dets, all_targets = (list(column) for column in zip(*merged))
        return metrics_from_predictions(dataset, all_ids, all_dets, all_targets)

    return distributed.from_rank_zero(score)


def format_metrics(metrics: dict[str, float], title: str = "COCO box metrics") -> str:
    """A small aligned table of metrics for printing.

    Args:
        metrics: what :func:`evaluate_coco` returns.
        title: the table's first line.

    Returns:
        The table: AP / AR values in percent (as the paper), IoU errors as fractions.
    """
    rows = []
    for name, value in metrics.items():
        if not isinstance(value, (int, float)):
            continue
        if name in COCO_STAT_NAMES:
            text = "n/a" if value < 0 else f"{100 * value:5.1f}"
        elif name.startswith(("iou_error", "recall")):
            text = "n/a" if math.isnan(value) else f"{value:.3f}"
        else:
            text = f"{value:g}"
        rows.append((name, text))
    width = max((len(n) for n, _ in rows), default=0)
    lines = [title, "-" * (width + 8)] + [f"{n:<{width}}  {t:>6}" for n, t in rows]
    return "\n".join(lines)


__all__ = [
    "COCO_STAT_NAMES",
    "OPERATING_SCORES",
    "bootstrap_coco_ap",
    "coco_box_ap",
    "evaluate_coco",
    "format_metrics",
    "iou_prediction_error",
    "metrics_from_predictions",
    "operating_point",
    "precision_recall_at",
    "predict",
    "recall_by_size",
]

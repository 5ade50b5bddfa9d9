"""Specifications of COCO evaluation: perfect and empty predictions, the IoU-prediction error (Table 2 right),
the recall of ground truths by size."""

import math

import pytest
import torch
from torch import nn

from paa_toolkit.data.coco import CocoDetection
from paa_toolkit.engine.metrics import (
    bootstrap_coco_ap,
    coco_box_ap,
    evaluate_coco,
    format_metrics,
    iou_prediction_error,
    operating_point,
    precision_recall_at,
    predict,
    recall_by_size,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class ReplayModel(nn.Module):
    """Returns the dataset's own ground truth (``perfect``) or nothing, image after image, in order."""

    def __init__(self, dataset, perfect: bool):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.targets = [dataset[i][1] for i in range(len(dataset))] if perfect else None
        self.seen = 0

    def forward(self, images, targets=None):
        out = []
        for _ in images:
            if self.targets is None:
                out.append(
                    {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
                )
            else:
                t = self.targets[self.seen]
                n = len(t["boxes"])
                out.append({"boxes": t["boxes"], "scores": torch.ones(n), "labels": t["labels"], "ious": torch.ones(n)})
            self.seen += 1
        return out


@pytest.fixture(scope="module")
def val_set(synthetic_root):
    train_set = CocoDetection(synthetic_root / "images", synthetic_root / "train.json")
    return CocoDetection(synthetic_root / "images", synthetic_root / "val.json", category_ids=train_set.category_ids)


def test_perfect_predictions_score_ap_one(val_set):
    metrics = evaluate_coco(ReplayModel(val_set, perfect=True), val_set, batch_size=2)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["iou_error"] == pytest.approx(0.0)


def test_no_predictions_score_ap_zero(val_set):
    metrics = evaluate_coco(ReplayModel(val_set, perfect=False), val_set, batch_size=2)
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0
    assert "iou_error" not in metrics  # the model predicts no IoUs


def test_iou_error_is_mean_absolute_gap_to_best_same_class_gt():
    detections = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 5], [0.0, 0, 10, 10]]),
            "scores": torch.ones(2),
            "labels": torch.tensor([0, 1]),
            "ious": torch.tensor([0.8, 0.1]),
        }
    ]
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    # first: true IoU 0.5 (|0.8 - 0.5| = 0.3); second: no GT of class 1, true IoU 0 (|0.1 - 0| = 0.1)
    errors = iou_prediction_error(detections, targets)
    assert errors["iou_error"] == pytest.approx(0.2) and errors["iou_error_tp"] == pytest.approx(0.3)


def test_recall_by_size_counts_a_gt_found_by_a_same_class_detection_with_iou_at_least_half():
    targets = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 20, 20], [0.0, 0, 50, 50], [0.0, 0, 100, 100]]),
            "labels": torch.tensor([0, 0, 1, 1]),
        },
        {"boxes": torch.tensor([[0.0, 0, 40, 40]]), "labels": torch.tensor([2])},
    ]
    detections = [
        {
            "boxes": torch.tensor(
                [
                    [0.0, 0, 10, 5],  # small GT 0: IoU 0.5 exactly, same class: found
                    [0.0, 0, 50, 50],  # large-size box on medium GT 2 (same class): found
                    [0.0, 0, 100, 100],
                ]
            ),  # large GT 3, but the wrong class: not found
            "scores": torch.ones(3),
            "labels": torch.tensor([0, 1, 0]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    recall = recall_by_size(detections, targets)
    # small: GT 0 found, GT 1 (20 px; the 10 x 10 box has IoU 0.25) not; medium: GT 2 found, the image-2 GT not
    assert recall == {"recall50_small": 0.5, "recall50_medium": 0.5, "recall50_large": 0.0, "recall50_all": 0.4}
    assert "recall50_small" in format_metrics(recall)


def test_recall_by_size_is_nan_for_a_size_without_ground_truth():
    detections = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    recall = recall_by_size(detections, [{"boxes": torch.tensor([[0.0, 0, 8, 8]]), "labels": torch.tensor([0])}])
    assert recall["recall50_small"] == 0.0 and math.isnan(recall["recall50_large"]) and recall["recall50_all"] == 0.0


def test_evaluation_reports_recall_by_size(val_set):
    metrics = evaluate_coco(ReplayModel(val_set, perfect=True), val_set)
    assert metrics["recall50_all"] == 1.0


def test_the_bootstrap_over_validation_images_measures_evaluation_noise(val_set):
    """Perfect detections on half the images, none on the rest: the full-set AP is COCOeval's own, and the
    resamples spread it (a resample draws more or fewer of the detected images); perfect on all: no spread."""
    image_ids, detections, _ = predict(ReplayModel(val_set, perfect=True), val_set)
    half = [d if i % 2 == 0 else {k: v[:0] for k, v in d.items()} for i, d in enumerate(detections)]
    categories = list(val_set.category_ids)
    boot = bootstrap_coco_ap(val_set.coco, half, image_ids, categories, replicates=40)
    assert boot["AP"] == pytest.approx(coco_box_ap(val_set.coco, half, image_ids, categories)["AP"])
    assert boot["std"] > 0.01 and boot["ci95"][0] < boot["AP"] < boot["ci95"][1]
    assert boot["images"] == len(set(image_ids)) and boot["replicates"] == 40
    perfect = bootstrap_coco_ap(val_set.coco, detections, image_ids, categories, replicates=10)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["std"] == pytest.approx(0.0, abs=1e-9)


def test_precision_recall_at_counts_each_gt_once_for_its_best_scored_same_class_hit():
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 40, 40]]), "labels": torch.tensor([0, 1])}]
    detections = [
        {
            "boxes": torch.tensor(
                [
                    [0.0, 0, 10, 10],  # GT 0, correct
                    [0.0, 0, 10, 9],  # GT 0 again, scored lower: a duplicate
                    [20.0, 20, 40, 40],  # GT 1's box, the wrong class
                    [60.0, 60, 70, 70],  # nothing there, scored below 0.5
                ]
            ),
            "scores": torch.tensor([0.6, 0.9, 0.8, 0.3]),
            "labels": torch.tensor([0, 0, 0, 0]),
        }
    ]
    assert precision_recall_at(detections, targets, 0.5) == (1 / 3, 1 / 2)  # the 0.9 duplicate is the hit
    assert precision_recall_at(detections, targets, 0.2) == (1 / 4, 1 / 2)
    assert precision_recall_at(detections, targets, 0.95) == (0.0, 0.0)
    assert precision_recall_at(detections, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], 0.5) == (0, 0)


def test_operating_point_is_the_lowest_score_reaching_the_precision_else_the_highest():
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    detections = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60]]),  # a hit at 0.8, a loose box at 0.4
            "scores": torch.tensor([0.8, 0.4]),
            "labels": torch.tensor([0, 0]),
        }
    ]
    score, curve = operating_point(detections, targets, precision=0.9)
    assert score == 0.45 and curve[0.4] == (0.5, 1.0) and curve[0.45] == (1.0, 1.0) and curve[0.95] == (0.0, 0.0)
    assert operating_point(detections, targets, precision=1.1)[0] == 0.95

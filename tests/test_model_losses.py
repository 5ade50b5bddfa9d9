"""The training loss of Eq. (5)–(8) (model/losses.py) on hand-made batches with known answers."""

import math

import pytest
import torch
from test_assign_cost import EXACT, FOCAL_NEG, FOCAL_POS, GT, HALF, LN2  # tests/: the same known answers

from paa_toolkit.assign.base import Assignment
from paa_toolkit.model.losses import LossWeights, detection_losses
from paa_toolkit.structures import AnchorGrid, pad_targets


def batch(pred_boxes, matched_gt):
    """One image, one GT of class 1 (of 2), three anchors of 10 px at x = 0, 10, 20."""
    anchors = AnchorGrid(torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10]]), [3], [8], 8.0)
    targets = pad_targets([{"boxes": GT, "labels": torch.tensor([1])}])
    return anchors, targets, torch.tensor([pred_boxes]), Assignment(torch.tensor([matched_gt]))


def test_eq8_with_iou_prediction_on_a_hand_made_batch():
    anchors, targets, pred, assignment = batch([HALF, EXACT, EXACT], [0, -1, -2])  # pos, neg, ignored
    cls_logits = torch.zeros(1, 3, 2)
    cls_logits[0, 2] = 50.0  # the ignored anchor would cost a lot if it were counted
    losses = detection_losses(cls_logits, pred, torch.zeros(1, 3), anchors, targets, assignment, aux="iou")
    assert losses["loss_cls"].item() == pytest.approx((FOCAL_NEG + FOCAL_POS) + 2 * FOCAL_NEG)  # / 1 positive
    assert losses["loss_box"].item() == pytest.approx(0.5 * 0.5 / 0.5 * 1.3)  # IoU-weighted GIoU / Σ IoU × λ1
    assert losses["loss_iou"].item() == pytest.approx(LN2 * 0.5)  # BCE(σ(0), IoU 0.5) / 1 × λ2


def test_box_loss_is_normalised_by_the_sum_of_iou_weights():
    anchors, targets, pred, assignment = batch([HALF, EXACT, EXACT], [0, 0, -1])
    losses = detection_losses(torch.zeros(1, 3, 2), pred, torch.zeros(1, 3), anchors, targets, assignment)
    assert losses["loss_box"].item() == pytest.approx((0.5 * 0.5 + 0.0 * 1.0) / 1.5 * 1.3)
    assert losses["loss_iou"].item() == pytest.approx(
        (LN2 + -math.log(0.5)) / 2 * 0.5
    )  # both BCE(0, t) = ln 2 at logit 0, / 2 positives


def test_centerness_and_no_auxiliary_head_variants():
    anchors, targets, pred, assignment = batch([HALF, EXACT, EXACT], [0, -1, -1])
    ctr = detection_losses(
        torch.zeros(1, 3, 2), pred, torch.zeros(1, 3), anchors, targets, assignment, aux="centerness"
    )
    assert set(ctr) == {"loss_cls", "loss_box", "loss_centerness"}
    assert ctr["loss_box"].item() == pytest.approx(0.5 * 1.3)  # anchor centre at the GT centre: weight 1
    assert ctr["loss_centerness"].item() == pytest.approx(LN2 * 0.5)
    none = detection_losses(
        torch.zeros(1, 3, 2), pred, None, anchors, targets, assignment, aux="none", weights=LossWeights(box=2.0)
    )
    assert set(none) == {"loss_cls", "loss_box"} and none["loss_box"].item() == pytest.approx(0.5 * 2.0)


def test_iou_weight_and_target_carry_no_gradient_to_the_box():
    anchors, targets, pred, assignment = batch([HALF, EXACT, EXACT], [0, -1, -1])
    pred.requires_grad_(True)
    aux = torch.ones(1, 3, requires_grad=True)  # σ(1) ≠ IoU 0.5: the IoU logit has a gradient
    losses = detection_losses(torch.zeros(1, 3, 2), pred, aux, anchors, targets, assignment)
    (grad_box,) = torch.autograd.grad(losses["loss_iou"], pred, allow_unused=True)
    assert grad_box is None or not grad_box.any()
    (grad_aux,) = torch.autograd.grad(losses["loss_iou"], aux)
    assert grad_aux[0, 0] != 0 and not grad_aux[0, 1:].any()  # only the positive's IoU logit learns


def test_no_positives_gives_finite_losses_normalised_by_one():
    anchors, targets, pred, assignment = batch([HALF, EXACT, EXACT], [-1, -1, -1])
    losses = detection_losses(torch.zeros(1, 3, 2), pred, torch.zeros(1, 3), anchors, targets, assignment)
    assert losses["loss_cls"].item() == pytest.approx(3 * 2 * FOCAL_NEG)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box"].item() == 0.0


def test_quality_focal_loss_with_hard_targets_is_the_focal_loss_without_alpha():
    from torchvision.ops import sigmoid_focal_loss

    from paa_toolkit.model.losses import quality_focal_loss

    logits = torch.tensor([[1.5, -0.5, 0.2], [-2.0, 0.3, 0.0]])
    labels = torch.tensor([1, -1])
    one_hot = torch.tensor([[0.0, 1, 0], [0, 0, 0]])
    expected = sigmoid_focal_loss(logits, one_hot, alpha=-1, gamma=2.0, reduction="none").sum(-1)
    assert torch.allclose(quality_focal_loss(logits, labels, torch.ones(2)), expected)
    soft = quality_focal_loss(logits, labels, torch.tensor([0.4, 0.9]))  # y = 0.4 for class 1; background untouched
    p = logits[0].sigmoid()
    by_hand = (
        (0.4 - p[1]) ** 2 * -(0.4 * p[1].log() + 0.6 * (1 - p[1]).log())  # |y − σ|² · BCE(σ, y)
        + p[0] ** 2 * -(1 - p[0]).log()
        + p[2] ** 2 * -(1 - p[2]).log()
    )  # y = 0: σ² · −log(1 − σ)
    assert soft[0].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert soft[1].item() == pytest.approx(expected[1].item())


def test_a_soft_class_target_changes_only_the_classification_loss():
    anchors, targets, pred, assignment = batch([HALF, EXACT, EXACT], [0, -1, -2])
    cls_logits = torch.zeros(1, 3, 2)
    hard = detection_losses(cls_logits, pred, torch.zeros(1, 3), anchors, targets, assignment)
    soft_assignment = Assignment(assignment.matched_gt, cls_target=torch.tensor([[0.5, 0.0, 0.0]]))
    soft = detection_losses(cls_logits, pred, torch.zeros(1, 3), anchors, targets, soft_assignment)
    # σ(0) = 0.5: the positive's class-1 term is |0.5 − 0.5|² · BCE = 0; the three y = 0 terms (anchor 0 class 0,
    # anchor 1 classes 0 and 1) are 0.5² · ln 2 each; the ignored anchor counts nothing; / 1 positive
    assert soft["loss_cls"].item() == pytest.approx(3 * 0.25 * LN2)
    assert soft["loss_box"] == hard["loss_box"] and soft["loss_iou"] == hard["loss_iou"]
    assert soft["loss_cls"] != hard["loss_cls"]

"""YOLOX's SimOTA (assign/simota.py) on hand-worked cases that a wrong implementation fails.

The scene of tests/test_assign_tal.py: one level of 4 × 4 anchors, stride 8 (centres 4, 12, 20, 28); a
predicted box [0, 0, 16, 16·u] has IoU u with the GT [0, 0, 16, 16].
"""

import math

import pytest
import torch
from test_assign_tal import GRID, INSIDE, of_height, scene  # tests/: the same scene

from paa_toolkit.assign import NEGATIVE, SimOTAAssigner, build_assigner
from paa_toolkit.assign.simota import candidate_regions, dynamic_k, simota_cost


def test_dynamic_k_is_the_floor_of_the_sum_of_the_q_largest_ious_at_least_one():
    iou = torch.tensor([[[0.9, 0.8, 0.5, 0.0], [0.3, 0.2, 0.1, 0.0], [0.9, 0.8, 0.5, 0.95]]])
    candidate = torch.tensor([[[True] * 4, [True] * 4, [True, True, True, False]]])  # last: not a candidate
    assert dynamic_k(iou, candidate, q=10).tolist() == [[2, 1, 2]]  # ⌊2.2⌋, max(1, ⌊0.6⌋), the 0.95 left out
    assert dynamic_k(iou, candidate, q=2).tolist() == [[1, 1, 1]]  # ⌊0.9 + 0.8⌋


def test_each_gt_takes_its_dynamic_k_cheapest_candidates():
    # IoUs 0.9, 0.8, 0.5 (and 0 elsewhere): k = ⌊2.2⌋ = 2; equal scores: the two highest IoUs are the cheapest
    targets, logits, boxes = scene([[0.0, 0, 16, 16]], [0], {0: of_height(0.5), 1: of_height(0.9), 4: of_height(0.8)})
    out = SimOTAAssigner()(GRID, targets, logits, boxes, return_diagnostics=True)
    assert out.matched_gt[0].eq(0).nonzero()[:, 0].tolist() == [1, 4]
    assert out.diagnostics.dynamic_k.tolist() == [2] and out.diagnostics.num_positives.tolist() == [2]
    assert out.cls_target[0, [1, 4]].tolist() == pytest.approx([0.9, 0.8])  # the class target is the IoU


def test_the_cost_is_bce_of_the_class_plus_lambda_times_minus_log_iou():
    targets, logits, boxes = scene([[0.0, 0, 16, 16]], [1], {0: of_height(0.5)}, {0: {0: 0.3, 1: 0.8}})
    iou = torch.tensor([[[0.5]]])
    cost = simota_cost(logits[:, :1], iou, targets.labels, iou_weight=3.0)
    bce = -math.log(1 - 0.3) - math.log(0.8)  # class 0 should be 0, class 1 should be 1
    assert cost.item() == pytest.approx(bce + 3.0 * -math.log(0.5), rel=1e-5)


def test_candidates_are_the_anchors_in_some_gts_box_or_centre_region():
    # a small radius: the centre region of [0, 0, 16, 16] is ± 0.5 stride around (8, 8) → holds no centre
    targets, logits, boxes = scene([[0.0, 0, 16, 16]], [0], {a: of_height(1.0) for a in range(16)})
    in_box, in_centre = candidate_regions(GRID, targets, radius=0.5)
    assert in_box[0, 0].nonzero()[:, 0].tolist() == INSIDE and not in_centre.any()
    # every anchor predicts the GT exactly, but only the inside ones are candidates: k = ⌊Σ of 4 IoUs of 1⌋ = 4
    out = SimOTAAssigner(simota_center_radius=0.5)(GRID, targets, logits, boxes)
    assert out.matched_gt[0].eq(0).nonzero()[:, 0].tolist() == INSIDE
    # radius 2.5 (± 20 px around (8, 8), edges excluded) takes in the centres 4, 12, 20 in x and y: 9 candidates,
    # k = ⌊Σ of their IoUs of 1⌋ = 9 (the 7 other anchors' IoU does not count: they are no candidates)
    wide = SimOTAAssigner()(GRID, targets, logits, boxes)
    assert wide.matched_gt[0].eq(0).nonzero()[:, 0].tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert set(INSIDE) <= set(wide.matched_gt[0].eq(0).nonzero()[:, 0].tolist())  # in box and centre: cheapest


@pytest.mark.parametrize("flip", [False, True], ids=["cheap-gt-first", "cheap-gt-last"])
def test_an_anchor_chosen_by_two_gts_goes_to_the_one_of_lowest_cost(flip):
    # anchor 5 predicts [1.5, 1.5, 17.5, 17.5]: IoU 0.884 with A = [2, 2, 18, 18] (class 0, p 0.05) and 0.697 with
    # B = [0, 0, 16, 16] (class 1, p 0.95): the IoU favours A, the cost favours B (class term 2·logit(0.95) ≈ 5.9
    # against 3·(ln 0.884 − ln 0.697) ≈ 0.7); k = 1 for both (one IoU < 1), both pick anchor 5
    gts, labels = [[2.0, 2, 18, 18], [0.0, 0, 16, 16]], [0, 1]
    if flip:
        gts, labels = gts[::-1], labels[::-1]
    targets, logits, boxes = scene(gts, labels, {5: [1.5, 1.5, 17.5, 17.5]}, {5: {0: 0.05, 1: 0.95}})
    out = SimOTAAssigner()(GRID, targets, logits, boxes, return_diagnostics=True)
    b_gt = 0 if flip else 1
    assert out.matched_gt[0, 5] == b_gt
    assert out.diagnostics.dynamic_k.tolist() == [1, 1]
    assert (out.matched_gt[0] == 1 - b_gt).sum() == 0


def test_hard_targets_switch_and_an_image_without_gts():
    targets, logits, boxes = scene([[0.0, 0, 16, 16]], [0], {a: of_height(0.6) for a in INSIDE})
    soft = build_assigner(rule="simota")(GRID, targets, logits, boxes)
    hard = build_assigner(rule="simota", simota_soft_target=False)(GRID, targets, logits, boxes)
    assert hard.cls_target is None and torch.equal(soft.matched_gt, hard.matched_gt)
    empty, logits0, boxes0 = scene([[0.0, 0, 16, 16]], [0])
    none = SimOTAAssigner()(
        GRID, type(empty)(empty.boxes[:, :0], empty.labels[:, :0], empty.valid[:, :0]), logits0, boxes0
    )
    assert none.matched_gt.eq(NEGATIVE).all()

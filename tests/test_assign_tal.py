"""TOOD's task-aligned assignment (assign/tal.py) on hand-worked cases that a wrong implementation fails.

One image, one level of 4 × 4 anchors with stride 8 (centres 4, 12, 20, 28); the GT [0, 0, 16, 16]
holds the four centres (4 | 12, 4 | 12). A predicted box [0, 0, 16, 16·u] has IoU u with that GT.
"""

import math

import pytest
import torch

from paa_toolkit.assign import NEGATIVE, TALAssigner, build_assigner
from paa_toolkit.assign.stats import summarize_diagnostics
from paa_toolkit.assign.tal import alignment_metric
from paa_toolkit.structures import make_anchor_grid, pad_targets

GRID = make_anchor_grid([(4, 4)], [8], scale=2.0)
INSIDE = [0, 1, 4, 5]  # anchors whose centre is inside [0, 0, 16, 16]
FAR = torch.tensor([100.0, 100.0, 101.0, 101.0])  # a prediction that overlaps nothing: IoU 0, t = 0


def scene(gt_boxes, gt_labels, iou_box=None, score=None, num_classes=2):
    """Logits and predicted boxes: anchor a predicts ``iou_box[a]`` (else FAR) with class probability
    ``score[a] = {class: p}`` (else 0.01 for every class)."""
    a = GRID.boxes.shape[0]
    logits = torch.full((1, a, num_classes), math.log(0.01 / 0.99))
    for anchor, probs in (score or {}).items():
        for c, p in probs.items():
            logits[0, anchor, c] = math.log(p / (1 - p))
    boxes = FAR.repeat(1, a, 1)
    for anchor, box in (iou_box or {}).items():
        boxes[0, anchor] = torch.tensor(box)
    targets = pad_targets([{"boxes": torch.tensor(gt_boxes), "labels": torch.tensor(gt_labels)}])
    return targets, logits, boxes


def of_height(u):
    return [0.0, 0.0, 16.0, 16.0 * u]  # IoU u with [0, 0, 16, 16]


def test_the_metric_is_the_class_score_to_alpha_times_the_iou_to_beta():
    targets, logits, boxes = scene([[0.0, 0, 16, 16]], [1], {0: of_height(0.5)}, {0: {1: 0.8, 0: 0.3}})
    metric, iou = alignment_metric(logits, boxes, targets, alpha=0.5, beta=6.0)
    assert iou[0, 0, 0].item() == pytest.approx(0.5)
    assert metric[0, 0, 0].item() == pytest.approx(0.8**0.5 * 0.5**6, rel=1e-5)  # the GT's class, not class 0


def test_positives_are_the_top_m_by_t_not_by_score_or_iou():
    # (s, u): t = s·u^6 ranks 1 > 4 > 5 > 0; by score 0 > 4 > 1; by IoU 5 > 1 > 4
    pairs = {0: (0.9, 0.5), 1: (0.3, 0.8), 4: (0.5, 0.7), 5: (0.05, 0.9)}
    targets, logits, boxes = scene(
        [[0.0, 0, 16, 16]],
        [0],
        {a: of_height(u) for a, (s, u) in pairs.items()},
        {a: {0: s} for a, (s, u) in pairs.items()},
    )
    out = TALAssigner(tal_topk=2)(GRID, targets, logits, boxes)
    assert out.matched_gt[0].eq(0).nonzero()[:, 0].tolist() == [1, 4]


def test_candidates_are_the_anchors_whose_centre_is_inside_the_gt():
    # anchor 10 (centre 20, 20) predicts the GT exactly with a high score: the best t, but outside the GT
    iou_box = {10: of_height(1.0), **{a: of_height(0.6) for a in INSIDE}}
    targets, logits, boxes = scene([[0.0, 0, 16, 16]], [0], iou_box, {10: {0: 0.9}})
    out = TALAssigner(tal_topk=3)(GRID, targets, logits, boxes, return_diagnostics=True)
    positives = out.matched_gt[0].eq(0).nonzero()[:, 0].tolist()
    assert out.matched_gt[0, 10] == NEGATIVE
    assert len(positives) == 3 and set(positives) <= set(INSIDE)  # top-3 among the inside ones, not top-3 then cut
    assert int(out.diagnostics.num_candidates[0]) == 3 and int(out.diagnostics.num_positives[0]) == 3


@pytest.mark.parametrize("flip", [False, True], ids=["high-iou-gt-first", "high-iou-gt-last"])
def test_an_anchor_chosen_by_two_gts_goes_to_the_one_of_highest_iou(flip):
    # anchor 5 predicts [1.5, 1.5, 17.5, 17.5]: IoU 0.884 with A = [2, 2, 18, 18], 0.697 with B = [0, 0, 16, 16];
    # A is class 0 (score 0.2), B class 1 (score 0.9): t favours B (0.103 > 0.095), the IoU favours A
    gts, labels = [[2.0, 2, 18, 18], [0.0, 0, 16, 16]], [0, 1]
    if flip:
        gts, labels = gts[::-1], labels[::-1]
    targets, logits, boxes = scene(gts, labels, {5: [1.5, 1.5, 17.5, 17.5]}, {5: {0: 0.2, 1: 0.9}})
    metric, iou = alignment_metric(logits, boxes, targets, 1.0, 6.0)
    a_gt = 1 if flip else 0
    assert iou[0, a_gt, 5] > iou[0, 1 - a_gt, 5] and metric[0, a_gt, 5] < metric[0, 1 - a_gt, 5]
    out = TALAssigner(tal_topk=1)(GRID, targets, logits, boxes)
    assert out.matched_gt[0, 5] == a_gt
    assert (out.matched_gt[0] == 1 - a_gt).sum() == 0  # the loser gets no other anchor (its only t > 0 was 5)


def test_soft_target_is_t_normalised_so_that_each_gts_best_target_is_its_best_iou():
    # GT 0 = [0, 0, 16, 16] (anchors 0, 1, 4, 5), GT 1 = [16, 16, 32, 32] (anchors 10, 15), m = 2: GT 0 takes
    # 1 and 4 (t 0.079, 0.059), not 0 (t 0.014) nor 5, whose IoU 0.95 is the best but whose t is 0.007
    gt0 = {0: (0.9, 0.5), 1: (0.3, 0.8), 4: (0.5, 0.7), 5: (0.01, 0.95)}
    gt1 = {10: (0.6, 0.6), 15: (0.2, 0.9)}
    shift = lambda box: [v + 16 for v in box]  # noqa: E731
    iou_box = {
        **{a: of_height(u) for a, (s, u) in gt0.items()},
        **{a: shift(of_height(u)) for a, (s, u) in gt1.items()},
    }
    score = {a: {0: s} for a, (s, u) in {**gt0, **gt1}.items()}
    targets, logits, boxes = scene([[0.0, 0, 16, 16], [16.0, 16, 32, 32]], [0, 0], iou_box, score)
    out = TALAssigner(tal_topk=2)(GRID, targets, logits, boxes)
    target = out.cls_target[0]
    for gt, positives in ((0, [1, 4]), (1, [10, 15])):
        assert out.matched_gt[0].eq(gt).nonzero()[:, 0].tolist() == positives
        pairs = {a: (gt0 | gt1)[a] for a in positives}
        t = {a: s * u**6 for a, (s, u) in pairs.items()}
        best_t, best_u = max(t.values()), max(u for s, u in pairs.values())  # over the GT's positives
        for a in positives:
            assert target[a].item() == pytest.approx(t[a] / best_t * best_u, rel=1e-4)
        assert target[positives].max().item() == pytest.approx(best_u, rel=1e-4)  # not 1, not the raw t
    assert target[out.matched_gt[0] < 0].eq(0).all()


def test_hard_targets_switch_leaves_no_soft_target_and_the_same_positives():
    targets, logits, boxes = scene([[0.0, 0, 16, 16]], [0], {a: of_height(0.6) for a in INSIDE})
    soft = build_assigner(rule="tal")(GRID, targets, logits, boxes)
    hard = build_assigner(rule="tal", tal_soft_target=False)(GRID, targets, logits, boxes)
    assert soft.cls_target is not None and hard.cls_target is None
    assert torch.equal(soft.matched_gt, hard.matched_gt)


def test_a_gt_too_small_to_hold_an_anchor_centre_has_no_candidate_and_no_positive():
    # [5, 5, 11, 11] holds no centre (4 and 12 lie outside): TAL starves it; the large GT is served
    targets, logits, boxes = scene(
        [[5.0, 5, 11, 11], [16.0, 16, 32, 32]], [0, 0], {a: [16.0, 16, 32, 32] for a in (10, 11, 14, 15)}
    )
    out = TALAssigner()(GRID, targets, logits, boxes, return_diagnostics=True)
    assert (out.matched_gt[0] == 0).sum() == 0 and (out.matched_gt[0] == 1).sum() == 4
    stats = summarize_diagnostics(out.diagnostics)
    assert stats["no_candidate_frac"] == 0.5 and stats["no_positive_frac"] == 0.5
    assert out.diagnostics.num_positives.tolist() == [0, 4]
    assert stats["best_metric_mean"] == pytest.approx(0.01)  # the served GT: s = 0.01, u = 1

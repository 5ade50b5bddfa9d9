"""Post-processing (model/postprocess.py): unified score (§3.2), NMS, score voting (Eq. 9–10), TTA merge."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from paa_toolkit.model.postprocess import hflip_boxes, merge_tta, postprocess_detections, vote_boxes


# ----- score voting (Eq. 9–10) ------------------------------------------------------------------------
def _random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 60
    wh = 10 + torch.rand(n, 2, generator=generator) * 30
    return torch.cat([xy, xy + wh], dim=1)


def _voting_loop(det_boxes, det_labels, cand_boxes, cand_scores, cand_labels, sigma):
    """Eq. (9)–(10) written box by box."""
    out = det_boxes.clone()
    for j in range(len(det_boxes)):
        num, den = torch.zeros(4, dtype=torch.float64), 0.0
        for i in range(len(cand_boxes)):
            iou = box_iou(det_boxes[j : j + 1], cand_boxes[i : i + 1]).item()
            if cand_labels[i] == det_labels[j] and iou > 0:
                p = math.exp(-((1 - iou) ** 2) / sigma)
                num += p * cand_scores[i].item() * cand_boxes[i].double()
                den += p * cand_scores[i].item()
        if den > 0:
            out[j] = (num / den).float()
    return out


@pytest.mark.parametrize("sigma", [0.025, 0.0025])
def test_score_voting_matches_loop_of_eq_9_10(sigma):
    g = torch.Generator().manual_seed(0)
    cand_boxes, cand_scores = _random_boxes(40, g), torch.rand(40, generator=g)
    cand_labels = torch.randint(0, 2, (40,), generator=g)
    det_boxes, det_labels = cand_boxes[:8] + torch.rand(8, 4, generator=g), cand_labels[:8]
    voted = vote_boxes(det_boxes, cand_scores[:8], det_labels, cand_boxes, cand_scores, cand_labels, sigma)
    expected = _voting_loop(det_boxes, det_labels, cand_boxes, cand_scores, cand_labels, sigma)
    torch.testing.assert_close(voted, expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(voted, det_boxes, atol=1e-2)


def test_score_voting_batched_equals_per_image():
    g = torch.Generator().manual_seed(1)
    cand = torch.stack([_random_boxes(20, g) for _ in range(2)])
    scores, labels = torch.rand(2, 20, generator=g), torch.randint(0, 3, (2, 20), generator=g)
    batched = vote_boxes(cand[:, :5], scores[:, :5], labels[:, :5], cand, scores, labels)
    for b in range(2):
        single = vote_boxes(cand[b, :5], scores[b, :5], labels[b, :5], cand[b], scores[b], labels[b])
        torch.testing.assert_close(batched[b], single)


def test_score_voting_leaves_isolated_box_unchanged():
    det = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    cands = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 70.0, 70.0], [12.0, 12.0, 32.0, 32.0]])
    labels = torch.tensor([0, 0, 1])  # the overlapping neighbour has another class; the other is far away
    voted = vote_boxes(det, torch.tensor([0.9]), torch.tensor([0]), cands, torch.tensor([0.9, 0.8, 0.7]), labels)
    torch.testing.assert_close(voted, det)


# ----- postprocess_detections -------------------------------------------------------------------------
def _logit(p: float | list) -> torch.Tensor:
    return torch.logit(torch.as_tensor(p, dtype=torch.float32))


def _run(boxes, cls_probs, ious=None, aux="iou", sizes=((100, 100),), **kw):
    """Post-process hand-made per-anchor predictions; one level holding all anchors."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(len(sizes), -1, 4)
    cls = _logit(cls_probs).reshape(len(sizes), boxes.shape[1], -1)
    aux_logits = None if ious is None else _logit(ious).reshape(len(sizes), -1)
    return postprocess_detections(cls, boxes, aux_logits, [boxes.shape[1]], list(sizes), aux=aux, **kw)


def test_unified_score_changes_nms_survivor():
    # A: confident class but poor localisation; B: a bit less confident, well localised; IoU(A, B) ≈ 0.68.
    boxes = [[10, 10, 50, 50], [14, 14, 54, 54]]
    cls, ious = [[0.9], [0.8]], [0.3, 0.9]
    cls_only = _run(boxes, cls, aux="none")[0]
    unified = _run(boxes, cls, ious, aux="iou")[0]
    assert cls_only["boxes"].tolist() == [[10, 10, 50, 50]]
    assert unified["boxes"].tolist() == [[14, 14, 54, 54]]
    assert unified["scores"].item() == pytest.approx(math.sqrt(0.8 * 0.9))
    assert unified["ious"].item() == pytest.approx(0.9)


def test_postprocess_respects_score_thresh_on_cls_prob():
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    # the third has cls 0.3 > 0.05 but a unified score of sqrt(0.3·0.001) ≈ 0.017: still kept
    det = _run(boxes, [[0.04], [0.06], [0.3]], [0.9, 0.9, 0.001], score_thresh=0.05)[0]
    assert sorted(det["boxes"][:, 0].tolist()) == [20, 40]


def test_postprocess_keeps_detections_per_img_best_first():
    boxes = [[20 * i, 0, 20 * i + 10, 10] for i in range(5)]
    det = _run(boxes, [[0.2], [0.6], [0.4], [0.9], [0.1]], aux="none", detections_per_img=3)[0]
    assert det["scores"].tolist() == pytest.approx([0.9, 0.6, 0.4])
    assert det["boxes"][:, 0].tolist() == [60, 20, 40]


def test_postprocess_topk_per_level():
    boxes = [[20 * i, 0, 20 * i + 10, 10] for i in range(4)]
    det = _run(boxes, [[0.2], [0.6], [0.4], [0.9]], aux="none", topk_per_level=2)[0]
    assert det["scores"].tolist() == pytest.approx([0.9, 0.6])


def test_class_aware_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = [[10, 10, 50, 50], [12, 12, 50, 50]]
    det = _run(boxes, [[0.9, 0.01], [0.01, 0.8]], aux="none")[0]
    assert sorted(det["labels"].tolist()) == [0, 1]
    same = _run(boxes, [[0.9, 0.01], [0.8, 0.01]], aux="none")[0]
    assert same["labels"].tolist() == [0]


def test_nms_never_suppresses_across_images():
    boxes = [[10, 10, 50, 50], [10, 10, 50, 50]]  # one anchor per image, same box and class
    dets = _run(boxes, [[0.9], [0.7]], aux="none", sizes=((100, 100), (100, 100)))
    assert [d["scores"].tolist() for d in dets] == [pytest.approx([0.9]), pytest.approx([0.7])]


def test_postprocess_clips_boxes_to_each_image():
    boxes = [[-5, -5, 150, 40], [-5, -5, 150, 40]]
    dets = _run(boxes, [[0.9], [0.9]], aux="none", sizes=((100, 120), (60, 80)))
    assert dets[0]["boxes"].tolist() == [[0, 0, 120, 40]]
    assert dets[1]["boxes"].tolist() == [[0, 0, 80, 40]]


def test_postprocess_score_voting_moves_survivor_by_eq_10():
    boxes = torch.tensor([[10.0, 10, 50, 50], [14, 14, 54, 54], [70, 70, 90, 90]])
    cls, ious = [[0.9], [0.8], [0.7]], [0.9, 0.9, 0.9]
    plain = _run(boxes, cls, ious)[0]
    voted = _run(boxes, cls, ious, score_voting=True, voting_sigma=0.025)[0]
    scores = torch.tensor([0.9, 0.8, 0.7]).mul(0.9).sqrt()
    expected = _voting_loop(plain["boxes"], plain["labels"], boxes, scores, torch.zeros(3, dtype=torch.long), 0.025)
    torch.testing.assert_close(voted["boxes"], expected, rtol=1e-5, atol=1e-4)
    assert voted["boxes"][0, 0] > 10.05  # pulled toward the suppressed neighbour (p ≈ 0.017)
    torch.testing.assert_close(voted["boxes"][1], boxes[2])  # isolated: unchanged
    torch.testing.assert_close(voted["scores"], plain["scores"])


def test_postprocess_rejects_mismatched_level_counts():
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        postprocess_detections(torch.zeros(1, 5, 2), torch.zeros(1, 5, 4), None, [3, 3], [(10, 10)], aux="none")


# ----- test-time augmentation -------------------------------------------------------------------------
def test_hflip_boxes_maps_back_to_original():
    boxes = torch.tensor([[10.0, 5, 30, 25]])
    assert hflip_boxes(boxes, 100).tolist() == [[70, 5, 90, 25]]
    torch.testing.assert_close(hflip_boxes(hflip_boxes(boxes, 100), 100), boxes)


def test_merge_tta_nms_over_variants_keeps_best_and_ious():
    a = {
        "boxes": torch.tensor([[10.0, 10, 50, 50]]),
        "scores": torch.tensor([0.7]),
        "labels": torch.tensor([0]),
        "ious": torch.tensor([0.6]),
    }
    b = {
        "boxes": torch.tensor([[12.0, 12, 52, 52], [60, 60, 80, 80]]),
        "scores": torch.tensor([0.8, 0.5]),
        "labels": torch.tensor([0, 1]),
        "ious": torch.tensor([0.7, 0.4]),
    }
    merged = merge_tta([a, b], nms_thresh=0.6)
    assert merged["scores"].tolist() == pytest.approx([0.8, 0.5])
    assert merged["ious"].tolist() == pytest.approx([0.7, 0.4])
    voted = merge_tta([a, b], nms_thresh=0.6, score_voting=True)
    assert 10 < voted["boxes"][0, 0] < 12  # voted with the other variant's box
    torch.testing.assert_close(voted["boxes"][1], b["boxes"][1])

"""Backbone + FPN, PAA head (Fig. 5), post-processing: unified score (§3.2), score voting (Eq. 9–10)."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import box_iou

from paa_toolkit.model.backbone import DeformConvBlock, build_backbone
from paa_toolkit.model.head import PAAHead
from paa_toolkit.model.postprocess import hflip_boxes, merge_tta, postprocess_detections, score_voting
from paa_toolkit.structures import make_anchor_grid

STRIDES = [8, 16, 32, 64, 128]


def _features(batch: int, channels: int, height: int, width: int) -> list[torch.Tensor]:
    """Random P3–P7 maps of an image of ``height × width`` (padded to stride 128)."""
    return [torch.randn(batch, channels, math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


# ----- head -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_head_output_shapes_match_anchor_grid(size):
    head = PAAHead(16, 3, width=16, num_convs=1)
    out = head(_features(2, 16, *size))
    grid = make_anchor_grid(out.feature_sizes, STRIDES)
    a = len(grid.boxes)
    assert out.feature_sizes == [(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in STRIDES]
    assert out.cls_logits.shape == (2, a, 3)
    assert out.box_deltas.shape == (2, a, 4)
    assert out.aux_logits.shape == (2, a)
    assert out.num_anchors_per_level == grid.num_per_level


def test_head_flattening_order_matches_anchor_grid():
    # No tower, a centre-tap cls conv: the logit of each anchor is its feature value, which we set to
    # 1000·cy + cx of the cell centre — so row a of cls_logits must equal anchor a's centre code.
    head = PAAHead(1, 1, num_convs=0, aux="none")
    with torch.no_grad():
        head.cls_logits.weight.zero_()
        head.cls_logits.weight[0, 0, 1, 1] = 1.0
        head.cls_logits.bias.zero_()
    feats = []
    for s, (h, w) in zip(STRIDES, [(6, 10), (3, 5), (2, 3), (1, 2), (1, 1)]):
        cy = (torch.arange(h) + 0.5)[:, None] * s
        cx = (torch.arange(w) + 0.5)[None, :] * s
        feats.append((1000 * cy + cx)[None, None])
    out = head(feats)
    grid = make_anchor_grid(out.feature_sizes, STRIDES)
    expected = 1000 * grid.centers[:, 1] + grid.centers[:, 0]
    torch.testing.assert_close(out.cls_logits[0, :, 0], expected)


def test_cls_bias_prior_gives_sigmoid_near_001():
    head = PAAHead(16, 4, width=16, prior_prob=0.01)
    out = head(_features(1, 16, 128, 128))
    assert head.cls_logits.bias[0].item() == pytest.approx(-math.log(99))
    assert out.cls_logits.sigmoid().mean().item() == pytest.approx(0.01, abs=0.002)


@pytest.mark.parametrize("aux", ["iou", "centerness", "none"])
def test_aux_head_shapes(aux):
    head = PAAHead(16, 2, width=16, num_convs=1, aux=aux)
    out = head(_features(2, 16, 64, 64))
    if aux == "none":
        assert out.aux_logits is None and head.aux_logits is None
    else:
        assert out.aux_logits.shape == out.cls_logits.shape[:2]


def test_aux_conv_reads_the_box_tower():
    head = PAAHead(8, 2, width=8, num_convs=1)
    feats = _features(1, 8, 64, 64)
    before = head(feats)
    with torch.no_grad():  # changing the cls tower must not move the IoU logits
        head.cls_tower[0].weight.normal_()
    after = head(feats)
    torch.testing.assert_close(after.aux_logits, before.aux_logits)
    assert not torch.allclose(after.cls_logits, before.cls_logits)


def test_group_norm_groups_divide_width_with_two_channels_each():
    groups = {w: PAAHead(w, 1, width=w, num_convs=1).cls_tower[1].num_groups for w in (256, 64, 48, 32, 20)}
    assert groups == {256: 32, 64: 32, 48: 24, 32: 16, 20: 10}


def test_box_scale_multiplies_only_its_level():
    head = PAAHead(8, 1, width=8, num_convs=1)
    feats = _features(1, 8, 128, 128)
    before = head(feats)
    with torch.no_grad():
        head.scales[1].scale.fill_(3.0)
    after = head(feats)
    n = before.num_anchors_per_level
    lvl1 = slice(n[0], n[0] + n[1])
    torch.testing.assert_close(after.box_deltas[:, lvl1], 3 * before.box_deltas[:, lvl1])
    torch.testing.assert_close(after.box_deltas[:, : n[0]], before.box_deltas[:, : n[0]])


def test_head_rejects_wrong_number_of_levels():
    with pytest.raises(ValueError, match="5 levels"):
        PAAHead(8, 1, width=8)(_features(1, 8, 64, 64)[:4])


# ----- backbone -------------------------------------------------------------------------------------
def test_backbone_returns_p3_to_p7_at_strides_8_to_128():
    backbone = build_backbone("resnet18", norm="gn", out_channels=32)
    feats = backbone(torch.randn(1, 3, 128, 128))
    assert list(feats) == ["p3", "p4", "p5", "p6", "p7"]
    assert backbone.strides == STRIDES and backbone.out_channels == 32
    assert [tuple(f.shape) for f in feats.values()] == [(1, 32, 128 // s, 128 // s) for s in STRIDES]


@pytest.fixture()
def resnet18_file(tmp_path):
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_backbone_loads_local_state_dict(resnet18_file):
    path, state = resnet18_file
    body = build_backbone("resnet18", weights_path=path, norm="frozen_bn").body
    torch.testing.assert_close(body.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    torch.testing.assert_close(body.layer3[0].bn1.running_var, state["layer3.0.bn1.running_var"])
    # pretrained default: stem + res2 frozen, res3–res5 train (ATSS / PAA)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad


def test_backbone_missing_weights_path_raises_clearly(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_backbone("resnet18", weights_path=missing)


def test_backbone_weights_of_another_architecture_raise(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match="resnet34.*missing keys"):
        build_backbone("resnet34", weights_path=path)


def test_backbone_bn_weights_refuse_group_norm(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match="GroupNorm"):
        build_backbone("resnet18", weights_path=path, norm="gn")


def test_backbone_from_scratch_trains_every_layer():
    backbone = build_backbone("resnet18", norm="bn", out_channels=8)
    assert all(p.requires_grad for p in backbone.parameters())


def test_dcn_backbone_equals_plain_convs_at_init():
    torch.manual_seed(0)
    dcn = build_backbone("resnet18", norm="gn", dcn=True, out_channels=16)
    plain = build_backbone("resnet18", norm="gn", dcn=False, out_channels=16)
    result = plain.load_state_dict(dcn.state_dict(), strict=False)  # zero offsets: same maths
    assert not result.missing_keys and all(".offset." in k for k in result.unexpected_keys)
    blocks = [m for m in dcn.body.modules() if isinstance(m, DeformConvBlock)]
    assert len(blocks) == 12  # res3–res5 of ResNet-18: 3 stages × 2 blocks × 2 convs 3×3
    assert not any(isinstance(m, DeformConvBlock) for m in dcn.body.layer1.modules())
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(dcn(x).values(), plain(x).values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_dcn_last_tower_conv_runs_and_offsets_learn():
    head = PAAHead(8, 2, width=8, num_convs=2, dcn_last=True)
    assert isinstance(head.cls_tower[3], DeformConvBlock) and type(head.cls_tower[0]) is nn.Conv2d
    assert head.box_tower[3].offset.weight.abs().sum() == 0
    out = head(_features(1, 8, 64, 64))
    (out.cls_logits.sum() + out.box_deltas.sum()).backward()
    assert head.cls_tower[3].offset.weight.grad.abs().sum() > 0


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
    voted = score_voting(det_boxes, cand_scores[:8], det_labels, cand_boxes, cand_scores, cand_labels, sigma)
    expected = _voting_loop(det_boxes, det_labels, cand_boxes, cand_scores, cand_labels, sigma)
    torch.testing.assert_close(voted, expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(voted, det_boxes, atol=1e-2)


def test_score_voting_batched_equals_per_image():
    g = torch.Generator().manual_seed(1)
    cand = torch.stack([_random_boxes(20, g) for _ in range(2)])
    scores, labels = torch.rand(2, 20, generator=g), torch.randint(0, 3, (2, 20), generator=g)
    batched = score_voting(cand[:, :5], scores[:, :5], labels[:, :5], cand, scores, labels)
    for b in range(2):
        single = score_voting(cand[b, :5], scores[b, :5], labels[b, :5], cand[b], scores[b], labels[b])
        torch.testing.assert_close(batched[b], single)


def test_score_voting_leaves_isolated_box_unchanged():
    det = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    cands = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 70.0, 70.0], [12.0, 12.0, 32.0, 32.0]])
    labels = torch.tensor([0, 0, 1])  # the overlapping neighbour has another class; the other is far away
    voted = score_voting(det, torch.tensor([0.9]), torch.tensor([0]), cands, torch.tensor([0.9, 0.8, 0.7]), labels)
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
    a = {"boxes": torch.tensor([[10.0, 10, 50, 50]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([0]),
         "ious": torch.tensor([0.6])}
    b = {"boxes": torch.tensor([[12.0, 12, 52, 52], [60, 60, 80, 80]]), "scores": torch.tensor([0.8, 0.5]),
         "labels": torch.tensor([0, 1]), "ious": torch.tensor([0.7, 0.4])}
    merged = merge_tta([a, b], nms_thresh=0.6)
    assert merged["scores"].tolist() == pytest.approx([0.8, 0.5])
    assert merged["ious"].tolist() == pytest.approx([0.7, 0.4])
    voted = merge_tta([a, b], nms_thresh=0.6, score_voting=True)
    assert 10 < voted["boxes"][0, 0] < 12  # voted with the other variant's box
    torch.testing.assert_close(voted["boxes"][1], b["boxes"][1])

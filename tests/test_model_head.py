"""The PAA head (Fig. 5): towers, classification / box / auxiliary convs (model/head.py)."""

from __future__ import annotations

import math

import pytest
import torch

from paa_toolkit.model.head import PAAHead
from paa_toolkit.structures import make_anchor_grid

STRIDES = [8, 16, 32, 64, 128]


def _features(batch: int, channels: int, height: int, width: int) -> list[torch.Tensor]:
    """Random P3–P7 maps of an image of ``height × width`` (padded to stride 128)."""
    return [torch.randn(batch, channels, math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


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

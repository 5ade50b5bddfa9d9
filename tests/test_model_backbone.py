"""ResNet/ResNeXt (+DCN) + FPN P3–P7 (model/backbone.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from paa_toolkit.model.backbone import DeformConvBlock, StemMaxPool, build_backbone
from paa_toolkit.model.head import PAAHead

from planted_code import PlantedCommand  # tests/planted_code.py

STRIDES = [8, 16, 32, 64, 128]


def _features(batch: int, channels: int, height: int, width: int) -> list[torch.Tensor]:
    """Random P3–P7 maps of an image of ``height × width`` (padded to stride 128)."""
    return [torch.randn(batch, channels, math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


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


def test_backbone_weights_with_planted_code_are_refused_in_one_line_and_never_run(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": PlantedCommand(marker)}, path)
    with pytest.raises(ValueError) as caught:
        build_backbone("resnet18", weights_path=path, norm="frozen_bn")
    message = str(caught.value)
    assert "evil.pth" in message and "pickled Python objects (posix.system)" in message
    assert "weights_only" not in message and "\n" not in message  # no advice to unpickle, one line
    assert not marker.exists()


def test_backbone_weights_torn_or_foreign_name_the_file(tmp_path):
    torn, foreign = tmp_path / "torn.pth", tmp_path / "notes.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), torn)
    torn.write_bytes(torn.read_bytes()[:5000])
    foreign.write_text("not weights")
    for path in (torn, foreign):
        with pytest.raises(ValueError, match=f"backbone weights '.*{path.name}' is not a readable torch file"):
            build_backbone("resnet18", weights_path=path, norm="frozen_bn")


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


def test_the_p2_to_p6_pyramid_is_one_octave_finer_with_five_levels():
    backbone = build_backbone("resnet18", norm="gn", out_channels=32, pyramid="p2-p6")
    feats = backbone(torch.randn(1, 3, 128, 128))
    assert list(feats) == ["p2", "p3", "p4", "p5", "p6"] and backbone.strides == [4, 8, 16, 32, 64]
    assert [tuple(f.shape) for f in feats.values()] == [(1, 32, 128 // s, 128 // s) for s in backbone.strides]
    with pytest.raises(ValueError, match="unknown pyramid 'p1-p5'; valid choices: p3-p7, p2-p6"):
        build_backbone("resnet18", norm="gn", pyramid="p1-p5")


def test_groupnorm_weights_initialise_a_groupnorm_backbone_and_only_that(tmp_path):
    torch.manual_seed(2)
    gn_state = torchvision.models.resnet18(weights=None, norm_layer=lambda c: nn.GroupNorm(16, c)).state_dict()
    path = tmp_path / "gn.pth"
    torch.save(gn_state, path)
    body = build_backbone("resnet18", weights_path=path, norm="gn").body
    torch.testing.assert_close(body.layer3[1].bn2.weight, gn_state["layer3.1.bn2.weight"])
    with pytest.raises(ValueError, match="trained with GroupNorm"):
        build_backbone("resnet18", weights_path=path, norm="frozen_bn")


def test_batchnorm_weights_still_refuse_a_groupnorm_backbone(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match="trained with BatchNorm and cannot initialise a GroupNorm ResNet"):
        build_backbone("resnet18", weights_path=path, norm="gn")


def test_a_classifier_of_another_class_count_does_not_stop_the_body_from_loading(tmp_path):
    net = torchvision.models.resnet18(weights=None, norm_layer=lambda c: nn.GroupNorm(16, c), num_classes=6)
    state = net.state_dict()
    torch.save(state, tmp_path / "six.pth")
    body = build_backbone("resnet18", weights_path=tmp_path / "six.pth", norm="gn").body
    torch.testing.assert_close(body.conv1.weight, state["conv1.weight"])


def test_the_stems_max_pool_gives_the_plain_output_and_keeps_the_plain_kernel_where_a_gradient_flows():
    """StemMaxPool is a CPU speed lever only: the same values in the same layout as torchvision's max-pool, on ties
    too (a ReLU map is mostly ties at 0), and the plain kernel (and its backward) where the stem trains."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(2, 64, 32, 32))
    plain, stem = nn.MaxPool2d(3, 2, 1), StemMaxPool(3, 2, 1)
    with torch.no_grad():
        assert torch.equal(stem(x), plain(x)) and stem(x).is_contiguous()
    grads = []
    for pool in (plain, stem):
        leaf = x.clone().requires_grad_()
        pool(leaf).sum().backward()
        grads.append(leaf.grad)
    assert torch.equal(*grads)
    built = build_backbone("resnet18", norm="gn", out_channels=32)
    assert isinstance(built.body.maxpool, StemMaxPool) and built.body.maxpool.kernel_size == 3

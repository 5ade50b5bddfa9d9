"""ResNet / ResNeXt + FPN P3–P7 (paper §4.1, Appendix A.2 Fig. 5, Table 3), built from torchvision.

    backbone = build_backbone("resnet50", weights_path="resnet50-imagenet.pth")  # paper setting
    features = backbone(images)            # OrderedDict p3..p7, strides 8..128, backbone.out_channels each

The body is a torchvision classification ResNet (never downloaded: ``weights=None``; ImageNet
weights come from a local state-dict file), the pyramid is torchvision's ``BackboneWithFPN``
(``FeaturePyramidNetwork`` on C3–C5 + ``LastLevelP6P7`` with P6 computed from P5, as FCOS / ATSS).
``dcn=True`` swaps the 3×3 convs of res3–res5 for :class:`DeformConvBlock` (Table 3's "-DCN" rows).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import DeformConv2d, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelP6P7

from ..safe_load import UnreadableTorchFile, load_tensors

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d", "resnext101_64x4d")
NORMS = ("frozen_bn", "bn", "gn")
STRIDES = [8, 16, 32, 64, 128]
#: the pyramids :func:`build_backbone` builds, by name: their levels (P<l> has stride 2^l)
PYRAMIDS = {"p3-p7": (3, 4, 5, 6, 7), "p2-p6": (2, 3, 4, 5, 6)}
# Stem + res2 frozen with pretrained weights (ATSS / PAA setting); train everything from scratch.
PRETRAINED_TRAINABLE_LAYERS = 3
_TRAINABLE_PREFIXES = ["layer4", "layer3", "layer2", "layer1", "conv1"]


class DeformConvBlock(DeformConv2d):
    """A deformable conv [5] whose offsets (and, if ``modulated``, DCNv2 masks) come from its input.

    It *is* a ``DeformConv2d`` (same ``weight`` / ``bias`` names as the ``nn.Conv2d`` it replaces, so
    ImageNet state dicts load); the extra ``offset`` conv is zero-initialised, so at initialisation
    the block equals a plain convolution (with ``modulated``, one scaled by sigmoid(0) = 0.5).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.modulated = modulated
        kh, kw = self.kernel_size
        self.offset = nn.Conv2d(
            in_channels, (3 if modulated else 2) * kh * kw, kernel_size, stride, padding, dilation, bias=True
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, modulated: bool = False) -> DeformConvBlock:
        """Same geometry as ``conv`` (stride, padding, dilation, groups), weights copied."""
        block = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            conv.stride[0],
            conv.padding[0],
            conv.dilation[0],
            conv.groups,
            conv.bias is not None,
            modulated,
        )
        with torch.no_grad():
            block.weight.copy_(conv.weight)
            if conv.bias is not None:
                block.bias.copy_(conv.bias)
        return block.to(conv.weight.device)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        out = self.offset(x)
        kk = self.kernel_size[0] * self.kernel_size[1]
        if self.modulated:
            return super().forward(x, out[:, : 2 * kk], out[:, 2 * kk :].sigmoid())
        return super().forward(x, out)


class StemMaxPool(nn.MaxPool2d):
    """The ResNet stem's 3×3 / 2 max-pool, the same op and output, computed on a channels-last copy of its input on
    the CPU when no gradient flows through it (a frozen stem, evaluation). PyTorch's CPU kernel for the plain layout
    is the slow one: 8.9 against 3.7 ms, the two layout copies included, for a batch of four 64-channel 64 × 64 maps
    on one thread (benchmarks/README.md §8). The output is returned in the plain layout, so every later op sees the
    same tensor; where a gradient flows, the plain kernel runs, so that training with a trainable stem is unchanged
    (tie-breaking in the backward pass may differ between kernels)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        fast = x.device.type == "cpu" and x.dim() == 4 and not (torch.is_grad_enabled() and x.requires_grad)
        if not fast or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class LastLevelP6(ExtraFPNBlock):
    """P6 = a stride-2 3×3 conv on P5 — the P6 half of torchvision's ``LastLevelP6P7`` — closing a
    P2–P6 pyramid (five levels, as the paper's P3–P7, one octave finer)."""

    def __init__(self, channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        nn.init.kaiming_uniform_(self.p6.weight, a=1)
        nn.init.constant_(self.p6.bias, 0)

    def forward(self, results: list[Tensor], x: list[Tensor], names: list[str]):
        return [*results, self.p6(results[-1])], [*names, "p6"]


class ResNetFPN(BackboneWithFPN):
    """``BackboneWithFPN`` returning ``OrderedDict(p3=…, p7=…)`` (or ``p2…p6``); ``strides`` = 2^level."""

    levels: tuple[int, ...] = PYRAMIDS["p3-p7"]

    @property
    def strides(self) -> list[int]:
        return [2**level for level in self.levels]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = super().forward(x)
        return OrderedDict((f"p{level}", f) for level, f in zip(self.levels, feats.values()))


def norm_layer_for(norm: str):
    """The ResNet normalisation: FrozenBN (paper, pretrained), BN or GroupNorm(32) (from scratch)."""
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")


def group_count(channels: int, max_groups: int = 32) -> int:
    """GroupNorm groups: the largest divisor of ``channels`` ≤ ``max_groups`` leaving ≥ 2 channels per group.

    (One channel per group would normalise a 1×1 map, e.g. P7 of a small image, to zero.)
    """
    return max([g for g in range(1, min(max_groups, channels // 2) + 1) if channels % g == 0], default=1)


def replace_with_dcn(resnet: nn.Module, stages: tuple[str, ...] = ("layer2", "layer3", "layer4")) -> int:
    """Swap every 3×3 conv inside ``stages`` (res3–res5) for a :class:`DeformConvBlock`; returns the count."""
    count = 0
    for stage in stages:
        targets = [
            (parent, name, child)
            for parent in getattr(resnet, stage).modules()
            for name, child in parent.named_children()
            if type(child) is nn.Conv2d and child.kernel_size == (3, 3)
        ]
        for parent, name, child in targets:
            setattr(parent, name, DeformConvBlock.from_conv(child))
            count += 1
    return count


def load_imagenet_weights(
    resnet: nn.Module, weights_path: str | Path, norm: str = "frozen_bn", arch: str | None = None
) -> None:
    """Load a torchvision ImageNet state dict from a local file into ``resnet`` (no download).

    BatchNorm weights (ImageNet) initialise ``frozen_bn`` / ``bn`` ResNets; GroupNorm weights (the
    toolkit's own pre-training on the embedded data, :mod:`paa_toolkit.engine.pretrain`) a ``gn`` one.

    Accepts a plain state dict or one wrapped as ``{"state_dict": …}`` / ``{"model": …}``. The
    classifier (``fc.*``) is ignored; DCN offset convs (absent from ImageNet weights) stay zero.
    Any other missing or unexpected key raises ``ValueError`` naming the file and the keys.
    """
    path, arch = Path(weights_path), arch or type(resnet).__name__
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights_path {str(path)!r} does not exist (ImageNet weights load "
            "from a local torchvision state-dict file; nothing is downloaded)"
        )
    try:
        state = load_tensors(path)
    except OSError as e:
        raise OSError(f"cannot read backbone weights {str(path)!r}: {e.strerror or e}") from None
    except UnreadableTorchFile as e:
        raise ValueError(f"backbone weights {str(path)!r} is not a readable torch file: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__})")
    batch_norm = any(str(k).endswith("running_mean") for k in state)
    if norm == "gn" and batch_norm:
        raise ValueError(
            f"ImageNet weights {str(path)!r} were trained with BatchNorm and cannot initialise a "
            "GroupNorm ResNet; use norm='frozen_bn' (paper) or 'bn' with pretrained weights"
        )
    if norm != "gn" and not batch_norm:
        raise ValueError(
            f"backbone weights {str(path)!r} were trained with GroupNorm (no BatchNorm statistics); "
            "use norm='gn' with them"
        )
    state = {k: v for k, v in state.items() if not str(k).startswith("fc.")}  # the classifier: any class count
    try:
        result = resnet.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(f"backbone weights {str(path)!r} do not fit {arch}: {err}") from err
    missing = [k for k in result.missing_keys if ".offset." not in k and not k.startswith("fc.")]
    unexpected = [k for k in result.unexpected_keys if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"backbone weights {str(path)!r} do not match {arch}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]} (is it the state dict of the same torchvision architecture?)"
        )


def build_backbone(
    name: str = "resnet50",
    *,
    weights_path: str | Path | None = None,
    norm: str = "frozen_bn",
    dcn: bool = False,
    out_channels: int = 256,
    trainable_layers: int | None = None,
    pyramid: str = "p3-p7",
) -> ResNetFPN:
    """ResNet/ResNeXt body + FPN giving P3–P7 with ``out_channels`` channels each.

    Args:
        name: one of ``BACKBONES`` (torchvision constructors, built with ``weights=None``).
        weights_path: local torchvision ImageNet state dict; ``None`` = random init (train from scratch).
        norm: "frozen_bn" (paper §4.1 / A.1, with pretrained weights; an identity at random init, so
            don't use it from scratch), "bn" or "gn" (from scratch).
        dcn: deformable 3×3 convs in res3–res5 (Table 3, "-DCN").
        out_channels: channels of every FPN level.
        trainable_layers: how many of (layer4, layer3, layer2, layer1, conv1) train; the rest is
            frozen. ``None``: 3 with ``weights_path`` (stem + res2 frozen, the ATSS / PAA setting),
            5 (everything) from scratch.
        pyramid: "p3-p7" (paper: FPN on C3–C5, P6 and P7 from P5) or "p2-p6" (FPN on C2–C5, P6 from
            P5: one octave finer, for images whose objects are small next to the paper's anchors).

    Returns:
        :class:`ResNetFPN`: called on images ``[B, 3, H, W]``, it returns five feature maps (P3–P7, or P2–P6),
        ``[B, out_channels, H / s, W / s]`` for its strides s (``.strides``: 8–128, or 4–64).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid choices: {', '.join(BACKBONES)}")
    if pyramid not in PYRAMIDS:
        raise ValueError(f"unknown pyramid {pyramid!r}; valid choices: {', '.join(PYRAMIDS)}")
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}")
    if trainable_layers is None:
        trainable_layers = PRETRAINED_TRAINABLE_LAYERS if weights_path is not None else 5
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
    resnet = getattr(models, name)(weights=None, norm_layer=norm_layer_for(norm))
    pool = resnet.maxpool
    resnet.maxpool = StemMaxPool(pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode)
    if dcn:
        replace_with_dcn(resnet)
    if weights_path is not None:
        load_imagenet_weights(resnet, weights_path, norm, arch=name)
    train_prefixes = _TRAINABLE_PREFIXES[:trainable_layers] + (["bn1"] if trainable_layers == 5 else [])
    for pname, param in resnet.named_parameters():
        if not any(pname.startswith(p) for p in train_prefixes):
            param.requires_grad_(False)
    c5 = resnet.fc.in_features  # 512 (BasicBlock) or 2048 (Bottleneck)
    if pyramid == "p3-p7":
        stages, extra = ("layer2", "layer3", "layer4"), LastLevelP6P7(out_channels, out_channels)  # P6 from P5
    else:
        stages, extra = ("layer1", "layer2", "layer3", "layer4"), LastLevelP6(out_channels)
    body_channels = {"layer1": c5 // 8, "layer2": c5 // 4, "layer3": c5 // 2, "layer4": c5}
    fpn = ResNetFPN(
        resnet,
        return_layers={
            stage: f"c{i + 2}" for i, stage in enumerate(["layer1", "layer2", "layer3", "layer4"]) if stage in stages
        },
        in_channels_list=[body_channels[stage] for stage in stages],
        out_channels=out_channels,
        extra_blocks=extra,
    )
    fpn.levels = PYRAMIDS[pyramid]
    return fpn


__all__ = [
    "BACKBONES",
    "NORMS",
    "PYRAMIDS",
    "STRIDES",
    "LastLevelP6",
    "DeformConvBlock",
    "ResNetFPN",
    "StemMaxPool",
    "build_backbone",
    "group_count",
    "load_imagenet_weights",
    "replace_with_dcn",
]

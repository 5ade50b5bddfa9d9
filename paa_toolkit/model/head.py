"""The PAA head (§3.2, Appendix A.2 Fig. 5): FCOS / ATSS towers with an IoU-prediction conv.

One anchor per location. Two towers of ``num_convs`` × (conv 3×3 → GroupNorm → ReLU), shared by all
pyramid levels; the classification conv sits on the cls tower, the box conv (4 deltas, times a
learnable per-level :class:`Scale`) and the auxiliary conv (IoU logit, §3.2; or FCOS centerness,
Table 1 right; or none) on the box tower.

Outputs are flattened and concatenated level by level, each level row-major (h then w) — the
order of :func:`paa_toolkit.structures.make_anchor_grid`, so anchor ``a`` of the grid is row ``a``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .backbone import DeformConvBlock, group_count

AUX_CHOICES = ("iou", "centerness", "none")


@dataclass
class HeadOutputs:
    """Per-anchor predictions for a batch: ``A = Σ_l h_l·w_l`` anchors, levels concatenated.

    ``cls_logits[B, A, C]``, ``box_deltas[B, A, 4]`` (BoxCoder deltas against the anchors),
    ``aux_logits[B, A]`` (IoU-prediction or centerness logit; ``None`` when ``aux="none"``),
    ``feature_sizes[l] = (h_l, w_l)``.
    """

    cls_logits: Tensor
    box_deltas: Tensor
    aux_logits: Tensor | None
    feature_sizes: list[tuple[int, int]]

    @property
    def num_anchors_per_level(self) -> list[int]:
        return [h * w for h, w in self.feature_sizes]


class Scale(nn.Module):
    """A learnable scalar multiplying one level's box deltas (FCOS / ATSS "trainable scalars", §4.1)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(in_channels: int, width: int, num_convs: int, dcn_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        cin = in_channels if i == 0 else width
        use_dcn = dcn_last and i == num_convs - 1  # ATSS / PAA: DCN in the last tower conv (Table 3)
        conv = DeformConvBlock(cin, width, 3, 1, 1) if use_dcn else nn.Conv2d(cin, width, 3, 1, 1)
        layers += [conv, nn.GroupNorm(group_count(width), width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _flatten(x: Tensor) -> Tensor:
    """``[B, K, H, W] → [B, H·W, K]`` (row-major over h, w)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class PAAHead(nn.Module):
    """Classification / box / auxiliary predictions on P3–P7 (Fig. 5).

    Args:
        in_channels: FPN channels.
        num_classes: C (sigmoid classification, no background class).
        width: tower channels (paper 256); GroupNorm: 32 groups, or fewer (see ``group_count``) for narrow towers.
        num_convs: convs per tower (paper 4).
        aux: "iou" (IoU prediction, §3.2), "centerness" (FCOS / ATSS, Table 1 right) or "none".
        prior_prob: initial foreground probability of the cls conv (RetinaNet prior, 0.01).
        dcn_last: deformable last tower conv (Table 3 "-DCN" rows).
        num_levels: number of pyramid levels (one :class:`Scale` each).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int = 256,
        num_convs: int = 4,
        aux: str = "iou",
        prior_prob: float = 0.01,
        dcn_last: bool = False,
        num_levels: int = 5,
    ):
        super().__init__()
        if aux not in AUX_CHOICES:
            raise ValueError(f"unknown aux head {aux!r}; valid choices: {', '.join(AUX_CHOICES)}")
        if num_classes < 1 or width < 1 or num_convs < 0 or num_levels < 1:
            raise ValueError(
                f"PAAHead needs num_classes, width, num_levels >= 1 and num_convs >= 0; got "
                f"num_classes={num_classes}, width={width}, num_convs={num_convs}, num_levels={num_levels}"
            )
        if not 0 < prior_prob < 1:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.num_classes, self.aux, self.num_levels = num_classes, aux, num_levels
        self.cls_tower = _tower(in_channels, width, num_convs, dcn_last)
        self.box_tower = _tower(in_channels, width, num_convs, dcn_last)
        tower_out = width if num_convs > 0 else in_channels
        self.cls_logits = nn.Conv2d(tower_out, num_classes, 3, 1, 1)
        self.box_deltas = nn.Conv2d(tower_out, 4, 3, 1, 1)
        self.aux_logits = nn.Conv2d(tower_out, 1, 3, 1, 1) if aux != "none" else None
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels))
        offset_convs = {id(m.offset) for m in self.modules() if isinstance(m, DeformConvBlock)}  # stay zero
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, DeformConvBlock)) and id(m) not in offset_convs:
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[Tensor]) -> HeadOutputs:
        if len(features) != self.num_levels:
            raise ValueError(f"PAAHead was built for {self.num_levels} levels, got {len(features)} feature maps")
        cls, box, aux, sizes = [], [], [], []
        for level, feat in enumerate(features):
            cls_feat, box_feat = self.cls_tower(feat), self.box_tower(feat)
            cls.append(_flatten(self.cls_logits(cls_feat)))
            box.append(_flatten(self.scales[level](self.box_deltas(box_feat))))
            if self.aux_logits is not None:
                aux.append(_flatten(self.aux_logits(box_feat)).squeeze(-1))
            sizes.append((feat.shape[-2], feat.shape[-1]))  # ints (traced sizes under torch.jit.trace)
        return HeadOutputs(
            cls_logits=torch.cat(cls, dim=1),
            box_deltas=torch.cat(box, dim=1),
            aux_logits=torch.cat(aux, dim=1) if aux else None,
            feature_sizes=sizes,
        )


__all__ = ["AUX_CHOICES", "HeadOutputs", "PAAHead", "Scale"]

"""AssignmentSnapshot: one look at the assigner during training — everything a replay needs.

The trainer saves one per trace iteration (Fig. 4a / 7 replays, Fig. 4b); the notebooks and widgets
re-run Procedure 1, lines 12–16 on it (:mod:`.replay`) with the settings it recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from ..structures import AnchorGrid
from .base import AssignmentDiagnostics
from .config import AssignConfig


@dataclass
class AssignmentSnapshot:
    """The assigner's inputs and outputs on a few images, in resized-image pixels.

    ``images`` are the resized, un-normalised images as uint8 ``[3, h, w]`` (no padding);
    ``scales[i] = (sy, sx)`` maps original to resized coordinates. ``settings`` are the assigner's
    own (rule, K, λ, FNP n, FSR t): a replay with no other settings reproduces the training assignment.
    """

    diagnostics: AssignmentDiagnostics
    anchors: Tensor  # [A, 4]
    num_per_level: list[int]
    strides: list[int]
    matched_gt: Tensor  # [B, A]
    pred_boxes: Tensor  # [B, A, 4]
    cls_scores: Tensor  # [B, A] probability of each anchor's best class
    cls_logits: Tensor | None  # [B, A, C] (for exact replays with another K or λ)
    gt_boxes: Tensor  # [B, M, 4]
    gt_labels: Tensor  # [B, M]
    gt_valid: Tensor  # [B, M]
    image_sizes: list[tuple[int, int]]
    scales: list[tuple[float, float]]
    images: list[Tensor]
    settings: AssignConfig = field(default_factory=AssignConfig)
    anchor_scale: float = 8.0

    @property
    def anchor_grid(self) -> AnchorGrid:
        return AnchorGrid(boxes=self.anchors, num_per_level=list(self.num_per_level), strides=list(self.strides),
                          scale=self.anchor_scale)

    def to(self, device: torch.device | str) -> "AssignmentSnapshot":
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (Tensor, AssignmentDiagnostics)):
                value = value.to(device)
            elif f.name == "images":
                value = [v.to(device) for v in value]
            moved[f.name] = value
        return AssignmentSnapshot(**moved)


__all__ = ["AssignmentSnapshot"]

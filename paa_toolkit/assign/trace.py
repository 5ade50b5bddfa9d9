"""AssignmentSnapshot: one look at the assigner during training — everything a replay needs.

The trainer saves one per trace iteration (Fig. 4a / 7 replays, Fig. 4b); the notebooks and widgets
re-run Procedure 1, lines 12–16 on it (:mod:`.replay`) with the settings it recorded.

On disk a snapshot is :meth:`AssignmentSnapshot.to_state`: a dict of tensors, lists, numbers and
strings (the nested :class:`~.base.AssignmentDiagnostics` and :class:`~.config.AssignConfig` as dicts
too) that ``torch.load(weights_only=True)`` reads without unpickling any object;
:meth:`AssignmentSnapshot.from_state` rebuilds the dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
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
        return AnchorGrid(
            boxes=self.anchors,
            num_per_level=list(self.num_per_level),
            strides=list(self.strides),
            scale=self.anchor_scale,
        )

    def to(self, device: torch.device | str) -> AssignmentSnapshot:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (Tensor, AssignmentDiagnostics)):
                value = value.to(device)
            elif f.name == "images":
                value = [v.to(device) for v in value]
            moved[f.name] = value
        return AssignmentSnapshot(**moved)

    def to_state(self) -> dict[str, Any]:
        """The snapshot as plain values (tensors, lists, tuples, numbers, strings, None), nested dataclasses as
        dicts."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["diagnostics"] = {f.name: getattr(self.diagnostics, f.name) for f in fields(self.diagnostics) if f.init}
        state["settings"] = asdict(self.settings)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AssignmentSnapshot:
        """The snapshot :meth:`to_state` returned; ``ValueError`` naming what is missing or unknown."""
        values = _init_values(cls, state, "snapshot")
        values["diagnostics"] = AssignmentDiagnostics(
            **_init_values(AssignmentDiagnostics, values["diagnostics"], "snapshot.diagnostics")
        )
        values["settings"] = AssignConfig(**_init_values(AssignConfig, values.get("settings", {}), "snapshot.settings"))
        return cls(**values)


def _init_values(cls: type, state: Any, what: str) -> dict[str, Any]:
    """``state``'s entries for the constructor of dataclass ``cls``: every field without a default present,
    no entry that is not a field (fields with a default may be absent: files written before they existed)."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: expected a dict of fields, got {type(state).__name__}")
    names = {f.name for f in fields(cls) if f.init}
    required = {f.name for f in fields(cls) if f.init and f.default is MISSING and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(state)), sorted(set(state) - names)
    if missing or unknown:
        raise ValueError(
            f"{what}: "
            + "; ".join(
                part
                for part in (missing and f"missing field(s) {missing}", unknown and f"unknown field(s) {unknown}")
                if part
            )
        )
    return dict(state)


__all__ = ["AssignmentSnapshot"]

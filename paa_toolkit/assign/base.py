"""The interface every assigner shares: inputs, the :class:`Assignment` result, diagnostics.

An assigner is called on a whole batch at once::

    assignment = assigner(anchors, targets, cls_logits=..., pred_boxes=...)

and returns, per image and anchor, which ground truth (if any) the anchor is a positive sample of.
Switching assigner is one argument of :func:`paa_toolkit.assign.build_assigner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import torch
from torch import Tensor

from ..structures import AnchorGrid, PaddedTargets, paired_box_iou
from .boundaries import POSITIVE

#: ``Assignment.matched_gt`` value of a negative (background) anchor.
NEGATIVE = -1
#: ``Assignment.matched_gt`` value of an ignored anchor (no loss at all; Fig. 3 (b), max-IoU's grey zone).
IGNORE = -2


#: the diagnostics fields with one entry per candidate slot (``[G, N, ...]``); the rest are per GT (``[G, ...]``)
PER_CANDIDATE = frozenset(
    {
        "candidate_anchor",
        "candidate_level",
        "candidate_valid",
        "candidate_cost",
        "candidate_iou",
        "candidate_label",
        "responsibilities",
        "log_density",
        "candidate_metric",
    }
)


@dataclass
class AssignmentDiagnostics:
    """What the assigner saw for each ground truth, as plain tensors (Procedure 1, lines 3–13).

    One row per ground truth of the batch (``G`` rows, padding removed), ``N`` candidate slots per
    row (``num_levels × K``), candidates sorted by cost ascending, unused slots last with
    ``candidate_valid`` False. Notebooks and widgets plot exactly these fields;
    :func:`paa_toolkit.assign.stats.summarize_diagnostics` turns them into a few floats for the logs.

    ``num_candidates`` and ``num_positives`` are not arguments: they are counted from
    ``candidate_valid`` / ``candidate_label`` on construction (so ``dataclasses.replace`` with new labels
    recounts them). For PAA and ATSS every positive is a candidate, so ``num_positives`` is the GT's
    number of positive anchors; for max-IoU it counts those among its top-K-per-level candidates only.
    """

    image_index: Tensor  # [G] image of the GT in the batch
    gt_index: Tensor  # [G] index of the GT inside its image
    candidate_anchor: Tensor  # [G, N] anchor index (into the concatenated levels), -1 when unused
    candidate_level: Tensor  # [G, N] pyramid level of the candidate, -1 when unused
    candidate_valid: Tensor  # [G, N] bool
    candidate_cost: Tensor  # [G, N] anchor cost of Eq. (3) (+inf when unused); score S = exp(-cost)
    candidate_iou: Tensor  # [G, N] IoU of the anchor box with the GT
    candidate_label: Tensor  # [G, N] 1 positive, 0 negative, -1 ignore (unused slots: 0)
    gmm_means: Tensor | None = None  # [G, 2] component 0 = foreground (initialised at the min cost)
    gmm_variances: Tensor | None = None  # [G, 2]
    gmm_weights: Tensor | None = None  # [G, 2]
    responsibilities: Tensor | None = None  # [G, N, 2] posterior of each component
    log_density: Tensor | None = None  # [G, N] log mixture density (sklearn's score_samples)
    boundary: Tensor | None = None  # [G] cost at which positives end (last positive's cost)
    iou_threshold: Tensor | None = None  # [G] ATSS only: mean + std of the candidates' IoUs
    em_iterations: Tensor | None = None  # [G] int64 EM iterations of the GMM fit (sklearn's n_iter_)
    em_converged: Tensor | None = None  # [G] bool the fit met tol before max_iter (sklearn's converged_)
    gt_area: Tensor | None = None  # [G] box area of the GT, in the image coordinates of the assignment
    candidate_metric: Tensor | None = None  # [G, N] TAL only: alignment metric t = s^α·u^β (TOOD Eq. 3)
    dynamic_k: Tensor | None = None  # [G] int64 SimOTA only: positives the GT asks for (YOLOX §2.3, dynamic k)
    num_candidates: Tensor | None = field(init=False, default=None)  # [G] int64 valid candidate slots
    num_positives: Tensor | None = field(init=False, default=None)  # [G] int64 candidates labelled positive

    def __post_init__(self):
        self.num_candidates = self.candidate_valid.sum(dim=1)
        self.num_positives = ((self.candidate_label == POSITIVE) & self.candidate_valid).sum(dim=1)

    def for_gt(self, row: int) -> dict[str, Tensor]:
        """The valid candidates of one ground truth, as a dict of 1-D tensors (easy to plot)."""
        keep = self.candidate_valid[row]
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = value[row][keep] if f.name in PER_CANDIDATE else value[row]
        return out

    def to(self, device: torch.device | str) -> AssignmentDiagnostics:
        """The same diagnostics on ``device`` (the counted fields are counted again there)."""
        return AssignmentDiagnostics(
            **{
                f.name: (getattr(self, f.name).to(device) if getattr(self, f.name) is not None else None)
                for f in fields(self)
                if f.init
            }
        )


@dataclass
class Assignment:
    """Result of an assigner for a batch.

    Attributes:
        matched_gt: ``[B, A]`` int64; ``matched_gt[b, a] = g >= 0``: anchor ``a`` of image ``b`` is a positive
            sample of GT ``g``; :data:`NEGATIVE` (-1): background; :data:`IGNORE` (-2): excluded from every loss.
        diagnostics: per GT, what the assigner saw (``return_diagnostics=True``), else None.
        cls_target: ``[B, A]`` float in [0, 1] (optional): a soft classification target for the positive's GT
            class (TAL's normalised metric, TOOD Eq. 9; SimOTA's IoU, YOLOX §2.3); the loss then trains the class
            score towards it (quality focal loss, TOOD Eq. 10). None: hard 0/1 targets, PAA's focal loss (Eq. 8).
    """

    matched_gt: Tensor
    diagnostics: AssignmentDiagnostics | None = None
    cls_target: Tensor | None = None

    @property
    def positive(self) -> Tensor:
        return self.matched_gt >= 0

    @property
    def ignored(self) -> Tensor:
        return self.matched_gt == IGNORE

    def target_labels(self, targets: PaddedTargets) -> Tensor:
        """Class of each anchor's GT (``-1`` for negatives and ignored anchors), ``[B, A]``."""
        gathered = (
            targets.labels.gather(1, self.matched_gt.clamp(min=0))
            if targets.max_gts
            else torch.zeros_like(self.matched_gt)
        )
        return torch.where(self.positive, gathered, torch.full_like(gathered, -1))

    def target_boxes(self, targets: PaddedTargets) -> Tensor:
        """Box of each anchor's GT, ``[B, A, 4]`` (meaningful where :attr:`positive`)."""
        if targets.max_gts == 0:
            return torch.zeros(*self.matched_gt.shape, 4, device=self.matched_gt.device)
        idx = self.matched_gt.clamp(min=0)[..., None].expand(-1, -1, 4)
        return targets.boxes.gather(1, idx)

    def positives_per_gt(self, targets: PaddedTargets) -> Tensor:
        """Number of positive anchors of each GT slot, ``[B, M]`` (Fig. 4 (b); 0 for padding)."""
        return positive_counts(self.matched_gt, targets.boxes.shape[1])


def positive_counts(matched_gt: Tensor, max_gts: int) -> Tensor:
    """Positive anchors of each GT slot, ``[B, M]``, from ``matched_gt[B, A]`` (GT index or < 0)."""
    counts = torch.zeros(matched_gt.shape[0], max_gts, dtype=torch.int64, device=matched_gt.device)
    if max_gts:
        counts.scatter_add_(1, matched_gt.clamp(min=0), (matched_gt >= 0).long())
    return counts


def positives_per_gt(matched_gt: Tensor, gt_valid: Tensor) -> Tensor:
    """Positive anchors of each real GT (Fig. 4 (b)).

    Args:
        matched_gt: ``[B, A]`` int64 assignment (GT index of a positive, < 0 otherwise).
        gt_valid: ``[B, M]`` bool, the real GTs among the padded ones.

    Returns:
        ``[G]`` int64 positives of each real GT, in image then GT order.
    """
    return positive_counts(matched_gt, gt_valid.shape[1])[gt_valid]


def slot_diagnostics(
    anchors: AnchorGrid,
    targets: PaddedTargets,
    matched_gt: Tensor,
    slot_anchor: Tensor,
    slot_valid: Tensor,
    per_slot: dict[str, Tensor] | None = None,
    per_gt: dict[str, Tensor] | None = None,
) -> AssignmentDiagnostics:
    """:class:`AssignmentDiagnostics` of the real GTs from a rule's candidate slots ``[B, M, N]``.

    ``slot_anchor`` / ``slot_valid``: each GT's candidate anchors (in the rule's order) and which slots hold
    one; ``per_slot`` more ``[B, M, N]`` fields (``candidate_cost``: NaN when absent), ``per_gt`` ``[B, M]``
    fields. Labels come from ``matched_gt [B, A]`` (positive where the slot's anchor went to this GT), the
    IoU is the anchor box's with the GT, as for PAA and ATSS.
    """
    b, m, n = slot_anchor.shape
    rows = targets.valid.reshape(-1)
    image_index = torch.arange(b, device=rows.device)[:, None].expand(b, m).reshape(-1)[rows]
    gt_index = torch.arange(m, device=rows.device)[None, :].expand(b, m).reshape(-1)[rows]
    valid = slot_valid.reshape(b * m, n)[rows]
    anchor = slot_anchor.reshape(b * m, n)[rows].clamp(min=0)
    gt_box = targets.boxes[image_index, gt_index]
    iou = paired_box_iou(anchors.boxes.to(gt_box.dtype)[anchor], gt_box[:, None, :]).masked_fill(~valid, 0.0)
    labels = ((matched_gt[image_index[:, None], anchor] == gt_index[:, None]) & valid).long()
    fields_ = {"candidate_cost": torch.full(iou.shape, float("nan"), device=iou.device)}
    fields_.update({k: v.reshape(b * m, n)[rows] for k, v in (per_slot or {}).items()})
    fields_.update({k: v.reshape(-1)[rows] for k, v in (per_gt or {}).items()})
    return AssignmentDiagnostics(
        image_index=image_index,
        gt_index=gt_index,
        candidate_anchor=anchor.masked_fill(~valid, -1),
        candidate_level=anchors.level_of_anchor[anchor].masked_fill(~valid, -1),
        candidate_valid=valid,
        candidate_iou=iou,
        candidate_label=labels,
        gt_area=(gt_box[:, 2] - gt_box[:, 0]) * (gt_box[:, 3] - gt_box[:, 1]),
        **fields_,
    )


class Assigner(Protocol):
    """Anything that turns (anchors, targets, detached predictions) into an :class:`Assignment`.

    ``cls_logits[B, A, C]`` and ``pred_boxes[B, A, 4]`` (decoded, xyxy) are the detached outputs of
    the model; assigners that ignore the model (max-IoU, ATSS) accept ``None``. ``needs_predictions``: whether
    it scores anchors with the model (PAA, TAL, SimOTA) or not (max-IoU, ATSS). ``rule`` is its registered
    name and ``settings`` its settings dataclass (:mod:`.registry`): a trace records both.
    """

    needs_predictions: bool
    rule: str
    settings: Any

    def __call__(
        self,
        anchors: AnchorGrid,
        targets: PaddedTargets,
        cls_logits: Tensor | None = None,
        pred_boxes: Tensor | None = None,
        return_diagnostics: bool = False,
    ) -> Assignment:
        """Assign every anchor of a batch: a GT index (positive), negative or ignored.

        Args:
            anchors: the anchor grid, ``boxes [A, 4]`` with its levels.
            targets: padded GTs, ``boxes [B, M, 4]``, ``labels [B, M]``, ``valid [B, M]``.
            cls_logits: ``[B, A, C]`` detached classification logits (None for the rules that ignore the model).
            pred_boxes: ``[B, A, 4]`` detached decoded predicted boxes, xyxy (likewise).
            return_diagnostics: also record per GT its candidates, costs and GMM (``Assignment.diagnostics``).

        Returns:
            :class:`Assignment` with ``matched_gt [B, A]``: the GT index of a positive, ``NEGATIVE`` (-1) or
            ``IGNORE`` (-2).
        """
        ...

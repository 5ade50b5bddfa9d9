"""The PAA assigner: Procedure 1 end to end, for a whole batch at once.

Line 3   GetAnchors            → :func:`~.candidates.match_max_iou` (IoU ≥ 0.1 + low-quality matches)
Line 6   ComputeAnchorScores   → :func:`~.cost.anchor_cost` (Eq. 1–3)
Lines 7–9 FindKthLargest, top-K → :func:`~.candidates.topk_per_level`
Line 12  FitGMM                → :func:`~.gmm.fit_gmm` (Eq. 4), all GTs of all images in one call (``gmm_*``)
Line 13  SeparateAnchors       → :func:`~.boundaries.separate` (Fig. 3 (a)–(d), FNP, FSR)
Line 14  positives of this GT     → :func:`scatter_labels` (all GTs' labels written back at once)
Line 15  ignored anchors (Fig. 3 (b) only) → :func:`scatter_labels` writes ``IGNORE``
Line 16  the rest are negatives  → :func:`scatter_labels` starts from ``NEGATIVE``
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..structures import AnchorGrid, PaddedTargets
from .base import IGNORE, NEGATIVE, Assignment, AssignmentDiagnostics
from .boundaries import BOUNDARIES, IGNORED, POSITIVE, SEPARATIONS, boundary_cost, separate
from .candidates import (
    LOW_QUALITY_POLICIES,
    PAA_IOU_THRESHOLD,
    Candidates,
    CandidateSettings,
    anchor_gt_iou,
    match_max_iou,
    sort_rows,
    topk_per_level,
)
from .cost import anchor_cost
from .gmm import GMM_INITS, SKLEARN_MAX_ITER, SKLEARN_TOL, GMMFit, fit_gmm
from .registry import Rule, register


@dataclass
class PAASettings(CandidateSettings):
    """PAA's settings (§3.1, Procedure 1; Table 1 left; Table 4); K: :class:`~.candidates.CandidateSettings`."""

    score_lambda: float = 1.0  # λ of Eq. (1)/(3): weight of the localisation term of the anchor score
    fnp_num: int = 10  # n of FNP(n), Table 1 left (rule "fnp")
    fsr_thresh: float = 0.2  # t of FSR(> t), Table 1 left (rule "fsr")
    low_quality: str = "reference"  # line 3, a best anchor of several GTs: reference code, last GT (gt), no GT left out
    gmm_init: str = "paper"  # line 12, EM start: "paper" (§4.1: min/max, σ = 1) or "data"
    gmm_tol: float = SKLEARN_TOL  # line 12, EM stops when the mean log-likelihood gains less (scikit-learn's tol)
    gmm_max_iter: int = SKLEARN_MAX_ITER  # line 12, EM iteration cap (scikit-learn's max_iter, >= 1)

    def problems(self) -> list[str]:
        checks = [
            (self.score_lambda >= 0, f"score_lambda (λ) must be >= 0, got {self.score_lambda}"),
            (self.fnp_num >= 1, f"fnp_num must be >= 1, got {self.fnp_num}"),
            (0 < self.fsr_thresh <= 1, f"fsr_thresh must be in (0, 1], got {self.fsr_thresh}"),
            (self.gmm_tol >= 0, f"gmm_tol must be >= 0, got {self.gmm_tol}"),
            (self.gmm_max_iter >= 1, f"gmm_max_iter must be >= 1, got {self.gmm_max_iter}"),
        ]
        return CandidateSettings.problems(self) + [message for ok, message in checks if not ok]


def scatter_labels(
    shape: torch.Size, candidates_anchor: Tensor, image_index: Tensor, gt_index: Tensor, labels: Tensor
) -> Tensor:
    """Procedure 1, lines 14–16: write each GT's candidate labels back to the anchors; the rest are negative.

    Args:
        shape: ``(B, A)`` of the result.
        candidates_anchor: ``[G, N]`` int64 anchor index of each candidate (-1: unused slot).
        image_index: ``[G]`` image of each GT row.
        gt_index: ``[G]`` index of each GT row within its image.
        labels: ``[G, N]`` candidate labels (1 positive, 0 negative, -1 ignored).

    Returns:
        ``[B, A]`` int64 ``matched_gt``: the GT index of a positive, ``NEGATIVE`` (-1) or ``IGNORE`` (-2).
    """
    matched_gt = torch.full(shape, NEGATIVE, dtype=torch.int64, device=labels.device)
    flat = (image_index[:, None] * shape[1] + candidates_anchor.clamp(min=0)).reshape(-1)
    value = torch.where(labels == POSITIVE, gt_index[:, None].expand_as(labels), torch.full_like(labels, NEGATIVE))
    value = value.masked_fill(labels == IGNORED, IGNORE)
    touched = (candidates_anchor >= 0).reshape(-1)
    matched_gt.view(-1)[flat[touched]] = value.reshape(-1)[touched]
    return matched_gt


def rows_of_real_gts(candidates: Candidates, targets: PaddedTargets) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten ``[B, M, N]`` to one row per real GT: (rows mask [B·M], image index [G], GT index [G])."""
    b, m = targets.valid.shape
    image_index = torch.arange(b, device=targets.valid.device)[:, None].expand(b, m).reshape(-1)
    gt_index = torch.arange(m, device=targets.valid.device)[None, :].expand(b, m).reshape(-1)
    rows = targets.valid.reshape(-1)
    return rows, image_index[rows], gt_index[rows]


def fit_and_separate(
    costs: Tensor,
    valid: Tensor,
    rule: str,
    *,
    fnp_num: int,
    fsr_thresh: float,
    gmm_dtype: torch.dtype = torch.float64,
    gmm_init: str = PAASettings.gmm_init,
    gmm_tol: float = PAASettings.gmm_tol,
    gmm_max_iter: int = PAASettings.gmm_max_iter,
) -> tuple[Tensor, GMMFit | None]:
    """Procedure 1, lines 12–13: FitGMM (only the Fig. 3 boundaries need it), then SeparateAnchors.

    Args:
        costs: ``[G, N]`` candidate costs, each row sorted ascending, unused slots last.
        valid: ``[G, N]`` bool, the used slots.
        rule: the separation, one of :data:`~.boundaries.SEPARATIONS`.
        fnp_num: positives per GT for FNP.
        fsr_thresh: score ratio for FSR.
        gmm_dtype: dtype of the EM (float64: scikit-learn's results).
        gmm_init: the EM's start (:data:`~.gmm.GMM_INITS`).
        gmm_tol: the EM's tolerance.
        gmm_max_iter: the EM's iteration limit.

    Returns:
        ``(labels [G, N], fit)``: the candidate labels (1 / 0 / -1) and the :class:`~.gmm.GMMFit` (None for
        FNP / FSR).
    """
    fit = None
    if rule in BOUNDARIES:
        fit = fit_gmm(
            costs.masked_fill(~valid, 0.0), valid, init=gmm_init, tol=gmm_tol, max_iter=gmm_max_iter, dtype=gmm_dtype
        )
    return separate(rule, costs, valid, fit, fnp_num=fnp_num, fsr_thresh=fsr_thresh), fit


def gmm_diagnostics(fit: GMMFit | None) -> dict[str, Tensor | None]:
    """The GMM fields of :class:`AssignmentDiagnostics` from a fit (all None without one)."""
    return dict(
        gmm_means=None if fit is None else fit.means,
        gmm_variances=None if fit is None else fit.variances,
        gmm_weights=None if fit is None else fit.weights,
        responsibilities=None if fit is None else fit.responsibilities,
        log_density=None if fit is None else fit.log_density,
        em_iterations=None if fit is None else fit.n_iter,
        em_converged=None if fit is None else fit.converged,
    )


class PAAAssigner:
    """Probabilistic anchor assignment (§3.1, Procedure 1); called as an :class:`~.base.Assigner`.

    Args (defaults: :class:`PAASettings`, the one home of the settings):
        topk: K candidates per pyramid level (paper: 9; Table 4 tries 5–25).
        score_lambda: λ of Eq. (1)/(3) weighting the localisation cost (paper: 1).
        rule: "a" | "b" | "c" | "d" (Fig. 3; "c" is the reference default), or the baselines
            "fnp" (fixed number of positives) / "fsr" (fixed score range) of Table 1 left.
        fnp_num: n of FNP(n).
        fsr_thresh: t of FSR(> t).
        iou_threshold: GetAnchors' IoU threshold (reference code: 0.1).
        low_quality: which GT gets an anchor that is the best anchor of several (GetAnchors, line 3):
            "reference" (the authors' code, the default), "gt" (mmdetection's PAA) or "ensure"
            (reference + every GT left without anchors takes its best free ones); see
            :func:`~.candidates.match_max_iou`.
        gmm_init: EM initialisation of FitGMM (line 12): "paper" (§4.1: min / max costs, σ = 1, the
            default) or "data" (halves below / above the median); see :mod:`~.gmm`.
        gmm_tol: EM stopping rule, as scikit-learn's ``tol`` (1e-3).
        gmm_max_iter: EM iteration limit, as scikit-learn's ``max_iter`` (100).
        gmm_dtype: float64 matches scikit-learn exactly; float32 is faster on GPUs.
    """

    needs_predictions = True

    def __init__(
        self,
        topk: int = PAASettings.topk,
        score_lambda: float = PAASettings.score_lambda,
        rule: str = "c",
        fnp_num: int = PAASettings.fnp_num,
        fsr_thresh: float = PAASettings.fsr_thresh,
        iou_threshold: float = PAA_IOU_THRESHOLD,
        gmm_dtype: torch.dtype = torch.float64,
        low_quality: str = PAASettings.low_quality,
        gmm_init: str = PAASettings.gmm_init,
        gmm_tol: float = PAASettings.gmm_tol,
        gmm_max_iter: int = PAASettings.gmm_max_iter,
    ):
        settings = PAASettings(topk, score_lambda, fnp_num, fsr_thresh, low_quality, gmm_init, gmm_tol, gmm_max_iter)
        if settings.problems():
            raise ValueError("; ".join(settings.problems()))
        if rule not in SEPARATIONS:
            raise ValueError(f"unknown rule {rule!r}; valid choices: {', '.join(SEPARATIONS)}")
        if low_quality not in LOW_QUALITY_POLICIES:
            raise ValueError(f"unknown low_quality {low_quality!r}; valid choices: {', '.join(LOW_QUALITY_POLICIES)}")
        if gmm_init not in GMM_INITS:
            raise ValueError(f"unknown gmm_init {gmm_init!r}; valid choices: {', '.join(GMM_INITS)}")
        self.topk, self.score_lambda, self.rule = topk, score_lambda, rule
        self.fnp_num, self.fsr_thresh = fnp_num, fsr_thresh
        self.iou_threshold, self.gmm_dtype = iou_threshold, gmm_dtype
        self.low_quality, self.gmm_init, self.gmm_tol, self.gmm_max_iter = low_quality, gmm_init, gmm_tol, gmm_max_iter

    @classmethod
    def from_config(cls, cfg) -> PAAAssigner:
        """The assigner of an AssignConfig (or any object with ``rule`` and the fields of :class:`PAASettings`)."""
        return cls(rule=cfg.rule, **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(PAASettings)})

    @property
    def settings(self) -> PAASettings:
        """Everything a replay of this assigner needs besides :attr:`rule` (recorded in every trace)."""
        return PAASettings(
            topk=self.topk,
            score_lambda=self.score_lambda,
            fnp_num=self.fnp_num,
            fsr_thresh=self.fsr_thresh,
            low_quality=self.low_quality,
            gmm_init=self.gmm_init,
            gmm_tol=self.gmm_tol,
            gmm_max_iter=self.gmm_max_iter,
        )

    def __repr__(self) -> str:
        return (
            f"PAAAssigner(topk={self.topk}, score_lambda={self.score_lambda}, rule={self.rule!r}, "
            f"low_quality={self.low_quality!r}, gmm_init={self.gmm_init!r}, gmm_tol={self.gmm_tol}, "
            f"gmm_max_iter={self.gmm_max_iter})"
        )

    @torch.no_grad()
    def __call__(
        self,
        anchors: AnchorGrid,
        targets: PaddedTargets,
        cls_logits: Tensor | None = None,
        pred_boxes: Tensor | None = None,
        return_diagnostics: bool = False,
    ) -> Assignment:
        if cls_logits is None or pred_boxes is None:
            raise ValueError("PAA scores anchors with the model: cls_logits and pred_boxes are required")
        b, a = cls_logits.shape[:2]
        ious = anchor_gt_iou(anchors, targets)  # [B, A, M]
        owner = match_max_iou(ious, self.iou_threshold, low_quality=self.low_quality)  # line 3
        safe = owner.clamp(min=0)
        gt_labels = targets.labels.gather(1, safe) if targets.max_gts else torch.full_like(owner, -1)
        gt_boxes = (
            targets.boxes.gather(1, safe[..., None].expand(-1, -1, 4))
            if targets.max_gts
            else torch.zeros(b, a, 4, device=owner.device)
        )
        cost = anchor_cost(cls_logits.detach(), pred_boxes.detach(), gt_labels, gt_boxes, self.score_lambda)
        cost = cost.masked_fill(owner < 0, float("inf"))  # line 6

        cand = topk_per_level(cost, owner, anchors.num_per_level, targets.max_gts, self.topk)  # lines 4–11
        rows, image_index, gt_index = rows_of_real_gts(cand, targets)
        n = cand.anchor.shape[-1]
        anchor_idx = cand.anchor.reshape(-1, n)[rows]
        level = cand.level.reshape(-1, n)[rows]
        valid = cand.valid.reshape(-1, n)[rows]
        costs = cand.key.reshape(-1, n)[rows]
        order = sort_rows(costs, valid)
        anchor_idx, level, valid, costs = (t.gather(1, order) for t in (anchor_idx, level, valid, costs))

        labels, fit = fit_and_separate(  # lines 12–13
            costs,
            valid,
            self.rule,
            fnp_num=self.fnp_num,
            fsr_thresh=self.fsr_thresh,
            gmm_dtype=self.gmm_dtype,
            gmm_init=self.gmm_init,
            gmm_tol=self.gmm_tol,
            gmm_max_iter=self.gmm_max_iter,
        )
        matched_gt = scatter_labels(torch.Size((b, a)), anchor_idx, image_index, gt_index, labels)  # lines 14–16

        diagnostics = None
        if return_diagnostics:
            cand_iou = ious[image_index[:, None], anchor_idx.clamp(min=0), gt_index[:, None]].masked_fill(~valid, 0.0)
            gt_box = targets.boxes[image_index, gt_index]
            diagnostics = AssignmentDiagnostics(
                image_index=image_index,
                gt_index=gt_index,
                candidate_anchor=anchor_idx,
                candidate_level=level,
                candidate_valid=valid,
                candidate_cost=costs,
                candidate_iou=cand_iou,
                candidate_label=labels,
                **gmm_diagnostics(fit),
                boundary=boundary_cost(costs, labels),
                gt_area=(gt_box[:, 2] - gt_box[:, 0]) * (gt_box[:, 3] - gt_box[:, 1]),
            )
        return Assignment(matched_gt=matched_gt, diagnostics=diagnostics)


def reseparate(own, cfg, diagnostics: AssignmentDiagnostics, shape: torch.Size) -> Assignment | None:
    """Procedure 1, lines 12–16 again on a snapshot's recorded candidate costs: exact, the costs of training.

    ``own`` are the settings the snapshot was assigned with, ``cfg`` the replay's; None when the recorded
    candidates do not serve ``cfg`` (another K, λ or matcher: other candidates) or hold no training costs.
    """
    same = (
        cfg.topk == own.topk and math.isclose(cfg.score_lambda, own.score_lambda) and cfg.low_quality == own.low_quality
    )
    costs, valid = diagnostics.candidate_cost, diagnostics.candidate_valid
    if not (same and bool(valid.any()) and bool(torch.isfinite(costs[valid]).all())):
        return None
    labels, fit = fit_and_separate(
        costs,
        valid,
        cfg.rule,
        fnp_num=cfg.fnp_num,
        fsr_thresh=cfg.fsr_thresh,
        gmm_init=cfg.gmm_init,
        gmm_tol=cfg.gmm_tol,
        gmm_max_iter=cfg.gmm_max_iter,
    )
    matched = scatter_labels(shape, diagnostics.candidate_anchor, diagnostics.image_index, diagnostics.gt_index, labels)
    replaced = dataclasses.replace(
        diagnostics,
        candidate_label=labels,
        boundary=boundary_cost(costs, labels),
        iou_threshold=None,
        **gmm_diagnostics(fit),
    )
    return Assignment(matched_gt=matched, diagnostics=replaced)


_GMM = ("topk", "score_lambda", "low_quality", "gmm_init", "gmm_tol", "gmm_max_iter")
_RULES = (  # name, title (explorers, figures), description (--help), the settings it reads
    ("a", "PAA (a) posterior", "PAA, Fig. 3 (a): positive = every candidate the GMM (Eq. 4) labels foreground", _GMM),
    (
        "b",
        "PAA (b) peaks + ignore",
        "PAA, Fig. 3 (b): positive up to the foreground peak, ignored up to the background peak",
        _GMM,
    ),
    (
        "c",
        "PAA (c) foreground peak",
        "PAA, Fig. 3 (c), the paper's: positive up to the foreground peak of the GMM (Eq. 4)",
        _GMM,
    ),
    ("d", "PAA (d) midpoint of means", "PAA, Fig. 3 (d): positive below the midpoint of the two GMM means", _GMM),
    (
        "fnp",
        "FNP (fixed number)",
        "Table 1 left: PAA's candidates, the fnp_num lowest costs positive (no GMM)",
        ("topk", "score_lambda", "low_quality", "fnp_num"),
    ),
    (
        "fsr",
        "FSR (fixed score)",
        "Table 1 left: PAA's candidates, positive when the score exp(-cost) > fsr_thresh (no GMM)",
        ("topk", "score_lambda", "low_quality", "fsr_thresh"),
    ),
)
register(
    *(
        Rule(name, title, description, PAASettings, PAAAssigner.from_config, uses=uses, reseparate=reseparate)
        for name, title, description, uses in _RULES
    )
)

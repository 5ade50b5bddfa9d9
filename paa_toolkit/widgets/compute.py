"""Everything the explorers compute, as plain functions (no ipywidgets here; testable and reusable).

* :class:`TraceSource` / :func:`open_source`: assignment snapshots by training iteration, from a trace
  folder ``<run>/trace/`` (``iter_XXXXXX.pt`` written by the trainer), one trace file, snapshot
  objects, or a ``(model, dataset)`` pair (``model.inspect_assignment``).
* :func:`replay_assignment`: re-run the assignment of a snapshot with another rule, K or λ.
* :func:`gt_candidates`: one GT's candidates as the histogram of Fig. 1 / Fig. 3 draws them.
* :func:`two_cluster_costs`: toy candidate costs for the GMM explorer; :func:`random_snapshot`: a tiny
  random-init snapshot for demos and tests.
* :func:`nms_then_vote`: NMS then score voting (§3.3) for the voting explorer.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..assign import ATSSAssigner, Assignment, MaxIoUAssigner, PAAAssigner
from ..assign.boundaries import SEPARATIONS, boundary_cost
from ..assign.paa import fit_and_separate, gmm_diagnostics, scatter_labels
from ..structures import AnchorGrid, PaddedTargets, decode_boxes, make_anchor_grid, pad_targets

#: Every rule the assignment explorer offers: Fig. 3 (a)–(d), FNP, FSR (Table 1 left), ATSS, max-IoU.
METHODS = SEPARATIONS + ("atss", "max_iou")
#: λ of Eq. (3) assumed for a snapshot that does not record its own (``TrainConfig`` default, paper §4.1).
DEFAULT_SCORE_LAMBDA = 1.0
_TRACE_FILE = re.compile(r"iter_(\d+)\.pt$")


# ---- sources ---------------------------------------------------------------------------------------
def load_snapshot(path: str | Path) -> Any:
    """The snapshot of one trace file (``{"snapshot": ...}`` as the trainer writes it, or a bare snapshot).

    The file is our own training output, so full unpickling is used (``weights_only=False``).
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a readable trace file ({err})") from err
    snapshot = data.get("snapshot") if isinstance(data, dict) else data
    if snapshot is None or not hasattr(snapshot, "diagnostics"):
        raise ValueError(f"{path}: holds no assignment snapshot (expected a dict with 'snapshot')")
    return snapshot


class TraceSource:
    """Snapshots by training iteration; files are loaded on first use and kept (``cache`` most recent)."""

    def __init__(self, loaders: Mapping[int, Callable[[], Any]], cache: int = 4):
        if not loaders:
            raise ValueError("no assignment snapshot found in the source")
        self._loaders = dict(sorted(loaders.items()))
        self._cache: dict[int, Any] = {}
        self._cache_size = max(cache, 1)

    @property
    def iterations(self) -> list[int]:
        return list(self._loaders)

    def snapshot(self, iteration: int) -> Any:
        if iteration not in self._loaders:
            raise ValueError(f"no snapshot at iteration {iteration}; available: {self.iterations}")
        if iteration not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[iteration] = self._loaders[iteration]()
        return self._cache[iteration]


def snapshot_from_model(model: Any, dataset: Any, indices: Sequence[int] | None = None, count: int = 4) -> Any:
    """``model.inspect_assignment`` on ``count`` dataset images with objects (or on ``indices``)."""
    if not hasattr(model, "inspect_assignment"):
        raise ValueError(f"{type(model).__name__} has no inspect_assignment(): only PAADetector records assignments")
    if indices is None:
        indices = []
        for i in range(len(dataset)):
            if len(dataset[i][1]["boxes"]):
                indices.append(i)
            if len(indices) == count:
                break
    if not indices:
        raise ValueError("the dataset has no image with objects")
    device = next(model.parameters()).device
    samples = [dataset[i] for i in indices]
    images = [img.to(device) for img, _ in samples]
    targets = [{k: v.to(device) for k, v in t.items() if isinstance(v, Tensor)} for _, t in samples]
    return model.inspect_assignment(images, targets)


def open_source(source: Any, *, indices: Sequence[int] | None = None, count: int = 4) -> TraceSource:
    """A :class:`TraceSource` from a trace folder, a run folder (its ``trace/``), a trace file, a snapshot,
    a list of snapshots, a ``{iteration: snapshot}`` dict, or a ``(model, dataset)`` pair."""
    if isinstance(source, TraceSource):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir() and (path / "trace").is_dir():
            path = path / "trace"
        if path.is_dir():
            files = {int(m.group(1)): p for p in path.iterdir() if (m := _TRACE_FILE.search(p.name))}
            if not files:
                raise ValueError(f"{path}: no iter_XXXXXX.pt trace files (train with trace images enabled)")
            return TraceSource({it: (lambda p=p: load_snapshot(p)) for it, p in files.items()})
        if path.is_file():
            m = _TRACE_FILE.search(path.name)
            return TraceSource({int(m.group(1)) if m else 0: lambda: load_snapshot(path)})
        raise ValueError(f"{path}: no such trace folder or file")
    if isinstance(source, tuple) and len(source) == 2 and hasattr(source[0], "inspect_assignment"):
        model, dataset = source
        return TraceSource({0: lambda: snapshot_from_model(model, dataset, indices, count)}, cache=1)
    if isinstance(source, Mapping):
        return TraceSource({int(k): (lambda s=s: s) for k, s in source.items()})
    if isinstance(source, (list, tuple)):
        return TraceSource({i: (lambda s=s: s) for i, s in enumerate(source)})
    if hasattr(source, "diagnostics") and hasattr(source, "matched_gt"):
        return TraceSource({0: lambda: source})
    raise ValueError(f"unsupported source {type(source).__name__}: give a trace folder, a trace file, "
                     "snapshot(s) or (model, dataset)")


# ---- replay ------------------------------------------------------------------------------------------
@dataclass
class Replay:
    """An assignment recomputed from a snapshot. ``exact`` False: costs approximated (see ``note``)."""

    assignment: Assignment
    method: str
    exact: bool
    note: str
    iou_boundary: float | None = None  # max-IoU: the positive IoU threshold (drawn on the IoU axis)


def snapshot_topk(snapshot: Any) -> int:
    """K of the snapshot's assigner, from its candidate slots per GT: ``N = Σ_levels min(K, anchors of the level)``."""
    n = snapshot.diagnostics.candidate_valid.shape[1]
    sizes = list(snapshot.num_per_level)
    for k in range(1, max(sizes, default=0) + 1):
        if sum(min(k, s) for s in sizes) >= n:
            return k
    return max(n, 1)


def snapshot_anchors(snapshot: Any) -> AnchorGrid:
    boxes = snapshot.anchors
    scale = float(boxes[0, 2] - boxes[0, 0]) / snapshot.strides[0] if len(boxes) else 8.0
    return AnchorGrid(boxes=boxes, num_per_level=list(snapshot.num_per_level), strides=list(snapshot.strides),
                      scale=scale)


def _reseparate(snapshot: Any, method: str, fnp_num: int, fsr_thresh: float) -> Assignment:
    """Procedure 1, lines 12–16 on the snapshot's own candidate costs (exact: the costs of training)."""
    diag = snapshot.diagnostics
    costs, valid = diag.candidate_cost, diag.candidate_valid
    labels, fit = fit_and_separate(costs, valid, method, fnp_num=fnp_num, fsr_thresh=fsr_thresh)
    matched = scatter_labels(snapshot.matched_gt.shape, diag.candidate_anchor, diag.image_index, diag.gt_index, labels)
    diagnostics = dataclasses.replace(diag, candidate_label=labels, boundary=boundary_cost(costs, labels),
                                      iou_threshold=None, **gmm_diagnostics(fit))
    return Assignment(matched_gt=matched, diagnostics=diagnostics)


def _has_training_costs(snapshot: Any) -> bool:
    diag = snapshot.diagnostics
    return bool(torch.isfinite(diag.candidate_cost[diag.candidate_valid]).all()) and bool(diag.candidate_valid.any())


@torch.no_grad()
def replay_assignment(
    snapshot: Any,
    method: str = "c",
    *,
    topk: int | None = None,
    score_lambda: float | None = None,
    fnp_num: int = 10,
    fsr_thresh: float = 0.2,
) -> Replay:
    """The snapshot's batch assigned again with ``method`` ∈ :data:`METHODS`, K = ``topk``, λ = ``score_lambda``.

    * ATSS and max-IoU only need anchors and GT boxes: always exact.
    * PAA rules with the snapshot's own K and λ (``None`` = unchanged): the snapshot's candidate costs
      are fitted and separated again — exact, and the default rule reproduces the training assignment.
    * Another K or λ needs the cost of Eq. (3) of every anchor: exact when the snapshot has per-class
      ``cls_logits [B, A, C]``; otherwise approximated from ``cls_scores`` (the best class probability,
      taken as the GT class probability, so the focal terms of the other classes are dropped).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices: {', '.join(METHODS)}")
    anchors = snapshot_anchors(snapshot)
    targets = PaddedTargets(boxes=snapshot.gt_boxes, labels=snapshot.gt_labels, valid=snapshot.gt_valid)
    k_snap = snapshot_topk(snapshot)
    k = k_snap if topk is None else int(topk)
    if k < 1:
        raise ValueError(f"topk (K) must be >= 1, got {topk}")
    if method == "atss":
        return Replay(ATSSAssigner(topk=k)(anchors, targets, return_diagnostics=True), method, True, "ATSS (exact)")
    if method == "max_iou":
        assigner = MaxIoUAssigner(topk=k)
        return Replay(assigner(anchors, targets, return_diagnostics=True), method, True,
                      "max-IoU (exact)", iou_boundary=assigner.pos_iou)

    lam_snap = float(getattr(snapshot, "score_lambda", DEFAULT_SCORE_LAMBDA))
    lam = lam_snap if score_lambda is None else float(score_lambda)
    cls_logits = getattr(snapshot, "cls_logits", None)
    if cls_logits is None and k == k_snap and math.isclose(lam, lam_snap) and _has_training_costs(snapshot):
        return Replay(_reseparate(snapshot, method, fnp_num, fsr_thresh), method, True,
                      "training costs (exact)")
    exact = cls_logits is not None
    if not exact:  # one class: the best-class probability stands in for the GT class probability
        p = snapshot.cls_scores.float().clamp(1e-6, 1 - 1e-6)
        cls_logits = torch.logit(p)[..., None]
        targets = dataclasses.replace(targets, labels=torch.zeros_like(targets.labels))
    assigner = PAAAssigner(topk=k, score_lambda=lam, separation=method, fnp_num=fnp_num, fsr_thresh=fsr_thresh)
    assignment = assigner(anchors, targets, cls_logits, snapshot.pred_boxes, return_diagnostics=True)
    note = "recomputed costs (exact)" if exact else "costs approximated from cls_scores (snapshot has no cls_logits)"
    return Replay(assignment, method, exact, note)


def gt_candidates(snapshot: Any, replay: Replay, image_index: int, gt_index: int) -> dict[str, Any]:
    """One GT's valid candidates as the histogram draws them.

    PAA rules: ``values`` are the costs of Eq. (3), ``fit`` the GMM row, ``boundary`` the last positive's
    cost. ATSS / max-IoU: ``values`` are IoUs and ``boundary`` their IoU threshold (no GMM).
    ``num_positive`` counts ``matched_gt == gt`` (every positive, candidate or not).
    """
    assignment = replay.assignment
    diag = assignment.diagnostics
    rows = ((diag.image_index == image_index) & (diag.gt_index == gt_index)).nonzero()[:, 0]
    if len(rows) != 1:
        raise ValueError(f"GT {gt_index} of image {image_index} is not in the assignment")
    row = int(rows[0])
    cand = diag.for_gt(row)
    by_iou = replay.method in ("atss", "max_iou")
    fit = None
    if diag.gmm_means is not None:
        fit = {"means": diag.gmm_means[row], "variances": diag.gmm_variances[row], "weights": diag.gmm_weights[row]}
    if by_iou:
        boundary = float(diag.iou_threshold[row]) if diag.iou_threshold is not None else replay.iou_boundary
    else:
        boundary = float(diag.boundary[row]) if diag.boundary is not None else None
    return {
        "values": cand["candidate_iou"] if by_iou else cand["candidate_cost"],
        "labels": cand["candidate_label"], "fit": fit, "boundary": boundary,
        "xlabel": "IoU of the anchor with the GT" if by_iou else None,
        "num_positive": int((assignment.matched_gt[image_index] == gt_index).sum()),
        "num_candidates": int(cand["candidate_valid"].sum()),
    }


# ---- toy data ------------------------------------------------------------------------------------------
def two_cluster_costs(
    fg_mean: float = 1.0, fg_std: float = 0.3, fg_count: int = 8,
    bg_mean: float = 4.0, bg_std: float = 0.8, bg_count: int = 37, seed: int = 0,
) -> Tensor:
    """Candidate costs drawn from a foreground and a background Gaussian, sorted, float64 ``[fg + bg]``."""
    if fg_count < 0 or bg_count < 0 or fg_count + bg_count < 2 or fg_std < 0 or bg_std < 0:
        raise ValueError(f"need counts >= 0 adding up to >= 2 and stds >= 0, got counts ({fg_count}, {bg_count}), "
                         f"stds ({fg_std}, {bg_std})")
    g = torch.Generator().manual_seed(int(seed))
    fg = fg_mean + fg_std * torch.randn(int(fg_count), generator=g, dtype=torch.float64)
    bg = bg_mean + bg_std * torch.randn(int(bg_count), generator=g, dtype=torch.float64)
    return torch.cat([fg, bg]).sort().values


def random_snapshot(
    seed: int = 0, *, topk: int = 4, num_classes: int = 3, with_logits: bool = False,
) -> SimpleNamespace:
    """A tiny random-init stand-in for an ``AssignmentSnapshot`` (same fields): 2 images of 64×64, 3 GTs,
    anchors of 3 levels (strides 8, 16, 32; scale 4), random logits and box deltas, assigned by PAA (c).

    For demos and tests without a trained model; ``with_logits`` adds ``cls_logits [B, A, C]``.
    """
    anchors = make_anchor_grid([(8, 8), (4, 4), (2, 2)], [8, 16, 32], scale=4.0)
    targets = pad_targets([
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 20.0, 60.0, 60.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1])},
    ])
    g = torch.Generator().manual_seed(seed)
    num_anchors = anchors.boxes.shape[0]
    cls_logits = torch.randn(2, num_anchors, num_classes, generator=g) - 1.0
    pred_boxes = decode_boxes(0.1 * torch.randn(2, num_anchors, 4, generator=g), anchors.boxes)
    assignment = PAAAssigner(topk=topk)(anchors, targets, cls_logits, pred_boxes, return_diagnostics=True)
    snapshot = SimpleNamespace(
        diagnostics=assignment.diagnostics, anchors=anchors.boxes, num_per_level=list(anchors.num_per_level),
        strides=list(anchors.strides), matched_gt=assignment.matched_gt, pred_boxes=pred_boxes,
        cls_scores=cls_logits.sigmoid().max(-1).values, gt_boxes=targets.boxes, gt_labels=targets.labels,
        gt_valid=targets.valid, image_sizes=[(64, 64)] * 2, scales=[(1.0, 1.0)] * 2,
        images=[(96 + 48 * torch.rand(3, 64, 64, generator=g)).to(torch.uint8) for _ in range(2)],  # muted noise
    )
    if with_logits:
        snapshot.cls_logits = cls_logits
    return snapshot


# ---- score voting ---------------------------------------------------------------------------------------
def _detections(dets: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    missing = {"boxes", "scores", "labels"} - set(dets)
    if missing:
        raise ValueError(f"{name}: missing {sorted(missing)} (torchvision-style dict of boxes, scores, labels)")
    boxes = torch.as_tensor(dets["boxes"]).float().reshape(-1, 4)
    scores = torch.as_tensor(dets["scores"]).float().reshape(-1)
    labels = torch.as_tensor(dets["labels"]).long().reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"{name}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    return {"boxes": boxes, "scores": scores, "labels": labels}


def default_voting_fn() -> Callable[..., Any]:
    """The library's score voting (Eq. 9–10), imported when first needed."""
    from ..model.postprocess import score_voting

    return score_voting


def nms_then_vote(
    candidates: Mapping[str, Tensor],
    sigma: float,
    nms_thresh: float,
    detections: Mapping[str, Tensor] | None = None,
    voting_fn: Callable[..., Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """§3.3: the boxes kept by class-wise NMS of ``candidates`` at ``nms_thresh`` (or the given
    ``detections``), then each voted by the candidates with weight ``p_i s_i`` (Eq. 9–10).

    ``voting_fn(det_boxes, det_scores, det_labels, cand_boxes, cand_scores, cand_labels, sigma)`` returns
    the voted boxes ``[D, 4]``; default: :func:`paa_toolkit.model.postprocess.score_voting`.
    """
    from torchvision.ops import batched_nms

    if not sigma > 0:
        raise ValueError(f"sigma (σ_t of Eq. 9) must be > 0, got {sigma}")
    cand = _detections(candidates, "candidates")
    if detections is not None:
        before = _detections(detections, "detections")
    else:
        keep = batched_nms(cand["boxes"], cand["scores"], cand["labels"], float(nms_thresh))
        before = {k: v[keep] for k, v in cand.items()}
    voting_fn = voting_fn or default_voting_fn()
    boxes = voting_fn(before["boxes"], before["scores"], before["labels"], cand["boxes"], cand["scores"],
                      cand["labels"], sigma)
    if tuple(boxes.shape) != tuple(before["boxes"].shape):
        raise ValueError(f"voting_fn returned boxes of shape {tuple(boxes.shape)} "
                         f"for {len(before['boxes'])} detections")
    return before, {**before, "boxes": boxes}


__all__ = [
    "METHODS", "Replay", "TraceSource", "gt_candidates", "load_snapshot", "nms_then_vote", "open_source",
    "random_snapshot", "replay_assignment", "snapshot_anchors", "snapshot_from_model", "snapshot_topk",
    "two_cluster_costs",
]

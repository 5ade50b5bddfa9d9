"""Everything the explorers compute, as plain functions (no ipywidgets here; testable and reusable).

* :class:`TraceSource` / :func:`open_source`: assignment snapshots by training iteration, from a trace
  folder ``<run>/trace/`` (``iter_XXXXXX.pt`` written by the trainer), one trace file, snapshot
  objects, or a ``(model, dataset)`` pair (``model.inspect_assignment``).
* :func:`~paa_toolkit.assign.replay.replay_assignment` (re-exported): re-run the assignment of a snapshot
  with another rule, K or λ.
* :func:`gt_candidates`: one GT's candidates as the histogram of Fig. 1 / Fig. 3 draws them;
  :func:`compare_rules`: one GT through several rules; :func:`replay_rules`: every traced iteration
  through several rules (positives per GT, GTs without a positive, by size — notebook 07).
* :func:`two_cluster_costs`: toy candidate costs for the GMM explorer; :func:`random_snapshot`: a tiny
  random-init snapshot for demos and tests.
* :func:`nms_then_vote`: NMS then score voting (§3.3) for the voting explorer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..assign import PAAAssigner, config_of, get_rule
from ..assign.base import positives_per_gt
from ..assign.candidates import centres_inside
from ..assign.gmm import CONVERGED_MAX_ITER, CONVERGED_TOL, fit_gmm
from ..assign.replay import Replay, replay_assignment
from ..assign.stats import SIZES, size_class
from ..assign.trace import AssignmentSnapshot
from ..engine.run_files import load_trace
from ..structures import decode_boxes, make_anchor_grid, pad_targets

_TRACE_FILE = re.compile(r"iter_(\d+)\.pt$")


# ---- sources ---------------------------------------------------------------------------------------
def load_snapshot(path: str | Path) -> AssignmentSnapshot:
    """The snapshot of one trace file, read by the trainer's own reader
    (:func:`~paa_toolkit.engine.run_files.load_trace`: safe loading, no unpickling)."""
    return load_trace(path)["snapshot"]


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
    """The assignment snapshots an explorer or a notebook looks at, from wherever they are.

    Args:
        source: a trace folder, a run folder (its ``trace/``), a trace file, a snapshot, a list of
            snapshots, a ``{iteration: snapshot}`` dict, or a ``(model, dataset)`` pair.
        indices: with ``(model, dataset)``: the dataset images to snapshot.
        count: with ``(model, dataset)`` and no ``indices``: how many images.

    Returns:
        :class:`TraceSource`: ``.iterations`` and ``.snapshot(iteration)``.
    """
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
    raise ValueError(
        f"unsupported source {type(source).__name__}: give a trace folder, a trace file, "
        "snapshot(s) or (model, dataset)"
    )


def gt_candidates(snapshot: Any, replay: Replay, image_index: int, gt_index: int) -> dict[str, Any]:
    """One GT's valid candidates as the histogram draws them.

    ``values`` are what the rule ranks candidates by (its registered ``values`` field,
    :mod:`~paa_toolkit.assign.registry`), ``boundary`` where its positives end in those units, ``xlabel`` the
    axis label (None: the cost of Eq. 3).
    PAA rules: ``values`` are the costs of Eq. (3), ``fit`` the GMM row, ``boundary`` the last positive's
    cost, ``em_iterations`` its EM iterations and ``converged`` the same EM run to convergence (tol
    1e-6; its ``n_iter`` too), ``converged_differs`` whether a mean moved by > 10 % of the cost range.
    ATSS / max-IoU: ``values`` are IoUs and ``boundary`` their IoU threshold (no GMM); TAL: the alignment
    metric t and the smallest positive t; SimOTA: its cost and the last positive's cost.
    ``num_positive`` counts ``matched_gt == gt`` (every positive, candidate or not).
    """
    assignment = replay.assignment
    diag = assignment.diagnostics
    rows = ((diag.image_index == image_index) & (diag.gt_index == gt_index)).nonzero()[:, 0]
    if len(rows) != 1:
        raise ValueError(f"GT {gt_index} of image {image_index} is not in the assignment")
    row = int(rows[0])
    cand = diag.for_gt(row)
    rule = get_rule(replay.rule)
    fit, converged, differs = None, None, False
    if diag.gmm_means is not None:
        fit = {"means": diag.gmm_means[row], "variances": diag.gmm_variances[row], "weights": diag.gmm_weights[row]}
        costs = cand["candidate_cost"].double()[None]
        if costs.shape[1] >= 2:
            init = getattr(getattr(snapshot, "settings", None), "gmm_init", "paper")
            full = fit_gmm(costs, init=init, tol=CONVERGED_TOL, max_iter=CONVERGED_MAX_ITER)
            converged = {
                "means": full.means[0],
                "variances": full.variances[0],
                "weights": full.weights[0],
                "n_iter": int(full.n_iter[0]),
            }
            spread = float(costs.max() - costs.min()) or 1.0
            differs = float((full.means[0] - diag.gmm_means[row].double()).abs().max()) > 0.1 * spread
    boundary = getattr(diag, rule.boundary)
    return {
        "values": cand[rule.values],
        "labels": cand["candidate_label"],
        "fit": fit,
        "boundary": float(boundary[row]) if boundary is not None else None,
        "xlabel": rule.values_label,
        "num_positive": int((assignment.matched_gt[image_index] == gt_index).sum()),
        "num_candidates": int(cand["candidate_valid"].sum()),
        "em_iterations": int(diag.em_iterations[row]) if diag.em_iterations is not None and fit is not None else None,
        "converged": converged,
        "converged_differs": differs,
    }


def compare_rules(
    snapshot: Any, image_index: int, gt_index: int, rules: Sequence[str], **settings: Any
) -> dict[str, dict[str, Any]]:
    """One GT of a snapshot put through several rules: for each rule name, :func:`gt_candidates` of its
    replay plus ``assignment`` (the replay's), ``title`` (the registry's), ``note`` and ``exact``.
    ``settings`` change the snapshot's recorded AssignConfig for every rule (``tal_topk=10``)."""
    views = {}
    for name in rules:
        replay = replay_assignment(snapshot, name, **settings)
        view = gt_candidates(snapshot, replay, image_index, gt_index)
        views[name] = {
            **view,
            "assignment": replay.assignment,
            "title": get_rule(name).title,
            "note": replay.note,
            "exact": replay.exact,
        }
    return views


@dataclass
class RuleReplays:
    """Every traced iteration of a run put through several rules (:func:`replay_rules`).

    The trace images are the same at every iteration, so the GTs are too: one row per real GT of the
    snapshots (``snapshot.gt_valid`` order, as :func:`~paa_toolkit.assign.base.positives_per_gt`).
    """

    iterations: list[int]
    image: Tensor  # [G] trace image of each GT
    gt: Tensor  # [G] index of the GT in its image
    area: Tensor  # [G] box area (resized-image pixels)
    size: Tensor  # [G] COCO size: 0 small (< 32²), 1 medium (< 96²), 2 large
    centres_inside: Tensor  # [G] anchor centres inside the box (all levels): TAL's candidates before its top-m
    positives: dict[str, dict[int, Tensor]]  # rule → iteration → [G] positive anchors of each GT
    dynamic_k: dict[int, Tensor]  # iteration → [G] SimOTA's k (empty unless a replayed rule reports one)

    def records(self, rule: str) -> list[dict[str, Any]]:
        """The rule's figures per iteration under the training log's names (``pos_per_gt``, ``gt_without_pos``
        and their ``_small`` / ``_medium`` / ``_large``; NaN for a size without GTs), as the records
        :func:`~paa_toolkit.viz.analysis.plot_starvation_by_size` reads (``kind`` "train")."""
        out = []
        for it in self.iterations:
            count = self.positives[rule][it].double()
            row: dict[str, Any] = {
                "kind": "train",
                "iteration": it,
                "pos_per_gt": _mean(count),
                "gt_without_pos": _mean((count == 0).double()),
            }
            for index, name in enumerate(SIZES):
                mine = self.size == index
                row[f"pos_per_gt_{name}"] = _mean(count[mine])
                row[f"gt_without_pos_{name}"] = _mean((count[mine] == 0).double())
            out.append(row)
        return out

    def starved(self, rule: str, iteration: int) -> Tensor:
        """``[G]`` bool: the GTs the rule leaves without a positive at ``iteration``."""
        return self.positives[rule][iteration] == 0


def _mean(values: Tensor) -> float:
    return float(values.mean()) if values.numel() else float("nan")


def replay_rules(
    source: Any, rules: Sequence[str], iterations: Sequence[int] | None = None, **settings: Any
) -> RuleReplays:
    """Each traced iteration of ``source`` (:func:`open_source`: a run folder, trace folder, snapshots)
    assigned again by every rule of ``rules`` (:func:`~paa_toolkit.assign.replay.replay_assignment`; the
    snapshot's own rule and settings reproduce the training assignment). ``settings`` change the recorded
    AssignConfig for every rule (``tal_topk=10``). Positives are counted from ``matched_gt`` (every
    positive of a GT, candidate slot or not)."""
    source = open_source(source)
    its = list(iterations) if iterations is not None else source.iterations
    if not its:
        raise ValueError("no iteration to replay")
    positives: dict[str, dict[int, Tensor]] = {rule: {} for rule in rules}
    dynamic: dict[int, Tensor] = {}
    first = None
    for it in its:
        snapshot = source.snapshot(it)
        first = first or snapshot
        for rule in rules:
            assignment = replay_assignment(snapshot, rule, **settings).assignment
            positives[rule][it] = positives_per_gt(assignment.matched_gt, snapshot.gt_valid)
            if assignment.diagnostics is not None and assignment.diagnostics.dynamic_k is not None:
                dynamic[it] = assignment.diagnostics.dynamic_k
    valid = first.gt_valid
    b, m = valid.shape
    boxes = first.gt_boxes[valid]  # [G, 4]
    centres = first.anchor_grid.centers.to(boxes.dtype)
    inside = centres_inside(centres[None], boxes[:, None, :]).sum(dim=1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return RuleReplays(
        iterations=its,
        image=torch.arange(b)[:, None].expand(b, m)[valid],
        gt=torch.arange(m)[None].expand(b, m)[valid],
        area=area,
        size=size_class(area),
        centres_inside=inside,
        positives=positives,
        dynamic_k=dynamic,
    )


# ---- toy data ------------------------------------------------------------------------------------------
def two_cluster_costs(
    fg_mean: float = 1.0,
    fg_std: float = 0.3,
    fg_count: int = 8,
    bg_mean: float = 4.0,
    bg_std: float = 0.8,
    bg_count: int = 37,
    seed: int = 0,
) -> Tensor:
    """Toy candidate costs: draws from a foreground and a background Gaussian, sorted.

    Args:
        fg_mean: mean of the foreground (good anchors') costs.
        fg_std: their standard deviation.
        fg_count: how many.
        bg_mean: mean of the background costs.
        bg_std: their standard deviation.
        bg_count: how many.
        seed: the generator's seed.

    Returns:
        ``[fg_count + bg_count]`` float64 costs, ascending.
    """
    if fg_count < 0 or bg_count < 0 or fg_count + bg_count < 2 or fg_std < 0 or bg_std < 0:
        raise ValueError(
            f"need counts >= 0 adding up to >= 2 and stds >= 0, got counts ({fg_count}, {bg_count}), "
            f"stds ({fg_std}, {bg_std})"
        )
    g = torch.Generator().manual_seed(int(seed))
    fg = fg_mean + fg_std * torch.randn(int(fg_count), generator=g, dtype=torch.float64)
    bg = bg_mean + bg_std * torch.randn(int(bg_count), generator=g, dtype=torch.float64)
    return torch.cat([fg, bg]).sort().values


def random_snapshot(
    seed: int = 0, *, topk: int = 4, num_classes: int = 3, score_lambda: float = 1.0, with_logits: bool = False
) -> AssignmentSnapshot:
    """A tiny random-init :class:`~paa_toolkit.assign.trace.AssignmentSnapshot`: 2 images of 64×64, 3 GTs,
    anchors of 3 levels (strides 8, 16, 32; scale 4), random logits and box deltas, assigned by PAA (c)
    with K = ``topk`` and λ = ``score_lambda``; ``with_logits`` keeps ``cls_logits [B, A, C]`` (as the
    trainer's traces do), otherwise replays with another K / λ are approximate. For demos and tests.
    """
    anchors = make_anchor_grid([(8, 8), (4, 4), (2, 2)], [8, 16, 32], scale=4.0)
    targets = pad_targets(
        [
            {"boxes": torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 20.0, 60.0, 60.0]]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1])},
        ]
    )
    g = torch.Generator().manual_seed(seed)
    num_anchors = anchors.boxes.shape[0]
    cls_logits = torch.randn(2, num_anchors, num_classes, generator=g) - 1.0
    pred_boxes = decode_boxes(0.1 * torch.randn(2, num_anchors, 4, generator=g), anchors.boxes)
    assigner = PAAAssigner(topk=topk, score_lambda=score_lambda)
    assignment = assigner(anchors, targets, cls_logits, pred_boxes, return_diagnostics=True)
    return AssignmentSnapshot(
        diagnostics=assignment.diagnostics,
        anchors=anchors.boxes,
        num_per_level=list(anchors.num_per_level),
        strides=list(anchors.strides),
        matched_gt=assignment.matched_gt,
        pred_boxes=pred_boxes,
        cls_scores=cls_logits.sigmoid().max(-1).values,
        cls_logits=cls_logits if with_logits else None,
        gt_boxes=targets.boxes,
        gt_labels=targets.labels,
        gt_valid=targets.valid,
        image_sizes=[(64, 64)] * 2,
        scales=[(1.0, 1.0)] * 2,
        images=[(96 + 48 * torch.rand(3, 64, 64, generator=g)).to(torch.uint8) for _ in range(2)],  # muted noise
        settings=config_of(assigner),
        anchor_scale=anchors.scale,
    )


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
    from ..model.postprocess import vote_boxes

    return vote_boxes


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
    the voted boxes ``[D, 4]``; default: :func:`paa_toolkit.model.postprocess.vote_boxes`.
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
    boxes = voting_fn(
        before["boxes"], before["scores"], before["labels"], cand["boxes"], cand["scores"], cand["labels"], sigma
    )
    if tuple(boxes.shape) != tuple(before["boxes"].shape):
        raise ValueError(
            f"voting_fn returned boxes of shape {tuple(boxes.shape)} for {len(before['boxes'])} detections"
        )
    return before, {**before, "boxes": boxes}


__all__ = [
    "Replay",
    "RuleReplays",
    "TraceSource",
    "compare_rules",
    "gt_candidates",
    "load_snapshot",
    "nms_then_vote",
    "open_source",
    "random_snapshot",
    "replay_assignment",
    "replay_rules",
    "snapshot_from_model",
    "two_cluster_costs",
]

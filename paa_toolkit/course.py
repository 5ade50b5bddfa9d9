"""Helpers shared by the course notebooks (``notebooks/*.ipynb``): one briefly trained detector, cached.

    FAST = os.environ.get("PAA_FAST") == "1"        # the CI setting; students run the full one
    run_dir = briefly_trained_run(FAST)              # trains once, later calls (and notebooks) reuse it
    model, state = load_run(run_dir)                 # eval-mode PAADetector + its checkpoint dict
    train_ds, val_ds = run_datasets(state)           # the embedded synthetic dataset it was trained on
    view = head_outputs(model, image)                # one image through backbone + FPN + head
    with post_processing(model, unified_score=False):  # §3.2: rank by S_cls alone instead of Eq. (1)
        metrics = evaluate_coco(model, val_ds)

The run lives in ``<cache>/course/course-<fast|full>-<digest>/`` (cache: :func:`~.data.synthetic.default_cache_dir`),
the digest being that of the whole training configuration: other settings, another folder. A folder
with ``final_metrics.json``, a loadable checkpoint and traces of this version is complete and is
reused; an interrupted one is resumed (``resume="auto"``), a finished but unusable one trained again
(``overwrite``).
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from .data.build import build_datasets
from .data.synthetic import default_cache_dir
from .engine import presets
from .engine.checkpoint import FINAL_METRICS, CheckpointError, build_from_checkpoint, resolve_checkpoint
from .engine.config import TrainConfig, set_field
from .engine.run_files import TRACE_DIR, TraceFileError, load_trace
from .engine.loop import train
from .model.postprocess import InferenceConfig
from .structures import AnchorGrid


def course_config(fast: bool, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The training configuration of the notebooks' detector: the preset :func:`~.engine.presets.course`,
    then ``overrides`` (dotted field names, as ``--section.field`` on the command line)."""
    cfg = presets.course(fast)
    for key, value in (overrides or {}).items():
        set_field(cfg, key, value)
    return cfg


def config_digest(cfg: TrainConfig) -> str:
    """A short digest of everything that shapes the run (not where it is written, not how it is resumed)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "resume", "overwrite")}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def course_run_dir(cfg: TrainConfig, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/course/<name>-<digest>``: the folder keyed by the settings."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "course" / f"{cfg.name}-{config_digest(cfg)}"


def is_complete(run_dir: str | Path) -> bool:
    """The run finished (final metrics written), its checkpoint loads and its traces are of this version."""
    run_dir = Path(run_dir)
    if not (run_dir / FINAL_METRICS).is_file():
        return False
    traces = sorted((run_dir / TRACE_DIR).glob("iter_*.pt"))
    try:
        resolve_checkpoint(run_dir)
        if traces:
            load_trace(traces[0])
    except (CheckpointError, TraceFileError):
        return False
    return True


def briefly_trained_run(
    fast: bool, *, cache_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """The run folder of the notebooks' briefly trained PAA detector; trains it the first time only.

    ``fast`` picks the CI setting, otherwise what a student runs (:func:`~.engine.presets.course`). The
    folder holds ``last.pth``, ``final_metrics.json``, ``metrics.jsonl`` and ``trace/`` (assignment
    snapshots from iteration 0 on), as written by :func:`~paa_toolkit.engine.loop.train`.
    """
    cfg = course_config(fast, overrides)
    run_dir = course_run_dir(cfg, cache_dir)
    if is_complete(run_dir):
        return run_dir
    cfg.output_dir = str(run_dir)
    if (run_dir / FINAL_METRICS).is_file():  # finished, but unusable (e.g. traces of an older version): again
        cfg.overwrite = True
    else:
        cfg.resume = "auto"  # an interrupted run goes on where it stopped
    train(cfg, progress=progress)
    return run_dir


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run folder (eval mode, on ``device``) and its checkpoint dict."""
    _, state = resolve_checkpoint(run_dir)
    return build_from_checkpoint(state, device=device), state


def run_datasets(state: Mapping[str, Any]):
    """``(train, val)`` datasets of a checkpoint's configuration (train: no flips, for looking at it)."""
    cfg = TrainConfig.from_dict(state["config"])
    cfg.data.flip_prob = 0.0
    return build_datasets(cfg.data)


@contextmanager
def post_processing(model: nn.Module, **changes: Any) -> Iterator[nn.Module]:
    """Temporarily change a :class:`~paa_toolkit.model.detector.PAADetector`'s test-time settings.

    Keys are the fields of :class:`~paa_toolkit.model.postprocess.InferenceConfig`: ``unified_score``
    (True: rank by the unified score of Eq. 1; False: classification only), ``score_voting`` (§3.3),
    ``voting_sigma`` (σ_t of Eq. 9), ``nms_thresh``, ``score_thresh``...
    """
    inference = getattr(model, "inference", None)
    if not isinstance(inference, InferenceConfig):
        raise ValueError(f"{type(model).__name__} has no test-time settings (.inference): a PAADetector is needed")
    valid = {f.name for f in fields(InferenceConfig)}
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise ValueError(f"unknown test-time setting(s) {unknown}; valid: {', '.join(sorted(valid))}")
    model.inference = replace(inference, **changes)
    try:
        yield model
    finally:
        model.inference = inference


@dataclass
class HeadView:
    """One image as the detector sees it: the resized picture, its anchors and the raw head outputs.

    All boxes are in resized-image pixels (``scale = (sy, sx)`` maps original → resized).
    """

    image: Tensor  # [3, h, w] uint8, resized, un-normalised
    scale: tuple[float, float]
    anchors: AnchorGrid  # boxes [A, 4], num_per_level, strides
    cls_logits: Tensor  # [A, C]
    pred_boxes: Tensor  # [A, 4] decoded box of every anchor (xyxy)
    aux_logits: Tensor | None  # [A] IoU-prediction logit (§3.2) or None
    feature_sizes: list[tuple[int, int]]


@torch.no_grad()
def head_outputs(model: nn.Module, image: Tensor) -> HeadView:
    """Run ``image`` ([3, H, W] float in [0, 1]) through the detector's resize, backbone, FPN and head.

    The same steps as the model's own forward in eval mode, stopped before post-processing.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got shape {tuple(image.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        batch, _ = model.eval_transform()([image.to(device)])
        out, anchors, pred_boxes = model.run_network(batch.tensors)
    finally:
        model.train(was_training)
    h, w = batch.image_sizes[0]
    mean = torch.tensor(model.transform.image_mean, device=device)[:, None, None]
    std = torch.tensor(model.transform.image_std, device=device)[:, None, None]
    picture = ((batch.tensors[0, :, :h, :w] * std + mean).clamp(0, 1) * 255).to(torch.uint8)
    return HeadView(
        image=picture.cpu(), scale=(h / image.shape[-2], w / image.shape[-1]),
        anchors=AnchorGrid(anchors.boxes.cpu(), list(anchors.num_per_level), list(anchors.strides), anchors.scale),
        cls_logits=out.cls_logits[0].cpu(), pred_boxes=pred_boxes[0].cpu(),
        aux_logits=None if out.aux_logits is None else out.aux_logits[0].cpu(),
        feature_sizes=[tuple(s) for s in out.feature_sizes],
    )


def scale_boxes(boxes: Tensor, scale: tuple[float, float]) -> Tensor:
    """Original-image boxes ``[N, 4]`` → resized-image boxes (``scale = (sy, sx)`` of a :class:`HeadView`)."""
    sy, sx = scale
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)


__all__ = [
    "HeadView", "briefly_trained_run", "config_digest", "course_config", "course_run_dir", "head_outputs",
    "is_complete", "load_run", "post_processing", "run_datasets", "scale_boxes",
]

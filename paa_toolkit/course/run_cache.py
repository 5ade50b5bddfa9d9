"""The course run's cache: the notebooks' briefly trained detector, trained once and reused.

The run lives in ``<cache>/course/course-<fast|full>-<digest>/`` (cache: :func:`~paa_toolkit.data.default_cache_dir`),
the digest being that of the whole training configuration: other settings, another folder. A folder
with ``final_metrics.json``, a loadable checkpoint and traces of this version is complete and is
reused; an interrupted one is resumed (``resume="auto"``), a finished but unusable one trained again
(``overwrite``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.build import build_datasets
from ..data.coco import CocoDetection
from ..data.synthetic import default_cache_dir
from ..engine import presets
from ..engine.checkpoint import FINAL_METRICS, CheckpointError, build_from_checkpoint, resolve_checkpoint
from ..engine.config import TrainConfig, set_field
from ..engine.loop import train
from ..engine.run_files import TRACE_DIR, TraceFileError, load_trace


def course_config(fast: bool, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The training configuration of the notebooks' detector.

    Args:
        fast: the ``PAA_FAST=1`` setting (a tiny detector) instead of the student one.
        overrides: dotted field names and values, as ``--section.field`` on the command line.

    Returns:
        The preset :func:`paa_toolkit.engine.presets.course` with ``overrides`` applied.
    """
    cfg = presets.course(fast)
    for key, value in (overrides or {}).items():
        set_field(cfg, key, value)
    return cfg


def config_digest(cfg: TrainConfig) -> str:
    """A short digest of everything that shapes the run (not where it is written, not how it is resumed)."""
    settings = {k: v for k, v in cfg.digest_settings().items() if k not in ("output_dir", "resume", "overwrite")}
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
    fast: bool,
    *,
    cache_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """The run folder of the notebooks' briefly trained PAA detector; trains it the first time only.

    Args:
        fast: the ``PAA_FAST=1`` setting (a tiny detector, seconds) instead of what a student runs.
        cache_dir: the cache folder (default: ``$PAA_TOOLKIT_CACHE`` or ``~/.cache/paa_toolkit``).
        overrides: changes to the configuration (:func:`course_config`); another configuration, another folder.
        progress: show a progress bar while training.

    Returns:
        The run folder: ``last.pth``, ``final_metrics.json``, ``metrics.jsonl`` and ``trace/`` (assignment
        snapshots from iteration 0 on), as written by :func:`paa_toolkit.engine.train`.
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
    """The trained model of a run folder.

    Args:
        run_dir: a run folder (or a checkpoint file).
        device: where the model goes.

    Returns:
        ``(model, state)``: the detector in eval mode and its checkpoint dict (``state["config"]``: the settings).
    """
    _, state = resolve_checkpoint(run_dir)
    return build_from_checkpoint(state, device=device), state


def run_datasets(state: Mapping[str, Any]) -> tuple[CocoDetection, CocoDetection]:
    """The datasets a checkpoint was trained and evaluated on.

    Args:
        state: a checkpoint dict (:func:`load_run`).

    Returns:
        ``(train, val)`` :class:`~paa_toolkit.data.CocoDetection` datasets (train without flips, for looking at it).
    """
    cfg = TrainConfig.from_dict(state["config"])
    cfg.data.flip_prob = 0.0
    return build_datasets(cfg.data)


def repository_root(start: str | Path | None = None) -> Path:
    """The repository: the folder holding ``pyproject.toml`` (and ``benchmarks/``).

    Args:
        start: where to look upwards from (default: the current folder); then from this package.

    Returns:
        The repository's root folder.
    """
    for base in (Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent):
        for folder in (base, *base.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "paa_toolkit").is_dir():
                return folder
    return Path(__file__).resolve().parents[2]


__all__ = [
    "briefly_trained_run",
    "config_digest",
    "course_config",
    "course_run_dir",
    "is_complete",
    "load_run",
    "repository_root",
    "run_datasets",
]

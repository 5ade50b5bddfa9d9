"""The run folder's files, written so that a killed process never leaves a torn one.

    runs/<name>/config.yaml         the resolved TrainConfig
    runs/<name>/metrics.jsonl       one JSON record per line: kind "train" | "eval" | "trace"  (MetricsLog)
    runs/<name>/trace/iter_*.pt     assignment snapshots of fixed training images (Fig. 4a / 7)  (write_trace)
    runs/<name>/last.pth, ...       checkpoints (:mod:`.checkpoint`)

Every whole-file write goes through :func:`atomic_write`: a temporary file in the same folder,
flushed and fsynced, then ``os.replace`` — readers see the old file or the new one, never half of it.
:func:`read_metrics` is the one reader of ``metrics.jsonl``.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Callable

import torch
from torch import Tensor, nn

from ..assign.base import positives_per_gt
from ..data.coco import CocoDetection
from ..distributed import unwrap

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TRACE_DIR = "trace"


# ---- atomic writes ---------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], keep_previous: Path | None = None) -> Path:
    """``write(f)`` into a synced temporary file next to ``path``, then replace ``path`` with it.

    With ``keep_previous``, an existing ``path`` is first moved there (after the new file is on disk).
    A temporary file left by a writer killed mid-write is named ``.<name>.<random>.tmp``; the new
    file gets the permissions of any file this process creates (the umask's).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | Path, keep_previous: Path | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f), keep_previous)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ---- metrics log -----------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once. On resume, records the
    interrupted run wrote after the checkpoint are dropped, so each iteration appears once."""

    def __init__(self, path: Path, resume_from: int | None = None):
        self.path = path
        if resume_from is not None and path.exists():
            kept = [record for record in read_metrics(path) if self._keep(record, resume_from)]
            atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
        elif resume_from is None:
            path.write_text("")

    @staticmethod
    def _keep(record: dict, start: int) -> bool:
        it = record.get("iteration", 0)
        return it < start or (it == start and record.get("kind") != "trace")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (or of the run folder holding it)."""
    path = Path(path)
    path = path / METRICS_FILE if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- assignment trace (Fig. 4a / 7 replays, Fig. 4b) -------------------------------------------------
def trace_image_indices(dataset: CocoDetection, count: int) -> list[int]:
    """The first ``count`` images that have at least one (non-crowd) object: a fixed trace set."""
    if count <= 0:
        return []
    chosen = []
    for index, image_id in enumerate(dataset.image_ids):
        if len(dataset.coco.getAnnIds(imgIds=[image_id], iscrowd=False)):
            chosen.append(index)
            if len(chosen) == count:
                break
    return chosen


def write_trace(model: nn.Module, dataset: CocoDetection, indices: list[int], iteration: int,
                run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """Save ``model.inspect_assignment`` on the trace images as ``trace/iter_{iteration:06d}.pt``;
    returns the ``trace`` record for the metrics log (None when the model cannot be inspected)."""
    model = unwrap(model)
    if not hasattr(model, "inspect_assignment") or not indices:
        return None
    samples = [dataset[i] for i in indices]
    images = [img.to(device) for img, _ in samples]
    targets = [{k: v.to(device) for k, v in t.items() if isinstance(v, Tensor)} for _, t in samples]
    snapshot = model.inspect_assignment(images, targets)
    per_gt = positives_per_gt(snapshot.matched_gt, snapshot.gt_valid) if hasattr(snapshot, "gt_valid") else None
    path = run_dir / TRACE_DIR / f"iter_{iteration:06d}.pt"
    atomic_save({"iteration": iteration, "image_ids": [dataset.image_ids[i] for i in indices],
                 "dataset_indices": indices, "snapshot": snapshot, "positives_per_gt": per_gt}, path)
    record = {"kind": "trace", "iteration": iteration, "file": str(path.relative_to(run_dir))}
    if per_gt is not None and per_gt.numel():
        record.update(trace_pos_per_gt=float(per_gt.float().mean()), trace_pos_per_gt_median=float(per_gt.median()))
    return record


def load_trace(path: str | Path) -> dict[str, Any]:
    """A trace file written by :func:`write_trace` (our own output, so full unpickling is fine)."""
    return torch.load(path, map_location="cpu", weights_only=False)


__all__ = ["CONFIG_FILE", "METRICS_FILE", "TRACE_DIR", "MetricsLog", "atomic_save", "atomic_write",
           "atomic_write_text", "load_trace", "read_metrics", "trace_image_indices", "write_trace"]

"""Checkpoints that survive being killed mid-write: atomic replace, a content digest, one fallback.

``save_checkpoint(state, run_dir)`` writes ``last.pth`` via a temporary file in the same folder
(fsync, then ``os.replace``), first moving the previous ``last.pth`` to ``previous.pth``. Every
checkpoint carries a SHA-256 digest of its contents, so a torn *or* bit-flipped file is detected at
load time; :func:`find_resumable` then falls back to ``previous.pth`` — a corrupt file is never the
one resumed from.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

LAST = "last.pth"
PREVIOUS = "previous.pth"
#: written last (atomically) by the trainer: its presence means the run finished and was evaluated
FINAL_METRICS = "final_metrics.json"
DIGEST_KEY = "sha256"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, torn or corrupt."""


def state_digest(state: Any) -> str:
    """SHA-256 of a nested dict/list of tensors and plain values, in a fixed traversal order."""
    h = hashlib.sha256()

    def visit(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            h.update(b"{")
            for key in sorted(obj, key=repr):
                h.update(repr(key).encode())
                visit(obj[key])
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for item in obj:
                visit(item)
            h.update(b"]")
        else:
            h.update(repr(obj).encode())

    visit(state)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced_temp(obj: Any, path: Path) -> Path:
    """``torch.save`` into a temporary file next to ``path``, flushed and fsynced to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_save(obj: Any, path: str | Path, keep_previous: Path | None = None) -> Path:
    """Write ``obj`` to ``path`` atomically: readers see the old file or the new one, never a torn one.

    With ``keep_previous``, an existing ``path`` is first moved there (after the new file is on disk).
    """
    path = Path(path)
    tmp = _write_synced_temp(obj, path)
    try:
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(state: dict[str, Any], run_dir: str | Path) -> Path:
    """Write ``state`` (with its digest) as ``<run_dir>/last.pth``; the old one becomes ``previous.pth``.

    Temporary files left by a writer that was killed mid-write (``.last.pth.*.tmp``) are removed
    once the new checkpoint is in place; they are never read.
    """
    run_dir = Path(run_dir)
    path = atomic_save({**state, DIGEST_KEY: state_digest(state)}, run_dir / LAST, keep_previous=run_dir / PREVIOUS)
    for stale in run_dir.glob(f".{LAST}.*.tmp"):
        stale.unlink(missing_ok=True)
        log.info("removed %s, left by a checkpoint write that was interrupted", stale)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`; :class:`CheckpointError` if bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torn zip, pickle error, not a torch file ...
        raise CheckpointError(f"checkpoint {path} is unreadable (torn or not a checkpoint): "
                              f"{str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or DIGEST_KEY not in state:
        raise CheckpointError(f"checkpoint {path} has no '{DIGEST_KEY}' entry: not written by paa_toolkit")
    expected = state.pop(DIGEST_KEY)
    if state_digest(state) != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match the stored SHA-256 digest")
    return state


def find_resumable(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest loadable checkpoint of ``run_dir`` (``last.pth``, else ``previous.pth``), or None."""
    for name in (LAST, PREVIOUS):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as e:
            log.warning("skipping %s", e)
    return None


def resolve_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict]:
    """A checkpoint file, or a run folder (its newest good checkpoint); :class:`CheckpointError` if none."""
    path = Path(path)
    if path.is_dir():
        found = find_resumable(path, map_location)
        if found is None:
            raise CheckpointError(f"no loadable checkpoint ({LAST} or {PREVIOUS}) in {path}")
        return found
    return path, load_checkpoint(path, map_location)


__all__ = ["CheckpointError", "LAST", "PREVIOUS", "atomic_save", "find_resumable", "load_checkpoint",
           "resolve_checkpoint", "save_checkpoint", "state_digest"]

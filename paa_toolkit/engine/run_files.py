"""The run folder's files, written so that a killed process never leaves a torn one.

    runs/<name>/config.yaml         the resolved TrainConfig
    runs/<name>/metrics.jsonl       one JSON record per line: kind "train" | "eval" | "trace"  (MetricsLog)
    runs/<name>/trace/iter_*.pt     assignment snapshots of fixed training images (Fig. 4a / 7)  (write_trace)
    runs/<name>/last.pth, ...       checkpoints (:mod:`.checkpoint`)
    runs/<name>/losses.png, ...     training curves (:func:`paa_toolkit.viz.training.save_training_plots`)
    runs/<name>/.train.lock         held by the training that writes the folder (:mod:`.run_folder`)

Every whole-file write goes through :func:`atomic_write`: a temporary file in the same folder,
flushed and fsynced, then ``os.replace`` — readers see the old file or the new one, never half of it;
a write that fails (disk full, permission denied) says which file, and the old file stays. A writer
killed mid-write leaves only its temporary ``.<name>.<random>.tmp`` (never read; the next training
in the folder removes it). :func:`read_metrics` is the one reader of ``metrics.jsonl``: a line cut
off by a kill is skipped with a warning. :func:`load_trace` is the one reader of trace files.

A trace file holds only tensors, lists, numbers and strings (:meth:`AssignmentSnapshot.to_state`), so
it is read with ``torch.load(weights_only=True)``: opening a crafted file never runs its code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from ..assign.base import positives_per_gt
from ..assign.trace import AssignmentSnapshot
from ..data.coco import CocoDetection
from ..distributed import unwrap
from ..safe_load import UnreadableTorchFile, load_tensors

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
PROVENANCE_FILE = "provenance.json"  # what the run started from and ran on (:mod:`.provenance`)
TRACE_DIR = "trace"
PLOT_FILES = ("losses.png", "ap.png", "positives_per_gt.png")  # drawn by paa_toolkit.viz.training
#: the trace file's format: version 1 (pickled objects, before safe loading) is refused
TRACE_FORMAT, TRACE_VERSION = "paa_toolkit.trace", 2
#: ``.<name>.<random>.tmp``: the temporary file of an :func:`atomic_write` of ``<name>``
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9A-Za-z]+\.tmp$")

log = logging.getLogger(__name__)


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
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = _os_error_in(e)  # torch.save reports a failed file.write as an inline_container.cc RuntimeError
        if cause is not None:
            raise write_error(path, cause) from e
        raise
    _fsync_dir(path.parent)
    return path


def write_error(path: Path, error: OSError) -> OSError:
    """``cannot write PATH: No space left on device`` (an OSError of the same errno)."""
    wrapped = OSError(f"cannot write {path}: {error.strerror or error}")
    wrapped.errno = error.errno
    return wrapped


def _os_error_in(error: BaseException) -> OSError | None:
    """``error`` itself or the first OSError it was raised from or during, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def atomic_save(obj: Any, path: str | Path, keep_previous: Path | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f), keep_previous)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ---- metrics log -----------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once (and fsynced by :meth:`sync`). On resume,
    records the interrupted run wrote after the checkpoint are dropped, so each iteration appears once."""

    def __init__(self, path: Path, resume_from: int | None = None, final_iteration: int | None = None):
        self.path = path
        if resume_from is not None and path.exists():
            final = resume_from + 1 if final_iteration is None else final_iteration
            kept = [record for record in read_metrics(path) if self._keep(record, resume_from, final)]
            atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
        elif resume_from is None:
            atomic_write_text(path, "")

    @staticmethod
    def _keep(record: dict, start: int, final: int) -> bool:
        """Before the checkpoint's iteration ``start``, everything; at it, what the resumed run does not
        write again: not the trace (taken again first), nor the final evaluation when ``start`` is the last."""
        it, kind = record.get("iteration", 0), record.get("kind")
        return it < start or (it == start and kind != "trace" and not (kind == "eval" and start >= final))

    def write(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise write_error(self.path, e) from None

    def sync(self) -> None:
        """fsync the records written so far. Called before a checkpoint is renamed into place, so that after a
        power loss the log still holds the records up to the checkpoint's iteration."""
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                os.fsync(f.fileno())
        except OSError as e:
            raise write_error(self.path, e) from None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``; a line cut off by a killed run is skipped with a warning.

    Args:
        path: the file, or the run folder holding it.

    Returns:
        One dict per record (``kind``: ``"train"``, ``"eval"``, ...; ``iteration``; the logged values).
    """
    path = Path(path)
    path = path / METRICS_FILE if path.is_dir() else path
    records = []
    for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            log.warning(
                "%s: line %d is not a complete JSON record (cut off when a run was killed?); skipped", path, number
            )
    return records


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


def write_trace(
    model: nn.Module, dataset: CocoDetection, indices: list[int], iteration: int, run_dir: Path, device: torch.device
) -> dict[str, Any] | None:
    """Save ``model.inspect_assignment`` on the trace images as ``trace/iter_{iteration:06d}.pt``;
    returns the ``trace`` record for the metrics log (None when the model cannot be inspected)."""
    model = unwrap(model)
    if not hasattr(model, "inspect_assignment") or not indices:
        return None
    samples = [dataset[i] for i in indices]
    images = [img.to(device) for img, _ in samples]
    targets = [{k: v.to(device) for k, v in t.items() if isinstance(v, Tensor)} for _, t in samples]
    snapshot = model.inspect_assignment(images, targets)
    path = save_trace(
        run_dir / TRACE_DIR / f"iter_{iteration:06d}.pt",
        snapshot,
        iteration,
        [dataset.image_ids[i] for i in indices],
        indices,
    )
    record = {"kind": "trace", "iteration": iteration, "file": str(path.relative_to(run_dir))}
    per_gt = positives_per_gt(snapshot.matched_gt, snapshot.gt_valid)
    if per_gt.numel():
        record.update(trace_pos_per_gt=float(per_gt.float().mean()), trace_pos_per_gt_median=float(per_gt.median()))
    return record


def save_trace(
    path: str | Path,
    snapshot: AssignmentSnapshot,
    iteration: int,
    image_ids: list[int] | None = None,
    dataset_indices: list[int] | None = None,
) -> Path:
    """One trace file, atomically: the snapshot as plain values (format :data:`TRACE_VERSION`), the
    iteration, which images (COCO ids, dataset indices) and their positives per GT (Fig. 4b)."""
    if not isinstance(snapshot, AssignmentSnapshot):
        raise TypeError(f"a trace holds an AssignmentSnapshot, got {type(snapshot).__name__}")
    return atomic_save(
        {
            "format": TRACE_FORMAT,
            "format_version": TRACE_VERSION,
            "iteration": int(iteration),
            "image_ids": list(image_ids or []),
            "dataset_indices": list(dataset_indices or []),
            "positives_per_gt": positives_per_gt(snapshot.matched_gt, snapshot.gt_valid),
            "snapshot": snapshot.to_state(),
        },
        path,
    )


class TraceFileError(ValueError):
    """A file that is not a trace this version reads: foreign, old (pickled objects), newer, torn."""


def load_trace(path: str | Path) -> dict[str, Any]:
    """Read a trace file written by :func:`save_trace` (``<run>/trace/iter_*.pt``).

    Read with ``weights_only=True``: a file holding pickled objects is refused, never unpickled.

    Args:
        path: the trace file.

    Returns:
        ``{"iteration", "image_ids", "dataset_indices", "positives_per_gt", "snapshot"}``, the snapshot an
        :class:`~paa_toolkit.assign.AssignmentSnapshot`.

    Raises:
        TraceFileError: not a trace of this version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace file not found: {path}")
    try:
        data = load_tensors(path)
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from None
    except UnreadableTorchFile as e:  # pickled objects, torn zip archive, not a torch file ...
        if e.pickled is None:
            raise TraceFileError(f"{path}: not a readable trace file (torn or not a trace): {e}") from None
        raise TraceFileError(
            f"{path}: {e}: a trace of an older paa_toolkit (before trace format {TRACE_VERSION}) or not "
            "ours. Re-create the traces by training again (--overwrite)"
        ) from None
    if not isinstance(data, dict) or data.get("format") != TRACE_FORMAT:
        raise TraceFileError(f"{path}: not a paa_toolkit trace file (no format {TRACE_FORMAT!r} entry)")
    if data.get("format_version") != TRACE_VERSION:
        raise TraceFileError(
            f"{path}: trace format {data.get('format_version')!r}; this paa_toolkit reads "
            f"format {TRACE_VERSION} (re-create the traces with the installed version)"
        )
    try:
        snapshot = AssignmentSnapshot.from_state(data["snapshot"])
    except (KeyError, TypeError, ValueError) as e:
        raise TraceFileError(f"{path}: {e}") from None
    return {key: value for key, value in data.items() if key not in ("format", "format_version")} | {
        "snapshot": snapshot
    }


__all__ = [
    "CONFIG_FILE",
    "PROVENANCE_FILE",
    "METRICS_FILE",
    "PLOT_FILES",
    "TEMPORARY",
    "TRACE_DIR",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "MetricsLog",
    "TraceFileError",
    "atomic_save",
    "atomic_write",
    "atomic_write_text",
    "load_trace",
    "read_metrics",
    "save_trace",
    "trace_image_indices",
    "write_error",
    "write_trace",
]

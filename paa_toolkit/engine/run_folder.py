"""Who may train into a run folder, and what becomes of the run already in it.

    with claimed_run_folder(run_dir, resume=False, overwrite=False):   # what train() does first
        ...

* **One training per folder.** A lock file ``<run>/.train.lock`` (created with ``O_EXCL``; it holds
  the PID, the host and the start time) stops a second training with a message naming the holder's
  PID. A lock left behind by a process of this machine that no longer runs is taken over, with a
  warning.
* **No run is lost by accident.** A folder that holds a run (any of :data:`RUN_FILES` or trace files)
  is continued only with ``resume`` and replaced only with ``overwrite``, which first deletes the old
  run's files — checkpoints, metrics, traces, plots; nothing else in the folder. Otherwise
  :class:`RunFolderError` says what to type. ``resume`` in a folder whose run never wrote a
  checkpoint starts from scratch and deletes what that run left (nothing of it could be continued).
* **No stale temporary files.** The temporaries of writes a kill interrupted
  (``.last.pth.1a2b3c4d.tmp``, ``trace/.iter_000100.pt.….tmp``) are removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import distributed
from .checkpoint import CORRUPT, FINAL_METRICS, LAST, PREVIOUS
from .run_files import CONFIG_FILE, METRICS_FILE, PLOT_FILES, PROVENANCE_FILE, TEMPORARY, TRACE_DIR, write_error

log = logging.getLogger(__name__)

LOCK_FILE = ".train.lock"
#: the files of a run (besides ``trace/iter_*.pt``): what ``overwrite`` deletes
RUN_FILES = (CONFIG_FILE, METRICS_FILE, PROVENANCE_FILE, LAST, PREVIOUS, CORRUPT, FINAL_METRICS, *PLOT_FILES)
TRACE_FILE = re.compile(r"^iter_\d+\.pt$")
#: a lock file that holds no owner yet is being written — unless it is older than this (its writer died)
UNFINISHED_LOCK_S = 30.0


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (it holds a run, it is locked)."""


# ---- the lock ----------------------------------------------------------------------------------------
@dataclass
class RunLock:
    """A lock file this process created; :meth:`release` deletes it (if it is still ours)."""

    path: Path
    pid: int

    def release(self) -> None:
        if _holder(self.path).get("pid") == self.pid:
            self.path.unlink(missing_ok=True)


def _holder(lock: Path) -> dict[str, Any]:
    """What a lock file says about its owner (``{}`` if it cannot be read or parsed)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process; or not a PID we can test: assume it runs
    return True


def _stale_owner(lock: Path, holder: dict[str, Any]) -> str | None:
    """Why the lock's owner is gone (None: it may still run)."""
    if not holder:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return "released meanwhile"
        return f"an unfinished lock file, {age:.0f} s old" if age > UNFINISHED_LOCK_S else None
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return f"PID {pid}, which no longer runs"
    return None


def acquire_lock(folder: str | Path, name: str = LOCK_FILE) -> RunLock:
    """Create ``folder/name`` atomically (stale locks are taken over); :class:`RunFolderError` if held.
    A lock that cannot be written (disk full) is removed again: ``OSError`` ``cannot write PATH: REASON``."""
    lock = Path(folder) / name
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            stale = _stale_owner(lock, holder)
            if stale is None:
                raise RunFolderError(_locked_message(lock, holder)) from None
            log.warning("%s: taking over the lock of %s", lock, stale)
            lock.unlink(missing_ok=True)
            continue
        except OSError as e:  # read-only or full file system, no permission
            raise write_error(lock, e) from None
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # disk full: an empty lock left here would hold off a retry for UNFINISHED_LOCK_S
            lock.unlink(missing_ok=True)
            raise write_error(lock, e) from None
        return RunLock(lock, os.getpid())
    raise RunFolderError(f"{lock}: cannot take the lock (other processes keep taking it)")


def _locked_message(lock: Path, holder: dict[str, Any]) -> str:
    if not holder:
        return f"{lock.parent} is being claimed by another process right now (lock file {lock})"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
    return (
        f"{lock.parent} is in use by another training: PID {holder.get('pid')} on {holder.get('host')}, "
        f"since {since}. Wait for it to end, or train into another --output-dir; if that process no "
        f"longer runs, delete {lock}"
    )


# ---- the run in the folder -------------------------------------------------------------------------
def is_run_file(name: str, in_trace_dir: bool = False) -> bool:
    return bool(TRACE_FILE.match(name)) if in_trace_dir else name in RUN_FILES


def existing_run_files(run_dir: Path) -> list[Path]:
    """The files of a run in ``run_dir`` (checkpoints, metrics, config, plots, traces)."""
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
    trace_dir = run_dir / TRACE_DIR
    if trace_dir.is_dir():
        found += sorted(p for p in trace_dir.iterdir() if is_run_file(p.name, in_trace_dir=True))
    return found


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of interrupted writes of a run's files (the folder must be locked)."""
    removed = []
    for folder, in_trace_dir in ((run_dir, False), (run_dir / TRACE_DIR, True)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = TEMPORARY.match(path.name)
            if match and is_run_file(match["name"], in_trace_dir) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
                log.info("removed %s, left by a write that was interrupted", path)
    return removed


def _describe(run_dir: Path, files: list[Path]) -> str:
    if (run_dir / FINAL_METRICS).is_file():
        try:
            iteration = json.loads((run_dir / FINAL_METRICS).read_text()).get("iteration", "?")
        except (OSError, ValueError, AttributeError):
            iteration = "?"
        return f"a finished run (iteration {iteration}, {FINAL_METRICS})"
    checkpoints = [p.name for p in files if p.name in (LAST, PREVIOUS)]
    if checkpoints:
        return f"an unfinished run (checkpoint {checkpoints[0]})"
    names = sorted({p.relative_to(run_dir).parts[0] for p in files})
    return f"files of a run that wrote no checkpoint ({', '.join(names)})"


def _delete(files: list[Path], run_dir: Path) -> None:
    for path in files:
        path.unlink(missing_ok=True)
    trace_dir = run_dir / TRACE_DIR
    if trace_dir.is_dir() and not any(trace_dir.iterdir()):
        trace_dir.rmdir()


def claim_run_folder(run_dir: str | Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Create and lock ``run_dir``, remove stale temporaries, and apply the rules of the module docstring
    to the run already in it. Returns the lock (release it when the training ends)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None
    lock = acquire_lock(run_dir)
    try:
        remove_stale_temporaries(run_dir)
        files = existing_run_files(run_dir)
        if files and overwrite:
            log.warning("--overwrite: deleting %s in %s (%d files)", _describe(run_dir, files), run_dir, len(files))
            _delete(files, run_dir)
        elif files and not resume:
            raise RunFolderError(
                f"{run_dir} already holds {_describe(run_dir, files)}: continue it with --resume, or replace it "
                "with --overwrite (deletes its checkpoints, metrics, traces and plots)"
            )
        elif files and not any(p.name in (LAST, PREVIOUS) for p in files):
            log.warning(
                "--resume: %s holds %s; starting from scratch and deleting them", run_dir, _describe(run_dir, files)
            )
            _delete(files, run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


@contextmanager
def claimed_run_folder(run_dir: str | Path, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """:func:`claim_run_folder` by rank 0 for the duration of the block; every process raises if it fails."""
    lock = distributed.from_rank_zero(lambda: claim_run_folder(run_dir, resume=resume, overwrite=overwrite))
    try:
        yield
    finally:
        if distributed.is_writer():
            lock.release()


__all__ = [
    "LOCK_FILE",
    "RUN_FILES",
    "RunFolderError",
    "RunLock",
    "acquire_lock",
    "claim_run_folder",
    "claimed_run_folder",
    "existing_run_files",
    "remove_stale_temporaries",
]

"""Checkpoints that survive being killed mid-write: atomic replace, a content digest, one fallback.

``save_checkpoint(state, run_dir)`` writes ``last.pth`` via a temporary file in the same folder
(fsync, then ``os.replace``: :func:`~.run_files.atomic_save`), first moving the previous ``last.pth``
to ``previous.pth``. Every checkpoint carries a SHA-256 digest of its contents, so a torn *or*
bit-flipped file is detected at load time; :func:`find_resumable` then falls back to
``previous.pth`` — a corrupt file is never the one resumed from, and ``--resume`` moves it aside to
``last.pth.corrupt`` so that the next checkpoint never rotates it into ``previous.pth``.

What a training checkpoint holds (:func:`training_state`): the bare model's weights (no ``module.``
prefix: it loads in one process), the optimiser, scheduler and GradScaler, every RNG, the sampler's
position, the config and the label mapping. :func:`restore_training_state` puts it back;
:func:`build_from_checkpoint` builds the trained model for evaluation or detection.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.coco import CocoDetection
from ..distributed import unwrap
from ..model.detector import build_model
from ..safe_load import UnreadableTorchFile, load_tensors
from .config import TrainConfig
from .run_files import atomic_save
from .sampling import DeterministicBatchSampler, rng_state, set_rng_state

log = logging.getLogger(__name__)

#: builds the model of a run: ``(the run's TrainConfig, number of classes) → nn.Module``
ModelBuilder = Callable[[TrainConfig, int], nn.Module]

LAST = "last.pth"
PREVIOUS = "previous.pth"
#: where ``--resume`` moves a ``last.pth`` that failed verification, so that it never replaces the good ``previous.pth``
CORRUPT = "last.pth.corrupt"
#: written last (atomically) by the training loop: its presence means the run finished and was evaluated
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


def save_checkpoint(state: dict[str, Any], run_dir: str | Path) -> Path:
    """Write ``state`` (with its digest) as ``<run_dir>/last.pth``; the old one becomes ``previous.pth``.

    A write that fails (disk full, permission denied) raises an ``OSError`` naming the file and leaves
    the checkpoints as they were. Temporary files left by a writer that was killed mid-write
    (``.last.pth.*.tmp``) are never read; the next training in the folder removes them
    (:func:`~.run_folder.remove_stale_temporaries`).
    """
    run_dir = Path(run_dir)
    try:
        return atomic_save({**state, DIGEST_KEY: state_digest(state)}, run_dir / LAST, keep_previous=run_dir / PREVIOUS)
    except OSError as e:
        kept = f"; the previous checkpoint {run_dir / LAST} is unchanged" if (run_dir / LAST).is_file() else ""
        raise OSError(f"{e}{kept}") from e


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`; :class:`CheckpointError` if bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = load_tensors(path, map_location)
    except OSError as e:  # not a fault of the file (permission denied, I/O error): no fallback to another one
        raise OSError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except UnreadableTorchFile as e:  # torn zip, pickled objects, not a torch file ...
        raise CheckpointError(f"checkpoint {path} is unreadable (torn or not a checkpoint): {e}") from None
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
    """A training checkpoint file, or a run folder (its newest good checkpoint); :class:`CheckpointError` if none."""
    path = Path(path)
    if path.is_dir():
        found = find_resumable(path, map_location)
        if found is None:
            raise CheckpointError(f"no loadable checkpoint ({LAST} or {PREVIOUS}) in {path}")
    else:
        found = path, load_checkpoint(path, map_location)
    return check_training_state(*found)


#: what :func:`training_state` writes, with the type each entry must have
TRAINING_ENTRIES = {
    "format_version": int,
    "iteration": int,
    "config": dict,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "rng": dict,
    "sampler": dict,
    "num_classes": int,
    "category_ids": list,
    "category_names": list,
}


def check_training_state(path: Path, state: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """``(path, state)`` if ``state`` has every entry of a training checkpoint, else :class:`CheckpointError`
    (a digest-valid file of other contents: saved by hand, or by another program)."""
    missing = [key for key, kind in TRAINING_ENTRIES.items() if not isinstance(state.get(key), kind)]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is not a training checkpoint of paa_toolkit: missing or malformed entries {missing}"
        )
    return path, state


# ---- training checkpoints ------------------------------------------------------------------------
def default_model_builder(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The detector ``cfg`` describes (PAA, or a torchvision baseline): :func:`~..model.detector.build_model`."""
    return build_model(cfg.model, num_classes, cfg.assign, cfg.test)


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    iteration: int,
    cfg: TrainConfig,
    sampler: DeterministicBatchSampler,
    train_ds: CocoDetection,
) -> dict[str, Any]:
    """Everything an exact resume at ``iteration`` needs (see the module docstring)."""
    return {
        "format_version": 1,
        "iteration": iteration,
        "config": cfg.to_dict(),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "sampler": sampler.state(iteration),
        "num_classes": train_ds.num_classes,
        "category_ids": list(train_ds.category_ids),
        "category_names": list(train_ds.category_names),
    }


def find_resume_checkpoint(cfg: TrainConfig) -> tuple[Path, dict] | None:
    """``resume="auto"``: newest good checkpoint of the run folder (None: start fresh); else that path."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        found = find_resumable(cfg.run_dir)
        if found is not None:
            found = check_training_state(*found)
            _set_aside_failed_last(cfg.run_dir, found[0])
            return found
        if any((cfg.run_dir / name).exists() for name in (LAST, PREVIOUS)):
            raise CheckpointError(
                f"--resume: no checkpoint of {cfg.run_dir} loads (see the warnings above); "
                "to start that run afresh, use --overwrite instead"
            )
        log.info("no checkpoint in %s yet: starting from scratch", cfg.run_dir)
        return None
    found = resolve_checkpoint(cfg.resume)
    if Path(cfg.resume).is_dir() and Path(cfg.resume).resolve() == Path(cfg.run_dir).resolve():
        _set_aside_failed_last(cfg.run_dir, found[0])  # --resume RUN --output-dir RUN: the same folder as "auto"
    return found


def _set_aside_failed_last(run_dir: Path, resumed: Path) -> None:
    """Resuming from ``previous.pth`` because ``last.pth`` failed verification: move ``last.pth`` to
    :data:`CORRUPT`, or the next checkpoint would rotate it into ``previous.pth`` over the good fallback."""
    last = run_dir / LAST
    if resumed.name == PREVIOUS and last.exists():
        os.replace(last, run_dir / CORRUPT)
        log.warning(
            "moved %s, which failed verification, to %s; %s stays the fallback checkpoint",
            last,
            run_dir / CORRUPT,
            resumed,
        )


def _warn_if_model_differs(cfg: TrainConfig, state: dict, path: Path) -> None:
    saved = state["config"].get("model", {})
    differ = sorted(k for k, v in asdict(cfg.model).items() if k in saved and saved[k] != v)
    if differ:
        log.warning("resuming from %s with different model settings: %s", path, ", ".join(differ))


def restore_training_state(
    path: Path, state: dict, cfg: TrainConfig, model: nn.Module, optimizer, scheduler, scaler
) -> int:
    """Load a checkpoint into the freshly built objects (and the RNGs); returns its iteration."""
    _warn_if_model_differs(cfg, state, path)
    try:
        unwrap(model).load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model config: {str(e).splitlines()[0]}") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"])


def build_from_checkpoint(
    state: dict[str, Any],
    cfg: TrainConfig | None = None,
    device: torch.device | str = "cpu",
    build_model: ModelBuilder | None = None,
) -> nn.Module:
    """The trained model of a checkpoint (eval mode); ``cfg`` overrides the saved config (post-processing...)."""
    cfg = cfg or TrainConfig.from_dict(state["config"])
    cfg = replace(cfg, model=replace(cfg.model, backbone_weights=None))  # the checkpoint holds every weight
    model = (build_model or default_model_builder)(cfg, state["num_classes"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit the model config: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


__all__ = [
    "CORRUPT",
    "CheckpointError",
    "FINAL_METRICS",
    "LAST",
    "PREVIOUS",
    "TRAINING_ENTRIES",
    "ModelBuilder",
    "build_from_checkpoint",
    "check_training_state",
    "default_model_builder",
    "find_resumable",
    "find_resume_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "restore_training_state",
    "save_checkpoint",
    "state_digest",
    "training_state",
]

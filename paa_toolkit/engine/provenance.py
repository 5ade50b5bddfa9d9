"""What a training ran on beyond its config: the pre-trained body's content, the toolkit's code, torch, the thread
count and the precision — written to ``provenance.json`` in the run folder, one record per start or resume.

    record_provenance(run_dir, training_provenance(model_cfg, device, "bfloat16", start_iteration=0))
    read_provenance(run_dir)   # [{"from_iteration": 0, "backbone_weights": "sha256:…", "threads": 2, …}]

``config.yaml`` names the settings, but two runs with the same settings can still differ. A cached pre-trained
body rebuilt on another day has the same cache name and other weights (AP 0.642 against 0.626 for the bench
body, benchmarks/README.md §8). Another thread count or kernel moves a CPU training's float sums. A paired
comparison (:mod:`paa_toolkit.ablation.pairing`) reads these records to tell when two rows of one seed did not
start from the same body.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch

from .run_files import PROVENANCE_FILE, atomic_write_text

_PACKAGE = Path(__file__).resolve().parents[1]


def file_digest(path: str | Path) -> str:
    """``sha256:<first 16 hex digits>`` of a file's bytes."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return f"sha256:{sha.hexdigest()[:16]}"


def code_digest(package: Path = _PACKAGE) -> str:
    """``sha256:<16 hex digits>`` of the toolkit's Python sources (paths and bytes): any edit changes it."""
    sha = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        sha.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes() + b"\0")
    return f"sha256:{sha.hexdigest()[:16]}"


def training_provenance(model_cfg, device: torch.device, precision: str, start_iteration: int) -> dict[str, Any]:
    """The record of one start of a training: ``model_cfg`` is the model config the weights were built from (with
    the resolved ``backbone_weights`` of ``model.backbone_pretrain``), ``precision`` the backbone's dtype."""
    weights = getattr(model_cfg, "backbone_weights", None)
    return {
        "from_iteration": start_iteration,
        "backbone_weights": file_digest(weights) if weights else None,
        "toolkit_code": code_digest(),
        "torch": torch.__version__,
        "device": device.type if device.type != "cpu" else f"cpu ({platform.machine()})",
        "threads": torch.get_num_threads(),
        "precision": precision,
    }


def read_provenance(run_dir: str | Path) -> list[dict[str, Any]] | None:
    """The run's records, oldest first; None for a run trained before the file existed (or not readable)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return records if isinstance(records, list) and all(isinstance(r, dict) for r in records) else None


def record_provenance(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` to the run's ``provenance.json`` (dropping those of iterations a resume re-trains)."""
    kept = [r for r in read_provenance(run_dir) or [] if r.get("from_iteration", 0) < record["from_iteration"]]
    atomic_write_text(Path(run_dir) / PROVENANCE_FILE, json.dumps([*kept, record], indent=1) + "\n")


__all__ = [
    "PROVENANCE_FILE",
    "code_digest",
    "file_digest",
    "read_provenance",
    "record_provenance",
    "training_provenance",
]

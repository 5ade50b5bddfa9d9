"""Adopt a finished ``python -m paa_toolkit.train`` run into an ablation grid instead of training it again.

A long training (``--budget bench-pretrained-4x``: 30 min of one core) that was run on its own — a convergence
check, say — is often exactly one (config, seed) of a table. ``python -m paa_toolkit.ablate … --adopt
paa_ioupred:3=RUN`` takes it over when it learned what the plan would have trained:

* every setting that changes the weights must agree with the plan (bookkeeping such as ``eval_every`` or
  ``output_dir`` may differ, and so may ``test.*``, which changes inference only — Table 1 right's score voting is
  such a setting);
* its checkpoint is linked (or copied) into the grid's folder, and the model is re-evaluated with the plan's
  ``test.*`` settings, so the table's number is what the planned run would have reported;
* ``adopted.json`` records where it came from; the source folder is never changed.

Anything else is refused with the file, field and value that stop it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from ..engine.checkpoint import FINAL_METRICS
from ..engine.config import ConfigError, TrainConfig
from ..engine.run_files import CONFIG_FILE, atomic_write_text
from .grid import PlannedRun, build_config
from .runner import LOG, config_differences, evaluated_metrics, evaluation_command, run_state

ADOPTED = "adopted.json"
CHECKPOINT = "last.pth"
#: files taken over besides the checkpoint: the learning curve and the training means (metrics.jsonl), and the
#: body the run started from (provenance.json, which the paired report checks)
CARRIED_FILES = ("metrics.jsonl", "provenance.json")


def parse_adoption(text: str) -> tuple[str, int, Path]:
    """``"paa_ioupred:3=/runs/x"`` → ``("paa_ioupred", 3, Path("/runs/x"))`` (the ``--adopt`` option)."""
    target, sep, source = text.partition("=")
    config, colon, seed = target.partition(":")
    if not sep or not colon or not config or not seed.strip().isdigit() or not source:
        raise ConfigError(f"--adopt expects CONFIG:SEED=RUN_FOLDER (e.g. paa_ioupred:3=runs/x), got {text!r}")
    return config.strip(), int(seed), Path(source)


def is_inference_only(key: str) -> bool:
    """Whether setting ``key`` (dotted) changes only what a trained model outputs (``test.*``), not its weights."""
    return key.startswith("test.")


def learning_differences(trained: TrainConfig, planned: TrainConfig) -> dict[str, str]:
    """The settings that change the weights in which ``trained`` differs from ``planned``, as
    ``{field: "trained (planned: value)"}``."""
    return config_differences(trained, planned, ignored=is_inference_only)


def _source_config(source: Path) -> TrainConfig:
    for name in (FINAL_METRICS, CONFIG_FILE, CHECKPOINT):
        if not (source / name).is_file():
            raise ConfigError(f"--adopt {source}: no {name} — only a finished training can be adopted")
    try:
        return TrainConfig.from_dict(yaml.safe_load((source / CONFIG_FILE).read_text(encoding="utf-8")) or {})
    except (ConfigError, yaml.YAMLError, OSError) as e:
        raise ConfigError(f"--adopt {source / CONFIG_FILE}: cannot be read as a training config ({e})") from None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links
        shutil.copy2(src, dst)


def adopt(run: PlannedRun, source: Path, echo=print) -> dict:
    """Make ``source``, a finished training, the grid's ``run`` (see the module docstring); returns the
    re-evaluated metrics. Raises :class:`ConfigError` when it cannot stand for the planned run."""
    source = source.resolve()
    if run.base_dir is not None:
        raise ConfigError(f"--adopt {run.name}: that row re-evaluates {run.base_dir.parent.name}; adopt that one")
    state = run_state(run.run_dir)
    if state != "missing":
        raise ConfigError(f"--adopt {run.name}: {run.run_dir} is already {state}; delete it first to adopt {source}")
    trained, planned = _source_config(source), build_config(run.overrides)
    differ = learning_differences(trained, planned)
    if differ:
        listed = "; ".join(f"{key} = {value}" for key, value in differ.items())
        raise ConfigError(f"--adopt {run.name}: {source / CONFIG_FILE} trained other weights than planned — {listed}")
    run.run_dir.mkdir(parents=True)
    _link_or_copy(source / CHECKPOINT, run.run_dir / CHECKPOINT)
    for name in CARRIED_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, run.run_dir / name)
    trained.test = planned.test  # what the grid's config.yaml says is what its final_metrics.json measured
    atomic_write_text(run.run_dir / CONFIG_FILE, yaml.safe_dump(trained.to_dict(), sort_keys=False))
    test = {f"test.{k}": v for k, v in dataclasses.asdict(planned.test).items()}
    cmd = evaluation_command(run.run_dir, test, run.run_dir)
    echo(f"[ablate] {run.name}: adopting {source}, re-evaluated with the plan's test settings")
    with open(run.run_dir / LOG, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        returncode = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if returncode != 0:
        shutil.rmtree(run.run_dir)
        raise ConfigError(f"--adopt {run.name}: re-evaluating {source} failed (exit {returncode}); nothing adopted")
    numbers = evaluated_metrics(run.run_dir)
    source_metrics = json.loads((source / FINAL_METRICS).read_text())
    if "iteration" in source_metrics:
        numbers["iteration"] = source_metrics["iteration"]
    record = {
        "source": str(source),
        "adopted_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "re_evaluated_with": test,
        "source_final_metrics": source_metrics,
    }
    atomic_write_text(run.run_dir / ADOPTED, json.dumps(record, indent=1))
    atomic_write_text(run.run_dir / FINAL_METRICS, json.dumps(numbers, indent=1))  # last: the run is complete
    return numbers


__all__ = ["ADOPTED", "adopt", "is_inference_only", "learning_differences", "parse_adoption"]

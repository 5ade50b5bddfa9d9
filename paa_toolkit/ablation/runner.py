"""Run one planned ablation run in its own folder: skip when complete, resume when not, lock it.

Each training is a normal ``python -m paa_toolkit.train`` process (``--output-dir RUN --resume``),
so a run that crashes or diverges (``NonFiniteLossError`` of FSR, Table 1 left) becomes a reported
result (``failed.json``), not the end of the grid. Folder states:

* ``final_metrics.json`` — complete (written last by the trainer, atomically): skipped — with a warning that
  names the settings when its ``config.yaml`` trained something other than the plan (:func:`settings_differences`);
* ``failed.json`` — the training failed (status ``diverged`` or ``failed``): skipped unless retried;
* ``.ablate.lock`` — another process is on it right now (created with O_EXCL, so two machines or
  processes sharing the folder never train the same run; a lock of a dead local process is taken over);
* anything else — started or not: (re)launched with ``--resume`` (continues from ``last.pth``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..cli import dotted_overrides
from ..engine.checkpoint import FINAL_METRICS
from ..engine.config import ConfigError, TrainConfig
from ..engine.run_files import CONFIG_FILE, atomic_write_text
from ..engine.run_folder import RunFolderError
from ..engine.run_folder import acquire_lock as engine_lock
from .grid import PlannedRun, build_config, to_argv

FAILED = "failed.json"
LOCK = ".ablate.lock"
ABLATE_INFO = "ablate.json"  # wall time and command of the run (ours, next to the trainer's files)
LOG = "train.log"
EVAL_OUTPUT = ".eval.json"  # an evaluation's metrics, before they become the run's final metrics
HEARTBEAT_S = 30.0  # how often a running training's wall time is saved into ABLATE_INFO


def default_launcher() -> list[str]:
    return [sys.executable, "-m", "paa_toolkit.train"]


#: the states of :func:`run_state` in which a run is done: its result (metrics, or a failure such as a diverged FSR
#: training) is final
FINAL_STATES = ("complete", "failed")


def run_state(run_dir: Path) -> str:
    """``complete``, ``failed``, ``running`` (locked), ``incomplete`` or ``missing``."""
    if (run_dir / FINAL_METRICS).exists():
        return "complete"
    if (run_dir / FAILED).exists():
        return "failed"
    if (run_dir / LOCK).exists():
        return "running"
    return "incomplete" if run_dir.exists() else "missing"


#: settings that change what a run records and where, not what it learns (an evaluation forks and restores the RNG)
BOOKKEEPING = ("name", "output_dir", "resume", "overwrite", "log_every", "checkpoint_every", "eval_every")
BOOKKEEPING_PREFIXES = ("trace_",)


def settings_differences(run: PlannedRun) -> dict[str, str]:
    """The settings in which a trained run's ``config.yaml`` differs from the plan (bookkeeping aside), as
    ``{field: "trained (planned: value)"}``; empty when they agree, for re-evaluations and for runs not yet
    started; ``{"config.yaml": why}`` when the file cannot be read."""
    path = run.run_dir / CONFIG_FILE
    if run.base_dir is not None or not path.is_file():
        return {}
    try:
        trained = TrainConfig.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (ConfigError, yaml.YAMLError, OSError) as e:
        return {CONFIG_FILE: f"{path} cannot be read as a training config ({e})"}
    return config_differences(trained, build_config(run.overrides))


def config_differences(
    trained: TrainConfig, planned: TrainConfig, ignored: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """The settings (dotted) in which ``trained`` differs from ``planned``, bookkeeping and ``ignored`` keys aside, as
    ``{field: "trained (planned: value)"}``."""
    a, b = dotted_overrides(trained), dotted_overrides(planned)  # both relative to the defaults: absent = default
    return {
        key: f"{_shown(a, key)} (planned: {_shown(b, key)})"
        for key in dict.fromkeys([*b, *a])
        if not is_bookkeeping(key) and not (ignored and ignored(key)) and a.get(key, _DEFAULT) != b.get(key, _DEFAULT)
    }


_DEFAULT = object()


def is_bookkeeping(key: str) -> bool:
    """Whether setting ``key`` (dotted) only changes what a run records and where (:data:`BOOKKEEPING`)."""
    return key in BOOKKEEPING or key.startswith(BOOKKEEPING_PREFIXES)


def _shown(overrides: dict, key: str) -> str:
    return repr(overrides[key]) if key in overrides else "the default"


def acquire_lock(run_dir: Path) -> Path | None:
    """Create ``run_dir/.ablate.lock`` atomically (:func:`~..engine.run_folder.acquire_lock`); None when
    another live process holds it; :class:`RunFolderError` when ``run_dir`` is there but is no folder (a file, a
    link to nothing)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        kind = "a link to a missing folder" if run_dir.is_symlink() else "not a folder"
        raise RunFolderError(f"run folder {run_dir} is {kind}: remove it (or choose another --out)") from err
    try:
        return engine_lock(run_dir, LOCK).path
    except RunFolderError:
        return None


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def _failure(log_path: Path, returncode: int) -> dict:
    """Classify a failed training from its log: ``diverged`` (non-finite loss) or ``failed``."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    message = (errors or lines or [f"exit code {returncode}"])[-1][:500]
    status = "diverged" if "non-finite" in message else "failed"
    return {"status": status, "returncode": returncode, "message": message}


def _call_recording_wall(
    cmd: list[str], log, info_path: Path, previous: float, every: float = HEARTBEAT_S
) -> tuple[int, float]:
    """Run ``cmd`` into ``log``; return its exit code and the run's wall time over all its sessions.

    The wall time so far is rewritten into ``ablate.json`` every ``every`` seconds, so a session that ends
    hard (its processes killed with it) still leaves the time the run had spent; the resumed run adds to it.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tick = time.perf_counter()

    def record(returncode: int | None) -> float:
        wall = previous + time.perf_counter() - tick
        _write_json(info_path, {"wall_s": wall, "command": shlex.join(cmd), "returncode": returncode})
        return wall

    with subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env) as proc:
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=every)
                    break
                except subprocess.TimeoutExpired:
                    record(None)
        except BaseException:  # as subprocess.call: never leave the training running behind an interrupted runner
            proc.kill()
            raise
    return returncode, record(returncode)


@dataclass
class Outcome:
    run: PlannedRun
    state: str  # complete | failed | skipped | running (locked) | pending (its base run is not complete)
    wall_s: float = 0.0


def evaluation_command(checkpoint_dir: Path, overrides: dict, run_dir: Path) -> list[str]:
    """``python -m paa_toolkit.evaluate`` of the model in ``checkpoint_dir`` with ``overrides``; the metrics go to
    ``run_dir`` (:func:`evaluated_metrics` reads them)."""
    argv = [str(checkpoint_dir), *to_argv(overrides), "--output", str(run_dir / EVAL_OUTPUT)]
    return [sys.executable, "-m", "paa_toolkit.evaluate", *argv]


def evaluated_metrics(run_dir: Path) -> dict[str, float]:
    """The numbers of the evaluation :func:`evaluation_command` wrote into ``run_dir``."""
    metrics = json.loads((run_dir / EVAL_OUTPUT).read_text())
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def execute(run: PlannedRun, launcher: list[str] | None = None, retry_failed: bool = False, echo=print) -> Outcome:
    """Bring one run to a final state (complete or failed), unless it is done or someone else runs it."""
    state = run_state(run.run_dir)
    if state == "complete":
        differ = settings_differences(run)
        if differ:
            echo(
                f"[ablate] {run.name}: complete, but trained with other settings than planned — "
                f"{'; '.join(f'{key} = {value}' for key, value in differ.items())}. "
                f"Kept: delete {run.run_dir} or choose another --out to train it as planned"
            )
        return Outcome(run, "skipped")
    if state == "failed" and not retry_failed:
        return Outcome(run, "skipped")
    try:
        lock = acquire_lock(run.run_dir)
    except RunFolderError as err:
        echo(f"[ablate] {run.name}: failed: {err}")
        return Outcome(run, "failed")
    if lock is None:
        echo(f"[ablate] {run.name}: locked by another process, skipped")
        return Outcome(run, "running")
    try:
        if (run.run_dir / FINAL_METRICS).exists():  # finished while we waited for the lock
            return Outcome(run, "skipped")
        (run.run_dir / FAILED).unlink(missing_ok=True)
        if run.base_dir is not None:
            base_state = run_state(run.base_dir)
            if base_state != "complete":
                echo(f"[ablate] {run.name}: nothing to re-evaluate yet ({run.base_dir} is {base_state}), skipped")
                return Outcome(run, "pending")
            eval_keys = {
                k: v
                for k, v in run.overrides.items()
                if k.startswith(("model.", "assign.", "test.", "data.", "device"))
            }
            cmd = evaluation_command(run.base_dir, eval_keys, run.run_dir)
        else:
            cmd = [
                *(launcher or default_launcher()),
                *to_argv(run.overrides),
                "--name",
                run.config.name,
                "--output-dir",
                str(run.run_dir),
                "--resume",
            ]
        echo(f"[ablate] {run.name}: {shlex.join(cmd[:3])} … → {run.run_dir}")
        info_path = run.run_dir / ABLATE_INFO
        previous = json.loads(info_path.read_text()).get("wall_s", 0.0) if info_path.exists() else 0.0
        with open(run.run_dir / LOG, "a", encoding="utf-8") as log:
            log.write(f"\n$ {shlex.join(cmd)}\n")
            log.flush()
            returncode, wall = _call_recording_wall(cmd, log, info_path, previous)
        if returncode == 0 and run.base_dir is not None:
            _write_json(run.run_dir / FINAL_METRICS, evaluated_metrics(run.run_dir))
        if returncode != 0 or not (run.run_dir / FINAL_METRICS).exists():
            failure = _failure(run.run_dir / LOG, returncode)
            _write_json(run.run_dir / FAILED, failure)
            echo(f"[ablate] {run.name}: {failure['status']} after {wall:.0f} s: {failure['message']}")
            return Outcome(run, "failed", wall)
        echo(f"[ablate] {run.name}: complete in {wall:.0f} s")
        return Outcome(run, "complete", wall)
    finally:
        lock.unlink(missing_ok=True)


__all__ = [
    "ABLATE_INFO",
    "BOOKKEEPING",
    "FAILED",
    "LOCK",
    "LOG",
    "Outcome",
    "acquire_lock",
    "config_differences",
    "evaluated_metrics",
    "evaluation_command",
    "default_launcher",
    "execute",
    "run_state",
    "settings_differences",
]

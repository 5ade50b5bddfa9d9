"""Seeds carried over from a committed results file (``ablate --results``), so that a grid goes on where its run
folders are gone.

Run folders stay out of git, so a clean checkout — the next session, another machine — has none: the committed
``benchmarks/results/<table>_<budget>.json`` is the only record of what was trained. ``ablate --carry FILE`` reads
it: a (row, seed) that finished there is neither trained again nor lost from the report, which takes it from the
file where no run folder has it. Each carried seed keeps where it came from (``carried_from``: the file and its
date) through any later ``--results`` file.

    carried = read_carried("benchmarks/results/analysis_bench_pretrained.json", "analysis", "bench-pretrained", {})
    carried.seed("paa_gt_match", 1)   # {"state": "complete", "AP": 0.61, ..., "carried_from": "... (2026-12-06)"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.config import ConfigError
from .grid import PlannedRun
from .runner import FINAL_STATES, is_bookkeeping, run_state


@dataclass(frozen=True)
class CarriedSeeds:
    """The finished seeds of one committed results file, per row config."""

    path: Path
    date: str
    rows: dict[str, list[dict[str, Any]]]

    def seed(self, config: str, seed: int) -> dict[str, Any] | None:
        """Seed ``seed`` of row ``config`` when it finished in the file (with ``carried_from``), else None."""
        seeds = self.rows.get(config, [])
        if seed >= len(seeds) or seeds[seed].get("state") not in FINAL_STATES:
            return None
        return {**seeds[seed], "carried_from": seeds[seed].get("carried_from") or f"{self.path} ({self.date})"}


def _field_error(path: Path, name: str, found: Any, expected: Any) -> ConfigError:
    return ConfigError(f"--carry {path}: field {name!r} is {found!r}, this grid's is {expected!r}")


def read_carried(path: str | Path, table: str, budget: str, extra: dict[str, Any]) -> CarriedSeeds:
    """The finished seeds of a results file written by ``ablate --results``, checked against this grid.

    Args:
        path: the results JSON.
        table: this grid's table; the file's ``table`` must be the same.
        budget: this grid's budget; the file's ``budget`` must be the same.
        extra: this grid's ``--set`` overrides; the file's ``set`` must be the same (other settings, other runs),
            bookkeeping aside (``eval_every``, ``log_every``, ...: they change what a run records, not what it learns).

    Returns:
        :class:`CarriedSeeds`.

    Raises:
        ConfigError: the file is missing, not JSON, not a per-seed results file, or from another grid — the
            message names the file, the field and the value.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--carry {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--carry {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ConfigError(f"--carry {path}: no 'rows' list; expected a file written by `ablate --results`")

    def learned(overrides: Any) -> Any:  # the --set overrides that change what a run learns
        if not isinstance(overrides, dict):
            return overrides
        return {k: str(v) for k, v in overrides.items() if not is_bookkeeping(k)}

    for name, found, expected in (
        ("table", data.get("table"), table),
        ("budget", data.get("budget"), budget),
        ("set", learned(data.get("set", {})), learned(extra)),
    ):
        if found != expected:
            raise _field_error(path, name, found, expected)
    rows: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(data["rows"]):
        seeds = row.get("seeds") if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("config"), str) or not isinstance(seeds, list):
            raise ConfigError(f"--carry {path}: rows[{i}] has no 'config' name and per-seed 'seeds' list")
        if not all(isinstance(s, dict) for s in seeds):
            raise ConfigError(f"--carry {path}: rows[{i}] ({row['config']}): every seed must be an object")
        rows[row["config"]] = seeds
    return CarriedSeeds(path, str(data.get("date", "undated")), rows)


def is_carried(run: PlannedRun, carried: CarriedSeeds) -> bool:
    """Whether ``carried`` stands in for ``run``: its seed finished in the file and its folder here has not."""
    return carried.seed(run.config.name, run.seed) is not None and run_state(run.run_dir) not in FINAL_STATES


def still_to_run(plan: list[PlannedRun], carried: CarriedSeeds) -> list[PlannedRun]:
    """The runs of ``plan`` that ``carried`` does not stand in for; a carried training stays when a
    re-evaluation that is not carried (score voting) needs its checkpoint."""
    kept = {run.run_dir for run in plan if not is_carried(run, carried)}
    kept |= {run.base_dir for run in plan if run.run_dir in kept and run.base_dir is not None}
    return [run for run in plan if run.run_dir in kept]


__all__ = ["CarriedSeeds", "is_carried", "read_carried", "still_to_run"]

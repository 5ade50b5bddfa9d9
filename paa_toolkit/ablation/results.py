"""Measured ablation tables to read without re-running them: the committed ``benchmarks/results/*.json``
or a fresh local grid (``runs/ablations/<budget>/table_<table>.json``), and the paper's orderings
checked against the seed-to-seed noise.

    result = load_table("1R", "small")                  # a fresh local run if complete, else the committed one
    verdict = compare(result, "paa_noaux", "iou_assign")  # Comparison(diff=0.008, noise=0.003, verdict="holds")

Two JSON layouts are read: :func:`~.report.write_report`'s (rows with per-seed results) and the
committed transcriptions of ``benchmarks/ablations.md`` (rows with ``mean`` / ``std`` / ``num_seeds``
and, per file, ``measured_on``, ``machine``, ``command``, ``noise_AP``). A difference of AP whose size
is not above the noise is *unresolved*: one seed cannot decide it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: AP noise of a one-seed row when the file states none (benchmarks/ablations.md: "±0.01").
ONE_SEED_NOISE_AP = 0.01
#: The tables print AP to 3 decimals: a std of "0.000" still means a spread of up to 0.0005.
RESOLUTION_AP = 0.001
METRICS = ("AP", "AP50", "AP75")


@dataclass
class ResultRow:
    """One row of a measured table: mean and sample std over its seeds (None: not measured / one seed)."""

    cells: tuple[str, ...]
    config: str
    paper: Any
    status: str
    num_seeds: int
    mean: dict[str, float | None]
    std: dict[str, float | None]

    @property
    def label(self) -> str:
        return " · ".join(("+ voting" if c == "✓" else c) for c in self.cells if c) or self.config


@dataclass
class TableResult:
    """A measured table and where it comes from (``source``: the JSON file read)."""

    table: str
    budget: str
    seeds: int
    source: Path
    rows: list[ResultRow]
    measured_on: str | None = None
    machine: str | None = None
    command: str | None = None
    noise_AP: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: read by :func:`load_table` from the local grid (``runs/...``) rather than from the committed results
    fresh: bool = False

    def row(self, config: str) -> ResultRow:
        for r in self.rows:
            if r.config == config:
                return r
        raise KeyError(f"table {self.table}: no row {config!r}; rows: {', '.join(r.config for r in self.rows)}")


def _row(data: dict[str, Any]) -> ResultRow:
    seeds = data.get("seeds")
    if isinstance(seeds, list):  # write_report: per-seed results
        done = [s for s in seeds if s.get("state") == "complete"]
        num = len(done)
    else:
        num = int(data.get("num_seeds", 1))
    given = data.get("mean") or {}  # every figure the file has (e.g. the analysis grid's assignment figures)
    mean = {**given, **{k: given.get(k) for k in (*METRICS, "pos_per_gt", "wall_s")}}
    std = {k: (data.get("std") or {}).get(k) for k in METRICS}
    return ResultRow(
        tuple(data.get("cells", ())), data["config"], data.get("paper"), data.get("status", "ok"), num, mean, std
    )


def read_table(path: str | Path) -> TableResult:
    """Read one table's results.

    Args:
        path: a table JSON (either layout, see the module docstring).

    Returns:
        :class:`TableResult`: its rows (means, stds, seeds, status) and where and how they were measured.
    """
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {"table", "budget", "seeds", "rows", "measured_on", "machine", "command", "noise_AP"}
    return TableResult(
        table=str(data["table"]),
        budget=str(data.get("budget", "?")),
        seeds=int(data.get("seeds", 1)),
        source=path,
        rows=[_row(r) for r in data["rows"]],
        measured_on=data.get("measured_on") or data.get("date"),
        machine=data.get("machine"),
        command=data.get("command"),
        noise_AP=data.get("noise_AP"),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _complete(result: TableResult) -> bool:
    return bool(result.rows) and all(r.status != "pending" for r in result.rows)


def load_table(table: str, budget: str, *, committed: str | Path, runs: str | Path | None = None) -> TableResult | None:
    """The table measured locally when every row has finished, else the committed one.

    Args:
        table: the table's name.
        budget: its training budget.
        committed: the folder of committed results (``<committed>/table_<table>_<budget>.json``).
        runs: the folder of local runs (``<runs>/<budget>/table_<table>.json``), or None.

    Returns:
        :class:`TableResult`, or None when neither exists.
    """
    if runs is not None:
        local = Path(runs) / budget / f"table_{table}.json"
        if local.is_file():
            result = read_table(local)
            if _complete(result):
                return replace(result, fresh=True)
    path = Path(committed) / f"table_{table}_{budget}.json"
    return read_table(path) if path.is_file() else None


@dataclass
class Comparison:
    """``better`` − ``worse`` in AP against its standard error: ``holds`` / ``reversed`` / ``unresolved``."""

    better: str
    worse: str
    diff: float | None
    noise: float  # the standard error of ``diff``
    verdict: str  # holds, reversed, unresolved, not measured


def row_noise(result: TableResult, row: ResultRow) -> float:
    """AP noise of one seed of a row: its seed std when it has several seeds (at least :data:`RESOLUTION_AP`),
    else the file's stated one-seed noise (default :data:`ONE_SEED_NOISE_AP`)."""
    if row.num_seeds > 1 and row.std.get("AP") is not None:
        return max(float(row.std["AP"]), RESOLUTION_AP)
    return float(result.noise_AP if result.noise_AP is not None else ONE_SEED_NOISE_AP)


def compare(result: TableResult, better: str, worse: str) -> Comparison:
    """Does ``better`` beat ``worse`` by more than two standard errors of the difference of their means?

    The standard error is √(σ_a²/n_a + σ_b²/n_b), σ a row's seed std (:func:`row_noise`: the stated
    one-seed noise for a one-seed row), n its seeds — the same 2-standard-error rule as the paired verdict
    of :func:`~.report.verdict`. Two one-seed rows need a gap of 2√2 ≈ 2.8 × the one-seed noise: a
    difference the size of the noise is *unresolved*, never "holds" or "reversed".

    Args:
        result: the table.
        better: the row the paper says is better.
        worse: the row it says is worse.

    Returns:
        :class:`Comparison`: the difference of the mean APs, its standard error and the verdict
        (holds / reversed / unresolved).
    """
    a, b = result.row(better), result.row(worse)
    se = math.sqrt(sum(row_noise(result, r) ** 2 / max(r.num_seeds, 1) for r in (a, b)))
    if a.mean.get("AP") is None or b.mean.get("AP") is None or "pending" in (a.status, b.status):
        return Comparison(better, worse, None, se, "not measured")
    diff = round(float(a.mean["AP"]) - float(b.mean["AP"]), 6)  # 0.014 - 0.018 is -0.004, not -0.0040000000000000036
    verdict = "holds" if diff > 2 * se else "reversed" if diff < -2 * se else "unresolved"
    return Comparison(better, worse, diff, se, verdict)


def markdown(result: TableResult) -> str:
    """The table as Markdown.

    Args:
        result: the table.

    Returns:
        A Markdown table: AP / AP50 / AP75 (mean ± std), pos/GT, seeds, status, the paper's AP (%).
    """

    def value(row: ResultRow, key: str) -> str:
        mean, std = row.mean.get(key), row.std.get(key)
        if mean is None:
            return "–"
        return f"{mean:.3f} ± {std:.3f}" if std is not None and row.num_seeds > 1 else f"{mean:.3f}"

    head = ["row", *METRICS, "pos/GT", "seeds", "status", "paper AP (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        pos = r.mean.get("pos_per_gt")
        paper = r.paper if isinstance(r.paper, str) or r.paper is None else f"{r.paper[0]:.1f}"
        lines.append(
            "| "
            + " | ".join(
                [
                    r.label,
                    *(value(r, k) for k in METRICS),
                    "–" if pos is None else f"{pos:.1f}",
                    str(r.num_seeds),
                    r.status,
                    paper or "–",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


__all__ = [
    "Comparison",
    "ONE_SEED_NOISE_AP",
    "RESOLUTION_AP",
    "ResultRow",
    "TableResult",
    "compare",
    "load_table",
    "markdown",
    "read_table",
    "row_noise",
]

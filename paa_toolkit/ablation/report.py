"""Collect finished ablation runs into the paper's table layout: Markdown, JSON and a bar chart.

Numbers are COCO metrics as fractions in [0, 1] (the paper prints percent), mean ± sample std over
seeds; a failed training is shown by its status ("diverged", "failed", "0 positives"), as the
paper shows "training failed" for FSR (> 0.3).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..engine.checkpoint import FINAL_METRICS
from ..engine.run_files import METRICS_FILE, read_metrics
from ..viz.ablation import plot_ablation_ap
from .grid import RUN_CONFIGS, TABLES, Table, budget_overrides
from .runner import ABLATE_INFO, FAILED, run_state

METRICS = ("AP", "AP50", "AP75")


@dataclass
class RowResult:
    """All seeds of one table row."""

    cells: tuple[str, ...]
    config: str
    paper: Any
    seeds: list[dict[str, Any]] = field(default_factory=list)  # per seed: state, metrics, pos_per_gt, wall_s

    def done(self) -> list[dict[str, Any]]:
        return [s for s in self.seeds if s["state"] == "complete"]

    def mean(self, key: str) -> float | None:
        values = [s[key] for s in self.done() if s.get(key) is not None]
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = [s[key] for s in self.done() if s.get(key) is not None]
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def status(self) -> str:
        """``ok``, ``0 positives``, a failure status, or ``pending`` when no seed has finished."""
        failed = [s for s in self.seeds if s["state"] == "failed"]
        if failed and not self.done():
            return failed[0]["status"]
        if not self.done():
            return "pending"
        pos = self.mean("pos_per_gt")
        return "0 positives" if pos is not None and pos == 0 else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"cells": list(self.cells), "config": self.config, "paper": self.paper, "status": self.status,
                "seeds": self.seeds,
                "mean": {k: self.mean(k) for k in (*METRICS, "pos_per_gt", "wall_s")},
                "std": {k: self.std(k) for k in METRICS}}


def mean_positives_per_gt(run_dir: Path) -> float | None:
    """Mean positives per GT over the logged training iterations (``metrics.jsonl``)."""
    if not (run_dir / METRICS_FILE).exists():
        return None
    values = [r["pos_per_gt"] for r in read_metrics(run_dir) if r.get("kind") == "train" and "pos_per_gt" in r]
    return statistics.fmean(values) if values else None


def seed_result(run_dir: Path, base_dir: Path | None = None) -> dict[str, Any]:
    state = run_state(run_dir)
    out: dict[str, Any] = {"run_dir": str(run_dir), "state": state}
    info = run_dir / ABLATE_INFO
    wall = json.loads(info.read_text()).get("wall_s") if info.exists() else None
    if base_dir is not None and (base_dir / ABLATE_INFO).exists():  # the training behind a re-evaluation
        wall = (wall or 0.0) + json.loads((base_dir / ABLATE_INFO).read_text()).get("wall_s", 0.0)
    out["wall_s"] = wall
    out["pos_per_gt"] = mean_positives_per_gt(base_dir or run_dir)
    if state == "complete":
        metrics = json.loads((run_dir / FINAL_METRICS).read_text())
        out.update({k: max(float(metrics[k]), 0.0) for k in METRICS if k in metrics})
    elif state == "failed":
        out.update(json.loads((run_dir / FAILED).read_text()))
    return out


def collect(table: str, out: str | Path, budget: str, seeds: int) -> list[RowResult]:
    """Read every row of ``table`` from ``out/<budget>/<config>/seed<k>`` (whatever has finished)."""
    root = Path(out) / budget
    rows = []
    for row in TABLES[table].rows:
        base = RUN_CONFIGS[row.config].evaluate_from
        result = RowResult(row.cells, row.config, row.paper)
        for seed in range(seeds):
            result.seeds.append(seed_result(root / row.config / f"seed{seed}",
                                             root / base / f"seed{seed}" if base else None))
        rows.append(result)
    return rows


# ---- formatting --------------------------------------------------------------------------------------
def format_value(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def format_paper(paper: Any) -> str:
    if paper is None:
        return "–"
    if isinstance(paper, str):
        return paper
    return f"{paper[0]:.1f}"


def budget_summary(budget: str, extra: dict[str, Any] | None = None) -> str:
    """The budget's overrides, then the ``--set`` ones (which win)."""
    text = ", ".join(f"{k}={v}" for k, v in budget_overrides(budget).items())
    return text + ("; with --set " + ", ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def markdown_table(table: str, rows: list[RowResult], budget: str, seeds: int,
                   extra: dict[str, Any] | None = None) -> str:
    """The table in the paper's layout, plus our columns: positives per GT, wall time, paper AP (%)."""
    spec: Table = TABLES[table]
    header = [*spec.label_columns, *METRICS, "pos/GT", "wall s", "paper AP (%)"]
    lines = [f"## {spec.title}", "",
             f"Budget `{budget}` ({budget_summary(budget, extra)}); {seeds} seed(s), mean ± std; "
             "COCO metrics as fractions in [0, 1] (the paper prints percent); pos/GT: mean positives per "
             "GT box during training; wall s: training + evaluation, per seed.", ""]
    by_config = iter(rows)
    for caption, section_rows in spec.sections:
        if caption:
            lines += [f"**{caption}**", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _ in section_rows:
            r = next(by_config)
            status = r.status
            if status in ("ok", "0 positives"):
                values = [format_value(r.mean(k), r.std(k)) for k in METRICS]
                if status == "0 positives":
                    values[0] += " (0 positives)"
            else:
                values = [status, "", ""]
            pos = r.mean("pos_per_gt")
            wall = r.mean("wall_s")
            lines.append("| " + " | ".join([*r.cells, *values, "–" if pos is None else f"{pos:.1f}",
                                             "–" if wall is None else f"{wall:.0f}", format_paper(r.paper)]) + " |")
        lines.append("")
    notes = [f"- `{r.config}`: {s['status']}: {s.get('message', '')}" for r in rows
             for s in r.seeds if s["state"] == "failed"][:10]
    if notes:
        lines += ["Failures:", "", *notes, ""]
    return "\n".join(lines)


def bar_chart(table: str, rows: list[RowResult], budget: str, seeds: int) -> Figure:
    """AP per row (mean ± std over seeds); failed rows drawn as an empty bar with their status."""
    labels = [" ".join(("+ voting" if c == "✓" else c) for c in r.cells if c) or r.config for r in rows]
    return plot_ablation_ap(labels, [r.mean("AP") or 0.0 for r in rows], [r.std("AP") or 0.0 for r in rows],
                            [None if r.status == "ok" else r.status for r in rows],
                            f"{TABLES[table].title[:70]}\nbudget {budget}, {seeds} seed(s)")


def write_report(table: str, out: str | Path, budget: str, seeds: int,
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``table_<key>.md``, ``.json`` and ``.png`` into ``out/<budget>/``; returns their paths."""
    rows = collect(table, out, budget, seeds)
    root = Path(out) / budget
    root.mkdir(parents=True, exist_ok=True)
    paths = {"md": root / f"table_{table}.md", "json": root / f"table_{table}.json", "png": root / f"table_{table}.png"}
    paths["md"].write_text(markdown_table(table, rows, budget, seeds, extra), encoding="utf-8")
    paths["json"].write_text(json.dumps({"table": table, "budget": budget, "seeds": seeds, "set": extra or {},
                                         "rows": [r.to_dict() for r in rows]}, indent=1), encoding="utf-8")
    bar_chart(table, rows, budget, seeds).savefig(paths["png"], dpi=110)
    return paths


__all__ = ["METRICS", "RowResult", "bar_chart", "collect", "format_value", "markdown_table", "write_report"]

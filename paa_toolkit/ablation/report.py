"""Collect finished ablation runs into the paper's table layout: Markdown, JSON and a bar chart.

Numbers are COCO metrics as fractions in [0, 1] (the paper prints percent), mean ± sample std over
seeds; a failed training is shown by its status ("diverged", "failed", "0 positives"), as the
paper shows "training failed" for FSR (> 0.3).

A table with a ``reference`` row (the ``analysis`` table of issue 9) also gets the paired per-seed
differences of every row against it (seed k of a row minus seed k of the reference: same data order
and initial weights, so the shared part of the seed noise cancels) and a :func:`verdict` per metric.
The assignment figures of the training log (``gt_without_pos``, ``em_iters``, ``pos_per_gt``, …;
:data:`DIAGNOSTICS`) are the mean over all of a run's ``train`` records; the JSON also holds the mean
over the last third of them (``last_third``), the assignment of the nearly trained model.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..assign.stats import LOG_KEYS
from ..engine.checkpoint import FINAL_METRICS
from ..engine.provenance import read_provenance
from ..engine.run_files import METRICS_FILE, read_metrics
from ..viz.ablation import plot_ablation_ap
from .adopt import ADOPTED
from .carried import CarriedSeeds
from .grid import AP_COLUMNS, RUN_CONFIGS, TABLES, Claim, Table, budget_overrides
from .pairing import pairing_caveats, pairing_problem
from .runner import ABLATE_INFO, FAILED, FINAL_STATES, run_state

METRICS = AP_COLUMNS
#: the figures of the training log a report can show (means over the run's ``train`` records)
DIAGNOSTICS = ("pos_per_gt", *LOG_KEYS.values())
#: further numbers of ``final_metrics.json`` a table can show (None when -1 / NaN: nothing to measure)
EXTRA_METRICS = ("APs", "APm", "APl", "AR100", "recall50_small", "recall50_medium", "recall50_large", "recall50_all")
#: the metrics compared seed by seed against a table's reference row
PAIRED = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: column headers and cell formats (default: the key, three decimals)
HEADERS = {
    "pos_per_gt": "pos/GT",
    "gt_without_pos": "GTs w/o pos. (%)",
    "gt_without_pos_small": "small w/o pos. (%)",
    "em_iters": "EM iter.",
    "em_collapsed": "collapsed (%)",
    "recall50_small": "recall50 small",
}
PERCENT = {
    "gt_without_pos",
    "gt_without_pos_small",
    "gt_without_pos_medium",
    "gt_without_pos_large",
    "em_collapsed",
    "em_not_converged",
    "gt_without_cand",
}


# ---- the verdict on a paired difference ------------------------------------------------------------
#: the margin of an *equivalent* verdict, in AP (fractions): ±1 AP point, the issue's default; a table's
#: robustness claims (boundaries, K, anchor scale) are equivalence claims
EQUIVALENCE_MARGIN = 0.01


def confidence_interval(differences: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The two-sided Student-t interval of the mean of paired differences (n ≥ 2)."""
    from scipy.stats import t as student_t

    n = len(differences)
    mean, se = statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(n)
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * se
    return mean - half, mean + half


def verdict(
    differences: Sequence[float], labels: tuple[str, str] = ("holds", "reversed"), margin: float | None = None
) -> str:
    """Whether paired per-seed differences (a − b) resolve a difference: ``labels[0]`` (a > b) or
    ``labels[1]`` (a < b) only when every seed's difference has the same sign AND |mean| > 2 standard
    errors (2 · sample std / √n); else *equivalent* when a ``margin`` is given and the 95 % t-interval
    of the mean lies inside (−margin, +margin); else "within noise". One seed (or none) is
    "unresolved": a single difference carries no estimate of its own spread, whatever its size.
    """
    diffs = [float(d) for d in differences if d is not None and not math.isnan(d)]
    if len(diffs) < 2:
        return "unresolved"
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    if same_sign and abs(mean) > 2 * se:
        return labels[0] if mean > 0 else labels[1]
    if margin is not None:
        low, high = confidence_interval(diffs)
        if -margin < low and high < margin:
            return "equivalent"
    return "within noise"


def seeds_needed(differences: Sequence[float], margin: float = EQUIVALENCE_MARGIN, cap: int = 99) -> int | None:
    """About how many seeds would turn "within noise" into a verdict, with the spread measured so far: the
    fewer of (a) |mean| > 2 s.e. (*holds* / *reversed*) and (b) the 95 % interval inside ±``margin``
    (*equivalent*); None when neither is reachable within ``cap`` seeds (or fewer than 2 differences)."""
    diffs = [float(d) for d in differences if d is not None and not math.isnan(d)]
    if len(diffs) < 2:
        return None
    mean, sd = abs(statistics.fmean(diffs)), statistics.stdev(diffs)
    candidates = []
    if mean > 0:
        candidates.append(math.ceil((2 * sd / mean) ** 2))
    if mean < margin:
        candidates.append(math.ceil((2.1 * sd / (margin - mean)) ** 2))  # t(0.975) ≈ 2.1 from about 10 seeds
    reachable = [max(n, len(diffs) + 1, 2) for n in candidates if n <= cap]
    return min(reachable) if reachable else None


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
        keys = (*METRICS, *EXTRA_METRICS, *DIAGNOSTICS)
        return {
            "cells": list(self.cells),
            "config": self.config,
            "paper": self.paper,
            "status": self.status,
            "seeds": self.seeds,
            "mean": {k: self.mean(k) for k in (*keys, "wall_s")},
            "std": {k: self.std(k) for k in keys},
        }


def paired_differences(row: RowResult, reference: RowResult, key: str) -> list[float | None]:
    """``row − reference`` of ``key`` seed by seed (None where either seed is missing or not complete, or where the
    two runs did not start from the same pre-trained body: :func:`~.pairing.pairing_problem`)."""
    out = []
    for mine, ref in zip(row.seeds, reference.seeds):
        ok = mine["state"] == ref["state"] == "complete" and mine.get(key) is not None and ref.get(key) is not None
        out.append(mine[key] - ref[key] if ok and pairing_problem(mine, ref) is None else None)
    return out


def pairing_report(row: RowResult, reference: RowResult) -> dict[str, Any]:
    """Per seed index (as a string, for JSON) why the pair was left out (``unpaired``) or what differs between
    two paired runs besides the seed (``caveats``: code, threads, …); empty when every pair is clean."""
    out: dict[str, dict[str, Any]] = {"unpaired": {}, "caveats": {}}
    for k, (mine, ref) in enumerate(zip(row.seeds, reference.seeds)):
        if mine["state"] != "complete" or ref["state"] != "complete":
            continue
        problem = pairing_problem(mine, ref)
        if problem is not None:
            out["unpaired"][str(k)] = problem
        elif caveats := pairing_caveats(mine, ref):
            out["caveats"][str(k)] = caveats
    return {key: value for key, value in out.items() if value}


def pairing_markdown(pairs: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Lines under a table for the pairs of (row, reference, :func:`pairing_report`) that were not clean."""
    lines = []
    for a, b, report in pairs:
        lines += [f"- {a} − {b}, seed {k}: **left out**, {why}" for k, why in report.get("unpaired", {}).items()]
        lines += [
            f"- {a} − {b}, seed {k}: paired; differs in {', '.join(c)}" for k, c in report.get("caveats", {}).items()
        ]
    if not lines:
        return []
    return ["Pairs that did not share everything but the row (`provenance.json` of the runs):", "", *lines, ""]


def comparisons(
    rows: list[RowResult], reference: str, margin: float | None = EQUIVALENCE_MARGIN
) -> dict[str, dict[str, Any]]:
    """Per row (but the reference): per :data:`PAIRED` metric the per-seed differences, their mean and
    sample std, the :func:`verdict` ("higher" / "lower" / "equivalent" within ±``margin`` / "within noise" /
    "unresolved") and, where it is within noise, about how many seeds would resolve it (:func:`seeds_needed`)."""
    ref = next(r for r in rows if r.config == reference)
    out = {}
    for row in rows:
        if row.config == reference:
            continue
        out[row.config] = {}
        for key in PAIRED:
            diffs = paired_differences(row, ref, key)
            known = [d for d in diffs if d is not None]
            out[row.config][key] = {
                "per_seed": diffs,
                "mean": statistics.fmean(known) if known else None,
                "std": statistics.stdev(known) if len(known) > 1 else None,
                "verdict": verdict(known, ("higher", "lower"), margin) if known else "pending",
                "seeds_needed": seeds_needed(known, margin) if len(known) > 1 else None,
            }
        if pairing := pairing_report(row, ref):
            out[row.config]["pairing"] = pairing
    return out


def judge_claim(claim: Claim, rows: list[RowResult], margin: float = EQUIVALENCE_MARGIN) -> dict[str, Any]:
    """A paper's claim (:class:`~.grid.Claim`) against the table's seeds, paired by seed: its AP differences
    (``per_seed``, on the seeds listed in ``seeds``), their mean, 95 % interval and the outcome — *holds*,
    *reversed* / *differs*, *equivalent* (a "higher" claim whose effect lies within ±``margin``), or *unresolved*
    with the seeds it would take. An equivalence claim with a resolved difference *differs*, and says when the
    whole 95 % interval is inside the margin."""
    by_config = {r.config: r for r in rows}
    a, b = by_config[claim.a], by_config[claim.b]
    out: dict[str, Any] = {"a": claim.a, "b": claim.b, "kind": claim.kind, "paper": claim.paper, "margin": margin}
    if claim.b_label:
        out["b_label"] = claim.b_label
    failed_b = bool(b.seeds) and all(s["state"] == "failed" for s in b.seeds)
    if failed_b and a.done():  # FSR (> 0.3): "training failed" is the paper's whole claim
        return {
            **out,
            "per_seed": [],
            "outcome": "holds" if claim.kind == "higher" else "differs",
            "note": f"{claim.b} failed to train on every seed",
        }
    by_seed = paired_differences(a, b, "AP")
    diffs = [d for d in by_seed if d is not None]
    out["per_seed"] = diffs
    out["seeds"] = [k for k, d in enumerate(by_seed) if d is not None]  # the seed of each per_seed entry
    if pairing := pairing_report(a, b):
        out["pairing"] = pairing
    if len(diffs) < 2:
        return {**out, "outcome": "pending" if not diffs else "unresolved", "seeds_needed": None}
    low, high = confidence_interval(diffs)
    found = verdict(diffs, ("higher", "lower"), margin)
    out.update(mean=statistics.fmean(diffs), ci95=[low, high], verdict=found)
    if found == "within noise":
        return {**out, "outcome": "unresolved", "seeds_needed": seeds_needed(diffs, margin)}
    if claim.kind == "equivalent":  # a resolved difference can still be smaller than the margin: say so
        inside = f", by less than ±{100 * margin:.1f} points" if -margin < low and high < margin else ""
        return {**out, "outcome": "holds" if found == "equivalent" else f"differs ({claim.a} {found}{inside})"}
    return {**out, "outcome": {"higher": "holds", "lower": "reversed", "equivalent": "equivalent"}[found]}


def claims_markdown(spec: Table, rows: list[RowResult]) -> list[str]:
    """The paper's claims about the table, one line each, with their paired verdicts (:func:`judge_claim`)."""
    if not spec.claims:
        return []
    label = {r.config: " ".join(c for c in r.cells if c) or r.config for r in rows}
    return format_claims([judge_claim(claim, rows) for claim in spec.claims], label)


def format_claims(judged: list[dict[str, Any]], label: dict[str, str]) -> list[str]:
    """Markdown lines of judged claims (:func:`judge_claim`'s dicts, also the ``claims`` of a results JSON);
    ``label``: a row's name by config (a claim's own ``b_label`` first)."""
    lines = [
        f"**The paper's claims** (paired by seed on AP; *holds* / *reversed*: every seed the same sign and |mean| "
        f"> 2 s.e.; *equivalent*: the 95 % interval inside ±{100 * EQUIVALENCE_MARGIN:.1f} points)",
        "",
        "| claim | paper (points) | ΔAP per seed (points) | mean | 95 % interval | outcome |",
        "|---|---|---|---|---|---|",
    ]
    for j in judged:
        sign = ">" if j["kind"] == "higher" else "≈"
        paper = j["paper"] if isinstance(j["paper"], str) or j["paper"] is None else f"{j['paper']:+.1f}"
        seeds = ", ".join(f"{100 * d:+.2f}" for d in j["per_seed"]) or "–"
        mean = "–" if "mean" not in j else f"{100 * j['mean']:+.2f}"
        ci = "–" if "ci95" not in j else f"[{100 * j['ci95'][0]:+.2f}, {100 * j['ci95'][1]:+.2f}]"
        outcome = j["outcome"] + (f" (~{j['seeds_needed']} seeds)" if j.get("seeds_needed") else "")
        lines.append(
            f"| {label[j['a']]} {sign} {j.get('b_label') or label[j['b']]} | {paper or '–'} | {seeds} | {mean} | {ci} "
            f"| {outcome} |"
        )
    return [*lines, ""]


def training_means(
    run_dir: Path, keys: Sequence[str] = DIAGNOSTICS, last_fraction: float = 1.0
) -> dict[str, float | None]:
    """Mean of each figure over the run's logged training records (``metrics.jsonl``), or over the last
    ``last_fraction`` of them; None for a figure the run never logged (e.g. EM iterations of ATSS)."""
    if not (run_dir / METRICS_FILE).exists():
        return {k: None for k in keys}
    records = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    records = records[len(records) - max(1, round(last_fraction * len(records))) :] if records else records
    out = {}
    for key in keys:
        values = [r[key] for r in records if r.get(key) is not None and not math.isnan(r[key])]
        out[key] = statistics.fmean(values) if values else None
    return out


def mean_positives_per_gt(run_dir: Path) -> float | None:
    """Mean positives per GT over the logged training iterations (``metrics.jsonl``)."""
    return training_means(run_dir, ("pos_per_gt",))["pos_per_gt"]


def _finite(value: Any) -> float | None:
    """A metric of final_metrics.json, None when COCOeval had nothing to measure (-1) or it is NaN."""
    value = float(value)
    return None if math.isnan(value) or value < 0 else value


def seed_result(run_dir: Path, base_dir: Path | None = None) -> dict[str, Any]:
    state = run_state(run_dir)
    out: dict[str, Any] = {"run_dir": str(run_dir), "state": state}
    info = run_dir / ABLATE_INFO
    wall = json.loads(info.read_text()).get("wall_s") if info.exists() else None
    if base_dir is not None and (base_dir / ABLATE_INFO).exists():  # the training behind a re-evaluation
        wall = (wall or 0.0) + json.loads((base_dir / ABLATE_INFO).read_text()).get("wall_s", 0.0)
    out["wall_s"] = wall
    out["provenance"] = read_provenance(base_dir or run_dir)
    adopted = (base_dir or run_dir) / ADOPTED
    if adopted.is_file():  # ablate --adopt: trained outside the grid (adopt.py)
        out["adopted_from"] = json.loads(adopted.read_text()).get("source")
    out.update(training_means(base_dir or run_dir))
    out["last_third"] = training_means(base_dir or run_dir, last_fraction=1 / 3)
    if state == "complete":
        metrics = json.loads((run_dir / FINAL_METRICS).read_text())
        out.update({k: max(float(metrics[k]), 0.0) for k in METRICS if k in metrics})
        out.update({k: _finite(metrics[k]) for k in EXTRA_METRICS if k in metrics})
    elif state == "failed":
        out.update(json.loads((run_dir / FAILED).read_text()))
    return out


def collect(
    table: str, out: str | Path, budget: str, seeds: int, carried: CarriedSeeds | None = None
) -> list[RowResult]:
    """Read every row of ``table`` from ``out/<budget>/<config>/seed<k>`` (whatever has finished); a seed whose
    folder has not finished is taken from ``carried`` (a committed results file) when it finished there."""
    root = Path(out) / budget
    rows = []
    for row in TABLES[table].rows:
        base = RUN_CONFIGS[row.config].evaluate_from
        result = RowResult(row.cells, row.config, row.paper)
        for seed in range(seeds):
            here = seed_result(root / row.config / f"seed{seed}", root / base / f"seed{seed}" if base else None)
            there = carried.seed(row.config, seed) if carried is not None else None
            result.seeds.append(there if there is not None and here["state"] not in FINAL_STATES else here)
        rows.append(result)
    return rows


# ---- formatting --------------------------------------------------------------------------------------
def format_value(mean: float | None, std: float | None, key: str = "AP") -> str:
    """``mean ± std`` of a column: fractions in percent for :data:`PERCENT`, one decimal for counts
    (positives per GT, EM iterations), three decimals for COCO metrics."""
    if mean is None:
        return "–"
    scale, digits = (
        (100.0, 1) if key in PERCENT else (1.0, 1) if key.startswith(("pos_per_gt", "em_iters")) else (1.0, 3)
    )
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if std is not None else "")


def format_difference(result: dict[str, Any]) -> str:
    """A paired difference ``+0.012 ± 0.004 (higher)``: mean ± std of the per-seed differences, verdict."""
    if result["mean"] is None:
        return result["verdict"]
    std = f" ± {result['std']:.3f}" if result["std"] is not None else ""
    return f"{result['mean']:+.3f}{std} ({result['verdict']})"


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


def markdown_table(
    table: str, rows: list[RowResult], budget: str, seeds: int, extra: dict[str, Any] | None = None
) -> str:
    """The table in the paper's layout, plus our columns: positives per GT, wall time, paper AP (%);
    with a reference row, the paired differences against it and their verdicts."""
    spec: Table = TABLES[table]
    columns = list(spec.columns)
    shown = [*columns, *(["pos_per_gt"] if "pos_per_gt" not in columns else [])]
    has_paper = any(r.paper is not None for r in spec.rows)
    header = [
        *spec.label_columns,
        *(HEADERS.get(k, k) for k in shown),
        "wall s",
        *(["paper AP (%)"] if has_paper else []),
    ]
    lines = [
        f"## {spec.title}",
        "",
        f"Budget `{budget}` ({budget_summary(budget, extra)}); {seeds} seed(s), mean ± std; "
        "COCO metrics as fractions in [0, 1] (the paper prints percent); pos/GT: mean positives per "
        "GT box during training; wall s: training + evaluation, per seed.",
        "",
    ]
    if any(k in LOG_KEYS.values() for k in columns):
        lines += [
            "Assignment figures (GTs without a positive, overall and small; mean EM iterations; collapsed "
            "fits; pos/GT) are means over the training's logged records (every 20 iterations, each the "
            "mean over its batches); '–': the detector has no such figure (FCOS; EM for ATSS).",
            "",
        ]
    by_config = iter(rows)
    for caption, section_rows in spec.sections:
        if caption:
            lines += [f"**{caption}**", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _ in section_rows:
            r = next(by_config)
            status = r.status
            if status in ("ok", "0 positives"):
                values = [format_value(r.mean(k), r.std(k), k) for k in shown]
                if status == "0 positives":
                    values[0] += " (0 positives)"
            else:
                values = [status] + [""] * (len(shown) - 1)
            wall = r.mean("wall_s")
            lines.append(
                "| "
                + " | ".join(
                    [
                        *r.cells,
                        *values,
                        "–" if wall is None else f"{wall:.0f}",
                        *([format_paper(r.paper)] if has_paper else []),
                    ]
                )
                + " |"
            )
        lines.append("")
    if spec.reference:
        lines += paired_markdown(spec, rows)
    lines += claims_markdown(spec, rows)
    by_config = {r.config: r for r in rows}
    compared = [(r.config, spec.reference) for r in rows if spec.reference and r.config != spec.reference]
    compared += [(c.a, c.b) for c in spec.claims if (c.a, c.b) not in compared]
    lines += pairing_markdown([(a, b, pairing_report(by_config[a], by_config[b])) for a, b in compared])
    notes = [
        f"- `{r.config}`: {s['status']}: {s.get('message', '')}"
        for r in rows
        for s in r.seeds
        if s["state"] == "failed"
    ][:10]
    if notes:
        lines += ["Failures:", "", *notes, ""]
    carried = {}
    for r in rows:
        for k, s in enumerate(r.seeds):
            if s.get("carried_from"):
                carried.setdefault(s["carried_from"], []).append(f"{r.config}@{k}")
    if carried:
        lines += ["Seeds carried over from committed results (`ablate --carry`; no run folder here):", ""]
        lines += [f"- {source}: {', '.join(names)}" for source, names in carried.items()]
        lines.append("")
    return "\n".join(lines)


def paired_markdown(spec: Table, rows: list[RowResult]) -> list[str]:
    """The paired differences against ``spec.reference``, one line per row, one column per metric."""
    label = {r.config: " ".join(c for c in r.cells if c) for r in rows}
    compared = comparisons(rows, spec.reference)
    lines = [
        f"**Paired differences against {label[spec.reference]}** (row − reference, seed by seed; mean ± "
        "std of the per-seed differences; verdict: *higher* / *lower* when every seed's difference has the "
        "same sign and |mean| > 2 · std / √n, else *equivalent* when the 95 % t-interval of the mean lies within "
        f"±{100 * EQUIVALENCE_MARGIN:.1f} points, else *within noise*; one seed: *unresolved*)",
        "",
        "| " + " | ".join(["Method", "ΔAP per seed", *(f"Δ{k}" for k in PAIRED)]) + " |",
        "|" + "---|" * (len(PAIRED) + 2),
    ]
    for config, result in compared.items():
        seeds = ", ".join("–" if d is None else f"{d:+.3f}" for d in result["AP"]["per_seed"])
        lines.append("| " + " | ".join([label[config], seeds, *(format_difference(result[k]) for k in PAIRED)]) + " |")
    return [*lines, ""]


def bar_chart(table: str, rows: list[RowResult], budget: str, seeds: int) -> Figure:
    """AP per row (mean ± std over seeds); failed rows drawn as an empty bar with their status."""
    labels = [" ".join(("+ voting" if c == "✓" else c) for c in r.cells if c) or r.config for r in rows]
    return plot_ablation_ap(
        labels,
        [r.mean("AP") or 0.0 for r in rows],
        [r.std("AP") or 0.0 for r in rows],
        [None if r.status == "ok" else r.status for r in rows],
        f"{TABLES[table].title[:70]}\nbudget {budget}, {seeds} seed(s)",
    )


def write_report(
    table: str,
    out: str | Path,
    budget: str,
    seeds: int,
    extra: dict[str, Any] | None = None,
    carried: CarriedSeeds | None = None,
) -> dict[str, Path]:
    """Write ``table_<key>.md``, ``.json`` and ``.png`` into ``out/<budget>/``; returns their paths."""
    rows = collect(table, out, budget, seeds, carried)
    root = Path(out) / budget
    root.mkdir(parents=True, exist_ok=True)
    paths = {"md": root / f"table_{table}.md", "json": root / f"table_{table}.json", "png": root / f"table_{table}.png"}
    paths["md"].write_text(markdown_table(table, rows, budget, seeds, extra), encoding="utf-8")
    paths["json"].write_text(json.dumps(table_data(table, rows, budget, seeds, extra), indent=1), encoding="utf-8")
    bar_chart(table, rows, budget, seeds).savefig(paths["png"], dpi=110)
    return paths


def table_data(
    table: str, rows: list[RowResult], budget: str, seeds: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The machine-readable table: every row's seeds, means and stds, and the paired comparisons."""
    data = {"table": table, "budget": budget, "seeds": seeds, "set": extra or {}, "rows": [r.to_dict() for r in rows]}
    if TABLES[table].reference:
        data["reference"] = TABLES[table].reference
        data["paired"] = comparisons(rows, TABLES[table].reference)
    if TABLES[table].claims:
        data["claims"] = [judge_claim(c, rows) for c in TABLES[table].claims]
    return data


def machine_description() -> str:
    """CPU model, core count, Python and torch versions (and the GPU, if any) of this machine."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def write_results(
    path: str | Path,
    table: str,
    out: str | Path,
    budget: str,
    seeds: int,
    extra: dict[str, Any] | None = None,
    command: str | None = None,
    carried: CarriedSeeds | None = None,
) -> Path:
    """The table's results as one small JSON file to commit: per row and seed the metrics and training
    figures (no run folders), means, stds, paired comparisons, the date, the machine and the ``command``. Seeds
    taken from ``carried`` (:mod:`.carried`) keep ``carried_from``: the file, and the date, that measured them."""
    data = table_data(table, collect(table, out, budget, seeds, carried), budget, seeds, extra)
    for row in data["rows"]:
        row["seeds"] = [{k: v for k, v in s.items() if k != "run_dir"} for s in row["seeds"]]
    data = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_description(),
        **({"command": command} if command else {}),
        **data,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


__all__ = [
    "DIAGNOSTICS",
    "EXTRA_METRICS",
    "METRICS",
    "PAIRED",
    "RowResult",
    "bar_chart",
    "collect",
    "comparisons",
    "format_value",
    "markdown_table",
    "paired_differences",
    "pairing_markdown",
    "pairing_report",
    "table_data",
    "training_means",
    "verdict",
    "EQUIVALENCE_MARGIN",
    "claims_markdown",
    "format_claims",
    "confidence_interval",
    "judge_claim",
    "seeds_needed",
    "write_report",
    "write_results",
]

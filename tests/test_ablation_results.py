"""paa_toolkit.ablation.results: the committed measured grids, a fresh local grid in their place, and the
verdicts of the paper's orderings against the seed-to-seed noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from paa_toolkit.ablation.grid import TABLES
from paa_toolkit.ablation.results import compare, load_table, markdown, read_table

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results"
GRIDS = [
    ("1R", "small"),
    ("1R", "medium"),
    ("baselines", "small"),
    ("baselines", "medium"),
    ("1L", "small"),
    ("4", "small"),
]


@pytest.mark.parametrize("table,budget", GRIDS, ids=[f"{t}-{b}" for t, b in GRIDS])
def test_committed_grid_names_its_date_machine_command_and_has_every_row_of_the_table(table, budget):
    result = read_table(COMMITTED / f"table_{table}_{budget}.json")
    assert result.measured_on and result.machine and result.command and result.noise_AP
    assert [r.config for r in result.rows] == [r.config for r in TABLES[table].rows]
    assert all(r.mean["AP"] is not None and r.num_seeds == result.seeds for r in result.rows)


def test_a_difference_within_two_standard_errors_is_unresolved_and_beyond_them_holds_or_is_reversed():
    small = load_table("1R", "small", committed=COMMITTED)  # 2 seeds per row
    c = compare(small, "paa_noaux", "iou_assign")  # +0.008 against a standard error of 0.003
    assert c.verdict == "holds" and c.diff > 2 * c.noise
    assert compare(small, "paa_ioupred", "paa_centerness").verdict == "unresolved"  # -0.001
    c = compare(small, "atss_ioupred", "atss_centerness")  # -0.007: beyond one std (0.006), within 2 s.e. (0.010)
    assert c.verdict == "unresolved" and -c.diff > max(small.row("atss_ioupred").std["AP"], 0.006)
    assert compare(small, "iou_assign", "paa_noaux").verdict == "reversed"


def test_two_one_seed_rows_need_twice_the_standard_error_of_a_difference_of_single_draws():
    medium = load_table("1R", "medium", committed=COMMITTED)  # one seed per row, stated noise 0.045 (issue 9)
    c = compare(medium, "paa_ioupred", "paa_centerness")
    assert medium.noise_AP == 0.045 and abs(c.noise - math.sqrt(2) * 0.045) < 1e-12
    c = compare(medium, "paa_ioupred", "atss_ioupred")  # -0.013: one seed each
    assert (c.diff, c.verdict) == (-0.013, "unresolved")
    assert compare(medium, "paa_noaux", "iou_assign").verdict == "holds"  # +0.160 > 2 · 0.064
    baselines = load_table("baselines", "medium", committed=COMMITTED)
    c = compare(baselines, "paa_ioupred_voting", "fcos")  # +0.039: beyond 0.01 · 2.8, within 0.045 · 2.8
    assert (c.diff, c.verdict) == (0.039, "unresolved")


def test_the_medium_budget_one_seed_noise_is_the_analysis_grids_measured_seed_spread():
    analysis = read_table(COMMITTED / "analysis.json")
    pooled = math.sqrt(sum(r.std["AP"] ** 2 for r in analysis.rows) / len(analysis.rows))
    for table in ("1R", "baselines"):
        assert load_table(table, "medium", committed=COMMITTED).noise_AP == pytest.approx(pooled, abs=0.0005)


def test_a_complete_local_grid_replaces_the_committed_one_and_an_unfinished_one_does_not(tmp_path):
    committed = tmp_path / "results"
    committed.mkdir()
    (committed / "table_1R_small.json").write_text((COMMITTED / "table_1R_small.json").read_text())
    local = tmp_path / "runs" / "small" / "table_1R.json"
    local.parent.mkdir(parents=True)
    rows = [
        {
            "cells": list(r.cells),
            "config": r.config,
            "paper": None,
            "status": "ok",
            "seeds": [{"state": "complete", "AP": 0.5}],
            "mean": {"AP": 0.5},
            "std": {"AP": None},
        }
        for r in TABLES["1R"].rows
    ]
    local.write_text(json.dumps({"table": "1R", "budget": "small", "seeds": 1, "rows": rows}))
    fresh = load_table("1R", "small", committed=committed, runs=tmp_path / "runs")
    assert fresh.fresh and fresh.source == local and fresh.rows[0].num_seeds == 1
    rows[0]["status"] = "pending"
    local.write_text(json.dumps({"table": "1R", "budget": "small", "seeds": 1, "rows": rows}))
    assert not load_table("1R", "small", committed=committed, runs=tmp_path / "runs").fresh
    assert load_table("4", "medium", committed=committed) is None


def test_markdown_shows_the_seed_spread_only_for_several_seeds():
    text = markdown(load_table("1R", "small", committed=COMMITTED))
    assert "| PAA · IoU pred. | 0.014 ± 0.000 |" in text
    assert "| FSR (> 0.3) | 0.000 |" in markdown(load_table("1L", "small", committed=COMMITTED))


def test_a_committed_report_with_a_date_is_not_called_a_local_run():
    result = read_table(COMMITTED / "analysis.json")  # write_report's layout: "date", no "measured_on"
    assert not result.fresh and result.measured_on
    assert result.measured_on == json.loads((COMMITTED / "analysis.json").read_text())["date"]


def test_a_report_row_keeps_its_assignment_figures():
    analysis = read_table(COMMITTED / "analysis.json")
    reference, gt = analysis.row("paa_ioupred"), analysis.row("paa_gt_match")
    assert 0 <= gt.mean["gt_without_pos"] < reference.mean["gt_without_pos"] <= 1
    assert analysis.row("fcos").mean.get("em_collapsed") is None  # no EM in FCOS

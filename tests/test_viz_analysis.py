"""Specifications of paa_toolkit/viz/analysis.py: the issue-9 figures draw what they are given."""

import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from paa_toolkit.assign.boundaries import boundary_cost, separate
from paa_toolkit.assign.gmm import fit_gmm
from paa_toolkit.viz.ablation import plot_paired_claims
from paa_toolkit.viz.analysis import (
    ASSIGNMENT_PLOT,
    plot_diagnostics_by_config,
    plot_em_iterations,
    plot_gmm_settings,
    plot_learning_curves,
    plot_length_scan,
    plot_run_diagnostics,
    save_assignment_plot,
)


def records(offset=0.0, em=True):
    out = []
    for i in (20, 40, 60):
        r = {
            "kind": "train",
            "iteration": i,
            "pos_per_gt": 5.0 + offset,
            "gt_without_pos": 0.1 + offset / 10,
            "gt_without_pos_small": 0.3,
            "gt_without_pos_medium": 0.0,
            "pos_per_gt_small": 3.0,
            "pos_per_gt_medium": 7.0,
        }
        if em:
            r.update(em_iters=3.0, em_collapsed=0.5)
        out.append(r)
    return out + [{"kind": "eval", "iteration": 60, "AP": 0.2}]


def gids(fig, kind="lines"):
    return {a.get_gid() for ax in fig.axes for a in getattr(ax, kind) if a.get_gid()}


def test_run_diagnostics_draw_every_logged_size_and_the_em_figures():
    fig = plot_run_diagnostics(records())
    assert {
        "gt_without_pos:all",
        "gt_without_pos:small",
        "gt_without_pos:medium",
        "pos_per_gt:all",
        "pos_per_gt:small",
        "pos_per_gt:medium",
        "em_iters",
        "em_collapsed",
    } <= gids(fig)
    assert "gt_without_pos:large" not in gids(fig)  # never logged: no line
    line = next(ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "gt_without_pos:all")
    assert list(line.get_ydata()) == pytest.approx([10.0, 10.0, 10.0])  # percent


def test_diagnostics_by_config_draw_one_mean_line_per_config_and_figure():
    fig = plot_diagnostics_by_config(
        {
            "PAA": [records(0.0), records(2.0)],
            "ATSS": [records(1.0, em=False)],
            "FCOS": [[{"kind": "train", "iteration": 20, "loss": 1.0}]],
        }
    )
    assert gids(fig) == {
        f"{k}:{n}" for k in ("pos_per_gt", "gt_without_pos", "gt_without_pos_small") for n in ("PAA", "ATSS")
    }
    paa = next(ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "pos_per_gt:PAA")
    assert list(paa.get_ydata()) == pytest.approx([6.0, 6.0, 6.0])  # mean of the two seeds


def test_em_iteration_histogram_draws_one_histogram_per_setting_with_its_median_and_count():
    fig = plot_em_iterations({"paper init": [3, 3, 4, 2], "data init": np.array([10, 12])})
    ax = fig.axes[0]
    assert {p.get_gid() for p in ax.patches} == {"hist:paper init", "hist:data init"}
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["paper init: median 3, n = 4 GTs", "data init: median 11, n = 2 GTs"]
    outline = next(p for p in ax.patches if p.get_gid() == "hist:paper init").get_xy()
    assert outline[:, 1].max() == 2  # two GTs stopped after 3 iterations


def test_gmm_settings_panel_per_setting_with_its_mixture_and_boundary():
    costs = torch.tensor([[0.1, 0.12, 0.15, 0.6, 0.62, 0.65, 0.7]], dtype=torch.float64)
    valid = torch.ones_like(costs, dtype=torch.bool)
    results = {}
    for init in ("paper", "data"):
        fit = fit_gmm(costs, valid, init=init)
        labels = separate("c", costs, valid, fit)
        results[f"{init} init"] = (fit, labels[0], float(boundary_cost(costs, labels)[0]))
    fig = plot_gmm_settings(costs[0], results)
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["paper init", "data init"]
    for ax in fig.axes:
        assert {"gmm:mixture", "boundary"} <= {ln.get_gid() for ln in ax.lines}


def test_assignment_plot_is_saved_for_runs_that_logged_diagnostics_only(tmp_path):
    (tmp_path / "paa").mkdir()
    (tmp_path / "paa" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records()))
    assert save_assignment_plot(tmp_path / "paa") == tmp_path / "paa" / ASSIGNMENT_PLOT
    assert (tmp_path / "paa" / ASSIGNMENT_PLOT).stat().st_size > 5000
    (tmp_path / "fcos").mkdir()
    (tmp_path / "fcos" / "metrics.jsonl").write_text(json.dumps({"kind": "train", "iteration": 1, "loss": 1.0}) + "\n")
    assert save_assignment_plot(tmp_path / "fcos") is None and not (tmp_path / "fcos" / ASSIGNMENT_PLOT).exists()


def test_starvation_by_size_draws_every_rule_in_each_size_panel():
    from paa_toolkit.viz.analysis import plot_starvation_by_size

    def records(scale):
        return [
            {
                "kind": "train",
                "iteration": i,
                "pos_per_gt_small": scale * i,
                "gt_without_pos_small": 0.1,
                "pos_per_gt_medium": 2.0,
                "gt_without_pos_medium": 0.0,
            }
            for i in (10, 20)
        ]

    fig = plot_starvation_by_size({"PAA (c)": [records(1.0)], "TAL (TOOD)": [records(0.5), records(0.7)]})
    small = [ax for ax in fig.axes if ax.get_title() == "Positives per small GT"][0]
    lines = {line.get_gid(): line for line in small.lines}
    assert set(lines) == {"pos_per_gt_small:PAA (c)", "pos_per_gt_small:TAL (TOOD)"}
    assert list(lines["pos_per_gt_small:TAL (TOOD)"].get_ydata()) == pytest.approx([6.0, 12.0])  # mean of 2 seeds
    starved = [ax for ax in fig.axes if ax.get_title() == "Small GTs without a positive (%)"][0]
    assert all(list(line.get_ydata()) == pytest.approx([10.0, 10.0]) for line in starved.lines)
    assert len(fig.axes) == 6


def test_learning_curves_draw_ap_in_points_from_the_eval_records_mean_over_seeds():
    def curve(values):
        return [{"kind": "train", "iteration": 100, "AP": 9.0}] + [
            {"kind": "eval", "iteration": it, "AP": ap, "AP50": ap + 0.2} for it, ap in zip((300, 600), values)
        ]

    fig = plot_learning_curves(
        {"PAA": [curve((0.2, 0.4)), curve((0.3, 0.5))], "FCOS": [curve((0.1, 0.2))]}, keys=("AP", "AP50")
    )
    assert gids(fig) == {"AP:PAA", "AP:FCOS", "AP50:PAA", "AP50:FCOS"}
    paa = next(ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "AP:PAA")
    assert list(paa.get_xdata()) == [300, 600] and list(paa.get_ydata()) == pytest.approx([25.0, 45.0])


def test_the_length_scan_draws_final_ap_by_length_the_recipe_curves_and_each_doubling_per_detector():
    def row(detector, seed, length, ap):
        return {
            "detector": detector,
            "seed": seed,
            "max_iters": length,
            "AP": ap,
            "curve": [[length // 2, ap - 0.1], [length, ap]],
        }

    runs = [row("PAA", 1, 100, 0.50), row("PAA", 2, 100, 0.54), row("PAA", 1, 200, 0.60), row("PAA", 2, 200, 0.62)]
    runs += [row("FCOS", 1, 200, 0.40)]
    doublings = [{"detector": "PAA", "from_iters": 100, "per_seed_points": {1: 10.0, 2: 8.0}, "mean_points": 9.0}]
    fig = plot_length_scan(runs, doublings, recipe_length=200)
    lines = {ln.get_gid(): ln for ax in fig.axes for ln in ax.lines if ln.get_gid()}
    assert set(lines) == {"length:PAA", "length:FCOS", "curve:PAA", "curve:FCOS"}
    assert list(lines["length:PAA"].get_xdata()) == [100, 200]
    assert list(lines["length:PAA"].get_ydata()) == pytest.approx([52.0, 61.0])  # mean over seeds, in points
    assert list(lines["curve:PAA"].get_ydata()) == pytest.approx([51.0, 61.0])  # the 200-iteration runs only
    bars = [p for ax in fig.axes for p in ax.patches if p.get_gid()]
    assert [(p.get_gid(), p.get_height()) for p in bars] == [("doubling:PAA:100", pytest.approx(9.0))]


def test_paired_claims_draw_each_schedules_mean_and_interval_beside_the_papers_difference():
    claims = [
        {"label": "PAA > ATSS", "paper": 1.0, "by_length": {"2,400": {"per_seed": [1.0, 1.4], "ci95": [0.2, 2.2]}}},
        {
            "label": "voting",
            "paper": 0.2,
            "by_length": {"2,400": {"per_seed": [0.8], "ci95": None}, "9,600": {"per_seed": [0.5, 0.7], "ci95": None}},
        },
    ]
    fig = plot_paired_claims(claims)
    (ax,) = fig.axes
    means = {ln.get_gid(): ln for ln in ax.lines if ln.get_gid()}
    assert set(means) == {"claim:PAA > ATSS:2,400", "claim:voting:2,400", "claim:voting:9,600"}
    assert list(means["claim:PAA > ATSS:2,400"].get_xdata()) == pytest.approx([1.2])  # the mean of the seeds
    assert list(means["claim:voting:9,600"].get_xdata()) == pytest.approx([0.6])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["PAA > ATSS", "voting"]  # top to bottom: table order
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["2,400", "9,600", "the paper (COCO)"]

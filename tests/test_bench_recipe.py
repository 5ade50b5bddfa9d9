"""Specification of the convergence arithmetic of ``benchmarks/bench_recipe.py`` (issue 19): the doublings
AP(2N) − AP(N) per detector and seed, the seed spread at the recipe's length, and the detectors' paired order."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_recipe  # noqa: E402


def row(detector: str, seed: int, length: int, ap: float) -> dict:
    return {"detector": detector, "seed": seed, "lr": 0.01, "batch_size": 4, "new_layers_lr_factor": 1.0} | {
        "max_iters": length,
        "AP": ap,
    }


def test_a_doubling_pairs_the_same_seed_and_schedule_only():
    rows = [row("PAA", 1, 100, 0.50), row("PAA", 1, 200, 0.53), row("PAA", 2, 100, 0.40), row("PAA", 2, 200, 0.42)]
    rows += [row("ATSS", 1, 200, 0.9), row("PAA", 3, 200, 0.9)]  # no N run: no doubling
    rows += [{**row("PAA", 1, 200, 0.7), "lr": 0.02}]  # another lr: not the same training
    (gain,) = bench_recipe.doublings(rows)
    assert (gain["detector"], gain["from_iters"], gain["to_iters"]) == ("PAA", 100, 200)
    assert gain["per_seed_points"] == pytest.approx({1: 3.0, 2: 2.0})
    assert gain["mean_points"] == pytest.approx(2.5) and gain["std_points"] == pytest.approx(0.5**0.5)


def test_the_spread_at_the_recipe_length_has_no_std_from_one_seed():
    at_n = bench_recipe.at_length([row("PAA", 1, 100, 0.5), row("PAA", 2, 100, 0.6), row("FCOS", 1, 100, 0.4)], 100)
    assert at_n["PAA"]["mean_points"] == pytest.approx(55.0) and at_n["PAA"]["std_points"] == pytest.approx(50**0.5)
    assert at_n["FCOS"]["std_points"] is None


def test_the_order_is_paired_by_seed_and_judged():
    rows = [row("PAA", s, 100, 0.60 + 0.01 * s) for s in (1, 2, 3)]  # the seed moves both detectors alike
    rows += [row("FCOS", s, 100, 0.56 + 0.01 * s + 0.001 * (s % 2)) for s in (1, 2, 3, 4)]  # seed 4: no PAA pair
    rows += [row("ATSS", s, 100, 0.60 + 0.01 * s + 0.001 * (-1) ** s) for s in (1, 2, 3)]
    rows += [row("RETINANET", 1, 100, 0.3)]
    order = {o["b"]: o for o in bench_recipe.ordering(bench_recipe.at_length(rows, 100))}
    assert sorted(order["FCOS"]["per_seed_points"]) == [1, 2, 3]
    assert order["FCOS"]["mean_points"] == pytest.approx(4 - 0.2 / 3) and order["FCOS"]["verdict"] == "holds"
    assert order["ATSS"]["verdict"] == "equivalent" and order["ATSS"]["margin_points"] == pytest.approx(1.0)
    assert order["FCOS"]["seeds_needed"] is None  # resolved: no more seeds to ask for
    assert order["RETINANET"]["verdict"] == "unresolved" and order["RETINANET"]["seeds_needed"] is None
    assert "PAA" not in order and bench_recipe.ordering(bench_recipe.at_length(rows[3:], 100)) == []


@pytest.mark.parametrize(
    ("arch", "rule", "detector"),
    [("paa", "c", "PAA"), ("paa", "a", "PAA (a)"), ("paa", "atss", "ATSS"), ("fcos", "c", "FCOS")],
)
def test_a_run_is_named_by_its_architecture_then_its_rule(arch, rule, detector):
    assert bench_recipe._detector({"model": {"arch": arch}, "assign": {"rule": rule}}) == detector


def test_a_resumed_run_reports_no_training_time(tmp_path):
    whole, resumed, untimed = (tmp_path / name for name in ("whole", "resumed", "untimed"))
    for run in (whole, resumed, untimed):
        run.mkdir()
    (whole / "timing.json").write_text('{"wall_s": 1750, "cpu_threads": 1, "resumed": false}')
    (resumed / "timing.json").write_text('{"wall_s": 2900, "cpu_threads": 1, "resumed": true}')
    assert bench_recipe._wall_s(whole) == 1750
    assert bench_recipe._wall_s(resumed) is None and bench_recipe._wall_s(untimed) is None

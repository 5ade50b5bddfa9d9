"""The verdicts that settle a claim (ablation/report.py): holds / reversed beyond two standard errors,
equivalent within a margin, unresolved with the seeds it would take — and the paper's claims per table."""

from __future__ import annotations

import json

import pytest

from paa_toolkit.ablation.grid import TABLES, Claim
from paa_toolkit.ablation.report import (
    EQUIVALENCE_MARGIN,
    RowResult,
    claims_markdown,
    confidence_interval,
    format_claims,
    judge_claim,
    seeds_needed,
    verdict,
)


def test_equivalent_needs_the_whole_95_percent_interval_inside_the_margin():
    tight = [0.001, -0.002, 0.0005, 0.0015, -0.001]  # mean 0.0, sd 0.0015: interval ±0.0019
    assert verdict(tight, margin=EQUIVALENCE_MARGIN) == "equivalent"
    assert verdict(tight) == "within noise"  # no margin given: the old two-way verdict
    wide = [0.012, -0.011, 0.004, -0.006]  # mean 0, but the interval reaches past ±0.01
    low, high = confidence_interval(wide)
    assert low < -EQUIVALENCE_MARGIN and high > EQUIVALENCE_MARGIN
    assert verdict(wide, margin=EQUIVALENCE_MARGIN) == "within noise"


def test_a_resolved_difference_wins_over_equivalence_and_one_seed_stays_unresolved():
    assert verdict([0.004, 0.005, 0.0045], margin=0.01) == "holds"  # tiny but resolved: a difference, not "equal"
    assert verdict([-0.03, -0.02, -0.025], margin=0.01) == "reversed"
    assert verdict([0.0], margin=0.01) == "unresolved"


def test_the_t_interval_widens_with_few_seeds():
    low2, high2 = confidence_interval([0.0, 0.002])  # t(0.975, 1) = 12.7
    assert high2 - low2 == pytest.approx(2 * 12.706 * 0.001, rel=1e-3)


def test_seeds_needed_estimates_the_cheaper_way_to_a_verdict():
    assert seeds_needed([0.01, -0.01]) == 9  # mean 0, sd 0.0141: equivalence after (2.1 · 0.0141 / 0.01)² ≈ 8.8
    # mean 0.004, sd 0.004: holds after (2 · 0.004 / 0.004)² = 4 seeds; equivalence after (2.1 · 0.004 / 0.006)² ≈ 2
    assert seeds_needed([0.0, 0.004, 0.008]) == 4
    assert seeds_needed([0.03, 0.01, -0.01], margin=0.01) == 16  # |mean| = margin: only "holds", (2 · 0.02 / 0.01)²
    assert seeds_needed([0.5]) is None  # one seed: no spread to extrapolate from


def _seeds(aps):
    return [{"state": "complete", "AP": ap} for ap in aps]


def test_claims_are_judged_seed_by_seed_with_the_paper_gap_beside_them():
    rows = [
        RowResult(("a",), "paa_ioupred", None, _seeds([0.50, 0.52, 0.51])),
        RowResult(("b",), "fnp_5", None, _seeds([0.47, 0.50, 0.48])),
        RowResult(("c",), "boundary_a", None, _seeds([0.501, 0.519, 0.511])),
        RowResult(("d",), "fsr_0.3", None, [{"state": "failed", "status": "diverged"}] * 3),
    ]
    higher = judge_claim(Claim("paa_ioupred", "fnp_5", "higher", 1.1), rows)
    assert higher["outcome"] == "holds" and higher["per_seed"] == pytest.approx([0.03, 0.02, 0.03])
    same = judge_claim(Claim("boundary_a", "paa_ioupred", "equivalent"), rows)
    assert same["outcome"] == "holds" and same["verdict"] == "equivalent"
    opposite = judge_claim(Claim("fnp_5", "paa_ioupred", "equivalent"), rows)
    assert opposite["outcome"] == "differs (fnp_5 lower)"
    rows.append(RowResult(("e",), "boundary_d", None, _seeds([0.4927, 0.5127, 0.5025])))  # −0.73, −0.73, −0.75
    small = judge_claim(Claim("boundary_d", "paa_ioupred", "equivalent"), rows)
    assert small["outcome"] == "differs (boundary_d lower, by less than ±1.0 points)"
    failed = judge_claim(Claim("paa_ioupred", "fsr_0.3", "higher", "training failed"), rows)
    assert failed["outcome"] == "holds" and "failed to train" in failed["note"]


def test_a_claim_names_the_seeds_its_differences_come_from():
    missing = {"state": "pending"}
    rows = [
        RowResult(("a",), "paa_ioupred", None, [missing, *_seeds([0.50, 0.52, 0.51])]),
        RowResult(("b",), "fnp_10", None, [*_seeds([0.49]), missing, *_seeds([0.51, 0.50])]),
    ]
    j = judge_claim(Claim("paa_ioupred", "fnp_10", "higher", 0.5), rows)
    assert j["seeds"] == [2, 3] and j["per_seed"] == pytest.approx([0.01, 0.01])


def test_an_unresolved_claim_says_how_many_seeds_it_would_take():
    rows = [
        RowResult(("a",), "paa_ioupred", None, _seeds([0.50, 0.52])),
        RowResult(("b",), "atss_ioupred", None, _seeds([0.51, 0.50])),
    ]
    j = judge_claim(Claim("paa_ioupred", "atss_ioupred", "higher", 1.0), rows)
    assert j["outcome"] == "unresolved" and isinstance(j["seeds_needed"], int) and j["seeds_needed"] > 2


def test_every_table_of_the_paper_states_its_claims_on_rows_it_has():
    for key in ("1L", "1R", "4", "baselines"):
        spec = TABLES[key]
        configs = {row.config for row in spec.rows}
        assert spec.claims and all(c.a in configs and c.b in configs for c in spec.claims), key
    kinds = {c.a: c.kind for c in TABLES["4"].claims}
    assert set(kinds.values()) == {"equivalent"}  # the robustness claims of Table 4
    lines = claims_markdown(TABLES["1R"], [RowResult(r.cells, r.config, r.paper, []) for r in TABLES["1R"].rows])
    assert any("pending" in line for line in lines)


def test_the_claims_of_a_results_file_render_with_their_seeds_and_outcome():
    rows = [
        RowResult(("a",), "paa_ioupred", None, _seeds([0.50, 0.52, 0.51])),
        RowResult(("b",), "fnp_5", None, _seeds([0.47, 0.50, 0.48])),
    ]
    judged = json.loads(json.dumps([judge_claim(Claim("paa_ioupred", "fnp_5", "higher", 1.1), rows)]))  # a file's
    line = format_claims(judged, {"paa_ioupred": "PAA", "fnp_5": "FNP (5)"})[-2]
    assert line.startswith("| PAA > FNP (5) | +1.1 | +3.00, +2.00, +3.00 | +2.67 |") and line.endswith("| holds |")


def test_table_4s_claims_name_the_reference_as_its_own_half_of_the_table_calls_it():
    rows = [RowResult(r.cells, r.config, r.paper, _seeds([0.6, 0.61])) for r in TABLES["4"].rows]
    lines = claims_markdown(TABLES["4"], rows)
    assert any(line.startswith("| K = 5 ≈ K = 9 |") for line in lines)
    assert any(line.startswith("| scale 10 ≈ scale 8 |") for line in lines)
    assert not any("K = 25 ≈ scale 8" in line for line in lines)

"""Specifications of the explorers, headless: set a control as a user would, check the label and figures."""

import matplotlib

matplotlib.use("Agg")

import re

import pytest
import torch

pytest.importorskip("ipywidgets")

from paa_toolkit.assign import ATSSAssigner, MaxIoUAssigner, PAAAssigner, replay_assignment
from paa_toolkit.assign.gmm import fit_gmm_sklearn
from paa_toolkit.engine.run_files import save_trace
from paa_toolkit.structures import PaddedTargets
from paa_toolkit.viz.assignment import count_marks
from paa_toolkit.widgets import assignment_explorer, gmm_explorer, voting_explorer
from paa_toolkit.widgets.compute import (
    nms_then_vote,
    open_source,
    random_snapshot,
    two_cluster_costs,
)


def targets_of(snap):
    return PaddedTargets(snap.gt_boxes, snap.gt_labels, snap.gt_valid)


def positives(matched_gt, image, gt):
    return int((matched_gt[image] == gt).sum())


# ---- sources and the explorer's first view ----


def test_the_explorer_starts_with_the_snapshot_own_k_and_lambda():
    snap = random_snapshot(0, topk=5, score_lambda=0.5)  # levels of 64, 16 and 4 anchors: 5 + 5 + 4 slots
    ex = assignment_explorer(snap)
    assert (ex.topk.value, ex.score_lambda.value, ex.rule.value) == (5, 0.5, "c")


def test_open_source_rejects_a_folder_without_trace_files(tmp_path):
    with pytest.raises(ValueError, match="no iter_XXXXXX.pt"):
        open_source(tmp_path)


# ---- assignment explorer ----


def test_assignment_explorer_starts_with_the_snapshot_positive_count():
    snap = random_snapshot(0)
    ex = assignment_explorer(snap)
    assert (ex.image.value, ex.gt.value) == (0, 0)
    assert ex.label.value == f"positives: {positives(snap.matched_gt, 0, 0)}"


def test_fnp_3_gives_three_positives():
    ex = assignment_explorer(random_snapshot(0))
    with ex.hold():
        ex.rule.value = "fnp"
        ex.fnp_num.value = 3
    assert ex.label.value == "positives: 3"
    assert count_marks(ex.figures["overlay"], "centers:positive") == 3
    assert count_marks(ex.figures["histogram"], "rug:positive") == 3


def test_changing_fnp_n_updates_the_label_and_the_redrawn_images():
    ex = assignment_explorer(random_snapshot(0), rule="fnp", fnp_num=2)
    assert ex.label.value == "positives: 2"
    old_png = ex.overlay.value
    ex.fnp_num.value = 5
    assert ex.label.value == "positives: 5"
    assert ex.overlay.value != old_png


def test_choosing_another_image_and_gt_counts_that_gts_positives():
    snap = random_snapshot(0)
    ex = assignment_explorer(snap)
    ex.gt.value = 1
    assert ex.label.value == f"positives: {positives(snap.matched_gt, 0, 1)}"
    ex.image.value = 1
    assert [g for _, g in ex.gt.options] == [0]  # image 1 has a single GT
    assert ex.label.value == f"positives: {positives(snap.matched_gt, 1, 0)}"


@pytest.mark.parametrize("rule, assigner", [("atss", ATSSAssigner(topk=4)), ("max_iou", MaxIoUAssigner(topk=4))])
def test_baseline_rules_count_the_baseline_positives(rule, assigner):
    snap = random_snapshot(0)
    expected = assigner(snap.anchor_grid, targets_of(snap)).matched_gt
    ex = assignment_explorer(snap)
    ex.rule.value = rule
    assert ex.label.value == f"positives: {positives(expected, 0, 0)}"
    assert ex.view["xlabel"].startswith("IoU")


def test_changing_k_recomputes_the_assignment_with_the_per_class_logits():
    snap = random_snapshot(2, with_logits=True)
    expected = PAAAssigner(topk=1)(snap.anchor_grid, targets_of(snap), snap.cls_logits, snap.pred_boxes)
    ex = assignment_explorer(snap)
    ex.topk.value = 1
    assert ex.label.value == f"positives: {positives(expected.matched_gt, 0, 0)}"
    assert "exact" in ex.status.value


def test_hold_redraws_once_after_all_changes():
    ex = assignment_explorer(random_snapshot(0))
    calls = []
    ex._update = lambda: calls.append(ex.rule.value)
    with ex.hold():
        ex.rule.value = "fnp"
        ex.fnp_num.value = 4
        ex.gt.value = 1
    assert calls == ["fnp"]


def test_trace_folder_iterations_switch_the_snapshot(tmp_path):
    snaps = {100: random_snapshot(0), 300: random_snapshot(5)}
    counts = {it: positives(s.matched_gt, 0, 0) for it, s in snaps.items()}
    assert counts[100] != counts[300]  # the seeds are chosen so that the count changes
    (tmp_path / "trace").mkdir()
    for it, snap in snaps.items():
        save_trace(tmp_path / "trace" / f"iter_{it:06d}.pt", snap, iteration=it)
    ex = assignment_explorer(tmp_path)  # a run folder: its trace/ is used
    assert list(ex.iteration.options) == [100, 300]
    assert ex.label.value == f"positives: {counts[300]}"  # starts at the last iteration
    ex.iteration.value = 100
    assert ex.label.value == f"positives: {counts[100]}"
    assert "iteration 100" in ex.status.value


def test_a_trace_file_of_the_detectors_assignment_snapshot_opens(tmp_path):
    snap = random_snapshot(0)
    save_trace(tmp_path / "iter_000007.pt", snap, iteration=7)
    ex = assignment_explorer(tmp_path / "iter_000007.pt")
    assert list(ex.iteration.options) == [7]
    assert ex.label.value == f"positives: {positives(snap.matched_gt, 0, 0)}"


# ---- GMM explorer ----


def test_em_step_button_advances_one_iteration_and_run_reaches_scikit_learn():
    ex = gmm_explorer()
    last = len(ex.history) - 1
    assert ex.label.value == f"iteration: 0 / {last}"
    ex.step_button.click()
    assert ex.label.value == f"iteration: 1 / {last}"
    ex.run_button.click()
    assert ex.label.value == f"iteration: {last} / {last}"
    ref = fit_gmm_sklearn(ex.costs)
    assert torch.allclose(ex.history[-1]["means"], ref.means[0], atol=1e-6)
    ex.reset_button.click()
    assert ex.label.value == f"iteration: 0 / {last}"


def test_changing_a_cluster_slider_resamples_the_costs_and_restarts_em():
    ex = gmm_explorer(fg_count=8, bg_count=37)
    ex.step_button.click()
    ex.fg_count.value = 20
    assert len(ex.costs) == 57
    assert torch.equal(ex.costs, two_cluster_costs(1.0, 0.3, 20, 4.0, 0.8, 37, 0))
    assert ex.label.value.startswith("iteration: 0 /")
    sklearn_foreground = int((fit_gmm_sklearn(ex.costs).labels == 0).sum())
    assert count_marks(ex.figures["comparison"].axes[1], "rug:positive") == sklearn_foreground


def test_on_narrow_costs_the_explorer_shows_the_early_stop_and_the_converged_fit_beside_it():
    # the paper's sigma = 1 start on two groups 0.7 apart, each of spread 0.05: tol 1e-3 stops at iteration 3
    ex = gmm_explorer(fg_mean=0.9, fg_std=0.05, fg_count=15, bg_mean=1.6, bg_std=0.05, bg_count=20)
    assert len(ex.history) - 1 == 3 and ex.converged_differs
    assert len(ex.figures["comparison"].axes) == 3
    assert "EM stopped after 3 iterations (tol 1e-3), converged after" in ex.status.value
    ex.init.value = "data"  # the data-driven start separates the groups at once
    assert not ex.converged_differs and len(ex.figures["comparison"].axes) == 2


# ---- voting explorer ----

CANDIDATES = {
    "boxes": torch.tensor([[10.0, 10, 30, 30], [12, 11, 32, 31], [40, 40, 60, 60]]),
    "scores": torch.tensor([0.9, 0.8, 0.7]),
    "labels": torch.tensor([0, 0, 0]),
}


def shift_by_sigma(det_boxes, det_scores, det_labels, cand_boxes, cand_scores, cand_labels, sigma):
    return det_boxes + sigma  # a stand-in voting rule that shows which σ reached it


def test_voting_explorer_counts_nms_survivors_and_passes_sigma_to_voting():
    ex = voting_explorer(None, CANDIDATES, voting_fn=shift_by_sigma, sigma=0.01, nms_thresh=0.5)
    assert ex.label.value == "detections: 2"  # the first two boxes overlap with IoU 0.75
    ex.nms_thresh.value = 0.9
    assert ex.label.value == "detections: 3"
    ex.sigma.value = 0.1
    assert torch.allclose(ex.after["boxes"], ex.before["boxes"] + 0.1)
    assert "mean shift 0.10 px" in ex.status.value


def test_voting_explorer_shows_the_given_detections_at_the_initial_threshold():
    dets = {k: v[:1] for k, v in CANDIDATES.items()}
    ex = voting_explorer(dets, CANDIDATES, voting_fn=shift_by_sigma, nms_thresh=0.5)
    assert ex.label.value == "detections: 1"
    ex.nms_thresh.value = 0.55
    assert ex.label.value == "detections: 2"
    ex.nms_thresh.value = 0.5000000000000001  # what the browser's slider sends back for 0.5
    assert ex.label.value == "detections: 1"


def test_library_score_voting_moves_a_box_towards_its_overlapping_candidates():
    pytest.importorskip("paa_toolkit.model.postprocess")
    before, after = nms_then_vote(CANDIDATES, sigma=0.025, nms_thresh=0.5)
    assert len(before["boxes"]) == 2
    voted = after["boxes"][0]
    assert (voted >= CANDIDATES["boxes"][0] - 1e-4).all() and (voted <= CANDIDATES["boxes"][1] + 1e-4).all()
    assert voted[0] > CANDIDATES["boxes"][0, 0]  # the second candidate pulled it to the right


def test_assignment_explorer_starts_on_the_given_gt_and_reports_both_em_fits():
    snap = random_snapshot(0, with_logits=True)
    ex = assignment_explorer(snap, image=1, gt=0)
    assert (ex.image.value, ex.gt.value) == (1, 0)
    assert ex.label.value == f"positives: {int((snap.matched_gt[1] == 0).sum())}"
    assert re.search(r"EM \d+ iterations \(run to convergence: \d+", ex.status.value)


# ---- several rules on one GT (issue 20) ----


def test_rule_comparison_shows_each_rule_on_the_same_gt_with_its_own_positive_count():
    from paa_toolkit.assign import build_assigner
    from paa_toolkit.widgets import rule_comparison_explorer

    snap = random_snapshot(2, with_logits=True)
    ex = rule_comparison_explorer(snap, image=0, gt=1)
    assert list(ex.views) == ["c", "atss", "tal", "simota"]
    for name, view in ex.views.items():  # each column: the rule's own assigner run on the trace, this GT
        direct = build_assigner(snap.settings, rule=name)(
            snap.anchor_grid, targets_of(snap), snap.cls_logits, snap.pred_boxes
        )
        assert view["num_positive"] == positives(direct.matched_gt, 0, 1), name
    assert ex.label.value == " | ".join(f"{n}: {v['num_positive']}" for n, v in ex.views.items())
    fig = ex.figures["comparison"]
    assert sorted(a.get_gid() for a in fig.axes if a.get_gid()) == sorted(f"rule:{n}" for n in ex.views)
    assert ex.views["tal"]["xlabel"].startswith("alignment metric") and ex.views["c"]["fit"] is not None
    with ex.hold():
        ex.rules.value = ("c", "simota")
    assert list(ex.views) == ["c", "simota"]


# ---- every traced iteration through several rules (notebook 07) ----


def test_replay_rules_counts_each_rule_s_positives_per_gt_at_every_traced_iteration():
    from paa_toolkit.assign.base import positives_per_gt
    from paa_toolkit.widgets.compute import replay_rules

    snaps = {0: random_snapshot(0, with_logits=True), 100: random_snapshot(5, with_logits=True)}
    replays = replay_rules(snaps, ("c", "atss", "tal", "simota"))
    assert replays.iterations == [0, 100]
    for it, snap in snaps.items():
        for rule in ("c", "atss", "tal", "simota"):
            own = replay_assignment(snap, rule).assignment.matched_gt
            assert torch.equal(replays.positives[rule][it], positives_per_gt(own, snap.gt_valid)), (rule, it)
    # the rule the trace was recorded with replays to the training assignment
    assert torch.equal(replays.positives["c"][0], positives_per_gt(snaps[0].matched_gt, snaps[0].gt_valid))
    # ATSS never looks at the model: the same counts whatever the predictions
    assert torch.equal(replays.positives["atss"][0], replays.positives["atss"][100])
    assert set(replays.dynamic_k) == {0, 100} and bool((replays.dynamic_k[0] >= 1).all())


def test_replay_rules_knows_each_gt_s_image_size_and_anchor_centres_inside():
    from paa_toolkit.widgets.compute import replay_rules

    snap = random_snapshot(0, with_logits=True)  # GTs 8,8,40,36 and 30,20,60,60 (image 0), 10,10,50,50 (image 1)
    replays = replay_rules([snap], ("tal",))
    assert replays.image.tolist() == [0, 0, 1] and replays.gt.tolist() == [0, 1, 0]
    assert replays.area.tolist() == [32.0 * 28.0, 30.0 * 40.0, 40.0 * 40.0]
    assert replays.size.tolist() == [0, 1, 1]  # small below 32², medium below 96²
    # stride 8 centres at 4, 12, ..., 60; stride 16 at 8, 24, 40, 56; stride 32 at 16, 48
    # GT 0 (8..40 × 8..36): x 12..36 (4) × y 12..28 (3), (24, 24), (16, 16) → 12 + 1 + 1; a centre on a border is out
    assert replays.centres_inside.tolist()[0] == 14
    assert bool((replays.positives["tal"][0] <= replays.centres_inside.clamp(max=13)).all())


def test_replay_rules_records_read_like_the_training_log_by_size():
    from paa_toolkit.viz.analysis import plot_starvation_by_size
    from paa_toolkit.widgets.compute import replay_rules

    snaps = {0: random_snapshot(0, with_logits=True), 50: random_snapshot(3, with_logits=True)}
    replays = replay_rules(snaps, ("c", "tal"))
    records = replays.records("tal")
    assert [r["iteration"] for r in records] == [0, 50] and all(r["kind"] == "train" for r in records)
    count = replays.positives["tal"][50].double()
    assert records[1]["pos_per_gt"] == pytest.approx(float(count.mean()))
    assert records[1]["pos_per_gt_medium"] == pytest.approx(float(count[replays.size == 1].mean()))
    assert records[1]["gt_without_pos_small"] == pytest.approx(float((count[replays.size == 0] == 0).double().mean()))
    assert records[1]["pos_per_gt_large"] != records[1]["pos_per_gt_large"]  # no large GT: NaN, not 0
    assert torch.equal(replays.starved("tal", 50), replays.positives["tal"][50] == 0)
    fig = plot_starvation_by_size({rule: [replays.records(rule)] for rule in ("c", "tal")})
    assert {line.get_gid() for ax in fig.axes for line in ax.lines} >= {
        "pos_per_gt_small:tal",
        "gt_without_pos_medium:c",
    }

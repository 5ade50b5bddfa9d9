"""Replaying an assignment from a recorded snapshot (assign/replay.py): the snapshot's own settings by default."""

import dataclasses

import pytest
import torch

from paa_toolkit.assign import PAAAssigner
from paa_toolkit.assign.replay import replay_assignment
from paa_toolkit.structures import PaddedTargets
from paa_toolkit.widgets.compute import random_snapshot


def targets_of(snap):
    return PaddedTargets(snap.gt_boxes, snap.gt_labels, snap.gt_valid)


def test_replay_with_the_training_settings_reproduces_the_training_assignment():
    snap = random_snapshot(0)
    replay = replay_assignment(snap, "c")
    assert replay.exact
    assert torch.equal(replay.assignment.matched_gt, snap.matched_gt)


def test_a_run_trained_with_another_lambda_replays_with_its_own_lambda():
    snap = random_snapshot(3, score_lambda=0.25)
    replay = replay_assignment(snap)
    assert replay.exact and replay.note == "training costs (exact)"
    assert torch.equal(replay.assignment.matched_gt, snap.matched_gt)
    other = replay_assignment(snap, score_lambda=1.0)  # λ = 1 is a different assignment of this batch
    assert not torch.equal(other.assignment.matched_gt, snap.matched_gt)


def test_replay_with_another_k_and_cls_logits_equals_the_assigner_run_directly():
    snap = random_snapshot(1, with_logits=True)
    replay = replay_assignment(snap, "a", topk=2, score_lambda=0.5)
    direct = PAAAssigner(topk=2, score_lambda=0.5, rule="a")(
        snap.anchor_grid, targets_of(snap), snap.cls_logits, snap.pred_boxes
    )
    assert replay.exact
    assert torch.equal(replay.assignment.matched_gt, direct.matched_gt)


def test_replay_with_another_lambda_but_no_cls_logits_is_marked_approximate():
    replay = replay_assignment(random_snapshot(0), "c", score_lambda=2.0)
    assert not replay.exact and "approximated" in replay.note


def test_replay_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="unknown rule 'e'"):
        replay_assignment(random_snapshot(0), "e")


def test_a_snapshot_fitted_with_the_data_init_replays_with_it():
    snap = random_snapshot(4)
    data_init = replay_assignment(snap, gmm_init="data", gmm_tol=1e-8)
    assert data_init.exact and data_init.note == "training costs (exact)"
    assert not torch.equal(data_init.assignment.matched_gt, snap.matched_gt)  # this batch: another split
    snap.settings = dataclasses.replace(snap.settings, gmm_init="data", gmm_tol=1e-8)
    again = replay_assignment(snap)  # no arguments: the recorded GMM settings
    assert torch.equal(again.assignment.matched_gt, data_init.assignment.matched_gt)


def test_another_matcher_policy_recomputes_the_candidates():
    snap = random_snapshot(1, with_logits=True)
    replay = replay_assignment(snap, low_quality="gt")
    direct = PAAAssigner(topk=snap.settings.topk, low_quality="gt")(
        snap.anchor_grid, targets_of(snap), snap.cls_logits, snap.pred_boxes
    )
    assert replay.exact and replay.note == "recomputed costs (exact)"
    assert torch.equal(replay.assignment.matched_gt, direct.matched_gt)


def test_replay_rejects_an_unknown_setting():
    with pytest.raises(ValueError, match="unknown assignment setting"):
        replay_assignment(random_snapshot(0), separation="c")


@pytest.mark.parametrize("rule", ["tal", "simota"])
def test_paas_successors_replay_on_a_paa_snapshot_as_their_assigner_run_directly(rule):
    from paa_toolkit.assign import build_assigner

    snap = random_snapshot(1, with_logits=True)
    replay = replay_assignment(snap, rule)
    direct = build_assigner(rule=rule)(snap.anchor_grid, targets_of(snap), snap.cls_logits, snap.pred_boxes)
    assert replay.exact and replay.rule == rule
    assert torch.equal(replay.assignment.matched_gt, direct.matched_gt)
    assert replay_assignment(random_snapshot(1), rule).exact is False  # no cls_logits: approximated

"""Specifications of the assigners: Fig. 3 boundaries, FNP/FSR, PAA end to end, ATSS, max-IoU."""

import dataclasses
import math

import pytest
import torch

from paa_toolkit.assign import (
    IGNORE,
    NEGATIVE,
    ATSSAssigner,
    MaxIoUAssigner,
    PAAAssigner,
    build_assigner,
    fit_gmm,
)
from paa_toolkit.assign.base import AssignmentDiagnostics
from paa_toolkit.assign.boundaries import boundary_cost, separate
from paa_toolkit.assign.candidates import LOW_QUALITY_POLICIES, match_max_iou
from paa_toolkit.assign.gmm import GMMFit
from paa_toolkit.assign.stats import summarize_diagnostics
from paa_toolkit.structures import AnchorGrid, batched_box_iou, make_anchor_grid, pad_targets


def hand_fit(labels, log_density, means):
    labels = torch.tensor([labels])
    return GMMFit(
        means=torch.tensor([means], dtype=torch.float64),
        variances=torch.ones(1, 2, dtype=torch.float64),
        weights=torch.full((1, 2), 0.5, dtype=torch.float64),
        responsibilities=torch.stack([(labels == 0).double(), (labels == 1).double()], -1),
        log_density=torch.tensor([log_density], dtype=torch.float64),
        labels=labels,
        n_iter=torch.tensor([3]),
        converged=torch.tensor([True]),
    )


# Sorted costs of one GT's six candidates; the GMM says the first four are foreground, the peak of the
# foreground is the 2nd candidate and the peak of the background the 5th; means 0.6 and 2.7.
COSTS = torch.tensor([[0.5, 0.6, 0.7, 1.9, 3.0, 3.1]], dtype=torch.float64)
VALID = torch.ones(1, 6, dtype=torch.bool)
FIT = hand_fit([0, 0, 0, 0, 1, 1], [-1.0, -0.5, -0.8, -2.0, -0.3, -1.0], [0.6, 2.7])


@pytest.mark.parametrize(
    "method, expected",
    [
        ("a", [1, 1, 1, 1, 0, 0]),  # posterior boundary: all foreground-labelled candidates
        ("b", [1, 1, -1, -1, 0, 0]),  # up to the fg peak, ignore until the bg peak
        ("c", [1, 1, 0, 0, 0, 0]),  # up to the fg peak (reference)
        ("d", [1, 1, 1, 0, 0, 0]),  # up to the midpoint of the means, 1.65
        ("fnp", [1, 1, 1, 0, 0, 0]),  # FNP(3)
        ("fsr", [1, 1, 0, 0, 0, 0]),  # FSR(> 0.5): cost < ln 2 = 0.693
    ],
)
def test_each_separation_rule_on_a_hand_worked_example(method, expected):
    labels = separate(method, COSTS, VALID, FIT, fnp_num=3, fsr_thresh=0.5)
    assert labels.tolist() == [expected]


def test_boundaries_never_label_padded_slots():
    costs = torch.cat([COSTS, torch.full((1, 3), 0.0, dtype=torch.float64)], 1)
    valid = torch.cat([VALID, torch.zeros(1, 3, dtype=torch.bool)], 1)
    fit = hand_fit([0, 0, 0, 0, 1, 1, -1, -1, -1], [-1.0, -0.5, -0.8, -2.0, -0.3, -1.0] + [-math.inf] * 3, [0.6, 2.7])
    for method in ("a", "b", "c", "d", "fnp", "fsr"):
        labels = separate(method, costs, valid, fit, fnp_num=8, fsr_thresh=0.01)
        assert labels[0, 6:].tolist() == [0, 0, 0], method


def test_no_foreground_component_makes_every_candidate_positive():
    fit = hand_fit([1, 1, 1, 1, 1, 1], [-1.0] * 6, [0.6, 2.7])
    for method in ("a", "b", "c"):
        assert separate(method, COSTS, VALID, fit).tolist() == [[1] * 6], method


def test_single_candidate_is_positive_for_every_boundary():
    costs = torch.tensor([[1.3, 0, 0]], dtype=torch.float64)
    valid = torch.tensor([[True, False, False]])
    fit = fit_gmm(costs, valid)
    for method in ("a", "b", "c", "d"):
        assert separate(method, costs, valid, fit).tolist() == [[1, 0, 0]], method


def test_equal_costs_give_one_positive_with_c_and_all_with_a():
    costs = torch.full((1, 5), 0.8, dtype=torch.float64)
    valid = torch.ones(1, 5, dtype=torch.bool)
    fit = fit_gmm(costs, valid)
    assert separate("c", costs, valid, fit).tolist() == [[1, 0, 0, 0, 0]]
    assert separate("a", costs, valid, fit).tolist() == [[1] * 5]


def test_boundary_cost_is_the_cost_of_the_last_positive():
    labels = separate("c", COSTS, VALID, FIT)
    assert boundary_cost(COSTS, labels).item() == pytest.approx(0.6)
    assert math.isnan(boundary_cost(COSTS, torch.zeros_like(labels)).item())


# ----- matching ------------------------------------------------------------------------------------


def test_max_iou_matching_keeps_low_quality_best_anchors():
    anchors = torch.tensor([[[0, 0, 10, 10], [5, 0, 15, 10], [40, 40, 50, 50]]], dtype=torch.float32)
    gts = torch.tensor([[[0, 0, 10, 10], [40, 40, 48, 60]]], dtype=torch.float32)
    ious = batched_box_iou(anchors, gts)  # anchor 2 vs gt 1: 80 / 180 = 0.44
    matched = match_max_iou(ious, 0.4, 0.5, allow_low_quality=False)
    assert matched.tolist() == [[0, NEGATIVE, IGNORE]]
    matched = match_max_iou(ious, 0.4, 0.5, allow_low_quality=True)
    assert matched.tolist() == [[0, NEGATIVE, 1]]


def grid_16px() -> AnchorGrid:
    """Two levels on a 64×64 image: 8×8 anchors of stride 8 (size 16) and 4×4 of stride 16 (size 32)."""
    return make_anchor_grid([(8, 8), (4, 4)], [8, 16], scale=2.0)


def test_max_iou_assigner_on_known_boxes():
    grid = grid_16px()
    targets = pad_targets([{"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([2])}])
    out = MaxIoUAssigner()(grid, targets)
    assert out.positive[0].nonzero().flatten().tolist() == [9]  # the anchor equal to the GT
    assert not out.ignored.any()  # its neighbours have IoU 1/3 and 1/4: negatives
    assert out.target_labels(targets)[0, 9].item() == 2


# ----- ATSS ----------------------------------------------------------------------------------------


def atss_by_hand(anchors: AnchorGrid, box: torch.Tensor, k: int) -> set[int]:
    """ATSS for a single GT written directly from the paper's description, one level at a time."""
    centers = anchors.centers
    gc = (box[:2] + box[2:]) / 2
    dist = (centers - gc).norm(dim=1)
    ious = batched_box_iou(anchors.boxes[None], box[None, None])[0, :, 0]
    cands, start = [], 0
    for count in anchors.num_per_level:
        idx = torch.argsort(dist[start : start + count], stable=True)[:k] + start
        cands += idx.tolist()
        start += count
    cand_iou = ious[cands]
    thr = cand_iou.mean() + cand_iou.std()
    return {a for a in cands if ious[a] >= thr and box[0] < centers[a, 0] < box[2] and box[1] < centers[a, 1] < box[3]}


@pytest.mark.parametrize("box", [[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 60.0, 36.0], [0.0, 0.0, 64.0, 64.0]])
def test_atss_matches_a_direct_implementation(box):
    grid = grid_16px()
    box = torch.tensor(box)
    targets = pad_targets([{"boxes": box[None], "labels": torch.tensor([0])}])
    out = ATSSAssigner(topk=4)(grid, targets)
    assert set(out.positive[0].nonzero().flatten().tolist()) == atss_by_hand(grid, box, 4)


def test_atss_gives_a_shared_anchor_to_the_gt_of_highest_iou():
    grid = grid_16px()
    boxes = torch.tensor([[12.0, 12.0, 28.0, 28.0], [8.0, 8.0, 32.0, 32.0]])
    out = ATSSAssigner(topk=4)(grid, pad_targets([{"boxes": boxes, "labels": torch.tensor([0, 1])}]))
    anchor = 2 * 8 + 2  # centre (20, 20), box (12, 12, 28, 28): IoU 1 with GT 0, 0.44 with GT 1
    assert out.matched_gt[0, anchor].item() == 0


# ----- PAA end to end ------------------------------------------------------------------------------


def random_batch(seed=0, counts=(3, 0, 5), num_classes=4, size=64):
    g = torch.Generator().manual_seed(seed)
    grid = grid_16px()
    targets = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * (size - 20)
        wh = 6 + torch.rand(n, 2, generator=g) * 30
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, num_classes, (n,), generator=g)})
    a = grid.boxes.shape[0]
    logits = torch.randn(len(counts), a, num_classes, generator=g) * 2
    deltas = torch.randn(len(counts), a, 4, generator=g) * 0.5
    from paa_toolkit.structures import decode_boxes

    return grid, targets, logits, decode_boxes(deltas, grid.boxes)


@pytest.mark.parametrize("name", ["c", "fnp", "fsr", "atss", "max_iou", "tal", "simota"])
def test_batched_assignment_equals_per_image_assignment(name):
    grid, targets, logits, boxes = random_batch()
    assigner = build_assigner(rule=name, fsr_thresh=0.05)
    batched = assigner(grid, pad_targets(targets), logits, boxes)
    for i, t in enumerate(targets):
        single = assigner(grid, pad_targets([t]), logits[i : i + 1], boxes[i : i + 1])
        assert torch.equal(batched.matched_gt[i], single.matched_gt[0]), (name, i)
        if batched.cls_target is not None:
            assert torch.allclose(batched.cls_target[i], single.cls_target[0]), (name, i)


def test_image_without_ground_truth_is_all_negative():
    grid, targets, logits, boxes = random_batch(counts=(0, 0))
    out = PAAAssigner()(grid, pad_targets(targets), logits, boxes, return_diagnostics=True)
    assert (out.matched_gt == NEGATIVE).all()
    assert out.diagnostics.candidate_cost.shape[0] == 0


def test_paa_positives_are_candidates_of_their_own_max_iou_gt():
    grid, targets, logits, boxes = random_batch(seed=3)
    padded = pad_targets(targets)
    out = PAAAssigner(topk=3)(grid, padded, logits, boxes, return_diagnostics=True)
    d = out.diagnostics
    for row in range(d.image_index.shape[0]):
        b, g = d.image_index[row].item(), d.gt_index[row].item()
        pos = set(d.candidate_anchor[row][d.candidate_label[row] == 1].tolist())
        assert pos == set((out.matched_gt[b] == g).nonzero().flatten().tolist())
        assert len(pos) >= 1  # every GT with candidates gets at least one positive
        assert d.candidate_valid[row].sum() <= 3 * len(grid.num_per_level)
    ious = batched_box_iou(grid.boxes[None].expand(3, -1, -1), padded.boxes).masked_fill(~padded.valid[:, None], -1)
    best = ious.argmax(2)
    assert (best[out.positive] == out.matched_gt[out.positive]).all()


def test_paa_candidates_are_the_lowest_cost_anchors_per_level():
    grid, targets, logits, boxes = random_batch(seed=5)
    d = PAAAssigner(topk=2)(grid, pad_targets(targets), logits, boxes, return_diagnostics=True).diagnostics
    costs = d.candidate_cost.masked_fill(~d.candidate_valid, math.inf)
    assert (costs[:, 1:] >= costs[:, :-1]).all()  # sorted ascending, padding last
    for level in range(2):
        per_level = (d.candidate_level == level).sum(1)
        assert (per_level <= 2).all()


def test_float32_and_float64_gmm_give_the_same_labels_on_separated_costs():
    grid, targets, logits, boxes = random_batch(seed=7)
    padded = pad_targets(targets)
    a = PAAAssigner(gmm_dtype=torch.float64)(grid, padded, logits, boxes)
    b = PAAAssigner(gmm_dtype=torch.float32)(grid, padded, logits, boxes)
    assert torch.equal(a.matched_gt, b.matched_gt)


def test_every_gt_gets_positives_even_without_a_good_anchor():
    grid = grid_16px()
    tiny = {"boxes": torch.tensor([[30.0, 30.0, 33.0, 33.0]]), "labels": torch.tensor([1])}  # IoU ≪ 0.1
    logits = torch.zeros(1, grid.boxes.shape[0], 3)
    out = PAAAssigner()(grid, pad_targets([tiny]), logits, grid.boxes[None].clone())
    assert out.positive.sum() >= 1


def test_unknown_names_and_bad_k_are_rejected_with_choices():
    with pytest.raises(ValueError, match="valid choices: a, b, c, d, fnp, fsr, atss, max_iou, tal, simota"):
        build_assigner(rule="e")
    with pytest.raises(ValueError, match="valid choices: a, b, c, d, fnp, fsr"):
        PAAAssigner(rule="e")
    with pytest.raises(ValueError, match="topk"):
        PAAAssigner(topk=0)


def test_for_gt_keeps_per_gt_fields_whole_when_a_gt_has_two_candidates():
    diag = AssignmentDiagnostics(
        image_index=torch.tensor([0]),
        gt_index=torch.tensor([0]),
        candidate_anchor=torch.tensor([[4, 7]]),
        candidate_level=torch.tensor([[0, 1]]),
        candidate_valid=torch.tensor([[True, False]]),
        candidate_cost=torch.tensor([[0.5, math.inf]]),
        candidate_iou=torch.tensor([[0.6, 0.0]]),
        candidate_label=torch.tensor([[1, 0]]),
        gmm_means=torch.tensor([[0.5, 2.0]]),
        gmm_weights=torch.tensor([[0.5, 0.5]]),
        responsibilities=torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]),
    )
    row = diag.for_gt(0)
    assert row["gmm_means"].tolist() == [0.5, 2.0] and row["gmm_weights"].tolist() == [0.5, 0.5]
    assert row["candidate_anchor"].tolist() == [4] and row["responsibilities"].tolist() == [[1.0, 0.0]]


# ----- low-quality matches: which GT gets a best anchor (GetAnchors, line 3) --------------------------

# IoU of 3 anchors with 2 GTs (threshold 0.1). GT 1's best anchor is anchor 1, whose own best GT is GT 0.
IOUS_ORPHAN = torch.tensor([[[0.50, 0.05], [0.30, 0.08], [0.05, 0.02]]])
# Anchor 0 is the best anchor of both GTs (GT 0 by 0.5, GT 1 by 0.4); GT 1 also has anchor 1 above 0.1.
IOUS_SHARED = torch.tensor([[[0.50, 0.40], [0.05, 0.30]]])
# GT 0's only anchor (anchor 0) is also the best anchor of GT 1, who has no other; anchor 1 is GT 0's next best.
IOUS_CHAIN = torch.tensor([[[0.50, 0.45], [0.08, 0.02]]])


@pytest.mark.parametrize(
    "ious, policy, expected",
    [
        (IOUS_ORPHAN, "reference", [0, 0, NEGATIVE]),  # anchor 1 keeps its own best GT: GT 1 has no anchor
        (IOUS_ORPHAN, "gt", [0, 1, NEGATIVE]),
        (IOUS_ORPHAN, "ensure", [0, 1, NEGATIVE]),
        (IOUS_SHARED, "reference", [0, 1]),
        (IOUS_SHARED, "gt", [1, 1]),  # the later GT overwrites the shared best anchor: GT 0 is left without
        (IOUS_SHARED, "ensure", [0, 1]),  # both GTs have an anchor: the reference's matching is kept
        (IOUS_CHAIN, "reference", [0, NEGATIVE]),
        (IOUS_CHAIN, "gt", [1, NEGATIVE]),
        (IOUS_CHAIN, "ensure", [1, 0]),  # GT 1 takes anchor 0, then GT 0 its best free anchor in the next pass
    ],
)
def test_low_quality_policy_decides_who_gets_a_best_anchor(ious, policy, expected):
    assert match_max_iou(ious, 0.1, low_quality=policy).tolist() == [expected]


def test_reference_policy_is_the_default_and_unknown_policies_are_rejected_with_choices():
    assert torch.equal(match_max_iou(IOUS_ORPHAN, 0.1), match_max_iou(IOUS_ORPHAN, 0.1, low_quality="reference"))
    with pytest.raises(ValueError, match="valid choices: reference, gt, ensure"):
        match_max_iou(IOUS_ORPHAN, 0.1, low_quality="hungarian")
    with pytest.raises(ValueError, match="valid choices: reference, gt, ensure"):
        PAAAssigner(low_quality="hungarian")
    assert PAAAssigner().low_quality == "reference" and LOW_QUALITY_POLICIES[0] == "reference"


def test_low_quality_policies_take_nothing_for_a_gt_that_overlaps_no_anchor():
    ious = torch.tensor([[[0.5, 0.0], [0.2, 0.0]]])
    for policy in LOW_QUALITY_POLICIES:
        assert match_max_iou(ious, 0.1, low_quality=policy).tolist() == [[0, 0]], policy


# A small GT nested in a larger one: its only best anchor (index 9, box 4..20) overlaps the large GT more.
NESTED = {"boxes": torch.tensor([[0.0, 0.0, 24.0, 24.0], [10.0, 10.0, 16.0, 16.0]]), "labels": torch.tensor([0, 1])}


@pytest.mark.parametrize("policy, small_gets_anchors", [("reference", False), ("gt", True), ("ensure", True)])
def test_a_gt_nested_in_a_larger_one_gets_candidates_with_gt_and_ensure_matching(policy, small_gets_anchors):
    grid = grid_16px()
    targets = pad_targets([NESTED])
    owner = match_max_iou(batched_box_iou(grid.boxes[None], targets.boxes), 0.1, low_quality=policy)
    assert (owner[0, 9].item() == 1) == small_gets_anchors
    logits = torch.zeros(1, grid.boxes.shape[0], 2)
    out = PAAAssigner(low_quality=policy)(grid, targets, logits, grid.boxes[None].clone(), return_diagnostics=True)
    d = out.diagnostics
    assert (d.num_candidates[1].item() > 0) == small_gets_anchors
    assert (d.num_positives[1].item() > 0) == small_gets_anchors
    assert d.num_positives[0].item() > 0  # the large GT keeps positives


@pytest.mark.parametrize("policy", LOW_QUALITY_POLICIES)
def test_every_low_quality_policy_gives_the_same_matching_batched_and_per_image(policy):
    grid, targets, _, _ = random_batch(seed=11, counts=(6, 0, 9, 4))
    targets[0] = {
        "boxes": torch.cat([targets[0]["boxes"], NESTED["boxes"]]),
        "labels": torch.cat([targets[0]["labels"], NESTED["labels"]]),
    }
    padded = pad_targets(targets)
    batched = match_max_iou(
        batched_box_iou(grid.boxes[None].expand(4, -1, -1), padded.boxes).masked_fill(~padded.valid[:, None], -1.0),
        0.1,
        low_quality=policy,
    )
    for i, t in enumerate(targets):
        one = pad_targets([t])
        single = match_max_iou(
            batched_box_iou(grid.boxes[None], one.boxes).masked_fill(~one.valid[:, None], -1.0), 0.1, low_quality=policy
        )
        assert torch.equal(batched[i], single[0]), i


# ----- GMM settings and diagnostics ----------------------------------------------------------------


def test_paa_passes_the_gmm_settings_to_fitgmm():
    grid, targets, logits, boxes = random_batch(seed=3)
    padded = pad_targets(targets)
    default = PAAAssigner()(grid, padded, logits, boxes, return_diagnostics=True).diagnostics
    d = PAAAssigner(gmm_init="data", gmm_tol=1e-6, gmm_max_iter=50)(
        grid, padded, logits, boxes, return_diagnostics=True
    ).diagnostics
    fit = fit_gmm(
        d.candidate_cost.masked_fill(~d.candidate_valid, 0.0), d.candidate_valid, init="data", tol=1e-6, max_iter=50
    )
    assert torch.equal(d.em_iterations, fit.n_iter) and torch.equal(d.gmm_means, fit.means)
    assert not torch.equal(d.em_iterations, default.em_iterations)
    one_step = PAAAssigner(gmm_max_iter=1)(grid, padded, logits, boxes, return_diagnostics=True).diagnostics
    assert (one_step.em_iterations == 1).all() and not one_step.em_converged.any()
    with pytest.raises(ValueError, match="valid choices: paper, data"):
        PAAAssigner(gmm_init="kmeans")


def test_paa_diagnostics_count_candidates_positives_em_steps_and_gt_area_per_gt():
    grid, targets, logits, boxes = random_batch(seed=3)
    padded = pad_targets(targets)
    out = PAAAssigner()(grid, padded, logits, boxes, return_diagnostics=True)
    d = out.diagnostics
    g = d.image_index.shape[0]
    for name in ("em_iterations", "em_converged", "num_candidates", "num_positives", "gt_area"):
        assert getattr(d, name).shape == (g,), name
    fit = fit_gmm(d.candidate_cost.masked_fill(~d.candidate_valid, 0.0), d.candidate_valid)
    assert torch.equal(d.em_iterations, fit.n_iter) and torch.equal(d.em_converged, fit.converged)
    assert torch.equal(d.num_candidates, d.candidate_valid.sum(1))
    assert torch.equal(d.num_positives, out.positives_per_gt(padded)[d.image_index, d.gt_index])
    box = padded.boxes[d.image_index, d.gt_index]
    assert torch.allclose(d.gt_area, (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
    fnp = PAAAssigner(rule="fnp", fnp_num=2)(grid, padded, logits, boxes, return_diagnostics=True).diagnostics
    assert fnp.em_iterations is None and fnp.em_converged is None
    assert torch.equal(fnp.num_positives, fnp.num_candidates.clamp(max=2))


@pytest.mark.parametrize("assigner", [ATSSAssigner(), MaxIoUAssigner()], ids=["atss", "max_iou"])
def test_baseline_diagnostics_carry_gt_area_so_their_figures_exist_by_size(assigner):
    grid, targets, _, _ = random_batch(seed=3)
    padded = pad_targets(targets)
    d = assigner(grid, padded, return_diagnostics=True).diagnostics
    box = padded.boxes[d.image_index, d.gt_index]
    assert torch.allclose(d.gt_area, (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
    summary = summarize_diagnostics(d)
    small = d.gt_area < 32**2
    assert small.any() and summary["positives_per_gt_small"] == pytest.approx(
        d.num_positives[small].double().mean().item()
    )
    assert math.isnan(summary["em_iterations_mean"])  # no GMM: no EM figure


def hand_diagnostics(**extra):
    """Two GTs, three slots: GT 0 has candidates 0 and 1 (one positive), GT 1 one candidate, positive."""
    return AssignmentDiagnostics(
        image_index=torch.tensor([0, 0]),
        gt_index=torch.tensor([0, 1]),
        candidate_anchor=torch.tensor([[4, 7, -1], [2, -1, -1]]),
        candidate_level=torch.tensor([[0, 1, -1], [0, -1, -1]]),
        candidate_valid=torch.tensor([[True, True, False], [True, False, False]]),
        candidate_cost=torch.tensor([[0.5, 2.0, math.inf], [0.7, math.inf, math.inf]]),
        candidate_iou=torch.tensor([[0.6, 0.2, 0.0], [0.4, 0.0, 0.0]]),
        candidate_label=torch.tensor([[1, 0, 0], [1, 0, 0]]),
        **extra,
    )


def test_diagnostics_count_candidates_and_positives_and_recount_them_after_replace_and_to():
    diag = hand_diagnostics(em_iterations=torch.tensor([5, 2]), em_converged=torch.tensor([True, False]))
    assert diag.num_candidates.tolist() == [2, 1] and diag.num_positives.tolist() == [1, 1]
    relabelled = dataclasses.replace(diag, candidate_label=torch.tensor([[1, 1, 0], [0, 0, 0]]))
    assert relabelled.num_positives.tolist() == [2, 0]
    moved = diag.to("cpu")
    assert moved.num_candidates.tolist() == [2, 1] and moved.em_iterations.tolist() == [5, 2]
    row = diag.for_gt(1)
    assert row["num_candidates"].item() == 1 and row["em_iterations"].item() == 2 and not row["em_converged"].item()
    assert row["candidate_anchor"].tolist() == [2]
    with pytest.raises(TypeError):
        AssignmentDiagnostics(
            **{
                **{f.name: getattr(diag, f.name) for f in dataclasses.fields(diag) if f.init},
                "num_positives": torch.tensor([9, 9]),
            }
        )


def test_summary_of_hand_made_diagnostics():
    # GT 0: small (10×10), 4 candidates, 2 positives, means 0.2 apart on a cost range of 1.0: collapsed
    # GT 1: medium (40×40), 3 candidates, 1 positive, means 0.6 apart on a range of 1.0: not collapsed
    # GT 2: large (100×100), 1 candidate, 1 positive (range 0: collapse undefined)
    # GT 3: small (20×20), no candidate, no positive (no EM: not in the EM averages)
    inf = math.inf
    labels = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    valid = torch.tensor([[True] * 4, [True] * 3 + [False], [True] + [False] * 3, [False] * 4])
    diag = AssignmentDiagnostics(
        image_index=torch.tensor([0, 0, 1, 1]),
        gt_index=torch.tensor([0, 1, 0, 1]),
        candidate_anchor=torch.where(valid, 3, -1),
        candidate_level=torch.where(valid, 0, -1),
        candidate_valid=valid,
        candidate_cost=torch.tensor([[0.5, 0.8, 1.2, 1.5], [1.0, 1.5, 2.0, inf], [0.9, inf, inf, inf], [inf] * 4]),
        candidate_iou=torch.zeros(4, 4),
        candidate_label=labels,
        gmm_means=torch.tensor([[0.9, 1.1], [1.1, 1.7], [0.9, 0.9], [0.0, 0.0]], dtype=torch.float64),
        em_iterations=torch.tensor([3, 9, 2, 0]),
        em_converged=torch.tensor([True, False, True, False]),
        gt_area=torch.tensor([100.0, 1600.0, 10000.0, 400.0]),
    )
    stats = summarize_diagnostics(diag)
    assert all(type(v) is float for v in stats.values())
    assert stats == pytest.approx(
        {
            "num_gts": 4.0,
            "no_candidate_frac": 0.25,
            "no_positive_frac": 0.25,
            "positives_per_gt": 1.0,
            "no_positive_frac_small": 0.5,
            "positives_per_gt_small": 1.0,
            "no_positive_frac_medium": 0.0,
            "positives_per_gt_medium": 1.0,
            "no_positive_frac_large": 0.0,
            "positives_per_gt_large": 1.0,
            "em_iterations_mean": 14 / 3,
            "em_not_converged_frac": 1 / 3,
            "collapsed_frac": 0.5,
            "dynamic_k_mean": math.nan,
            "best_metric_mean": math.nan,  # SimOTA's and TAL's figures
        },
        nan_ok=True,
    )


def test_summary_is_nan_where_there_is_nothing_to_average():
    stats = summarize_diagnostics(hand_diagnostics())  # no GMM (FNP / FSR / baselines), no gt_area
    assert stats["num_gts"] == 2.0 and stats["no_positive_frac"] == 0.0 and stats["positives_per_gt"] == 1.0
    for key in (
        "em_iterations_mean",
        "em_not_converged_frac",
        "collapsed_frac",
        "no_positive_frac_small",
        "positives_per_gt_large",
    ):
        assert math.isnan(stats[key]), key
    grid, targets, logits, boxes = random_batch(counts=(0, 0))
    empty = PAAAssigner()(grid, pad_targets(targets), logits, boxes, return_diagnostics=True).diagnostics
    assert math.isnan(summarize_diagnostics(empty)["no_positive_frac"])

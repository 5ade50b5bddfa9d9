"""Specifications of the figures: what each plot draws (counts, positions), not only that it runs."""

import matplotlib

matplotlib.use("Agg")

import math

import numpy as np
import pytest
import torch

from paa_toolkit.assign import MaxIoUAssigner
from paa_toolkit.assign.boundaries import boundary_cost, separate
from paa_toolkit.assign.gmm import fit_gmm, gmm_history, synthetic_candidate_costs
from paa_toolkit.structures import PaddedTargets
from paa_toolkit.viz.assignment import count_marks, find_artists, plot_assignment, plot_snapshot
from paa_toolkit.viz.detections import iou_error_by_bin, plot_iou_prediction, plot_voting
from paa_toolkit.viz.gmm import plot_boundaries, plot_cost_histogram, plot_em_steps
from paa_toolkit.widgets.compute import random_snapshot


def bimodal_costs():
    costs, valid = synthetic_candidate_costs(8, seed=3)
    row = next(i for i in range(8) if valid[i].sum() > 20)
    return costs[row][valid[row]]


COSTS = bimodal_costs()
LABELS = torch.tensor([1] * 5 + [-1] * 4 + [0] * (len(COSTS) - 9))


def test_histogram_bar_heights_add_up_to_the_number_of_candidates():
    fig = plot_cost_histogram(COSTS, labels=LABELS)
    heights = [p.get_height() for p in find_artists(fig, "hist")]
    assert sum(heights) == len(COSTS)


def test_histogram_rug_has_one_mark_per_candidate_in_the_colour_of_its_label():
    fig = plot_cost_histogram(COSTS, labels=LABELS)
    assert count_marks(fig, "rug:positive") == 5
    assert count_marks(fig, "rug:ignored") == 4
    assert count_marks(fig, "rug:negative") == len(COSTS) - 9
    pos_x = find_artists(fig, "rug:positive")[0].get_offsets()[:, 0]
    assert np.allclose(np.sort(pos_x), np.sort(COSTS[:5].numpy()))


def test_boundary_line_sits_at_the_boundary_cost():
    fig = plot_cost_histogram(COSTS, boundary=1.234)
    (line,) = find_artists(fig, "boundary")
    assert line.get_xdata()[0] == pytest.approx(1.234)


def test_gaussians_peak_at_the_fitted_means_and_add_up_to_the_mixture():
    fit = fit_gmm(COSTS[None])
    fig = plot_cost_histogram(COSTS, fit)
    (fg,), (bg,), (mix,) = (find_artists(fig, f"gmm:{n}") for n in ("foreground", "background", "mixture"))
    assert np.allclose(fg.get_ydata() + bg.get_ydata(), mix.get_ydata())
    step = np.diff(fg.get_xdata())[0]
    for line, mean in ((fg, fit.means[0, 0]), (bg, fit.means[0, 1])):
        assert abs(line.get_xdata()[np.argmax(line.get_ydata())] - float(mean)) <= step


def test_gaussians_are_scaled_to_counts_so_each_has_weight_times_n_anchors():
    fit = fit_gmm(COSTS[None])
    fig = plot_cost_histogram(COSTS, fit, bins=10)
    bin_width = find_artists(fig, "hist")[0].get_width()
    (fg,) = find_artists(fig, "gmm:foreground")
    area = np.trapezoid(fg.get_ydata(), fg.get_xdata()) / bin_width
    assert area == pytest.approx(float(fit.weights[0, 0]) * len(COSTS), rel=0.02)


def test_boundaries_figure_has_one_panel_per_rule_with_the_library_positive_count_and_boundary():
    methods = ("a", "b", "c", "d", "fnp", "fsr")
    fig = plot_boundaries(COSTS, methods, fnp_num=3, fsr_thresh=0.3)
    assert len(fig.axes) == len(methods)
    row = COSTS.sort().values[None]
    valid = torch.ones_like(row, dtype=torch.bool)
    fit = fit_gmm(row, valid)
    for ax, method in zip(fig.axes, methods):
        labels = separate(method, row, valid, fit, fnp_num=3, fsr_thresh=0.3)
        ignored = int((labels == -1).sum())
        assert ax.get_title().endswith(
            f": {int((labels == 1).sum())} positives" + (f", {ignored} ignored" if ignored else "")
        ), method
        assert count_marks(ax, "rug:positive") == int((labels == 1).sum()), method
        (line,) = find_artists(ax, "boundary")
        expected = float(fit.means[0].mean()) if method == "d" else float(boundary_cost(row, labels)[0])
        assert line.get_xdata()[0] == pytest.approx(expected), method  # (d) cuts at the midpoint of the means
    (negatives,) = find_artists(fig.axes[1], "boundary:negatives")  # (b): where the negatives start again
    labels_b = separate("b", row, valid, fit)[0]
    first_negative = int(
        ((labels_b == 0) & (torch.arange(row.shape[1]) > (labels_b == -1).nonzero().max())).nonzero()[0]
    )
    assert negatives.get_xdata()[0] == pytest.approx(float(row[0, first_negative]))


def test_cost_histogram_draws_a_second_fit_dotted():
    row = COSTS.sort().values[None]
    valid = torch.ones_like(row, dtype=torch.bool)
    fig = plot_cost_histogram(COSTS, fit_gmm(row, valid, max_iter=1), converged=fit_gmm(row, valid, tol=1e-6))
    (line,) = find_artists(fig, "gmm:converged")
    assert line.get_linestyle() == ":" and "run to convergence" in line.get_label()


def test_assignment_zoom_shows_the_gt_region_only():
    gt = torch.tensor([[100.0, 100.0, 140.0, 150.0]])
    anchors = torch.tensor([[90.0, 90.0, 150.0, 160.0]])
    fig = plot_assignment(torch.zeros(3, 256, 256, dtype=torch.uint8), gt, anchors, torch.tensor([1]), zoom=True)
    x0, x1 = fig.axes[0].get_xlim()
    assert 60 < x0 < 100 and 140 < x1 < 190


def test_em_steps_has_one_panel_per_iteration():
    history = gmm_history(COSTS)
    fig = plot_em_steps(history, COSTS)
    assert len(history) > 2
    assert len(fig.axes) == len(history)
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == [f"iteration {t}" for t in range(len(history))]


def test_em_steps_colour_candidates_by_their_component_at_each_step():
    history = gmm_history(COSTS)
    fig = plot_em_steps(history, COSTS)
    for ax, entry in zip(fig.axes, history):
        assert count_marks(ax, "rug:positive") == int((entry["labels"] == 0).sum())


def test_assignment_plot_draws_one_coloured_dot_and_box_per_anchor_of_each_label():
    anchors = torch.tensor([[0.0, 0, 30, 30], [10, 10, 50, 50], [20, 20, 60, 60], [5, 5, 25, 25], [0, 30, 30, 60]])
    labels = torch.tensor([1, 0, -1, 1, 0])
    fig = plot_assignment(None, torch.tensor([[5.0, 5, 40, 40]]), anchors, labels, anchor_boxes=(1, 0, -1))
    for name, n in (("positive", 2), ("negative", 2), ("ignored", 1)):
        assert count_marks(fig, f"centers:{name}") == n
        assert count_marks(fig, f"anchors:{name}") == n
    centers = find_artists(fig, "centers:positive")[0].get_offsets()
    assert np.allclose(centers, [[15, 15], [15, 15]])
    assert count_marks(fig, "gt") == 1


def test_assignment_plot_draws_only_positive_anchor_boxes_by_default():
    anchors = torch.tensor([[0.0, 0, 30, 30], [10, 10, 50, 50]])
    fig = plot_assignment(None, torch.zeros(0, 4), anchors, torch.tensor([1, 0]))
    assert count_marks(fig, "anchors:positive") == 1 and count_marks(fig, "anchors:negative") == 0
    assert count_marks(fig, "centers:negative") == 1


def test_assignment_plot_draws_predicted_boxes_of_positives_at_their_coordinates():
    anchors = torch.tensor([[0.0, 0, 30, 30], [10, 10, 50, 50]])
    pred = torch.tensor([[2.0, 3, 28, 31], [12, 10, 48, 52]])
    fig = plot_assignment(
        torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(0, 4), anchors, torch.tensor([1, 0]), pred
    )
    (boxes,) = find_artists(fig, "pred:positive")
    (path,) = boxes.get_paths()
    corners = path.vertices
    assert corners[:, 0].min() == 2 and corners[:, 1].min() == 3 and corners[:, 0].max() == 28
    assert count_marks(fig, "pred:negative") == 0


def test_assignment_plot_rejects_labels_that_do_not_match_the_anchors():
    with pytest.raises(ValueError, match="labels"):
        plot_assignment(None, torch.zeros(0, 4), torch.zeros(3, 4), torch.tensor([1, 0]))


@pytest.mark.parametrize("gt_index", [0, 1, None])
def test_snapshot_plot_colours_as_many_anchors_positive_as_the_gt_has_positives(gt_index):
    snap = random_snapshot(0)
    owner = snap.matched_gt[0]
    expected = int((owner == gt_index).sum()) if gt_index is not None else int((owner >= 0).sum())
    assert expected > 0
    fig = plot_snapshot(snap, 0, gt_index)
    assert count_marks(fig, "centers:positive") == expected
    assert count_marks(fig, "pred:positive") == expected
    assert f"{expected} positives" in fig.axes[0].get_title()


def test_snapshot_plot_shows_max_iou_positives_that_are_not_candidates():
    snap = random_snapshot(0)
    targets = PaddedTargets(snap.gt_boxes, snap.gt_labels, snap.gt_valid)
    assignment = MaxIoUAssigner(pos_iou=0.3, neg_iou=0.2, topk=1)(snap.anchor_grid, targets, return_diagnostics=True)
    expected = int((assignment.matched_gt[1] == 0).sum())
    candidates = int(assignment.diagnostics.candidate_valid[assignment.diagnostics.image_index == 1].sum())
    assert expected > candidates  # the case under test: positives beyond the top-1 per level
    fig = plot_snapshot(snap, 1, 0, assignment=assignment)
    assert count_marks(fig, "centers:positive") == expected


def test_iou_prediction_reports_the_mean_absolute_error_and_plots_every_pair():
    true = torch.linspace(0.05, 0.95, 50)
    pred = true + torch.where(true > 0.5, 0.1, -0.05)
    fig = plot_iou_prediction(pred, true, bins=2)
    assert "0.075" in fig.get_suptitle()  # half the boxes off by 0.1, half by 0.05
    assert count_marks(fig, "iou:pairs") == 50
    heights = [bar.get_height() for bar in find_artists(fig, "iou:bin_error")]
    assert heights == pytest.approx([0.05, 0.1])


def test_iou_prediction_error_of_empty_bins_is_nan():
    stats = iou_error_by_bin([0.9, 0.8], [0.9, 0.9], bins=2)
    assert math.isnan(stats["bin_error"][0]) and stats["bin_error"][1] == pytest.approx(0.05)


def test_voting_plot_draws_boxes_before_and_after_where_they_are():
    before = {"boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 62]]), "scores": torch.tensor([0.9, 0.5])}
    after = torch.tensor([[11.0, 10, 31, 30], [40, 41, 60, 61]])
    fig = plot_voting(None, before, after)
    assert count_marks(fig, "boxes:before") == 2 and count_marks(fig, "boxes:after") == 2
    (coll,) = find_artists(fig, "boxes:after")
    assert [p.vertices[:, 0].min() for p in coll.get_paths()] == [11.0, 40.0]
    assert "mean shift 0.50 px" in fig.axes[0].get_title()
    assert count_marks(fig, "boxes:gt") == 0 and "ground truth" not in legend_texts(fig)


def test_voting_plot_draws_and_names_the_ground_truth_when_given():
    before = torch.tensor([[10.0, 10, 30, 30]])
    fig = plot_voting(None, before, before + 1, gt=torch.tensor([[12.0, 11, 31, 32]]))
    (coll,) = find_artists(fig, "boxes:gt")
    assert [p.vertices[:, 0].min() for p in coll.get_paths()] == [12.0]
    assert "ground truth" in legend_texts(fig)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_cost_histogram_rejects_non_finite_costs():
    with pytest.raises(ValueError, match="non-finite"):
        plot_cost_histogram(torch.tensor([0.5, float("inf")]))


def test_positives_by_iteration_draws_one_mean_line_and_band_per_rule():
    from paa_toolkit.viz.training import plot_positives_by_iteration

    fig = plot_positives_by_iteration({"PAA": {0: [1, 3], 10: [2, 6]}, "ATSS": {0: [4, 4], 10: [4, 4]}})
    (line,) = find_artists(fig, "mean:PAA")
    assert list(line.get_ydata()) == [2.0, 4.0]
    assert len(find_artists(fig, "range:ATSS")) == 1


def test_one_evaluation_draws_labelled_points_on_an_axis_from_zero():
    from paa_toolkit.viz.training import plot_ap

    fig = plot_ap([{"kind": "eval", "iteration": 600, "AP": 0.28, "AP50": 0.506, "AP75": 0.292}])
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["AP 28.0", "AP50 50.6", "AP75 29.2"]
    assert [list(line.get_xdata()) for line in ax.lines] == [[600]] * 3 and ax.get_xlim()[0] == 0
    assert any("--eval_every" in text.get_text() for text in ax.texts)


def test_detections_are_drawn_with_filled_tags_in_the_class_colour_and_contrasting_text():
    from PIL import ImageColor

    from paa_toolkit.viz.detections import CLASS_COLORS, draw_detections

    image = torch.zeros(3, 256, 256, dtype=torch.uint8)
    det = {
        "boxes": torch.tensor([[60.0, 80.0, 200.0, 220.0]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([2]),
    }
    drawn = draw_detections(image, det, ["cat", "dog", "emu"])
    tag = drawn[:, 68:79, 61:118].reshape(3, -1).T  # the "emu 0.90" tag, just above the box's top-left corner
    colour = torch.tensor(ImageColor.getrgb(CLASS_COLORS[2]), dtype=torch.uint8)
    filled = (tag == colour).all(1).float().mean()
    text = (tag.int().sum(1) < 150).float().mean()  # black text on the light green of class 2
    assert filled > 0.4 and text > 0.05
    assert int((drawn[:, 85:215, 100] == colour[:, None]).all(0).sum()) == 0  # the box is not filled
    assert draw_detections(image, det, ["cat", "dog", "emu"], score_thresh=0.95).equal(image)

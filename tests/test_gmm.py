"""Specifications of FitGMM (Procedure 1, line 12; Eq. 4): batched EM that reproduces scikit-learn per GT."""

import math
import warnings

import numpy as np
import pytest
import torch

import paa_toolkit.assign.gmm as gmm_module
from paa_toolkit.assign.gmm import (
    GMM_INITS,
    GMMFit,
    fit_gmm,
    fit_gmm_sklearn,
    gmm_history,
    initial_parameters,
    synthetic_candidate_costs,
)
from paa_toolkit.assign.stats import collapsed_fits

NUM_GTS = 600


@pytest.fixture(scope="module")
def realistic():
    """600 PAA-like GTs (bimodal, unimodal, 2–45 valid candidates, padded) fitted both ways."""
    costs, valid = synthetic_candidate_costs(NUM_GTS, seed=7)
    ours = fit_gmm(costs, valid)
    refs = [fit_gmm_sklearn(costs[g][valid[g]]) for g in range(NUM_GTS)]
    return costs, valid, ours, refs


def test_synthetic_costs_are_sorted_rows_with_padding_last():
    costs, valid = synthetic_candidate_costs(200, seed=1)
    counts = valid.sum(1)
    assert costs.shape == (200, 45) and counts.min() >= 2 and counts.max() == 45 and (counts < 45).any()
    assert torch.equal(valid, torch.arange(45)[None] < counts[:, None])
    filled = costs.masked_fill(~valid, math.inf)
    assert (filled[:, 1:] >= filled[:, :-1]).all()


def test_gmm_labels_match_sklearn_on_realistic_costs(realistic):
    _, valid, ours, refs = realistic
    agree = sum(int((ours.labels[g][valid[g]] == ref.labels[0]).sum()) for g, ref in enumerate(refs))
    assert agree / int(valid.sum()) >= 0.995


def test_gmm_means_variances_weights_match_sklearn(realistic):
    _, _, ours, refs = realistic
    for name in ("means", "variances", "weights"):
        theirs = torch.cat([getattr(ref, name) for ref in refs])
        assert torch.allclose(getattr(ours, name), theirs, rtol=0, atol=1e-3), name


def test_gmm_n_iter_and_convergence_match_sklearn(realistic):
    _, _, ours, refs = realistic
    n_iter = torch.cat([ref.n_iter for ref in refs])
    assert (ours.n_iter == n_iter).float().mean() >= 0.99
    assert torch.equal(ours.converged, torch.cat([ref.converged for ref in refs]))
    assert n_iter.min() >= 2 and n_iter.max() > 10  # sklearn needs >= 2 iterations; some rows run long


def test_gmm_log_density_and_responsibilities_match_sklearn(realistic):
    _, valid, ours, refs = realistic
    for g in range(0, NUM_GTS, 7):
        assert torch.allclose(ours.log_density[g][valid[g]], refs[g].log_density[0], atol=1e-6)
        assert torch.allclose(ours.responsibilities[g][valid[g]], refs[g].responsibilities[0], atol=1e-6)


def test_gmm_padding_is_zero_responsibility_minus_inf_density_label_minus_one(realistic):
    _, valid, ours, _ = realistic
    assert (ours.responsibilities[~valid] == 0).all()
    assert torch.isneginf(ours.log_density[~valid]).all()
    assert (ours.labels[~valid] == -1).all()
    assert torch.allclose(ours.responsibilities[valid].sum(-1), torch.ones(()).double())


def test_gmm_component_zero_is_the_low_cost_foreground():
    costs = torch.tensor([[0.5, 0.6, 0.7, 0.8, 3.0, 3.5, 4.0, 4.5, 5.0]])
    fit = fit_gmm(costs)
    assert fit.means[0, 0] < fit.means[0, 1]
    assert fit.labels[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_gmm_each_row_stops_at_its_own_iteration_whatever_the_batch():
    costs, valid = synthetic_candidate_costs(40, seed=3)
    batch = fit_gmm(costs, valid)
    assert batch.n_iter.unique().numel() > 5  # rows really stop at different iterations
    for g in (0, 5, 17, 33):
        alone = fit_gmm(costs[g : g + 1], valid[g : g + 1])
        assert alone.n_iter[0] == batch.n_iter[g]
        assert torch.allclose(alone.means[0], batch.means[g], rtol=0, atol=1e-12)
        assert torch.equal(alone.labels[0], batch.labels[g])


def test_gmm_is_invariant_to_how_a_row_is_padded():
    row = torch.tensor([0.7, 0.9, 1.1, 2.9, 3.4, 4.0, 4.2, 5.1], dtype=torch.float64)
    ref = fit_gmm(row[None])
    padded = torch.full((3, 14), math.nan, dtype=torch.float64)
    valid = torch.zeros(3, 14, dtype=torch.bool)
    padded[0, :8], valid[0, :8] = row, True  # padding last (NaN)
    padded[1, 6:], valid[1, 6:] = row, True  # padding first
    slots = torch.tensor([0, 2, 3, 5, 8, 9, 11, 13])
    padded[2, slots], valid[2, slots] = row[torch.tensor([3, 0, 7, 1, 5, 2, 6, 4])], True  # scattered, unsorted
    padded[2, ~valid[2]] = math.inf
    fit = fit_gmm(padded, valid)
    for g in range(3):
        assert fit.n_iter[g] == ref.n_iter[0]
        assert torch.allclose(fit.means[g], ref.means[0], rtol=0, atol=1e-12)
        assert torch.allclose(fit.variances[g], ref.variances[0], rtol=0, atol=1e-12)
    assert torch.equal(fit.labels[0, :8], ref.labels[0])
    assert torch.equal(fit.labels[1, 6:], ref.labels[0])
    order = torch.tensor([3, 0, 7, 1, 5, 2, 6, 4])
    assert torch.equal(fit.labels[2, slots], ref.labels[0, order])


def test_gmm_all_equal_costs_give_identical_components_and_foreground_labels():
    costs = torch.full((1, 9), 1.7, dtype=torch.float64)
    fit = fit_gmm(costs)
    ref = fit_gmm_sklearn(costs[0])
    assert torch.allclose(fit.means, torch.tensor([[1.7, 1.7]], dtype=torch.float64))
    assert torch.allclose(fit.variances, torch.full((1, 2), 1e-6, dtype=torch.float64))
    assert (fit.labels == 0).all() and torch.equal(fit.labels, ref.labels)
    assert fit.n_iter[0] == ref.n_iter[0] and bool(fit.converged[0])


def test_gmm_single_candidate_is_foreground_with_both_means_at_it():
    costs = torch.tensor([[2.5, 0.0, 0.0]])
    fit = fit_gmm(costs, torch.tensor([[True, False, False]]))
    assert torch.allclose(fit.means, torch.tensor([[2.5, 2.5]], dtype=torch.float64))
    assert fit.labels[0].tolist() == [0, -1, -1]
    assert torch.isfinite(fit.log_density[0, 0]) and bool(fit.converged[0])


def test_gmm_row_without_candidates_is_nan_free_with_labels_minus_one_and_no_iteration():
    costs = torch.tensor([[1.0, 2.0, 3.0], [math.nan, math.inf, 0.0]])
    fit = fit_gmm(costs, torch.tensor([[True, True, True], [False, False, False]]))
    for name in ("means", "variances", "weights", "responsibilities"):
        assert not torch.isnan(getattr(fit, name)).any(), name
    assert fit.labels[1].tolist() == [-1, -1, -1]
    assert fit.n_iter[1] == 0 and not bool(fit.converged[1])
    assert (fit.responsibilities[1] == 0).all() and torch.isneginf(fit.log_density[1]).all()


def test_gmm_two_candidates_match_sklearn():
    costs = torch.tensor([[0.8, 3.9]], dtype=torch.float64)
    fit, ref = fit_gmm(costs), fit_gmm_sklearn(costs[0])
    assert torch.equal(fit.labels, ref.labels) and fit.n_iter[0] == ref.n_iter[0]
    assert torch.allclose(fit.means, ref.means, atol=1e-9)


def test_gmm_empty_batch_returns_empty_tensors():
    fit = fit_gmm(torch.zeros(0, 45))
    assert fit.means.shape == (0, 2) and fit.labels.shape == (0, 45) and fit.responsibilities.shape == (0, 45, 2)


def test_gmm_max_iter_stops_early_like_sklearn():
    costs, valid = synthetic_candidate_costs(30, seed=5)
    fit = fit_gmm(costs, valid, max_iter=3)
    assert fit.n_iter.max() == 3 and not fit.converged.all()
    for g in range(30):
        ref = fit_gmm_sklearn(costs[g][valid[g]], max_iter=3)
        assert torch.equal(fit.labels[g][valid[g]], ref.labels[0])
        assert fit.n_iter[g] == ref.n_iter[0] and fit.converged[g] == ref.converged[0]


def test_gmm_float32_labels_equal_float64_on_well_separated_costs():
    gen = torch.Generator().manual_seed(0)
    low = 0.5 + 0.3 * torch.rand(64, 12, generator=gen)
    high = 4.0 + 1.5 * torch.rand(64, 33, generator=gen)
    costs = torch.cat([low, high], 1)
    fit32, fit64 = fit_gmm(costs, dtype=torch.float32), fit_gmm(costs, dtype=torch.float64)
    assert torch.equal(fit32.labels, fit64.labels)
    assert (fit64.labels[:, :12] == 0).all() and (fit64.labels[:, 12:] == 1).all()


def test_gmm_outputs_follow_requested_dtype_and_input_device():
    costs, valid = synthetic_candidate_costs(8, seed=2)
    fit = fit_gmm(costs.float(), valid, dtype=torch.float32)
    for name in ("means", "variances", "weights", "responsibilities", "log_density"):
        assert getattr(fit, name).dtype == torch.float32 and getattr(fit, name).device == costs.device, name
    assert fit.labels.dtype == torch.int64 and fit.n_iter.dtype == torch.int64 and fit.converged.dtype == torch.bool
    assert fit_gmm(costs.float(), valid).means.dtype == torch.float64  # default computes in float64


@pytest.mark.cuda
def test_gmm_on_cuda_matches_cpu():
    costs, valid = synthetic_candidate_costs(300, seed=4)
    cpu, gpu = fit_gmm(costs, valid), fit_gmm(costs.cuda(), valid.cuda())
    assert gpu.labels.device.type == "cuda"
    assert torch.equal(gpu.labels.cpu(), cpu.labels) and torch.equal(gpu.n_iter.cpu(), cpu.n_iter)
    assert torch.allclose(gpu.means.cpu(), cpu.means, atol=1e-9)


def test_gmm_history_ends_at_the_batched_fit_and_follows_sklearn_lower_bounds():
    from sklearn.mixture import GaussianMixture

    costs, valid = synthetic_candidate_costs(12, seed=9)
    row = costs[3][valid[3]]
    history = gmm_history(row)
    fit = fit_gmm(row[None])
    assert len(history) == int(fit.n_iter[0]) + 1 and history[0]["iteration"] == 0
    assert torch.allclose(history[-1]["means"], fit.means[0], rtol=0, atol=1e-12)
    assert torch.equal(history[-1]["labels"], fit.labels[0])
    assert torch.allclose(history[0]["means"], torch.stack([row.min(), row.max()]))  # §4.1 initialisation
    x = row.numpy()[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gmm = GaussianMixture(
            2, weights_init=[0.5, 0.5], means_init=[[x.min()], [x.max()]], precisions_init=[[[1.0]], [[1.0]]]
        ).fit(x)
    assert np.allclose([h["log_likelihood"] for h in history[:-1]], gmm.lower_bounds_, atol=1e-9)
    lls = [h["log_likelihood"] for h in history]
    assert all(b >= a - 1e-9 for a, b in zip(lls, lls[1:]))  # EM never lowers the likelihood


@pytest.mark.parametrize(
    "values, valid, kwargs, match",
    [
        (torch.zeros(5), None, {}, "values must be a"),
        (torch.zeros(2, 5), torch.ones(2, 4, dtype=torch.bool), {}, "valid must be"),
        (torch.tensor([[1.0, math.nan]]), None, {}, "non-finite"),
        (torch.zeros(2, 5), None, {"reg_covar": 0.0}, "reg_covar"),
        (torch.zeros(2, 5), None, {"dtype": torch.int64}, "floating point"),
        (torch.zeros(2, 5), None, {"init": "kmeans"}, "valid choices: paper, data"),
        (torch.zeros(2, 5), None, {"check_every": 0}, "check_every"),
    ],
)
def test_gmm_rejects_bad_input_with_a_clear_error(values, valid, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_gmm(values, valid, **kwargs)


def test_sklearn_reference_refuses_a_single_value():
    with pytest.raises(ValueError, match=">= 2"):
        fit_gmm_sklearn(np.array([1.0]))


def test_sklearn_reference_returns_one_row_gmmfit():
    ref = fit_gmm_sklearn(np.array([0.5, 0.6, 3.0, 3.2]))
    assert isinstance(ref, GMMFit) and ref.means.shape == (1, 2) and ref.labels.tolist() == [[0, 0, 1, 1]]


# ----- init, tol, max_iter: every setting is scikit-learn's, GT by GT ---------------------------------

SETTINGS = [  # (tol, max_iter): the default, tight (some GTs hit max_iter), never converging, loose, one step
    (1e-3, 100),
    (1e-5, 100),
    (0.0, 7),
    (1e-1, 100),
    (1e-3, 1),
]


@pytest.mark.parametrize("init", GMM_INITS)
@pytest.mark.parametrize("tol, max_iter", SETTINGS)
def test_gmm_matches_sklearn_gt_by_gt_for_every_init_tol_and_max_iter(init, tol, max_iter):
    costs, valid = synthetic_candidate_costs(60, seed=21)
    ours = fit_gmm(costs, valid, init=init, tol=tol, max_iter=max_iter)
    for g in range(60):
        ref = fit_gmm_sklearn(costs[g][valid[g]], init=init, tol=tol, max_iter=max_iter)
        assert torch.equal(ours.labels[g][valid[g]], ref.labels[0]), g
        assert ours.n_iter[g] == ref.n_iter[0] and ours.converged[g] == ref.converged[0], g
        for name in ("means", "variances", "weights"):
            assert torch.allclose(getattr(ours, name)[g], getattr(ref, name)[0], rtol=0, atol=1e-9), (g, name)


def test_sklearn_cross_check_covers_converged_and_unconverged_gts():
    costs, valid = synthetic_candidate_costs(60, seed=21)
    tight = fit_gmm(costs, valid, init="data", tol=1e-5)
    assert tight.converged.any() and not tight.converged.all() and tight.n_iter.max() == 100
    assert not fit_gmm(costs, valid, tol=0.0, max_iter=7).converged.any()


def test_data_init_is_the_mean_and_variance_of_the_lowest_and_highest_halves():
    # n = 5, h = 2: {0.1, 0.3} and {0.5, 0.9}; the median (one of the tied 0.5) is in neither half
    x = torch.tensor([[0.5, 0.3, 0.0, 0.9, 0.1, 0.5]], dtype=torch.float64)
    valid = torch.tensor([[True, True, False, True, True, True]])
    weights, means, variances = initial_parameters(x, valid, "data", reg_covar=1e-6)
    assert means[:, 0, 0].tolist() == pytest.approx([0.2, 0.7])
    assert variances[:, 0, 0].tolist() == pytest.approx([0.01 + 1e-6, 0.04 + 1e-6])
    assert weights[:, 0, 0].tolist() == [0.5, 0.5]


def test_data_init_with_two_costs_starts_one_spike_on_each_and_below_two_falls_back_to_the_paper():
    x = torch.tensor([[0.8, 3.9, 0.0], [2.5, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    valid = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    _, means, variances = initial_parameters(x, valid, "data", reg_covar=1e-6)
    _, paper_means, paper_variances = initial_parameters(x, valid, "paper", reg_covar=1e-6)
    assert means[:, 0, 0].tolist() == [0.8, 3.9] and variances[:, 0, 0].tolist() == [1e-6, 1e-6]
    assert torch.equal(means[:, 1:], paper_means[:, 1:]) and torch.equal(variances[:, 1:], paper_variances[:, 1:])
    fit = fit_gmm(x, valid, init="data")
    assert fit.labels.tolist() == [[0, 1, -1], [0, -1, -1], [-1, -1, -1]]


def test_data_init_of_equal_costs_keeps_both_components_on_them_with_foreground_labels():
    fit = fit_gmm(torch.full((1, 6), 0.4, dtype=torch.float64), init="data")
    assert fit.means[0].tolist() == pytest.approx([0.4, 0.4]) and (fit.labels == 0).all()


# Two clusters on a narrow cost range, as a trained model's candidates: 5 good anchors, 9 poorer ones.
NARROW = torch.tensor(
    [[0.10, 0.13, 0.15, 0.18, 0.22, 0.55, 0.60, 0.62, 0.66, 0.70, 0.72, 0.75, 0.78, 0.80]], dtype=torch.float64
)


def test_data_init_separates_a_narrow_bimodal_cost_set_into_its_two_clusters():
    fit = fit_gmm(NARROW, init="data")
    assert fit.labels[0].tolist() == [0] * 5 + [1] * 9
    assert fit.means[0].tolist() == pytest.approx([float(NARROW[0, :5].mean()), float(NARROW[0, 5:].mean())], abs=1e-3)
    assert not collapsed_fits(fit.means, NARROW, torch.ones_like(NARROW, dtype=torch.bool))[0].any()
    ref = fit_gmm_sklearn(NARROW[0], init="data")
    assert fit.n_iter[0] == ref.n_iter[0] == 7


def test_paper_init_stops_after_three_iterations_with_collapsed_means_on_a_narrow_cost_set():
    # σ = 1 components are ten times wider than the costs: the likelihood barely changes and EM stops
    # (|Δ| < tol = 1e-3) at iteration 3 with both means near the middle, exactly as scikit-learn does.
    fit, ref = fit_gmm(NARROW, init="paper"), fit_gmm_sklearn(NARROW[0], init="paper")
    assert fit.n_iter[0] == ref.n_iter[0] == 3 and bool(fit.converged[0]) and bool(ref.converged[0])
    assert torch.allclose(fit.means, ref.means, atol=1e-9)
    collapsed, defined = collapsed_fits(fit.means, NARROW, torch.ones_like(NARROW, dtype=torch.bool))
    assert bool(defined[0]) and bool(collapsed[0])  # gap 0.06 < (0.80 - 0.10) / 4


@pytest.mark.parametrize("init", GMM_INITS)
def test_gmm_history_follows_the_requested_init_to_the_batched_fit(init):
    history, fit = gmm_history(NARROW[0], init=init), fit_gmm(NARROW, init=init)
    assert len(history) == int(fit.n_iter[0]) + 1
    assert torch.allclose(history[-1]["means"], fit.means[0], rtol=0, atol=1e-12)


# ----- the convergence check: a host sync only every check_every iterations --------------------------


@pytest.mark.parametrize("check_every", [2, 5, 16])
def test_gmm_results_do_not_depend_on_check_every(check_every):
    costs, valid = synthetic_candidate_costs(80, seed=13)
    every, sparse = fit_gmm(costs, valid, check_every=1), fit_gmm(costs, valid, check_every=check_every)
    for name in ("means", "variances", "weights", "responsibilities", "log_density", "labels", "n_iter", "converged"):
        assert torch.equal(getattr(every, name), getattr(sparse, name)), name


@pytest.mark.parametrize("check_every", [1, 4, 7])
def test_gmm_asks_whether_rows_still_run_only_every_check_every_iterations(monkeypatch, check_every):
    calls = []
    real = gmm_module._num_running
    monkeypatch.setattr(gmm_module, "_num_running", lambda work: calls.append(1) or real(work))
    costs, valid = synthetic_candidate_costs(80, seed=13)
    fit = fit_gmm(costs, valid, check_every=check_every)
    last = int(fit.n_iter.max())  # < max_iter: the loop ends at the first check after the last row stopped
    assert last < 100 and len(calls) == math.ceil(last / check_every) + 1

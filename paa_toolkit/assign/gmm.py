"""Procedure 1, line 12 (FitGMM): a two-component 1-D Gaussian mixture, Eq. (4), fitted by EM.

    P(a) = w_1 N(a; m_1, p_1) + w_2 N(a; m_2, p_2)                                   (Eq. 4)

fitted to the costs of each ground truth's candidate anchors. :func:`fit_gmm` fits *all* GTs of
all images at once, as padded ``[G, N]`` rows with a ``valid`` mask, on any device, and reproduces
``sklearn.mixture.GaussianMixture`` (the reference code's FitGMM) step for step:

* initialisation, ``init`` (one of :data:`GMM_INITS`); component 0 (started at the lower mean) is
  the foreground one:

  - ``"paper"`` (§4.1, the reference code): means = min and max of the valid costs, precisions 1
    (σ = 1 whatever the spread of the costs), weights 1/2;
  - ``"data"`` (ours): with the valid costs sorted, ``x_(1) ≤ … ≤ x_(n)`` and ``h = ⌊n/2⌋``, component 0
    starts on the ``h`` lowest ``x_(1..h)`` and component 1 on the ``h`` highest ``x_(n-h+1..n)`` (for an
    odd ``n`` the median is in neither): mean = the average of its half, variance = the mean squared
    deviation of its half ``+ reg_covar`` (as an M-step with hard responsibilities), weights 1/2. The
    halves are cut by rank, so ties are split deterministically and a half of equal costs starts as a
    spike of variance ``reg_covar``; ``n = 2`` starts with one cost per component; rows with fewer than
    2 candidates start as ``"paper"``. Unlike σ = 1 it scales with the costs: on a narrow cost range
    (e.g. 0.1–0.8, a model that already scores its anchors alike) the paper's two wide components
    barely move and EM stops after a few iterations with both means near the middle;
* E-step in the log domain (log-sum-exp), M-step with ``nk + 10·eps``, two-pass variances
  ``+ reg_covar``, weights ``nk / Σ nk``;
* stop when the mean log-likelihood per sample (computed in the E-step, i.e. under the parameters
  *before* that iteration's M-step) changes by less than ``tol``, or after ``max_iter`` iterations;
  each row stops at its own iteration (it is frozen while the others go on); ``n_iter`` and
  ``converged`` are scikit-learn's ``n_iter_`` and ``converged_`` whatever ``init``, ``tol``, ``max_iter``;
* labels, responsibilities and ``log_density`` (= ``score_samples``) come from one more E-step
  with the final parameters; ties go to component 0.

No Python loop over GTs: every EM step is a handful of tensor ops on all rows. A row that has
converged keeps its parameters (``torch.where``) while the others go on, so its result is the one of
stopping at its own iteration; from time to time stopped rows leave the batch so the remaining steps
work on fewer rows. Whether any row is still running is only asked (a host-device sync on GPUs)
every ``check_every`` iterations: the iterations in between are exact no-ops for stopped rows.
float64 (default) matches scikit-learn to rounding; float32 gives the same labels on well-separated costs.

Degenerate rows, defined here:

* all valid costs equal (scikit-learn runs): both components stay identical, means ``[v, v]``,
  variances ``reg_covar``, weights 1/2, every label 0 (the tie goes to the foreground);
* one valid cost (scikit-learn refuses to fit): the same outcome as a row of equal costs, i.e.
  means ``[v, v]``, label 0, so the lone candidate counts as foreground;
* no valid cost: the initial parameters (means 0, variances 1, weights 1/2), responsibilities 0,
  ``log_density`` −inf, labels −1, ``n_iter`` 0, ``converged`` False — no NaN anywhere.

:func:`gmm_history` replays EM on one set, step by step, with the same step functions
(:func:`log_joint`, :func:`posterior`, :func:`m_step`) for the teaching plots;
:func:`fit_gmm_sklearn` is the reference.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
#: EM initialisations of :func:`fit_gmm` (``assign.gmm_init``): the paper's §4.1 one and a data-driven one.
GMM_INITS = ("paper", "data")
#: scikit-learn's EM stopping rule (GaussianMixture's defaults), which the reference code uses
SKLEARN_TOL, SKLEARN_MAX_ITER, SKLEARN_REG_COVAR = 1e-3, 100, 1e-6
#: "Run to convergence" (course notebooks, explorers): scikit-learn's tol made 1000x tighter. From the
#: paper's start on a narrow cost range, tol 1e-3 can stop after ~3 iterations with both means mid-range.
CONVERGED_TOL, CONVERGED_MAX_ITER = 1e-6, 1000
#: Iterations between two "is any row still running?" checks (host syncs) off the CPU; on CPU: every one.
CHECK_EVERY_ACCELERATOR = 4
#: Fraction of the working rows still running below which converged rows are dropped from the batch.
_COMPACT_BELOW = 0.5
#: On CPU, batches of fewer elements ([2, G, N]) are fitted on one intra-op thread (see :func:`fit_gmm`).
_ONE_THREAD_BELOW = 1 << 20


@dataclass
class GMMFit:
    """A fitted Eq. (4) per row: ``G`` sets of ``N`` candidate slots; component 0 = foreground.

    Attributes:
        means: ``[G, 2]`` component 0 = foreground (initialised at the min), 1 = background.
        variances: ``[G, 2]``.
        weights: ``[G, 2]``.
        responsibilities: ``[G, N, 2]`` posterior from the final E-step (0 where not valid).
        log_density: ``[G, N]`` log mixture density, = sklearn's ``score_samples`` (-inf where not valid).
        labels: ``[G, N]`` int64 argmax of the responsibilities, ties → component 0 (-1 where not valid).
        n_iter: ``[G]`` EM iterations run (as sklearn's ``n_iter_``).
        converged: ``[G]`` bool.
    """

    means: Tensor
    variances: Tensor
    weights: Tensor
    responsibilities: Tensor
    log_density: Tensor
    labels: Tensor
    n_iter: Tensor
    converged: Tensor


# --- the EM equations, one home ---
# Layout: costs x and mask [G, N]; per-component tensors [2, G, N]; parameters [2, G, 1].


def log_joint(sq_dist: Tensor, weights: Tensor, variances: Tensor) -> Tensor:
    """log w_k + log N(a; m_k, var_k), the two terms of Eq. (4), from ``sq_dist = (a - m_k)²`` ``[2, G, N]``."""
    const = torch.log(weights * torch.rsqrt(variances)) - _HALF_LOG_2PI  # log w_k + ½ log p_k - ½ log 2π
    return torch.addcmul(const, sq_dist, variances.reciprocal(), value=-0.5)


def posterior(joint: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """E-step: responsibilities ``[2, G, N]`` (0 where ``mask`` is 0) and log P(a) of Eq. (4) ``[G, N]``.

    Log domain as scikit-learn: log P(a) = logsumexp_k joint_k, responsibility_k = exp(joint_k - log P(a)).
    """
    log_density = torch.logaddexp(*joint.unbind(0))
    resp = (joint - log_density).exp_().mul_(mask)
    return resp, log_density


def m_step(x: Tensor, resp: Tensor, reg_covar: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """M-step: weights, means, variances ``[2, G, 1]`` and the new ``(a - m_k)²`` ``[2, G, N]``.

    As scikit-learn: ``nk = Σ resp + 10·eps``, two-pass variances ``+ reg_covar``, weights ``nk / Σ nk``.
    """
    nk = resp.sum(-1, keepdim=True).add_(10 * torch.finfo(resp.dtype).eps)
    means = (resp * x).sum(-1, keepdim=True).div_(nk)
    sq_dist = (x - means).square_()
    variances = (resp * sq_dist).sum(-1, keepdim=True).div_(nk).add_(reg_covar)
    return nk / nk.sum(0), means, variances, sq_dist


def initial_means(x: Tensor, mask: Tensor) -> Tensor:
    """§4.1: the two means ``[2, G, 1]`` start at the min and the max of each row's valid costs (0: no cost)."""
    if x.shape[-1] == 0:
        return x.new_zeros(2, x.shape[0], 1)
    lo = x.masked_fill(~mask, math.inf).amin(-1)
    hi = x.masked_fill(~mask, -math.inf).amax(-1)
    has = mask.any(-1)
    return torch.stack([torch.where(has, lo, 0.0), torch.where(has, hi, 0.0)])[..., None]


def initial_parameters(x: Tensor, mask: Tensor, init: str, reg_covar: float) -> tuple[Tensor, Tensor, Tensor]:
    """Weights, means, variances ``[2, G, 1]`` before the first E-step, for ``init`` in :data:`GMM_INITS`.

    See the module docstring for both definitions (``mask`` bool ``[G, N]``).
    """
    means = initial_means(x, mask)
    weights, variances = torch.full_like(means, 0.5), torch.ones_like(means)  # "paper": precisions 1
    if init == "paper":
        return weights, means, variances
    n = mask.sum(-1, keepdim=True)  # [G, 1]
    half = n // 2
    ranked = x.masked_fill(~mask, math.inf).sort(-1).values  # valid costs ascending, padding last
    rank = torch.arange(x.shape[-1], device=x.device)
    halves = torch.stack([rank < half, (rank >= n - half) & (rank < n)])  # [2, G, N]: lowest h, highest h
    count = half.clamp(min=1).to(x.dtype)
    half_means = torch.where(halves, ranked, 0.0).sum(-1, keepdim=True) / count
    deviation = torch.where(halves, ranked - half_means, 0.0)
    half_variances = deviation.square().sum(-1, keepdim=True) / count + reg_covar
    too_few = n < 2  # 0 or 1 candidate: the paper's initialisation
    return weights, torch.where(too_few, means, half_means), torch.where(too_few, variances, half_variances)


# --- batched fit ---


def _check_inputs(
    values: Tensor,
    valid: Tensor | None,
    max_iter: int,
    tol: float,
    reg_covar: float,
    dtype: torch.dtype,
    init: str,
    check_every: int,
) -> Tensor:
    if not isinstance(values, Tensor) or values.dim() != 2:
        raise ValueError(f"fit_gmm: values must be a [G, N] tensor, got {getattr(values, 'shape', type(values))}")
    if valid is None:
        valid = torch.ones(values.shape, dtype=torch.bool, device=values.device)
    if not isinstance(valid, Tensor) or valid.shape != values.shape or valid.dtype != torch.bool:
        raise ValueError(
            f"fit_gmm: valid must be a bool tensor of shape {tuple(values.shape)}, "
            f"got {getattr(valid, 'dtype', type(valid))} {tuple(getattr(valid, 'shape', ()))}"
        )
    valid = valid.to(values.device)
    if not dtype.is_floating_point:
        raise ValueError(f"fit_gmm: dtype must be a floating point dtype, got {dtype}")
    if max_iter < 0 or tol < 0 or not reg_covar > 0:
        raise ValueError(
            f"fit_gmm: need max_iter >= 0, tol >= 0, reg_covar > 0 (keeps variances positive); "
            f"got {max_iter}, {tol}, {reg_covar}"
        )
    if init not in GMM_INITS:
        raise ValueError(f"fit_gmm: unknown init {init!r}; valid choices: {', '.join(GMM_INITS)}")
    if check_every < 1:
        raise ValueError(f"fit_gmm: check_every must be >= 1, got {check_every}")
    if values.numel() and not bool((torch.isfinite(values) | ~valid).all()):
        raise ValueError("fit_gmm: values has non-finite entries where valid is True")
    return valid


@torch.no_grad()
def fit_gmm(
    values: Tensor,
    valid: Tensor | None = None,
    *,
    init: str = GMM_INITS[0],
    max_iter: int = SKLEARN_MAX_ITER,
    tol: float = SKLEARN_TOL,
    reg_covar: float = SKLEARN_REG_COVAR,
    dtype: torch.dtype = torch.float64,
    check_every: int | None = None,
) -> GMMFit:
    """FitGMM (Procedure 1, line 12) on every row at once: Eq. (4) by EM, as scikit-learn would per row.

    Args:
        values: ``[G, N]`` candidate costs (any float dtype, any device); padded slots may hold anything.
        valid: ``[G, N]`` bool, which slots are candidates (None: all). Need not be contiguous.
        init: ``"paper"`` (§4.1: min / max, σ = 1) or ``"data"`` (halves below / above the median),
            see the module docstring; scikit-learn gets the same as ``means_init`` / ``precisions_init``.
        max_iter: at most this many EM iterations, as ``sklearn.mixture.GaussianMixture`` (default: the
            reference's 100).
        tol: stop a row when its mean log-likelihood gains less (scikit-learn's default 1e-3).
        reg_covar: added to every variance (scikit-learn's default 1e-6).
        dtype: computation and output dtype (float64 matches scikit-learn to rounding).
        check_every: iterations between two checks whether any row still runs (each one a host sync
            on GPUs); None: 1 on CPU, :data:`CHECK_EVERY_ACCELERATOR` elsewhere. Results do not depend on it.

    Returns:
        :class:`GMMFit` on ``values.device`` in ``dtype``. See the module docstring for degenerate rows.

    On CPU, batches below ~10k GTs × 45 run on one intra-op thread (``torch.set_num_threads``, restored
    on return): their tensors are too small for OpenMP to pay off, and when the cores are shared
    (data-loader workers, other jobs) every parallel region can stall for milliseconds.
    """
    small = isinstance(values, Tensor) and values.device.type == "cpu" and 2 * values.numel() < _ONE_THREAD_BELOW
    with _intra_op_threads(1 if small else None):
        if check_every is None:
            check_every = 1 if isinstance(values, Tensor) and values.device.type == "cpu" else CHECK_EVERY_ACCELERATOR
        valid = _check_inputs(values, valid, max_iter, tol, reg_covar, dtype, init, check_every)
        return _fit(values, valid, init, max_iter, tol, reg_covar, dtype, check_every)


@contextmanager
def _intra_op_threads(num: int | None):
    """Temporarily set torch's CPU intra-op thread count (None: leave it)."""
    before = torch.get_num_threads()
    if num is not None and num != before:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _fit(
    values: Tensor,
    valid: Tensor,
    init: str,
    max_iter: int,
    tol: float,
    reg_covar: float,
    dtype: torch.dtype,
    check_every: int,
) -> GMMFit:
    """:func:`fit_gmm` after input checks."""
    num_rows, device = values.shape[0], values.device
    x = torch.where(valid, values.to(dtype), torch.zeros((), dtype=dtype, device=device))
    mask = valid.to(dtype)
    num_valid = mask.sum(-1)
    has_data = num_valid > 0
    weights, means, variances = initial_parameters(x, valid, init, reg_covar)
    work = {  # the rows still being fitted (all at first); stopped rows move to `out` from time to time
        "x": x,
        "mask": mask,
        "inv_valid": num_valid.clamp(min=1).reciprocal(),
        "weights": weights,
        "means": means,
        "variances": variances,
        "sq_dist": (x - means).square(),
        "n_iter": torch.zeros(num_rows, dtype=torch.int64, device=device),
        "active": has_data,  # rows without candidates never run; a row stops only by converging
        "prev_ll": torch.full((num_rows,), -math.inf, dtype=dtype, device=device),
    }
    out, rows = {}, None
    for it in range(max_iter):  # between two checks, stopped rows go through exact no-op iterations
        if it % check_every == 0:
            n_active = _num_running(work)
            if n_active == 0:
                break
            if n_active < _COMPACT_BELOW * work["active"].shape[0]:
                rows = _compact(work, out, rows)
        _em_iteration(work, reg_covar, tol)
    _store(work, out, rows)
    weights, means, variances = out["weights"], out["means"], out["variances"]

    # One more E-step with the final parameters: labels, responsibilities, score_samples.
    joint = log_joint((x - means).square(), weights, variances)
    resp, log_density = posterior(joint, mask)
    labels = (joint[1] > joint[0]).to(torch.int64)  # argmax, ties -> component 0
    return GMMFit(
        means=means[..., 0].T.contiguous(),
        variances=variances[..., 0].T.contiguous(),
        weights=weights[..., 0].T.contiguous(),
        responsibilities=resp.permute(1, 2, 0).contiguous(),
        log_density=log_density.masked_fill(~valid, -math.inf),
        labels=labels.masked_fill(~valid, -1),
        n_iter=out["n_iter"],
        converged=has_data & ~out["active"],
    )


def _num_running(work: dict[str, Tensor]) -> int:
    """How many working rows have not stopped: the only host sync of the EM loop."""
    return int(work["active"].sum())


def _em_iteration(work: dict[str, Tensor], reg_covar: float, tol: float) -> None:
    """One EM iteration on the working rows (in place); rows that already stopped keep their parameters.

    Stopped rows still go through the arithmetic (their results are discarded): no per-row branching.
    """
    resp, log_density = posterior(log_joint(work["sq_dist"], work["weights"], work["variances"]), work["mask"])
    # Mean log-likelihood under the parameters *before* this M-step: what scikit-learn compares with tol.
    ll = torch.linalg.vecdot(log_density, work["mask"]).mul_(work["inv_valid"])
    weights, means, variances, work["sq_dist"] = m_step(work["x"], resp, reg_covar)
    active = work["active"]
    run = active[:, None]
    work["weights"] = torch.where(run, weights, work["weights"])
    work["means"] = torch.where(run, means, work["means"])
    work["variances"] = torch.where(run, variances, work["variances"])
    work["n_iter"].add_(active)
    work["active"] = active & (ll - work["prev_ll"]).abs_().ge(tol)  # sklearn stops when |change| < tol
    work["prev_ll"] = ll


_RESULTS = ("weights", "means", "variances", "n_iter", "active")
_PER_COMPONENT = ("weights", "means", "variances", "sq_dist")


def _store(work: dict[str, Tensor], out: dict[str, Tensor], rows: Tensor | None) -> None:
    """Write the working rows' results into the full-size ``out`` (``rows=None``: they are all the rows)."""
    for key in _RESULTS:
        if rows is None:
            out[key] = work[key]
        else:
            out[key].index_copy_(1 if key in _PER_COMPONENT else 0, rows, work[key])


def _compact(work: dict[str, Tensor], out: dict[str, Tensor], rows: Tensor | None) -> Tensor:
    """Drop the stopped rows from the working set (their results saved in ``out``); returns the rows kept."""
    _store(work, out, rows)
    if rows is None:  # `out` now aliases the working tensors: copy before they are replaced
        for key in _RESULTS:
            out[key] = out[key].clone()
    keep = work["active"].nonzero()[:, 0]
    for key, value in work.items():  # rows are dim 1 of the [2, G, ...] tensors, dim 0 of the others
        work[key] = value.index_select(1 if key in _PER_COMPONENT else 0, keep)
    return keep if rows is None else rows[keep]


# --- one set, step by step (teaching plots) ---


@torch.no_grad()
def gmm_history(
    values_1d: Tensor | np.ndarray,
    max_iter: int = SKLEARN_MAX_ITER,
    tol: float = SKLEARN_TOL,
    reg_covar: float = SKLEARN_REG_COVAR,
    dtype: torch.dtype = torch.float64,
    init: str = GMM_INITS[0],
) -> list[dict]:
    """EM on one set of costs, one entry per step, with the same equations as :func:`fit_gmm`.

    Entry ``t`` holds the parameters after ``t`` iterations (entry 0: the ``init`` one) and the
    E-step under them: ``responsibilities`` ``[n, 2]``, ``labels`` ``[n]`` and ``log_likelihood``, the
    mean log P(a) per sample (entry ``t`` is scikit-learn's ``lower_bounds_[t]``). It stops where
    :func:`fit_gmm` stops, so the last entry is ``fit_gmm``'s result and there are ``n_iter + 1`` entries.

    Args:
        values_1d: ``[n]`` the costs of one GT's candidates.
        max_iter: EM iteration limit, as :func:`fit_gmm`.
        tol: EM tolerance, as :func:`fit_gmm`.
        reg_covar: added to every variance.
        dtype: computation dtype.
        init: the EM's start (:data:`GMM_INITS`).

    Returns:
        One dict per step with ``iteration``, ``means``, ``variances``, ``weights`` (each ``[2]``),
        ``responsibilities`` ``[n, 2]``, ``labels`` ``[n]`` and ``log_likelihood``.
    """
    x = torch.as_tensor(values_1d).to(dtype).reshape(1, -1)  # one row, G = 1
    if x.shape[-1] == 0 or not bool(torch.isfinite(x).all()):
        raise ValueError(f"gmm_history: values_1d must be non-empty and finite, got {x.shape[-1]} values")
    if init not in GMM_INITS:
        raise ValueError(f"gmm_history: unknown init {init!r}; valid choices: {', '.join(GMM_INITS)}")
    mask = torch.ones_like(x)
    weights, means, variances = initial_parameters(x, mask.bool(), init, reg_covar)
    sq_dist = (x - means).square()
    history, prev_ll, stop = [], -math.inf, max_iter == 0
    for it in range(max_iter + 1):
        joint = log_joint(sq_dist, weights, variances)
        resp, log_density = posterior(joint, mask)
        ll = float(log_density.mean())
        history.append(
            {
                "iteration": it,
                "means": means[:, 0, 0],
                "variances": variances[:, 0, 0],
                "weights": weights[:, 0, 0],
                "responsibilities": resp[:, 0].T,
                "labels": (joint[1, 0] > joint[0, 0]).to(torch.int64),
                "log_likelihood": ll,
            }
        )
        if stop:
            break
        # Iteration it + 1 as scikit-learn runs it: compare this E-step's likelihood, then M-step anyway.
        stop = abs(ll - prev_ll) < tol or it + 1 == max_iter
        weights, means, variances, sq_dist = m_step(x, resp, reg_covar)
        prev_ll = ll
    return history


# --- the reference ---


def fit_gmm_sklearn(
    values_1d: np.ndarray | Tensor,
    max_iter: int = SKLEARN_MAX_ITER,
    tol: float = SKLEARN_TOL,
    reg_covar: float = SKLEARN_REG_COVAR,
    init: str = GMM_INITS[0],
) -> GMMFit:
    """The reference code's FitGMM: ``sklearn.mixture.GaussianMixture`` on one set, as a :class:`GMMFit` (G=1).

    Same initialisation as :func:`fit_gmm`, passed as ``weights_init`` / ``means_init`` /
    ``precisions_init`` and computed here again with NumPy (``"paper"``: §4.1, the reference code's;
    ``"data"``: the sorted halves). Needs at least 2 finite values (scikit-learn's own limit;
    :func:`fit_gmm` defines the 1-value case).

    Args:
        values_1d: ``[n]`` the costs of one GT's candidates.
        max_iter: EM iteration limit.
        tol: EM tolerance.
        reg_covar: added to every variance.
        init: the EM's start (:data:`GMM_INITS`).

    Returns:
        :class:`GMMFit` of one row (``means [1, 2]``, ``labels [1, n]``, ...), float64 CPU tensors.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x = np.asarray(values_1d.detach().cpu() if isinstance(values_1d, Tensor) else values_1d, dtype=np.float64)
    x = x.reshape(-1, 1)
    if x.shape[0] < 2 or not np.isfinite(x).all():
        raise ValueError(f"fit_gmm_sklearn: values_1d needs >= 2 finite values, got {x.ravel().tolist()[:5]}...")
    if init == "paper":
        means_init, precisions_init = [[x.min()], [x.max()]], [[[1.0]], [[1.0]]]
    elif init == "data":
        ranked, half = np.sort(x[:, 0]), x.shape[0] // 2
        low, high = ranked[:half], ranked[x.shape[0] - half :]
        means_init = [[low.mean()], [high.mean()]]
        precisions_init = [[[1.0 / (low.var() + reg_covar)]], [[1.0 / (high.var() + reg_covar)]]]
    else:
        raise ValueError(f"fit_gmm_sklearn: unknown init {init!r}; valid choices: {', '.join(GMM_INITS)}")
    gmm = GaussianMixture(
        2,
        covariance_type="full",
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        weights_init=[0.5, 0.5],
        means_init=means_init,
        precisions_init=precisions_init,
    )
    with warnings.catch_warnings():  # non-convergence is reported in `converged`
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    row = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)).reshape(1, -1)
    return GMMFit(
        means=row(gmm.means_),
        variances=row(gmm.covariances_),
        weights=row(gmm.weights_),
        responsibilities=torch.as_tensor(gmm.predict_proba(x))[None],
        log_density=row(gmm.score_samples(x)),
        labels=torch.as_tensor(gmm.predict(x), dtype=torch.int64)[None],
        n_iter=torch.tensor([gmm.n_iter_]),
        converged=torch.tensor([bool(gmm.converged_)]),
    )


# --- realistic inputs for tests, benchmarks and notebooks ---


def synthetic_candidate_costs(
    num_gts: int,
    num_candidates: int = 45,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """PAA-like candidate costs for benchmarks and the course: sorted ascending, padding last (0).

    About 65 % of rows are bimodal (a few low costs ~0.5–2 from good anchors, the rest ~2–6), the others
    unimodal; 30 % of rows have fewer valid candidates (2 to N).

    Args:
        num_gts: ``G``, rows.
        num_candidates: ``N``, slots per row (5 levels × K = 9).
        seed: the generator's seed.
        device: where the tensors go.

    Returns:
        ``(costs [G, N] float64, valid [G, N] bool)``.
    """
    g = torch.Generator().manual_seed(seed)
    u = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)
    bimodal, short = u(num_gts, 1) < 0.65, u(num_gts) < 0.3
    count = torch.where(short, 2 + (u(num_gts) * (num_candidates - 1)).long(), num_candidates)
    z = torch.randn(num_gts, num_candidates, generator=g, dtype=torch.float64)
    foreground = u(num_gts, num_candidates) < 0.05 + 0.4 * u(num_gts, 1)
    fg = 0.6 + 1.0 * u(num_gts, 1) + (0.1 + 0.3 * u(num_gts, 1)) * z
    bg = 2.8 + 2.5 * u(num_gts, 1) + (0.3 + 0.8 * u(num_gts, 1)) * z
    uni = 1.0 + 4.0 * u(num_gts, 1) + (0.2 + 0.8 * u(num_gts, 1)) * z
    costs = torch.where(bimodal, torch.where(foreground, fg, bg), uni).clamp(min=0.05)
    valid = torch.arange(num_candidates)[None] < count.clamp(max=num_candidates)[:, None]
    costs = costs.masked_fill(~valid, math.inf).sort(dim=1).values.masked_fill(~valid, 0.0)
    return costs.to(device), valid.to(device)

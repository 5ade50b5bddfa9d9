"""Helpers shared by the course notebooks (``notebooks/*.ipynb``): one briefly trained detector, cached.

    FAST = os.environ.get("PAA_FAST") == "1"        # the CI setting; students run the full one
    run_dir = briefly_trained_run(FAST)              # trains once, later calls (and notebooks) reuse it
    model, state = load_run(run_dir)                 # eval-mode PAADetector + its checkpoint dict
    train_ds, val_ds = run_datasets(state)           # the embedded synthetic dataset it was trained on
    view = head_outputs(model, image)                # one image through backbone + FPN + head
    with post_processing(model, unified_score=False):  # §3.2: rank by S_cls alone instead of Eq. (1)
        metrics = evaluate_coco(model, val_ds)
    expect(fit_separates, "the converged fit has two distinct components")  # asserted in the full setting
    check("Exercise 1", answer, expected, hint="...")  # grades a student's answer (see notebooks/README.md)

The run lives in ``<cache>/course/course-<fast|full>-<digest>/`` (cache: :func:`~.data.synthetic.default_cache_dir`),
the digest being that of the whole training configuration: other settings, another folder. A folder
with ``final_metrics.json``, a loadable checkpoint and traces of this version is complete and is
reused; an interrupted one is resumed (``resume="auto"``), a finished but unusable one trained again
(``overwrite``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from .assign.boundaries import BOUNDARIES, boundary_cost
from .assign.config import AssignConfig
from .assign.stats import size_class
from .assign.gmm import CONVERGED_MAX_ITER, CONVERGED_TOL, GMMFit, fit_gmm
from .assign.paa import fit_and_separate
from .data.build import build_datasets
from .data.synthetic import default_cache_dir
from .engine import presets
from .engine.checkpoint import FINAL_METRICS, CheckpointError, build_from_checkpoint, resolve_checkpoint
from .engine.config import TrainConfig, set_field
from .engine.run_files import TRACE_DIR, TraceFileError, load_trace
from .engine.loop import train
from .model.postprocess import InferenceConfig
from .structures import AnchorGrid


def course_config(fast: bool, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The training configuration of the notebooks' detector: the preset :func:`~.engine.presets.course`,
    then ``overrides`` (dotted field names, as ``--section.field`` on the command line)."""
    cfg = presets.course(fast)
    for key, value in (overrides or {}).items():
        set_field(cfg, key, value)
    return cfg


def config_digest(cfg: TrainConfig) -> str:
    """A short digest of everything that shapes the run (not where it is written, not how it is resumed)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "resume", "overwrite")}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def course_run_dir(cfg: TrainConfig, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/course/<name>-<digest>``: the folder keyed by the settings."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "course" / f"{cfg.name}-{config_digest(cfg)}"


def is_complete(run_dir: str | Path) -> bool:
    """The run finished (final metrics written), its checkpoint loads and its traces are of this version."""
    run_dir = Path(run_dir)
    if not (run_dir / FINAL_METRICS).is_file():
        return False
    traces = sorted((run_dir / TRACE_DIR).glob("iter_*.pt"))
    try:
        resolve_checkpoint(run_dir)
        if traces:
            load_trace(traces[0])
    except (CheckpointError, TraceFileError):
        return False
    return True


def briefly_trained_run(
    fast: bool, *, cache_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """The run folder of the notebooks' briefly trained PAA detector; trains it the first time only.

    ``fast`` picks the CI setting, otherwise what a student runs (:func:`~.engine.presets.course`). The
    folder holds ``last.pth``, ``final_metrics.json``, ``metrics.jsonl`` and ``trace/`` (assignment
    snapshots from iteration 0 on), as written by :func:`~paa_toolkit.engine.loop.train`.
    """
    cfg = course_config(fast, overrides)
    run_dir = course_run_dir(cfg, cache_dir)
    if is_complete(run_dir):
        return run_dir
    cfg.output_dir = str(run_dir)
    if (run_dir / FINAL_METRICS).is_file():  # finished, but unusable (e.g. traces of an older version): again
        cfg.overwrite = True
    else:
        cfg.resume = "auto"  # an interrupted run goes on where it stopped
    train(cfg, progress=progress)
    return run_dir


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run folder (eval mode, on ``device``) and its checkpoint dict."""
    _, state = resolve_checkpoint(run_dir)
    return build_from_checkpoint(state, device=device), state


def run_datasets(state: Mapping[str, Any]):
    """``(train, val)`` datasets of a checkpoint's configuration (train: no flips, for looking at it)."""
    cfg = TrainConfig.from_dict(state["config"])
    cfg.data.flip_prob = 0.0
    return build_datasets(cfg.data)


@contextmanager
def post_processing(model: nn.Module, **changes: Any) -> Iterator[nn.Module]:
    """Temporarily change a :class:`~paa_toolkit.model.detector.PAADetector`'s test-time settings.

    Keys are the fields of :class:`~paa_toolkit.model.postprocess.InferenceConfig`: ``unified_score``
    (True: rank by the unified score of Eq. 1; False: classification only), ``score_voting`` (§3.3),
    ``voting_sigma`` (σ_t of Eq. 9), ``nms_thresh``, ``score_thresh``...
    """
    inference = getattr(model, "inference", None)
    if not isinstance(inference, InferenceConfig):
        raise ValueError(f"{type(model).__name__} has no test-time settings (.inference): a PAADetector is needed")
    valid = {f.name for f in fields(InferenceConfig)}
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise ValueError(f"unknown test-time setting(s) {unknown}; valid: {', '.join(sorted(valid))}")
    model.inference = replace(inference, **changes)
    try:
        yield model
    finally:
        model.inference = inference


@dataclass
class HeadView:
    """One image as the detector sees it: the resized picture, its anchors and the raw head outputs.

    All boxes are in resized-image pixels (``scale = (sy, sx)`` maps original → resized).
    """

    image: Tensor  # [3, h, w] uint8, resized, un-normalised
    scale: tuple[float, float]
    anchors: AnchorGrid  # boxes [A, 4], num_per_level, strides
    cls_logits: Tensor  # [A, C]
    pred_boxes: Tensor  # [A, 4] decoded box of every anchor (xyxy)
    aux_logits: Tensor | None  # [A] IoU-prediction logit (§3.2) or None
    feature_sizes: list[tuple[int, int]]


@torch.no_grad()
def head_outputs(model: nn.Module, image: Tensor) -> HeadView:
    """Run ``image`` ([3, H, W] float in [0, 1]) through the detector's resize, backbone, FPN and head.

    The same steps as the model's own forward in eval mode, stopped before post-processing.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got shape {tuple(image.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        batch, _ = model.eval_transform()([image.to(device)])
        out, anchors, pred_boxes = model.run_network(batch.tensors)
    finally:
        model.train(was_training)
    h, w = batch.image_sizes[0]
    mean = torch.tensor(model.transform.image_mean, device=device)[:, None, None]
    std = torch.tensor(model.transform.image_std, device=device)[:, None, None]
    picture = ((batch.tensors[0, :, :h, :w] * std + mean).clamp(0, 1) * 255).to(torch.uint8)
    return HeadView(
        image=picture.cpu(), scale=(h / image.shape[-2], w / image.shape[-1]),
        anchors=AnchorGrid(anchors.boxes.cpu(), list(anchors.num_per_level), list(anchors.strides), anchors.scale),
        cls_logits=out.cls_logits[0].cpu(), pred_boxes=pred_boxes[0].cpu(),
        aux_logits=None if out.aux_logits is None else out.aux_logits[0].cpu(),
        feature_sizes=[tuple(s) for s in out.feature_sizes],
    )


@torch.no_grad()
def detections_from_view(model: nn.Module, view: HeadView) -> dict[str, Tensor]:
    """The model's detections of one image from its :class:`HeadView` — post-processing only, with the
    model's current test-time settings (:func:`post_processing` changes them), boxes in original-image
    pixels. The same as ``model([image])[0]`` without running the network again: notebooks compare
    several settings on one forward pass per image."""
    det = model.postprocess(SimpleNamespace(cls_logits=view.cls_logits[None], aux_logits=None if view.aux_logits is None
                                            else view.aux_logits[None]),
                            view.anchors, view.pred_boxes[None], [tuple(view.image.shape[-2:])],
                            model.inference.score_voting)[0]
    sy, sx = view.scale
    return {**det, "boxes": det["boxes"] / det["boxes"].new_tensor([sx, sy, sx, sy])}


def scale_boxes(boxes: Tensor, scale: tuple[float, float]) -> Tensor:
    """Original-image boxes ``[N, 4]`` → resized-image boxes (``scale = (sy, sx)`` of a :class:`HeadView`)."""
    sy, sx = scale
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)


# ---- the EM of Procedure 1, line 12, as the course compares it -----------------------------------------
#: Ashman's D above which a two-Gaussian mixture is clearly bimodal (the two groups do not overlap much).
BIMODAL_D = 2.0
#: ... and each component must hold at least this many candidates (one outlier is not a group).
BIMODAL_MIN_COUNT = 2
#: Two fits "differ" when a mean moved by more than this fraction of the GT's cost range.
VISIBLE_SHIFT = 0.1


def ashman_d(means: Tensor, variances: Tensor) -> Tensor:
    """Ashman's D of two Gaussians, ``|m_1 - m_0| / sqrt((σ_0² + σ_1²) / 2)``, per row of ``[G, 2]`` tensors.

    D > 2 (:data:`BIMODAL_D`): the mixture has two clearly separated modes.
    """
    return (means[..., 1] - means[..., 0]).abs() / ((variances[..., 0] + variances[..., 1]) / 2).sqrt()


def bic_gain(costs: Tensor, valid: Tensor, fit: GMMFit) -> Tensor:
    """BIC(one Gaussian) − BIC(the two-Gaussian ``fit``) per row ``[G]``: > 0 when the data prefer two.

    BIC = −2 log L + p log n with p = 2 parameters for one Gaussian, 5 for the mixture (2 means, 2
    variances, 1 free weight). Costs drawn from one Gaussian give ≤ 0 in ~97 % of 45-candidate sets,
    while D > 2 alone (EM puts a narrow component on a tail) would call 60 % of them bimodal.
    """
    x = costs.double().masked_fill(~valid, 0.0)
    n = valid.sum(1).double()
    mean = x.sum(1) / n.clamp(min=1)
    var = ((x - mean[:, None]).square() * valid).sum(1) / n.clamp(min=1) + 1e-6
    ll_one = -0.5 * n * (torch.log(2 * math.pi * var) + 1)
    ll_two = fit.log_density.double().masked_fill(~valid, 0.0).sum(1)
    log_n = torch.log(n.clamp(min=1))
    return (-2 * ll_one + 2 * log_n) - (-2 * ll_two + 5 * log_n)


@dataclass
class FitComparison:
    """Every GT's candidate costs fitted twice (Procedure 1, line 12), all ``[G]`` / ``[G, ...]``.

    ``trained``: the fit training used (the snapshot's settings; by default the paper's §4.1 start,
    σ = 1, stopped by scikit-learn's tol 1e-3); ``converged``: the same start run to convergence
    (:data:`CONVERGED_TOL`). ``d`` is Ashman's D of the converged fit, ``delta_bic`` its :func:`bic_gain`;
    ``bimodal`` (the course's criterion of "clearly bimodal costs"): BIC prefers two Gaussians, D > 2
    and each component holds ≥ 2 candidates; ``differs``: a mean of the two fits is apart by more than
    :data:`VISIBLE_SHIFT` of the GT's cost range (the plots differ); ``positives_differ``: separating
    with the two fits (the snapshot's rule, Fig. 3 (c) for a non-GMM rule) gives other positives.
    """

    trained: GMMFit
    converged: GMMFit
    d: Tensor
    delta_bic: Tensor
    bimodal: Tensor
    differs: Tensor
    positives_differ: Tensor
    num_candidates: Tensor


def compare_fits(costs: Tensor, valid: Tensor, settings: AssignConfig | None = None) -> FitComparison:
    """Fit ``costs [G, N]`` (``valid`` mask) as training did (``settings``: the snapshot's) and to convergence."""
    settings = settings or AssignConfig()
    x = costs.double().masked_fill(~valid, 0.0)
    trained = fit_gmm(x, valid, init=settings.gmm_init, tol=settings.gmm_tol, max_iter=settings.gmm_max_iter)
    converged = fit_gmm(x, valid, init=settings.gmm_init, tol=CONVERGED_TOL, max_iter=CONVERGED_MAX_ITER)
    d = ashman_d(converged.means, converged.variances)
    counts = torch.stack([((converged.labels == k) & valid).sum(1) for k in (0, 1)], 1)
    delta_bic = bic_gain(costs, valid, converged)
    bimodal = (delta_bic > 0) & (d > BIMODAL_D) & (counts.min(1).values >= BIMODAL_MIN_COUNT)
    spread = (x.masked_fill(~valid, -math.inf).amax(1) - x.masked_fill(~valid, math.inf).amin(1)).clamp(min=1e-12)
    differs = (trained.means - converged.means).abs().amax(1) > VISIBLE_SHIFT * spread
    rule = settings.rule if settings.rule in BOUNDARIES else "c"
    sorted_x, order = x.masked_fill(~valid, math.inf).sort(1)  # the rules read sorted rows
    sorted_valid = valid.gather(1, order)
    sorted_x = sorted_x.masked_fill(~sorted_valid, 0.0)
    labels = [fit_and_separate(sorted_x, sorted_valid, rule, fnp_num=settings.fnp_num,
                               fsr_thresh=settings.fsr_thresh, gmm_init=settings.gmm_init, gmm_tol=tol,
                               gmm_max_iter=it)[0]
              for tol, it in ((settings.gmm_tol, settings.gmm_max_iter), (CONVERGED_TOL, CONVERGED_MAX_ITER))]
    positives_differ = ((labels[0] != labels[1]) & sorted_valid).any(1)
    return FitComparison(trained, converged, d, delta_bic, bimodal, differs, positives_differ, valid.sum(1))


#: GTs with fewer candidates are not judged bimodal or not (too few points for two Gaussians and a BIC).
MIN_CANDIDATES_TO_JUDGE = 10


@dataclass
class TracedGTs:
    """Every GT of an assignment snapshot (one row per GT, as its diagnostics) with both EM fits."""

    image: Tensor  # [G] image of the snapshot
    gt: Tensor  # [G] GT index in its image
    area: Tensor  # [G] box area in the resized image
    size: Tensor  # [G] COCO size: 0 small (< 32²), 1 medium (< 96²), 2 large
    num_candidates: Tensor  # [G]
    fits: FitComparison

    @property
    def judged(self) -> Tensor:
        """GTs with at least :data:`MIN_CANDIDATES_TO_JUDGE` candidates."""
        return self.num_candidates >= MIN_CANDIDATES_TO_JUDGE

    def summary(self) -> dict[str, float]:
        """Over the judged GTs: how many, the fraction with clearly bimodal costs, with an early-stopped
        (visibly different) training fit, with other positives under the converged fit; the median EM
        iterations of both fits."""
        j = self.judged
        f = self.fits
        frac = lambda flag: float(flag[j].double().mean()) if j.any() else math.nan
        return {"gts": int(len(j)), "judged": int(j.sum()), "bimodal": frac(f.bimodal), "differs": frac(f.differs),
                "positives_differ": frac(f.positives_differ),
                "em_iterations": float(f.trained.n_iter[j].double().median()) if j.any() else math.nan,
                "converged_iterations": float(f.converged.n_iter[j].double().median()) if j.any() else math.nan}


def traced_gts(snapshot: Any) -> TracedGTs:
    """The GTs of a trace snapshot (``<run>/trace/iter_*.pt``) and :func:`compare_fits` of their costs
    under the snapshot's own assignment settings."""
    d = snapshot.diagnostics
    fits = compare_fits(d.candidate_cost, d.candidate_valid, getattr(snapshot, "settings", None))
    area = d.gt_area if d.gt_area is not None else torch.full_like(d.candidate_cost[:, 0], math.nan)
    return TracedGTs(d.image_index, d.gt_index, area, size_class(area), d.candidate_valid.sum(1), fits)


def gt_fits(costs: Tensor, settings: AssignConfig | None = None, rule: str | None = None) -> dict[str, dict[str, Any]]:
    """One GT's candidate costs ``[n]`` fitted as training did (``"trained"``) and run to convergence
    (``"converged"``), each separated with ``rule`` (default: the settings' rule; Fig. 3 (c) for a non-GMM
    rule). Per fit: ``fit`` (a :class:`GMMFit` with one row), ``labels`` ``[n]`` in the order of the sorted
    costs, ``boundary`` (the last positive's cost), ``n_iter``, ``positives``, ``ignored``.
    """
    settings = settings or AssignConfig()
    rule = rule or (settings.rule if settings.rule in BOUNDARIES else "c")
    row = costs.double().sort().values[None]
    ok = torch.ones_like(row, dtype=torch.bool)
    out = {}
    for name, tol, max_iter in (("trained", settings.gmm_tol, settings.gmm_max_iter),
                                ("converged", CONVERGED_TOL, CONVERGED_MAX_ITER)):
        labels, fit = fit_and_separate(row, ok, rule, fnp_num=settings.fnp_num, fsr_thresh=settings.fsr_thresh,
                                       gmm_init=settings.gmm_init, gmm_tol=tol, gmm_max_iter=max_iter)
        out[name] = {"fit": fit, "labels": labels[0], "boundary": float(boundary_cost(row, labels)[0]),
                     "n_iter": int(fit.n_iter[0]), "positives": int((labels == 1).sum()),
                     "ignored": int((labels == -1).sum())}
    return out


def fit_row(fit: GMMFit, row: int) -> dict[str, Tensor]:
    """Row ``row`` of a batched fit as the ``{"means", "variances", "weights", "labels"}`` the plots take."""
    return {k: getattr(fit, k)[row] for k in ("means", "variances", "weights", "labels", "n_iter")}


# ---- exercises and the notebooks' claims ----------------------------------------------------------------
#: ``PAA_CHECK_SOLUTIONS=1`` (the tests): an unanswered exercise is an error (the solution was injected).
CHECK_SOLUTIONS_ENV = "PAA_CHECK_SOLUTIONS"


class ExerciseError(AssertionError):
    """A wrong answer (or, under ``PAA_CHECK_SOLUTIONS=1``, a missing one); the message gives a hint."""


def _fast() -> bool:
    return os.environ.get("PAA_FAST") == "1"


def _same(answer: Any, expected: Any, rel_tol: float, abs_tol: float) -> bool:
    if isinstance(expected, (Tensor, np.ndarray)) or isinstance(answer, (Tensor, np.ndarray)):
        a = answer.detach().cpu().numpy() if isinstance(answer, Tensor) else np.asarray(answer)
        b = expected.detach().cpu().numpy() if isinstance(expected, Tensor) else np.asarray(expected)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=rel_tol, atol=abs_tol, equal_nan=True))
        return bool((a == b).all())
    if isinstance(expected, bool) or isinstance(answer, bool):
        return isinstance(answer, (bool, np.bool_)) and bool(answer) == bool(expected)
    if isinstance(expected, (int, float)) and isinstance(answer, (int, float, np.integer, np.floating)):
        return math.isclose(float(answer), float(expected), rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(expected, (set, frozenset)):
        return isinstance(answer, (set, frozenset, list, tuple)) and set(answer) == set(expected)
    if isinstance(expected, (list, tuple)):
        return (isinstance(answer, (list, tuple)) and len(answer) == len(expected)
                and all(_same(a, b, rel_tol, abs_tol) for a, b in zip(answer, expected)))
    if isinstance(expected, Mapping):
        return (isinstance(answer, Mapping) and set(answer) == set(expected)
                and all(_same(answer[k], expected[k], rel_tol, abs_tol) for k in expected))
    return answer == expected


def check(exercise: str, answer: Any, expected: Any, *, hint: str, why: str = "", rel_tol: float = 1e-3,
          abs_tol: float = 1e-6) -> None:
    """Grade a student's ``answer`` of ``exercise`` against ``expected`` (a value, or a predicate).

    * not answered yet (``answer`` is ``...`` or None): prints the hint — Run All goes on; under
      ``PAA_CHECK_SOLUTIONS=1`` (the tests inject the hidden solutions) it raises instead;
    * right (numbers within ``rel_tol`` / ``abs_tol``, tensors / arrays element-wise, sets as sets,
      lists in order): prints "correct" and ``why``;
    * wrong: raises :class:`ExerciseError` with the hint (never the expected value).
    """
    if answer is ... or answer is None:
        if os.environ.get(CHECK_SOLUTIONS_ENV) == "1":
            raise ExerciseError(f"{exercise}: no answer although {CHECK_SOLUTIONS_ENV}=1 (was the solution injected?)")
        print(f"{exercise}: not answered yet — replace the ... above. Hint: {hint}")
        return
    ok = bool(expected(answer)) if callable(expected) else _same(answer, expected, rel_tol, abs_tol)
    if not ok:
        shown = repr(answer)
        raise ExerciseError(f"{exercise}: {shown[:200]} is not right. Hint: {hint}")
    print(f"{exercise}: correct ✓ {why}".rstrip())


def expect(ok: bool, claim: str) -> None:
    """A claim the notebook's text makes about a figure, with its numbers in ``claim``.

    Printed with ✓ when it holds; when it does not: an ``AssertionError`` in the student setting (so a
    regression fails CI), only a printed ✗ with ``PAA_FAST=1`` (a few iterations cannot show the paper's
    figures).
    """
    if ok:
        print(f"✓ {claim}")
    elif _fast():
        print(f"✗ (PAA_FAST=1: not asserted) {claim}")
    else:
        raise AssertionError(f"the notebook's claim does not hold: {claim}")


def repository_root(start: str | Path | None = None) -> Path:
    """The folder holding ``pyproject.toml`` (and ``benchmarks/``): above ``start`` (default: the current
    folder), else the one this package was installed from."""
    for base in (Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent):
        for folder in (base, *base.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "paa_toolkit").is_dir():
                return folder
    return Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """``python -m paa_toolkit.course`` (``make course``): train the course detector, or find it cached;
    print where it is, how long it took, its AP and how bimodal its GTs' candidate costs are."""
    parser = argparse.ArgumentParser(prog="python -m paa_toolkit.course", description=main.__doc__)
    parser.add_argument("--fast", action="store_true", help="the PAA_FAST=1 setting instead of the student one")
    parser.add_argument("--cache-dir", help="cache folder (default: $PAA_TOOLKIT_CACHE or ~/.cache/paa_toolkit)")
    args = parser.parse_args(argv)
    cfg = course_config(args.fast)
    run_dir = course_run_dir(cfg, args.cache_dir)
    cached = is_complete(run_dir)
    print(f"course detector ({'fast' if args.fast else 'student'} setting): {run_dir}")
    start = time.perf_counter()
    briefly_trained_run(args.fast, cache_dir=args.cache_dir, progress=True)
    took = time.perf_counter() - start
    final = json.loads((run_dir / FINAL_METRICS).read_text())
    print("found in the cache, nothing trained" if cached else
          f"trained in {took / 60:.1f} min ({cfg.solver.max_iters} iterations, then the final evaluation)")
    print(f"AP {final['AP']:.3f}, AP50 {final['AP50']:.3f}, AP75 {final['AP75']:.3f} on {cfg.data.synthetic_num_val} "
          f"validation images; IoU-prediction error on true positives {final.get('iou_error_tp', math.nan):.3f}")
    traces = sorted((run_dir / TRACE_DIR).glob("iter_*.pt"))
    if traces:
        snapshot = load_trace(traces[-1])["snapshot"]  # the safe reader: nothing in the file is unpickled
        s = traced_gts(snapshot).summary()
        print(f"last trace: {s['gts']} GTs, {s['judged']} with >= {MIN_CANDIDATES_TO_JUDGE} candidates, of which "
              f"{100 * s['bimodal']:.0f} % have clearly bimodal costs (BIC, Ashman's D > {BIMODAL_D:g}) and "
              f"{100 * s['differs']:.0f} % an EM fit that stopped early (median {s['em_iterations']:.0f} vs "
              f"{s['converged_iterations']:.0f} iterations)")
    print("open the notebooks: jupyter lab notebooks/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "BIMODAL_D", "BIMODAL_MIN_COUNT", "CHECK_SOLUTIONS_ENV", "CONVERGED_MAX_ITER", "CONVERGED_TOL", "ExerciseError",
    "FitComparison", "HeadView", "MIN_CANDIDATES_TO_JUDGE", "TracedGTs", "VISIBLE_SHIFT", "ashman_d", "bic_gain", "briefly_trained_run", "check", "compare_fits", "config_digest",
    "course_config", "course_run_dir", "detections_from_view", "expect", "fit_row", "gt_fits", "head_outputs", "is_complete", "load_run",
    "post_processing", "repository_root", "run_datasets", "scale_boxes", "traced_gts",
]

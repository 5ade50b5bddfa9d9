"""The three course explorers, each ONE call in a notebook:

    assignment_explorer("runs/demo/trace")         # Fig. 1 / 3 / 4a live: rule, K, λ, image, GT, iteration
    gmm_explorer()                                  # EM on toy costs, one iteration per click, vs scikit-learn
    voting_explorer(detections, candidates, image)  # σ_t and the NMS IoU → boxes before / after voting

Thin by design: the computing lives in :mod:`.compute`, the figures in :mod:`paa_toolkit.viz`; an
explorer wires controls to them. Each is an ``ipywidgets.VBox`` whose controls and outputs are
attributes (``explorer.rule.value = "fnp"``), whose ``label`` (an ``ipywidgets.Label``) reads like
``"positives: 7"`` after every update, and whose figures are PNGs in ``ipywidgets.Image`` widgets
(the last ``matplotlib`` figures stay in ``explorer.figures`` for tests). ``with explorer.hold():``
changes several controls with one redraw.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import ipywidgets as W
from matplotlib.figure import Figure

from ..assign import get_rule, rules
from ..assign.gmm import CONVERGED_MAX_ITER, CONVERGED_TOL, GMM_INITS, fit_gmm_sklearn, gmm_history
from ..model.postprocess import VOTING_SIGMA, InferenceConfig
from ..viz.assignment import plot_snapshot
from ..viz.detections import plot_voting
from ..viz.gmm import plot_cost_histogram, plot_gmm_comparison
from ..viz.successors import plot_rule_comparison
from . import compute

#: every registered rule (:mod:`paa_toolkit.assign.registry`) as (title, name)
RULE_OPTIONS = [(rule.title, rule.name) for rule in rules()]
_WIDE = {"description_width": "initial"}


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes (Agg; no pyplot, no window)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


class Explorer(W.VBox):
    """Common plumbing: one ``update()`` per control change, ``hold()`` to batch changes, errors shown."""

    def __init__(self, dpi: int = 80, **kwargs):
        super().__init__(**kwargs)
        self.dpi = dpi
        self.label = W.Label("")
        self.status = W.Label("")
        self.figures: dict[str, Figure] = {}
        self._held = 0
        self._dirty = False

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Change several controls, redraw once at the end."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if self._held == 0 and self._dirty:
                self.update()

    def _observe(self, *controls: W.Widget) -> None:
        for control in controls:
            control.observe(self._changed, names="value")

    def _changed(self, _change=None) -> None:
        if self._held:
            self._dirty = True
        else:
            self.update()

    def update(self) -> None:
        self._dirty = False
        try:
            self._update()
        except ValueError as err:  # bad combination of controls: say so, keep the last figures
            self.status.value = f"error: {err}"

    def _update(self) -> None:
        raise NotImplementedError

    def _show(self, name: str, fig: Figure, image: W.Image) -> None:
        self.figures[name] = fig
        image.value = figure_png(fig, self.dpi)


# ---- assignment ---------------------------------------------------------------------------------------
class AssignmentExplorer(Explorer):
    """Choose trace iteration, image, GT, rule (Fig. 3 (a)–(d), FNP, FSR, ATSS, max-IoU), K and λ: the
    GT's cost histogram with its GMM (Fig. 1 / 3; where training's EM stopped early, the fit run to
    convergence dotted beside it and both iteration counts in the status), the image with its anchors
    (Fig. 4a) and the positive count update together. See :func:`paa_toolkit.assign.replay.replay_assignment` for
    what is exact and what approximated."""

    def __init__(
        self,
        source: Any,
        *,
        rule: str | None = None,
        fnp_num: int | None = None,
        fsr_thresh: float | None = None,
        image: int | None = None,
        gt: int | None = None,
        dpi: int = 80,
        **source_kwargs,
    ):
        super().__init__(dpi=dpi)
        self.source = compute.open_source(source, **source_kwargs)
        iterations = self.source.iterations
        self.snapshot = self.source.snapshot(iterations[-1])
        own = self.snapshot.settings  # the run's own rule, K, λ, n, t: the first view is the training assignment
        k, lam = own.topk, own.score_lambda
        rule = own.rule if rule is None else rule
        fnp_num = own.fnp_num if fnp_num is None else fnp_num
        fsr_thresh = own.fsr_thresh if fsr_thresh is None else fsr_thresh
        self.iteration = W.SelectionSlider(
            options=iterations,
            value=iterations[-1],
            description="iteration",
            disabled=len(iterations) == 1,
            style=_WIDE,
        )
        self.image = W.Dropdown(description="image", style=_WIDE)
        self.gt = W.Dropdown(description="GT", style=_WIDE)
        self.rule = W.Dropdown(options=RULE_OPTIONS, value=rule, description="rule", style=_WIDE)
        self.topk = W.IntSlider(value=k, min=1, max=max(25, k), description="K", style=_WIDE)
        self.score_lambda = W.FloatSlider(value=lam, min=0.0, max=3.0, step=0.1, description="λ", style=_WIDE)
        self.fnp_num = W.IntSlider(value=fnp_num, min=1, max=40, description="FNP n", style=_WIDE)
        self.fsr_thresh = W.FloatSlider(
            value=fsr_thresh, min=0.01, max=0.99, step=0.01, description="FSR t", style=_WIDE
        )
        for control, setting in (
            (self.topk, "topk"),
            (self.score_lambda, "score_lambda"),
            (self.fnp_num, "fnp_num"),
            (self.fsr_thresh, "fsr_thresh"),
        ):
            control.setting = setting  # the AssignConfig field it sets
        self.histogram = W.Image(format="png")
        self.overlay = W.Image(format="png")
        self.replay: compute.Replay | None = None
        self.view: dict[str, Any] = {}
        self._replays: dict[tuple, compute.Replay] = {}
        self.children = [
            W.HBox([self.iteration, self.image, self.gt]),
            W.HBox([self.rule, self.topk, self.score_lambda]),
            W.HBox([self.fnp_num, self.fsr_thresh]),
            W.HBox([self.label, self.status]),
            W.HBox([self.histogram, self.overlay]),
        ]
        self._set_images()
        if image is not None:  # the first view: this image and GT (else image 0, its first GT)
            self.image.value = image
            self._set_gts()
        if gt is not None:
            self.gt.value = gt
        self._observe(
            self.iteration, self.image, self.gt, self.rule, self.topk, self.score_lambda, self.fnp_num, self.fsr_thresh
        )
        self.update()

    # keep the image / GT choices in step with the snapshot
    def _set_images(self) -> None:
        count = self.snapshot.matched_gt.shape[0]
        value = self.image.value if self.image.value is not None and self.image.value < count else 0
        self.image.options = [(f"{i}", i) for i in range(count)]
        self.image.value = value
        self._set_gts()

    def _set_gts(self) -> None:
        i = self.image.value
        gts = self.snapshot.gt_valid[i].nonzero()[:, 0].tolist()
        labels = self.snapshot.gt_labels[i]
        keep = self.gt.value if self.gt.value in gts else (gts[0] if gts else None)
        self.gt.options = [(f"{g} (class {int(labels[g])})", g) for g in gts]
        self.gt.value = keep

    def _changed(self, change=None) -> None:
        with self.hold():  # a new iteration brings new images, a new image new GTs: one redraw for all
            owner = change["owner"] if change else None
            if owner is self.iteration:
                self.snapshot = self.source.snapshot(change["new"])
                self._set_images()
            elif owner is self.image:
                self._set_gts()
            self._dirty = True

    def _replay(self) -> compute.Replay:
        key = (
            self.iteration.value,
            self.rule.value,
            self.topk.value,
            round(self.score_lambda.value, 6),
            self.fnp_num.value,
            round(self.fsr_thresh.value, 6),
        )
        if key not in self._replays:
            if len(self._replays) > 16:
                self._replays.clear()
            self._replays[key] = compute.replay_assignment(
                self.snapshot,
                self.rule.value,
                topk=self.topk.value,
                score_lambda=self.score_lambda.value,
                fnp_num=self.fnp_num.value,
                fsr_thresh=self.fsr_thresh.value,
            )
        return self._replays[key]

    def _update(self) -> None:
        uses = get_rule(self.rule.value).uses  # a control is live where the rule reads its setting
        for control in (self.topk, self.score_lambda, self.fnp_num, self.fsr_thresh):
            control.disabled = control.setting not in uses
        i, g = self.image.value, self.gt.value
        if g is None:
            self.label.value = "positives: 0"
            self.status.value = f"image {i} has no GT"
            return
        self.replay = self._replay()
        self.view = compute.gt_candidates(self.snapshot, self.replay, i, g)
        v = self.view
        self.label.value = f"positives: {v['num_positive']}"
        em = ""
        if v["em_iterations"] is not None and v["converged"] is not None:
            em = f", EM {v['em_iterations']} iterations (run to convergence: {v['converged']['n_iter']}" + (
                ", drawn dotted)" if v["converged_differs"] else ", same fit)"
            )
        self.status.value = f"| iteration {self.iteration.value}, {self.replay.note}{em}"
        title = f"GT {g}: {v['num_candidates']} candidates, {v['num_positive']} positives"
        if v["num_candidates"] == 0:  # GetAnchors left it no anchor (line 3): nothing to histogram
            self.status.value += "; this GT has no candidate (every anchor overlapping it belongs to another GT)"
            self._show("overlay", plot_snapshot(self.snapshot, i, g, assignment=self.replay.assignment), self.overlay)
            return
        kwargs = {"xlabel": v["xlabel"]} if v["xlabel"] else {}
        converged = v["converged"] if v["converged_differs"] else None
        self._show(
            "histogram",
            plot_cost_histogram(
                v["values"], v["fit"], v["labels"], v["boundary"], title=title, converged=converged, **kwargs
            ),
            self.histogram,
        )
        self._show("overlay", plot_snapshot(self.snapshot, i, g, assignment=self.replay.assignment), self.overlay)


class RuleComparisonExplorer(AssignmentExplorer):
    """One GT of a trained run through several rules side by side (issue 20): choose iteration, image, GT
    and the rules (default PAA (c), ATSS, TAL, SimOTA); K and λ apply to the rules that read them. Each
    column shows what the rule ranks the GT's candidates by and its positives on the image
    (:func:`paa_toolkit.viz.successors.plot_rule_comparison`); ``label`` reads ``"c: 7 | atss: 9 | ..."``."""

    def __init__(self, source: Any, *, rules: tuple[str, ...] = ("c", "atss", "tal", "simota"), **kwargs):
        super().__init__(source, **kwargs)
        self.rules = W.SelectMultiple(
            options=RULE_OPTIONS, value=tuple(rules), description="rules", rows=5, style=_WIDE
        )
        self.comparison = W.Image(format="png")
        self.children = [
            W.HBox([self.iteration, self.image, self.gt]),
            W.HBox([self.rules, self.topk, self.score_lambda]),
            W.HBox([self.label, self.status]),
            self.comparison,
        ]
        self._observe(self.rules)
        self.update()

    def _update(self) -> None:
        if not hasattr(self, "rules"):  # the base class's first update, before the rule list exists
            return
        i, g = self.image.value, self.gt.value
        if g is None:
            self.label.value = ""
            self.status.value = f"image {i} has no GT"
            return
        self.views = compute.compare_rules(
            self.snapshot, i, g, self.rules.value, topk=self.topk.value, score_lambda=self.score_lambda.value
        )
        self.label.value = " | ".join(f"{name}: {v['num_positive']}" for name, v in self.views.items())
        approximate = [name for name, v in self.views.items() if not v["exact"]]
        self.status.value = f"| iteration {self.iteration.value}" + (
            f"; approximated (no cls_logits in the trace): {', '.join(approximate)}" if approximate else ""
        )
        self._show("comparison", plot_rule_comparison(self.snapshot, i, g, self.views), self.comparison)


def rule_comparison_explorer(source: Any, **kwargs) -> RuleComparisonExplorer:
    """Several rules on the same GT of a trace folder (or run folder, trace file, snapshots, ``(model,
    dataset)``), side by side: one call in a notebook. See :class:`RuleComparisonExplorer`."""
    return RuleComparisonExplorer(source, **kwargs)


def assignment_explorer(source: Any, **kwargs) -> AssignmentExplorer:
    """Explore the anchor assignment of a training trace: one call in a notebook.

    Args:
        source: a trace folder ``<run>/trace/``, a run folder, a trace file, snapshot(s), or
            ``(model, dataset)`` (:func:`~paa_toolkit.widgets.open_source`).
        **kwargs (Any): the explorer's starting state (:class:`AssignmentExplorer`).

    Returns:
        The explorer; the last expression of a cell displays it.
    """
    return AssignmentExplorer(source, **kwargs)


# ---- GMM ----------------------------------------------------------------------------------------------
class GMMExplorer(Explorer):
    """Toy candidate costs from two clusters (sliders), EM of Eq. (4) one iteration per click
    (:func:`~paa_toolkit.assign.gmm.gmm_history`), scikit-learn's fit beside it (same start, same tol
    1e-3) and, where it ends elsewhere, the same EM run to convergence (tol 1e-6): from the paper's
    σ = 1 start a narrow cost range can stop after ~3 iterations with both means mid-range. ``init``
    picks the start (``"paper"``, §4.1, or ``"data"``); ``status`` gives the iteration counts."""

    def __init__(
        self,
        *,
        fg_mean=1.0,
        fg_std=0.3,
        fg_count=8,
        bg_mean=4.0,
        bg_std=0.8,
        bg_count=37,
        seed=0,
        init: str = GMM_INITS[0],
        dpi: int = 80,
    ):
        super().__init__(dpi=dpi)
        self.fg_mean = W.FloatSlider(value=fg_mean, min=0.0, max=8.0, step=0.1, description="fg mean", style=_WIDE)
        self.fg_std = W.FloatSlider(value=fg_std, min=0.05, max=2.0, step=0.05, description="fg spread", style=_WIDE)
        self.fg_count = W.IntSlider(value=fg_count, min=1, max=60, description="fg count", style=_WIDE)
        self.bg_mean = W.FloatSlider(value=bg_mean, min=0.0, max=8.0, step=0.1, description="bg mean", style=_WIDE)
        self.bg_std = W.FloatSlider(value=bg_std, min=0.05, max=2.0, step=0.05, description="bg spread", style=_WIDE)
        self.bg_count = W.IntSlider(value=bg_count, min=1, max=100, description="bg count", style=_WIDE)
        self.seed = W.IntSlider(value=seed, min=0, max=100, description="seed", style=_WIDE)
        self.init = W.Dropdown(options=list(GMM_INITS), value=init, description="EM start", style=_WIDE)
        self.step_button = W.Button(description="EM step", icon="step-forward")
        self.back_button = W.Button(description="back", icon="step-backward")
        self.reset_button = W.Button(description="reset", icon="undo")
        self.run_button = W.Button(description="to convergence", icon="fast-forward")
        self.plot = W.Image(format="png")
        self.step = 0
        self.costs = None
        self.history: list[dict] = []
        self.sklearn_fit = None
        self.converged_fit = None
        self.step_button.on_click(lambda _: self.go_to(self.step + 1))
        self.back_button.on_click(lambda _: self.go_to(self.step - 1))
        self.reset_button.on_click(lambda _: self.go_to(0))
        self.run_button.on_click(lambda _: self.go_to(len(self.history) - 1))
        self.children = [
            W.HBox([self.fg_mean, self.fg_std, self.fg_count]),
            W.HBox([self.bg_mean, self.bg_std, self.bg_count]),
            W.HBox([self.seed, self.init, self.back_button, self.step_button, self.reset_button, self.run_button]),
            W.HBox([self.label, self.status]),
            self.plot,
        ]
        self._observe(
            self.fg_mean, self.fg_std, self.fg_count, self.bg_mean, self.bg_std, self.bg_count, self.seed, self.init
        )
        self.update()

    def go_to(self, step: int) -> None:
        """Show the mixture after ``step`` EM iterations (clamped to the run)."""
        self.step = min(max(step, 0), len(self.history) - 1)
        self._draw()

    def _update(self) -> None:  # new data: fit again, back to the initialisation
        self.costs = compute.two_cluster_costs(
            self.fg_mean.value,
            self.fg_std.value,
            self.fg_count.value,
            self.bg_mean.value,
            self.bg_std.value,
            self.bg_count.value,
            self.seed.value,
        )
        init = self.init.value
        self.history = gmm_history(self.costs, init=init)
        self.sklearn_fit = fit_gmm_sklearn(self.costs, init=init)
        self.converged_fit = fit_gmm_sklearn(self.costs, tol=CONVERGED_TOL, max_iter=CONVERGED_MAX_ITER, init=init)
        self.step = 0
        self._draw()

    @property
    def converged_differs(self) -> bool:
        """The tol-1e-3 fit and the converged one differ visibly (a mean apart by > 10 % of the cost range)."""
        spread = float(self.costs.max() - self.costs.min()) or 1.0
        return float((self.sklearn_fit.means - self.converged_fit.means).abs().max()) > 0.1 * spread

    def _draw(self) -> None:
        entry, last = self.history[self.step], len(self.history) - 1
        n_conv = int(self.converged_fit.n_iter[0])
        fits = {
            f"ours: iteration {self.step} of {last}": entry,
            f"scikit-learn (tol 1e-3): {int(self.sklearn_fit.n_iter[0])} iterations": self.sklearn_fit,
        }
        if self.converged_differs:
            fits[f"run to convergence (tol 1e-6): {n_conv} iterations"] = self.converged_fit
        self._show("comparison", plot_gmm_comparison(self.costs, fits), self.plot)
        self.label.value = f"iteration: {self.step} / {last}"
        ours, ref = entry["means"].tolist(), self.sklearn_fit.means[0].tolist()
        conv = self.converged_fit.means[0].tolist()
        self.status.value = (
            f"| means ours ({ours[0]:.3f}, {ours[1]:.3f}), scikit-learn ({ref[0]:.3f}, {ref[1]:.3f})"
            f"; EM stopped after {last} iterations (tol 1e-3), converged after {n_conv} "
            f"({conv[0]:.3f}, {conv[1]:.3f}); mean log-likelihood {entry['log_likelihood']:.4f}"
        )


def gmm_explorer(**kwargs) -> GMMExplorer:
    """EM of the two-component GMM (Eq. 4) step by step on toy costs: one call in a notebook.

    Args:
        **kwargs (Any): the explorer's starting state (:class:`GMMExplorer`: the two clusters' means,
            spreads and counts).

    Returns:
        The explorer; the last expression of a cell displays it.
    """
    return GMMExplorer(**kwargs)


# ---- score voting ----------------------------------------------------------------------------------------
class VotingExplorer(Explorer):
    """σ_t of Eq. (9) (log slider) and the NMS IoU threshold → detections before / after score voting."""

    def __init__(
        self,
        detections: Mapping[str, Any] | None,
        candidates: Mapping[str, Any],
        image: Any = None,
        *,
        sigma: float = VOTING_SIGMA,
        nms_thresh: float = InferenceConfig.nms_thresh,
        voting_fn: Callable[..., Any] | None = None,
        dpi: int = 80,
    ):
        super().__init__(dpi=dpi)
        self.detections, self.candidates, self.image = detections, candidates, image
        self.voting_fn = voting_fn
        self.initial_nms_thresh = nms_thresh
        self.sigma = W.FloatLogSlider(
            value=sigma, base=10, min=-4, max=0, step=0.05, description="σ_t", readout_format=".4f", style=_WIDE
        )
        self.nms_thresh = W.FloatSlider(
            value=nms_thresh, min=0.05, max=0.95, step=0.05, description="NMS IoU", style=_WIDE
        )
        self.plot = W.Image(format="png")
        self.before: dict | None = None
        self.after: dict | None = None
        self.children = [W.HBox([self.sigma, self.nms_thresh]), W.HBox([self.label, self.status]), self.plot]
        self._observe(self.sigma, self.nms_thresh)
        self.update()

    def _update(self) -> None:
        # The given detections are NMS at the initial threshold; other thresholds re-run NMS on the candidates.
        same = abs(self.nms_thresh.value - self.initial_nms_thresh) < 1e-6  # the browser rounds slider values
        given = self.detections if same else None
        self.before, self.after = compute.nms_then_vote(
            self.candidates, self.sigma.value, self.nms_thresh.value, given, self.voting_fn
        )
        shift = (self.after["boxes"] - self.before["boxes"]).abs().mean().item() if len(self.before["boxes"]) else 0.0
        fig = plot_voting(self.image, self.before, self.after, candidates=self.candidates)
        self._show("voting", fig, self.plot)
        self.label.value = f"detections: {len(self.before['boxes'])}"
        self.status.value = f"| mean shift {shift:.2f} px"


def voting_explorer(
    detections: Mapping[str, Any] | None, candidates: Mapping[str, Any], image: Any = None, **kwargs
) -> VotingExplorer:
    """Score voting (§3.3) live: one call in a notebook.

    Args:
        detections: one image's detections after NMS, ``{"boxes": [D, 4], "scores": [D], "labels": [D]}``,
            or None (NMS is run on ``candidates``).
        candidates: the pre-NMS candidates, the voters, as the same kind of dict ``[K, ...]``.
        image: ``[3, H, W]`` the image to draw on, or None.
        **kwargs (Any): the explorer's starting state (:class:`VotingExplorer`).

    Returns:
        The explorer; the last expression of a cell displays it.
    """
    return VotingExplorer(detections, candidates, image, **kwargs)


__all__ = [
    "AssignmentExplorer",
    "GMMExplorer",
    "RuleComparisonExplorer",
    "VotingExplorer",
    "assignment_explorer",
    "figure_png",
    "gmm_explorer",
    "rule_comparison_explorer",
    "voting_explorer",
]

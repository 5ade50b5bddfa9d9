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

By concern: :mod:`.run_cache` (the course run, trained once and cached), :mod:`.model_view` (one image
through the detector, post-processing with other settings), :mod:`.fit_statistics` (the EM fits and the
bimodality the notebooks show), :mod:`.grading` (exercises and claims), :mod:`.make_course`
(``python -m paa_toolkit.course``).
"""

from __future__ import annotations

from .fit_statistics import (
    BIMODAL_D,
    BIMODAL_MIN_COUNT,
    MIN_CANDIDATES_TO_JUDGE,
    VISIBLE_SHIFT,
    FitComparison,
    TracedGTs,
    ashman_d,
    bic_gain,
    compare_fits,
    fit_row,
    gt_fits,
    traced_gts,
)
from .grading import CHECK_SOLUTIONS_ENV, ExerciseError, check, expect
from .make_course import main
from .model_view import HeadView, detections_from_view, head_outputs, post_processing, scale_boxes
from .run_cache import (
    briefly_trained_run,
    config_digest,
    course_config,
    course_run_dir,
    is_complete,
    load_run,
    repository_root,
    run_datasets,
)

__all__ = [
    "BIMODAL_D",
    "BIMODAL_MIN_COUNT",
    "CHECK_SOLUTIONS_ENV",
    "ExerciseError",
    "FitComparison",
    "HeadView",
    "MIN_CANDIDATES_TO_JUDGE",
    "TracedGTs",
    "VISIBLE_SHIFT",
    "ashman_d",
    "bic_gain",
    "briefly_trained_run",
    "check",
    "compare_fits",
    "config_digest",
    "course_config",
    "course_run_dir",
    "detections_from_view",
    "expect",
    "fit_row",
    "gt_fits",
    "head_outputs",
    "is_complete",
    "load_run",
    "main",
    "post_processing",
    "repository_root",
    "run_datasets",
    "scale_boxes",
    "traced_gts",
]

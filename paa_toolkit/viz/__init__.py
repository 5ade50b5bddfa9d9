"""Matplotlib figures built from what the library returns (paper Fig. 1, 3, 4a, 4b, 7; Table 2 right).

Every plotting function returns a ``matplotlib.figure.Figure`` and never calls ``show``.
"""

from __future__ import annotations

from .ablation import plot_ablation_ap, plot_paired_claims
from .analysis import (
    plot_diagnostics_by_config,
    plot_em_iterations,
    plot_gmm_settings,
    plot_learning_curves,
    plot_length_scan,
    plot_run_diagnostics,
    plot_starvation_by_size,
)
from .assignment import LABEL_COLORS, LABEL_NAMES, plot_assignment, plot_snapshot, snapshot_anchor_view
from .detections import draw_detections, iou_error_by_bin, plot_detections, plot_iou_prediction, plot_voting
from .gmm import (
    component_densities,
    plot_boundaries,
    plot_cost_histogram,
    plot_cost_panels,
    plot_em_steps,
    plot_gmm_comparison,
    separation_results,
)
from .successors import plot_rule_comparison
from .training import plot_ap, plot_losses, plot_positives_by_iteration, plot_positives_per_gt, save_training_plots

__all__ = [
    "LABEL_COLORS",
    "LABEL_NAMES",
    "component_densities",
    "draw_detections",
    "iou_error_by_bin",
    "plot_ablation_ap",
    "plot_paired_claims",
    "plot_ap",
    "plot_assignment",
    "plot_boundaries",
    "plot_cost_histogram",
    "plot_cost_panels",
    "plot_detections",
    "plot_diagnostics_by_config",
    "plot_em_iterations",
    "plot_em_steps",
    "plot_gmm_comparison",
    "plot_gmm_settings",
    "plot_iou_prediction",
    "plot_learning_curves",
    "plot_length_scan",
    "plot_losses",
    "plot_positives_by_iteration",
    "plot_positives_per_gt",
    "plot_rule_comparison",
    "plot_run_diagnostics",
    "plot_snapshot",
    "plot_starvation_by_size",
    "plot_voting",
    "save_training_plots",
    "separation_results",
    "snapshot_anchor_view",
]

"""Training engine: the config dataclasses, the training loop, checkpoints and run files, COCO evaluation.

    from paa_toolkit.engine import TrainConfig, train, evaluate_coco
    result = train(TrainConfig())          # = python -m paa_toolkit.train (its command line: paa_toolkit.cli)

The named settings (demo, course, ablation budgets) are in :mod:`paa_toolkit.engine.presets`.
"""

from .checkpoint import CheckpointError, build_from_checkpoint, find_resumable, load_checkpoint, save_checkpoint
from .config import ConfigError, DataConfig, ModelConfig, SolverConfig, TrainConfig, validate
from .loop import NonFiniteLossError, TrainResult, train
from .metrics import (
    bootstrap_coco_ap,
    evaluate_coco,
    format_metrics,
    iou_prediction_error,
    metrics_from_predictions,
    operating_point,
    precision_recall_at,
    recall_by_size,
)
from .precision import apply_speed_levers, cpu_has_native_bf16
from .pretrain import pretrained_backbone
from .run_files import TraceFileError, load_trace, read_metrics

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "NonFiniteLossError",
    "SolverConfig",
    "TraceFileError",
    "TrainConfig",
    "TrainResult",
    "apply_speed_levers",
    "bootstrap_coco_ap",
    "build_from_checkpoint",
    "cpu_has_native_bf16",
    "evaluate_coco",
    "find_resumable",
    "pretrained_backbone",
    "format_metrics",
    "iou_prediction_error",
    "load_checkpoint",
    "load_trace",
    "metrics_from_predictions",
    "operating_point",
    "precision_recall_at",
    "read_metrics",
    "recall_by_size",
    "save_checkpoint",
    "train",
    "validate",
]

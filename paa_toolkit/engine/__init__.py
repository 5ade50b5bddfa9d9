"""Training engine: the config dataclasses, the training loop, checkpoints and run files, COCO evaluation.

    from paa_toolkit.engine import TrainConfig, train, evaluate_coco
    result = train(TrainConfig())          # = python -m paa_toolkit.train (its command line: paa_toolkit.cli)
"""
from .checkpoint import CheckpointError, build_from_checkpoint, find_resumable, load_checkpoint, save_checkpoint
from .config import ConfigError, DataConfig, ModelConfig, SolverConfig, TrainConfig, validate
from .evaluate import evaluate_coco, format_metrics
from .loop import NonFiniteLossError, TrainResult, train
from .run_files import load_trace, read_metrics

__all__ = [
    "CheckpointError", "ConfigError", "DataConfig", "ModelConfig", "NonFiniteLossError", "SolverConfig",
    "TrainConfig", "TrainResult", "build_from_checkpoint", "evaluate_coco", "find_resumable", "format_metrics",
    "load_checkpoint", "load_trace", "read_metrics", "save_checkpoint", "train", "validate",
]

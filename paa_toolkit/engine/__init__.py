"""Training engine: config (dataclasses + CLI), the training loop, checkpoints, COCO evaluation.

    from paa_toolkit.engine import TrainConfig, train, evaluate_coco
    result = train(TrainConfig())          # = python -m paa_toolkit.train
"""
from .checkpoint import CheckpointError, find_resumable, load_checkpoint, save_checkpoint
from .config import ConfigError, DataConfig, ModelConfig, SolverConfig, TrainConfig, parse_args, validate
from .evaluate import evaluate_coco, format_metrics
from .trainer import NonFiniteLossError, TrainResult, build_from_checkpoint, load_trace, read_metrics, train

__all__ = [
    "CheckpointError", "ConfigError", "DataConfig", "ModelConfig", "NonFiniteLossError", "SolverConfig",
    "TrainConfig", "TrainResult", "build_from_checkpoint", "evaluate_coco", "find_resumable", "format_metrics",
    "load_checkpoint", "load_trace", "parse_args", "read_metrics", "save_checkpoint", "train", "validate",
]

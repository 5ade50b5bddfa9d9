"""The smallest training run of the engine tests (imported by conftest, test_engine_loop and test_cli):
the 6-image, 64-px synthetic set, a 64-channel PAA detector with one conv per tower, 4 iterations."""

from pathlib import Path

from paa_toolkit.engine.checkpoint import load_checkpoint
from paa_toolkit.engine.config import TrainConfig, set_field


def tiny_config(root: Path, run_dir: Path, **overrides) -> TrainConfig:
    cfg = TrainConfig()
    settings = {
        "data.root": str(root),
        "data.synthetic_num_train": 6,
        "data.synthetic_num_val": 3,
        "data.synthetic_image_size": 64,
        "data.batch_size": 2,
        "model.width": 64,
        "model.num_convs": 1,
        "model.min_size": [64, 96],
        "model.max_size": 128,
        "solver.max_iters": 4,
        "solver.warmup_iters": 2,
        "output_dir": str(run_dir),
        "device": "cpu",
        "log_every": 1,
        "checkpoint_every": 2,
        "eval_batch_size": 3,
        "trace_images": 2,
        "trace_iters": [],
        **overrides,
    }
    for key, value in settings.items():
        set_field(cfg, key, value)
    return cfg


def weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]

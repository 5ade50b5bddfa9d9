"""``python -m paa_toolkit.train [--config FILE] [--section.field VALUE ...]``: train, evaluate, report.

With no arguments it trains the default detector on the embedded synthetic dataset (CPU friendly),
evaluates it with COCOeval, draws the training curves into the run folder (``losses.png``,
``ap.png``, ``positives_per_gt.png``; ``assignment.png``: GTs without a positive, positives per GT by
size, EM iterations) and prints the metrics. Examples::

    python -m paa_toolkit.train --max-iters 2000 --model.aux centerness --output-dir runs/centerness
    python -m paa_toolkit.train --dataset coco --data-root /data/coco --backbone resnet50 --device cuda
    python -m paa_toolkit.train --output-dir runs/centerness --resume        # continue after a crash
    torchrun --standalone --nproc_per_node 2 -m paa_toolkit.train --batch-size 2   # 2 processes (DDP)

Under torchrun, ``--batch-size`` is per process (global batch = processes × batch size, the lr is
scaled to it); only rank 0 logs at INFO level and writes the run folder.
"""

from __future__ import annotations

import logging
import os
import sys

from .cli import parse_args, run_cli
from .engine.loop import train
from .engine.metrics import format_metrics
from .viz.analysis import save_assignment_plot
from .viz.training import save_training_plots


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def work() -> None:
        result = train(cfg)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every process has the metrics
            save_training_plots(result.run_dir)
            save_assignment_plot(result.run_dir)  # the assigner's diagnostics over training (PAA, ATSS)
            print(format_metrics(result.metrics, f"COCO box metrics, val split, iteration {result.iteration}"))
            print(f"run folder: {result.run_dir}")

    return run_cli(work, on_interrupt=f"interrupted; continue with --output-dir {cfg.run_dir} --resume")


def configure_logging() -> None:
    """INFO lines from rank 0 (or a single process); warnings and errors, tagged, from the others."""
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(message)s")


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())

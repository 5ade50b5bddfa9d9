"""``python -m paa_toolkit.evaluate CHECKPOINT [overrides]``: COCO metrics of a trained checkpoint.

CHECKPOINT is a ``.pth`` file or a run folder (its newest loadable checkpoint). The data and
post-processing settings saved in the checkpoint are used unless overridden::

    python -m paa_toolkit.evaluate runs/demo
    python -m paa_toolkit.evaluate runs/demo/last.pth --test.score_voting false --test.tta_scales [224,256,288]
    python -m paa_toolkit.evaluate model.pth --data.dataset coco --data.root /data/coco --device cuda
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .cli import HelpFormatter, add_override_arguments, config_from_namespace, run_cli
from .data.build import dataset_paths
from .data.coco import CocoDetection
from .distributed import resolve_device
from .engine.checkpoint import build_from_checkpoint, resolve_checkpoint
from .engine.config import TrainConfig
from .engine.evaluate import evaluate_coco, format_metrics
from .engine.run_files import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m paa_toolkit.evaluate", description=__doc__.splitlines()[0],
                                     usage="%(prog)s CHECKPOINT [--split val|train]\n       [--<section>.<field> VALUE ...]",
                                     allow_abbrev=False, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file, or a run folder")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="which annotations to evaluate on")
    parser.add_argument("--output", metavar="FILE", help="also write the metrics as JSON here")
    add_override_arguments(parser, prefixes=("data", "model", "assign", "test", "device", "eval_batch_size"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def work() -> None:
        path, state = resolve_checkpoint(args.checkpoint)
        base = TrainConfig.from_dict(state["config"])
        base.model.backbone_weights = None  # not needed: the checkpoint holds every weight
        cfg = config_from_namespace(args, base=base)
        device = resolve_device(cfg.device)
        train_dir, train_ann, val_dir, val_ann = dataset_paths(cfg.data)
        image_dir, ann = (val_dir, val_ann) if args.split == "val" else (train_dir, train_ann)
        dataset = CocoDetection(image_dir, ann, category_ids=state["category_ids"],
                                on_bad_annotation=cfg.data.on_bad_annotation)
        model = build_from_checkpoint(state, cfg, device)
        metrics = evaluate_coco(model, dataset, cfg.eval_batch_size, device, cfg.data.num_workers, progress=True)
        print(format_metrics(metrics, f"COCO box metrics: {path} (iteration {state['iteration']}) on {ann}"))
        if args.output:  # missing folders are created
            atomic_write_text(args.output, json.dumps({"checkpoint": str(path), "annotations": str(ann), **metrics},
                                                      indent=1))

    return run_cli(work)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())

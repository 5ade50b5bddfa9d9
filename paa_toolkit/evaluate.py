"""``python -m paa_toolkit.evaluate CHECKPOINT [overrides]``: COCO metrics of a trained checkpoint.

CHECKPOINT is a ``.pth`` file or a run folder (its newest loadable checkpoint). The data and
post-processing settings saved in the checkpoint are used unless overridden::

    python -m paa_toolkit.evaluate runs/demo
    python -m paa_toolkit.evaluate runs/demo/last.pth --test.score_voting false --test.tta_scales [224,256,288]
    python -m paa_toolkit.evaluate model.pth --data.dataset coco --data.root /data/coco --device cuda
    python -m paa_toolkit.evaluate --detections detections/detections.json runs/demo
    python -m paa_toolkit.evaluate --detections dets.json --dataset coco --data.image-dir imgs/ --data.val-ann val.json

``--detections`` scores a COCO-results JSON (``python -m paa_toolkit.detect`` writes one) instead of
running a model, against the split of the checkpoint's dataset (with CHECKPOINT) or of the ``--data``
settings; every image of the split counts, detected or not.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .cli import HelpFormatter, add_override_arguments, config_from_namespace, run_cli
from .data.build import dataset_paths
from .data.coco import CocoDetection, detections_from_coco_results
from .distributed import resolve_device
from .engine.checkpoint import build_from_checkpoint, resolve_checkpoint
from .engine.config import TrainConfig
from .engine.metrics import evaluate_coco, format_metrics, metrics_from_predictions
from .engine.run_files import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paa_toolkit.evaluate",
        description=__doc__.splitlines()[0],
        usage="%(prog)s CHECKPOINT [--split val|train]\n"
        "         [--<section>.<field> VALUE ...]\n"
        "       %(prog)s --detections FILE [CHECKPOINT]\n"
        "         [--data.<field> VALUE ...]",
        allow_abbrev=False,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("checkpoint", nargs="?", help="checkpoint file, or a run folder")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="which annotations to evaluate on")
    parser.add_argument(
        "--detections",
        type=Path,
        metavar="FILE",
        help="score this COCO-results JSON (python -m paa_toolkit.detect) instead of running a model",
    )
    parser.add_argument("--output", metavar="FILE", help="also write the metrics as JSON here")
    add_override_arguments(parser, prefixes=("data", "model", "assign", "test", "device", "eval_batch_size"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.detections is None:
        parser.error("give a CHECKPOINT, or --detections FILE")

    def work() -> None:
        path, state = resolve_checkpoint(args.checkpoint) if args.checkpoint else (None, None)
        base = TrainConfig.from_dict(state["config"]) if state else TrainConfig()
        base.model.backbone_weights = None  # not needed: the checkpoint holds every weight
        cfg = config_from_namespace(args, base=base)
        train_dir, train_ann, val_dir, val_ann = dataset_paths(cfg.data)
        image_dir, ann = (val_dir, val_ann) if args.split == "val" else (train_dir, train_ann)
        dataset = CocoDetection(
            image_dir,
            ann,
            category_ids=state["category_ids"] if state else None,
            on_bad_annotation=cfg.data.on_bad_annotation,
        )
        if args.detections:  # every image of the annotations counts, detected or not (as COCO's evaluation)
            results = load_json(args.detections)
            detections = detections_from_coco_results(
                results, dataset.image_ids, dataset.category_ids, str(args.detections)
            )
            metrics = metrics_from_predictions(dataset, list(dataset.image_ids), detections, targets=[])
            source = str(args.detections)
            title = f"COCO box metrics: {args.detections} on {ann}"
        else:
            device = resolve_device(cfg.device)
            model = build_from_checkpoint(state, cfg, device)
            metrics = evaluate_coco(model, dataset, cfg.eval_batch_size, device, cfg.data.num_workers, progress=True)
            source = str(path)
            title = f"COCO box metrics: {path} (iteration {state['iteration']}) on {ann}"
        print(format_metrics(metrics, title))
        if args.output:
            key = "detections" if args.detections else "checkpoint"
            atomic_write_text(args.output, json.dumps({key: source, "annotations": str(ann), **metrics}, indent=1))

    return run_cli(work)


def load_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"detections file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())

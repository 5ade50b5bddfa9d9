"""``python -m paa_toolkit.export CHECKPOINT --format onnx [--out FILE]``: a trained detector as an ONNX file.

CHECKPOINT is a ``.pth`` file or a run folder. The file takes one image, ``float32 [3, H, W]`` in
[0, 1] of any size (input ``image``), and returns ``boxes [N, 4]`` (xyxy, in the image's pixels),
``scores [N]`` and ``labels [N]`` (int64 class indices; the class names are in the file's metadata),
with the checkpoint's post-processing, score voting included (what differs from PyTorch:
:mod:`paa_toolkit.model.onnx_export`). The command then checks the file: ``onnx.checker``, and
onnxruntime on the CPU against eager PyTorch on validation images at two sizes; it fails when they
disagree by more than the tolerance::

    python -m paa_toolkit.export runs/demo                       # writes runs/demo/model.onnx
    python -m paa_toolkit.export runs/demo/last.pth --out paa.onnx --test.score_thresh 0.3
    python -m paa_toolkit.export runs/demo --check-images photo.jpg street.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .cli import HelpFormatter, add_override_arguments, config_from_namespace, run_cli
from .data.build import dataset_paths
from .data.coco import CocoDetection
from .detect import load_image
from .engine.checkpoint import build_from_checkpoint, resolve_checkpoint
from .engine.config import TrainConfig
from .model.onnx_export import OPSET, detection_difference, export_onnx, onnx_session

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
#: ONNX Runtime against eager PyTorch: the largest box-coordinate (px) and score differences accepted
BOX_TOLERANCE_PX = 0.01
SCORE_TOLERANCE = 1e-4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paa_toolkit.export",
        description="Export a trained detector as one ONNX file, post-processing "
        "included, and check it against PyTorch.",
        usage="%(prog)s CHECKPOINT [--format onnx] [--out FILE]\n"
        "       [--check-images IMAGE ...] [--test.<field> VALUE ...]",
        allow_abbrev=False,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("checkpoint", help="checkpoint file, or a run folder")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="file format (default: onnx)")
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="output file (default: model.onnx beside the checkpoint)"
    )
    parser.add_argument(
        "--check-images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="images to compare ONNX Runtime with PyTorch on (default: 2 validation images)",
    )
    add_override_arguments(parser, prefixes=("test",))
    return parser


def check_inputs(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each image as it is and cropped to two thirds of its width: every check runs at two sizes."""
    return [view for image in images for view in (image, image[..., : max(32, image.shape[-1] * 2 // 3)])]


def default_check_images(cfg: TrainConfig, category_ids: list[int], count: int = 2) -> list[torch.Tensor]:
    """The first ``count`` validation images of the run's dataset; random images when it is not here."""
    try:
        _, _, val_dir, val_ann = dataset_paths(cfg.data)
        dataset = CocoDetection(val_dir, val_ann, category_ids=category_ids)
        return [dataset[i][0] for i in range(min(count, len(dataset)))]
    except (OSError, ValueError) as e:
        log.warning("checking on random images: the validation images are not available (%s)", e)
        g = torch.Generator().manual_seed(0)
        return [torch.rand(3, 240, 320, generator=g) for _ in range(count)]


def compare(model, session, images: list[torch.Tensor], repeats: int = 1) -> list[dict[str, float]]:
    """Eager PyTorch against ONNX Runtime on each image: detection differences, and the median time of
    ``repeats`` runs of each after one warm-up run (the first call at a size allocates)."""
    rows = []
    for image in images:
        feed = {"image": image.numpy()}
        with torch.no_grad():
            (eager,) = model([image])
            eager_ms = _median_ms(lambda: model([image]), repeats)
        boxes, scores, labels = session.run(None, feed)
        onnx_ms = _median_ms(lambda: session.run(None, feed), repeats)
        actual = {
            "boxes": torch.from_numpy(boxes),
            "scores": torch.from_numpy(scores),
            "labels": torch.from_numpy(labels),
        }
        rows.append(
            {
                "height": image.shape[-2],
                "width": image.shape[-1],
                **detection_difference(eager, actual),
                "eager_ms": eager_ms,
                "onnx_ms": onnx_ms,
            }
        )
    return rows


def _median_ms(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def format_rows(rows: list[dict[str, float]]) -> str:
    lines = [
        f"{'input':>9}  {'detections':>10}  {'max |Δbox| px':>13}  {'max |Δscore|':>12}  {'PyTorch ms':>10}  "
        f"{'ORT ms':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['height']:>4}×{r['width']:<4}  {int(r['expected']):>4} / {int(r['actual']):<3}  "
            f"{r['max_box_diff']:>13.2e}  {r['max_score_diff']:>12.2e}  {r['eager_ms']:>10.1f}  {r['onnx_ms']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    @torch.no_grad()
    def work() -> None:
        path, state = resolve_checkpoint(args.checkpoint)
        base = TrainConfig.from_dict(state["config"])
        base.model.backbone_weights = None  # not needed: the checkpoint holds every weight
        cfg = config_from_namespace(args, base=base)
        model = build_from_checkpoint(state, cfg, "cpu")
        out = args.out or path.parent / "model.onnx"
        metadata = {
            "category_names": json.dumps(state["category_names"]),
            "category_ids": json.dumps(state["category_ids"]),
            "inference": json.dumps(cfg.to_dict()["test"]),
            "checkpoint": str(path),
            "iteration": str(state["iteration"]),
        }
        export_onnx(model, out, metadata=metadata)
        print(
            f"{out}: {out.stat().st_size / 2**20:.1f} MiB, ONNX opset {OPSET}, passes onnx.checker; "
            f"input image float32 [3, H, W] in [0, 1], outputs boxes, scores, labels"
        )
        if args.check_images:
            images = [load_image(p).float() / 255 for p in args.check_images]
        else:
            images = default_check_images(cfg, state["category_ids"])
        rows = compare(model, onnx_session(out), check_inputs(images))
        print("ONNX Runtime (CPU) against eager PyTorch:")
        print(format_rows(rows))
        bad = [
            r
            for r in rows
            if r["unpaired"]
            or r["expected"] != r["actual"]
            or r["max_box_diff"] > BOX_TOLERANCE_PX
            or r["max_score_diff"] > SCORE_TOLERANCE
        ]
        if bad:
            raise ValueError(
                f"{out} disagrees with PyTorch on {len(bad)} of {len(rows)} inputs beyond the tolerance "
                f"(boxes {BOX_TOLERANCE_PX} px, scores {SCORE_TOLERANCE})"
            )
        print(f"same detections within {BOX_TOLERANCE_PX} px and {SCORE_TOLERANCE:g} in score")

    return run_cli(work)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())

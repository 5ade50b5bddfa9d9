"""``python -m paa_toolkit.detect IMAGE... --checkpoint C [--out DIR]``: draw a model's detections.

Writes ``<out>/<image stem>.png`` with each box, its class name and score::

    python -m paa_toolkit.detect photo.jpg street.png --checkpoint runs/demo --out detections/ --score-thresh 0.4

One output never replaces another (:func:`output_paths`): images from several folders keep their
path below the folders' common parent (``a/x.jpg b/x.jpg`` → ``<out>/a/x.png``, ``<out>/b/x.png``),
and images whose names differ only in the suffix keep it (``x.jpg x.png`` → ``x.jpg.png``, ``x.png.png``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path

import torch
from torchvision.transforms.functional import to_pil_image

from .cli import run_cli
from .data.images import read_image
from .distributed import device_name_problem, resolve_device
from .engine.checkpoint import build_from_checkpoint, resolve_checkpoint
from .engine.run_files import atomic_write
from .viz.detections import draw_detections


def load_image(path: Path) -> torch.Tensor:
    """RGB ``uint8 [3, H, W]``; a missing or unreadable file raises with its name."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return (read_image(path) * 255).round().to(torch.uint8)  # any bit depth / mode / EXIF orientation


def output_paths(images: list[Path], out: Path) -> dict[Path, Path]:
    """Where the drawing of each image goes: ``<out>/<stem>.png`` when the images share one folder, else
    their path relative to their common folder (``.png`` instead of the suffix, kept where needed)."""
    absolute = {path: Path(os.path.abspath(path)) for path in images}
    common = Path(os.path.commonpath([p.parent for p in absolute.values()]))
    relative = {path: p.relative_to(common) for path, p in absolute.items()}
    stems = Counter(r.with_suffix("") for r in relative.values())
    return {path: out / (r.with_suffix(".png") if stems[r.with_suffix("")] == 1 else r.with_name(f"{r.name}.png"))
            for path, r in relative.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paa_toolkit.detect", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder")
    parser.add_argument("--out", type=Path, default=Path("detections"), help="output folder (default: detections)")
    parser.add_argument("--score-thresh", type=float, default=0.3, help="draw boxes scoring at least this")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if not 0 <= args.score_thresh <= 1:
        parser.error(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    if device_name_problem(args.device):
        parser.error(f"device: {device_name_problem(args.device)}")

    def work() -> None:
        images = {path: load_image(path) for path in args.images}  # fail on a bad path before loading the model
        outputs = output_paths(list(images), args.out)
        _, state = resolve_checkpoint(args.checkpoint)
        device = resolve_device(args.device)
        model = build_from_checkpoint(state, device=device)
        names = state["category_names"]
        for path, image in images.items():
            with torch.no_grad():
                (det,) = model([image.to(device).float() / 255])
            det = {k: v.cpu() for k, v in det.items()}
            out = outputs[path]
            drawing = to_pil_image(draw_detections(image, det, names, args.score_thresh))
            atomic_write(out, lambda f: drawing.save(f, format="PNG"))
            print(f"{out}: {int((det['scores'] >= args.score_thresh).sum())} detections")

    return run_cli(work)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())

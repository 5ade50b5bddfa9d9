"""``python -m paa_toolkit.detect IMAGE... --checkpoint C [--out DIR]``: draw a model's detections.

Writes ``<out>/<image stem>.png`` with each box and a filled "class score" tag, and every drawn
detection into one COCO-results JSON file (``<out>/detections.json``: ``image_id``, ``category_id``,
``bbox`` as xywh, ``score``), which ``python -m paa_toolkit.evaluate --detections`` scores::

    python -m paa_toolkit.detect photo.jpg street.png --checkpoint runs/demo --out detections/ --score-thresh 0.4
    python -m paa_toolkit.detect val/*.png --checkpoint runs/demo --score-thresh 0 --annotations val.json

``--score-thresh`` chooses what is drawn and written among the model's detections, which its own
test-time settings make (``--test.score_thresh``: the candidates' classification probability, …).

Image ids: with ``--annotations`` (a COCO file), each image's id there, matched by file name;
without, the images' positions on the command line (1, 2, …).

One output never replaces another (:func:`output_paths`): images from several folders keep their
path below the folders' common parent (``a/x.jpg b/x.jpg`` → ``<out>/a/x.png``, ``<out>/b/x.png``),
and images whose names differ only in the suffix keep it (``x.jpg x.png`` → ``x.jpg.png``, ``x.png.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

import torch
from torchvision.transforms.functional import to_pil_image

from .cli import HelpFormatter, add_override_arguments, config_from_namespace, run_cli
from .data.coco import detections_to_coco_results, load_coco_json
from .data.images import read_image
from .distributed import device_name_problem, resolve_device
from .engine.checkpoint import build_from_checkpoint, resolve_checkpoint
from .engine.config import TrainConfig
from .engine.run_files import atomic_write, atomic_write_text
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
    return {
        path: out / (r.with_suffix(".png") if stems[r.with_suffix("")] == 1 else r.with_name(f"{r.name}.png"))
        for path, r in relative.items()
    }


def image_ids(paths: list[Path], annotations: Path | None) -> list[int]:
    """Each image's id in the COCO file ``annotations`` (by file name), or its position (1, 2, …)."""
    if annotations is None:
        return list(range(1, len(paths) + 1))
    by_name = {Path(image["file_name"]).name: int(image["id"]) for image in load_coco_json(annotations)["images"]}
    missing = [p.name for p in paths if p.name not in by_name]
    if missing:
        raise ValueError(f"{annotations} lists no image named {', '.join(missing[:5])}")
    return [by_name[p.name] for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paa_toolkit.detect",
        description=__doc__.splitlines()[0],
        usage="%(prog)s IMAGE ... --checkpoint C [--out DIR]\n"
        "         [--score-thresh S] [--json FILE] [--annotations FILE]\n"
        "         [--test.<field> VALUE ...]",
        allow_abbrev=False,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (any format PIL reads)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder")
    parser.add_argument(
        "--out", type=Path, default=Path("detections"), metavar="DIR", help="output folder (default: detections)"
    )
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=0.3,
        metavar="S",
        help="draw and write the detections scoring at least this (default: 0.3)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="COCO-results file of the detections (default: <out>/detections.json)"
    )
    parser.add_argument(
        "--annotations",
        type=Path,
        metavar="FILE",
        help="COCO annotation file giving the image ids, by file name (default: 1, 2, …)",
    )
    add_override_arguments(parser, prefixes=("test", "device"))
    args = parser.parse_args(argv)
    if not 0 <= args.score_thresh <= 1:
        parser.error(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    problem = device_name_problem(getattr(args, "device", "auto"))  # --device is only set when given
    if problem:
        parser.error(f"device: {problem}")

    def work() -> None:
        images = {path: load_image(path) for path in args.images}  # fail on a bad path before loading the model
        outputs = output_paths(list(images), args.out)
        ids = image_ids(list(images), args.annotations)
        _, state = resolve_checkpoint(args.checkpoint)
        cfg = config_from_namespace(args, base=TrainConfig.from_dict(state["config"]))
        device = resolve_device(cfg.device)
        model = build_from_checkpoint(state, cfg, device)
        names = state["category_names"]
        kept = []
        for path, image in images.items():
            with torch.no_grad():
                (det,) = model([image.to(device).float() / 255])
            det = {k: v[det["scores"] >= args.score_thresh].cpu() for k, v in det.items()}
            out = outputs[path]
            drawing = to_pil_image(draw_detections(image, det, names, args.score_thresh))
            atomic_write(out, lambda f: drawing.save(f, format="PNG"))
            print(f"{out}: {len(det['scores'])} detections")
            kept.append(det)
        json_path = args.json or args.out / "detections.json"
        results = detections_to_coco_results(kept, ids, state["category_ids"])
        atomic_write_text(json_path, json.dumps(results))
        print(f"{json_path}: {len(results)} detections as COCO results")

    return run_cli(work)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())

"""The embedded default dataset: small COCO-format images made to exercise anchor assignment.

Nothing is downloaded: the pixels come from data that ships inside scikit-learn.

* Backgrounds: random crops of scikit-learn's two photographs (``china.jpg``, ``flower.jpg``),
  flipped at random and dimmed toward grey so that objects stand out.
* Objects, six classes with NON-contiguous COCO ids (so the loader's id → label mapping is always
  exercised), each filled with its own (jittered) colour and outlined in near-black:

  ====  =======  ==========================================================================
  id    name     what it tests
  ====  =======  ==========================================================================
  1     zero     real handwritten digits (``sklearn.datasets.load_digits``, 8×8, upscaled)
  3     four     〃
  7     seven    〃
  12    bar      thin shapes: aspect ratios 4:1 to 12:1, some diagonal (box mostly empty)
  18    ell      an "L": the box centre is off the object (where FCOS centerness fails)
  27    arc      a ring arc of 180–270°: the box centre lies in the hollow, off the object
  ====  =======  ==========================================================================

* Sizes: the longer side is log-uniform from ``min_object_size`` (8 px, tiny) to half the image,
  so all three COCO area ranges (small / medium / large) are populated. ``area`` is the box area
  (a box-only dataset: no masks), which is what COCOeval's area ranges then measure.
* Occlusion: about a third of the objects are placed overlapping an earlier one (at most half of
  either box is covered); some objects are cut by the image border (boxes are of the visible part).
* Clutter: filled ellipses, triangles and squares without outline that are not objects.
* Image ``i`` of a split has no objects when ``i % 25 == 5`` and a crowd — a cluster of tiny
  objects annotated as one ``iscrowd: 1`` box — when ``i % 16 == 2``.

Default size 256 px square: the model pads to stride 128, so any size in 129–256 costs the same as
256; the default 800 train + 100 val images generate in a few seconds and a small detector
trained from scratch on a CPU learns them. Everything is deterministic from the seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:  # for the annotation; default_dataset imports CocoDetection where it builds the datasets
    from .coco import CocoDetection

log = logging.getLogger(__name__)

SYNTHETIC_VERSION = 1
#: COCO categories of the synthetic dataset (ids deliberately not contiguous).
CATEGORIES: tuple[dict, ...] = (
    {"id": 1, "name": "zero", "supercategory": "digit"},
    {"id": 3, "name": "four", "supercategory": "digit"},
    {"id": 7, "name": "seven", "supercategory": "digit"},
    {"id": 12, "name": "bar", "supercategory": "shape"},
    {"id": 18, "name": "ell", "supercategory": "shape"},
    {"id": 27, "name": "arc", "supercategory": "shape"},
)
DIGITS = {"zero": 0, "four": 4, "seven": 7}
COLOURS = {
    "zero": (235, 45, 45),
    "four": (40, 205, 70),
    "seven": (60, 110, 255),
    "bar": (250, 215, 30),
    "ell": (230, 60, 230),
    "arc": (40, 220, 225),
}
OUTLINE = (15, 15, 15)
EMPTY_EVERY, EMPTY_AT = 25, 5  # image i has no objects when i % 25 == 5
CROWD_EVERY, CROWD_AT = 16, 2  # image i has a crowd cluster when i % 16 == 2
MARKER = ".complete"  # written last: its presence means the folder is whole


# ---- pixel sources (shipped with scikit-learn) --------------------------------------------------
@lru_cache(maxsize=1)
def _digit_pixels() -> dict[str, np.ndarray]:
    """Class name → ``[n, 8, 8]`` handwritten digits in 0..16 (scikit-learn's copy of UCI digits)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {name: digits.images[digits.target == d] for name, d in DIGITS.items()}


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)  # china.jpg, flower.jpg: 427×640×3 uint8


# ---- object masks: alpha [h, w] in [0, 1] -------------------------------------------------------
def _digit_mask(pixels: np.ndarray, w: int, h: int) -> np.ndarray:
    ys, xs = np.nonzero(pixels > 2)
    crop = pixels[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] * (255 / 16)
    up = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32) / 255
    return np.clip((up - 0.45) / 0.2, 0, 1)


def _bar_mask(w: int, h: int, thickness: int = 0, anti: bool = False) -> np.ndarray:
    if thickness <= 0:  # axis-aligned: the whole box
        return np.ones((h, w), np.float32)
    im = Image.new("L", (w, h))
    ImageDraw.Draw(im).line([(0, 0), (w - 1, h - 1)], fill=255, width=thickness)
    a = np.asarray(im, np.float32) / 255
    return a[:, ::-1] if anti else a


def ell_mask(w: int, h: int, thickness: int, mirror: bool = False) -> np.ndarray:
    """An "L" (vertical stroke + foot) filling a ``w × h`` box; its box centre is off the stroke."""
    a = np.zeros((h, w), np.float32)
    a[:, :thickness] = 1
    a[h - thickness :, :] = 1
    return a[:, ::-1] if mirror else a


def arc_mask(w: int, h: int, thickness: int, start: float, extent: float) -> np.ndarray:
    """A ring arc (crescent) of ``extent`` degrees; the centre of its box lies in the hollow."""
    im = Image.new("L", (w, h))
    ImageDraw.Draw(im).arc([0, 0, w - 1, h - 1], start, start + extent, fill=255, width=thickness)
    return np.asarray(im, np.float32) / 255


def _object_mask(rng: np.random.Generator, name: str, side: float) -> np.ndarray:
    """A random instance of class ``name`` whose longer side is about ``side`` px."""

    def box(aspect: float) -> tuple[int, int]:  # aspect = w / h
        w, h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
        return max(2, round(w)), max(2, round(h))

    if name in DIGITS:
        pool = _digit_pixels()[name]
        return _digit_mask(pool[rng.integers(len(pool))], *box(rng.uniform(0.55, 0.9)))
    if name == "bar":
        if rng.random() < 0.25:  # diagonal: a thin line across a box that is mostly background
            w, h = box(rng.uniform(0.4, 2.5))
            return _bar_mask(w, h, max(2, round(side * rng.uniform(0.06, 0.12))), rng.random() < 0.5)
        thin = rng.uniform(1 / 12, 1 / 4)
        return _bar_mask(*box(1 / thin if rng.random() < 0.5 else thin))
    if name == "ell":
        w, h = box(rng.uniform(0.6, 1.6))
        return ell_mask(w, h, max(2, round(min(w, h) * rng.uniform(0.18, 0.3))), rng.random() < 0.5)
    if name == "arc":
        w, h = box(rng.uniform(0.75, 1.33))
        return arc_mask(
            w, h, max(2, round(min(w, h) * rng.uniform(0.1, 0.2))), rng.uniform(0, 360), rng.uniform(180, 270)
        )
    raise ValueError(f"unknown synthetic class {name!r}")


def _footprint(alpha: np.ndarray, outline: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``alpha`` by the outline width; return (alpha, object + outline mask)."""
    alpha = np.pad(alpha, outline)
    solid = Image.fromarray(((alpha > 0.5) * 255).astype(np.uint8))
    return alpha, np.asarray(solid.filter(ImageFilter.MaxFilter(2 * outline + 1))) > 0


# ---- painting ------------------------------------------------------------------------------
def _paste(canvas: np.ndarray, alpha: np.ndarray, x: int, y: int, colour) -> None:
    """Alpha-blend a solid colour into ``canvas`` at top-left ``(x, y)`` (clipped to the canvas)."""
    size = canvas.shape[0]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + alpha.shape[1], size), min(y + alpha.shape[0], size)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + a * np.asarray(colour, np.float32)


def _visible(mask: np.ndarray, x: int, y: int, size: int) -> list[int] | None:
    """Tight xyxy box of ``mask`` placed at ``(x, y)``, within the canvas (None if none is visible)."""
    x0, y0 = max(x, 0), max(y, 0)
    crop = mask[y0 - y : min(y + mask.shape[0], size) - y, x0 - x : min(x + mask.shape[1], size) - x]
    ys, xs = np.nonzero(crop)
    if len(xs) == 0:
        return None
    return [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]


def _overlap(a: list[int], b: list[int]) -> float:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _area(b: list[int]) -> int:
    return (b[2] - b[0]) * (b[3] - b[1])


def _jitter(rng: np.random.Generator, colour) -> tuple[float, ...]:
    return tuple(float(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    photo = _photos()[rng.integers(2)]
    crop = int(rng.integers(min(160, photo.shape[0]), photo.shape[0] + 1))
    y, x = rng.integers(photo.shape[0] - crop + 1), rng.integers(photo.shape[1] - crop + 1)
    im = Image.fromarray(photo[y : y + crop, x : x + crop]).resize((size, size), Image.BILINEAR)
    bg = np.asarray(im, np.float32)
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    return bg * 0.45 + rng.uniform(85, 150) * 0.55  # dimmed toward grey: objects stay high contrast


def _distractor(rng: np.random.Generator, size: int) -> np.ndarray:
    """Clutter: a filled ellipse, triangle or square, no outline — not an object."""
    s = int(rng.integers(10, max(11, size // 4)))
    im = Image.new("L", (s, s))
    draw, kind = ImageDraw.Draw(im), rng.integers(3)
    if kind == 0:
        draw.ellipse([0, 0, s - 1, int(s * rng.uniform(0.5, 1)) - 1], fill=255)
    elif kind == 1:
        draw.polygon([(0, s - 1), (s - 1, s - 1), (int(rng.integers(s)), 0)], fill=255)
    else:
        draw.rectangle([0, 0, s - 1, int(s * rng.uniform(0.7, 1)) - 1], fill=255)
    return np.asarray(im, np.float32) / 255 * rng.uniform(0.6, 1.0)


def _crowd(rng: np.random.Generator, canvas: np.ndarray, name: str) -> list[int]:
    """Paint a cluster of 6–12 tiny objects of one class; return the box around them all."""
    size = canvas.shape[0]
    region = max(16, int(size * rng.uniform(0.12, 0.22)))
    cx, cy = (int(v) for v in rng.integers(0, size - region, 2))
    colour, boxes = _jitter(rng, COLOURS[name]), []
    for _ in range(int(rng.integers(6, 13))):
        alpha, mask = _footprint(_object_mask(rng, name, rng.uniform(4, 7)), 1)
        x, y = cx + int(rng.integers(region - mask.shape[1])), cy + int(rng.integers(region - mask.shape[0]))
        _paste(canvas, mask.astype(np.float32), x, y, OUTLINE)
        _paste(canvas, alpha, x, y, colour)
        boxes.append(_visible(mask, x, y, size))
    # a member whose visible part is too small to box (None) paints pixels but widens nothing
    b = np.asarray([box for box in boxes if box is not None] or [[cx, cy, cx + region, cy + region]])
    return [int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())]


def _place(rng: np.random.Generator, mask: np.ndarray, anns: list[dict], size: int):
    """Top-left ``(x, y)`` and visible box for ``mask``, or None after 20 rejected tries.

    About a third of the tries overlap an earlier object on purpose (occlusion) and a tenth may
    cross the border (truncation); no box may hide more than half of another, nor touch a crowd.
    """
    ys, xs = np.nonzero(mask)
    bx, by = int(xs.min()), int(ys.min())
    bw, bh = int(xs.max()) + 1 - bx, int(ys.max()) + 1 - by
    solid = [a["box"] for a in anns if not a["iscrowd"]]
    for _ in range(20):
        if solid and rng.random() < 0.35:
            e = solid[rng.integers(len(solid))]
            ox = rng.choice([-1, 1]) * rng.uniform(0.4, 0.8) * (e[2] - e[0] + bw) / 2
            oy = rng.choice([-1, 1]) * rng.uniform(0.4, 0.8) * (e[3] - e[1] + bh) / 2
            tx = int(np.clip((e[0] + e[2] - bw) / 2 + ox, 0, size - bw))
            ty = int(np.clip((e[1] + e[3] - bh) / 2 + oy, 0, size - bh))
        elif rng.random() < 0.1:
            tx = int(rng.integers(-bw // 3, size - bw + bw // 3 + 1))
            ty = int(rng.integers(-bh // 3, size - bh + bh // 3 + 1))
        else:
            tx, ty = int(rng.integers(0, size - bw + 1)), int(rng.integers(0, size - bh + 1))
        box = _visible(mask, tx - bx, ty - by, size)
        if box is None or min(box[2] - box[0], box[3] - box[1]) < 2:
            continue
        if all(
            (_overlap(box, a["box"]) == 0)
            if a["iscrowd"]
            else (_overlap(box, a["box"]) <= 0.5 * min(_area(box), _area(a["box"])))
            for a in anns
        ):
            return tx - bx, ty - by, box
    return None


def _render_image(
    rng: np.random.Generator, size: int, *, objects: int, crowd: bool, min_side: float
) -> tuple[np.ndarray, list[dict]]:
    """One image (uint8 ``[size, size, 3]``) and its annotations (class ``name``, xyxy ``box``, ...)."""
    names = [c["name"] for c in CATEGORIES]
    canvas = _background(rng, size)
    for _ in range(int(rng.integers(1, 5)) + (2 if objects == 0 else 0)):  # clutter, under the objects
        d = _distractor(rng, size)
        _paste(
            canvas,
            d,
            int(rng.integers(-d.shape[1] // 3, size)),
            int(rng.integers(-d.shape[0] // 3, size)),
            tuple(float(c) for c in rng.integers(0, 256, 3)),
        )
    anns: list[dict] = []
    if crowd:
        name = names[rng.integers(len(names))]
        box = _crowd(rng, canvas, name)
        anns.append({"name": name, "box": box, "area": _area(box), "iscrowd": 1})
    for _ in range(objects):
        name = names[rng.integers(len(names))]
        side = float(np.exp(rng.uniform(np.log(min_side), np.log(size / 2))))  # log-uniform longer side
        alpha, mask = _footprint(_object_mask(rng, name, side), 1 if side < 40 else 2)
        placed = _place(rng, mask, anns, size)
        if placed is None:
            continue
        x, y, box = placed
        _paste(canvas, mask.astype(np.float32), x, y, OUTLINE)
        _paste(canvas, alpha, x, y, _jitter(rng, COLOURS[name]))
        anns.append({"name": name, "box": box, "area": _area(box), "iscrowd": 0})
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), anns


# ---- the dataset on disk -------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$PAA_TOOLKIT_CACHE``, else ``~/.cache/paa_toolkit``."""
    return Path(os.environ.get("PAA_TOOLKIT_CACHE") or Path.home() / ".cache" / "paa_toolkit")


def _params(seed, num_train, num_val, image_size, max_objects, min_object_size) -> dict:
    for name, value, low in (
        ("seed", seed, 0),
        ("num_train", num_train, 1),
        ("num_val", num_val, 1),
        ("image_size", image_size, 64),
        ("max_objects", max_objects, 1),
        ("min_object_size", min_object_size, 4),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if min_object_size > image_size // 4:
        raise ValueError(f"min_object_size={min_object_size} must be at most image_size / 4 = {image_size // 4}")
    return {
        "version": SYNTHETIC_VERSION,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "max_objects": max_objects,
        "min_object_size": min_object_size,
    }


def _folder_name(params: dict) -> str:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return (
        f"synthetic-v{params['version']}-seed{params['seed']}-n{params['num_train']}-{params['num_val']}"
        f"-{params['image_size']}px-{digest}"
    )


def _is_complete(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def _write_split(folder: Path, split: int, params: dict, first_image_id: int) -> dict:
    n = params["num_train"] if split == 0 else params["num_val"]
    prefix, size = ("train", "val")[split], params["image_size"]
    images, annotations = [], []
    category_of = {c["name"]: c["id"] for c in CATEGORIES}
    for i in range(n):
        rng = np.random.default_rng([params["seed"], split, i])  # one stream per image
        objects = 0 if i % EMPTY_EVERY == EMPTY_AT else int(rng.integers(1, params["max_objects"] + 1))
        pixels, anns = _render_image(
            rng, size, objects=objects, crowd=i % CROWD_EVERY == CROWD_AT, min_side=params["min_object_size"]
        )
        image_id, file_name = first_image_id + i, f"{prefix}_{i:06d}.jpg"
        Image.fromarray(pixels).save(folder / "images" / file_name, quality=92, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for a in anns:
            x1, y1, x2, y2 = a["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_of[a["name"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": a["area"],
                    "iscrowd": a["iscrowd"],
                }
            )
    return {
        "info": {"description": f"paa-toolkit synthetic dataset ({prefix})", **params},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": list(CATEGORIES),
    }


def _remove_stale_partials(root: Path) -> None:
    for tmp in root.parent.glob(f".{root.name}.partial-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 2)[1]), 0)  # the writer still runs: leave it
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def make_synthetic_coco(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    num_train: int = 800,
    num_val: int = 100,
    image_size: int = 256,
    max_objects: int = 8,
    min_object_size: int = 8,
) -> Path:
    """Write the synthetic dataset and return its folder: ``images/*.jpg``, ``train.json``, ``val.json``.

    ``root=None`` uses :func:`default_cache_dir` / a subfolder named by the parameters. A complete
    folder (marker matching the parameters) is returned at once; otherwise the dataset is written
    into a temporary sibling and renamed into place, so a killed run never leaves a half folder
    behind that looks whole (a partial folder, or one made with other parameters, is replaced; a
    folder with foreign files raises ``FileExistsError``). Same parameters → byte-identical JSON.
    With several processes (DDP), let rank 0 call this first, then the others after a barrier.
    """
    params = _params(seed, num_train, num_val, image_size, max_objects, min_object_size)
    root = Path(root) if root is not None else default_cache_dir() / _folder_name(params)
    if _is_complete(root, params):
        return root
    ours = {"images", "train.json", "val.json", MARKER}
    if root.exists() and (not root.is_dir() or any(p.name not in ours for p in root.iterdir())):
        raise FileExistsError(
            f"{root} exists and holds files that are not a synthetic dataset; choose an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        (tmp / "images").mkdir(parents=True)
        num_images = 0
        for split, name in enumerate(("train.json", "val.json")):
            data = _write_split(tmp, split, params, first_image_id=1 + num_images)
            num_images += len(data["images"])
            (tmp / name).write_text(json.dumps(data, indent=1) + "\n")
        (tmp / MARKER).write_text(json.dumps(params, sort_keys=True))  # last: the folder is whole
        if _is_complete(root, params):  # another process finished first (e.g. another DDP rank)
            return root
        if root.exists():  # a partial folder of ours, or one made with other parameters
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _is_complete(root, params):  # unless another process finished it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("synthetic dataset: %d images written to %s in %.1f s", num_images, root, time.perf_counter() - start)
    return root


def default_dataset(
    root: str | Path | None = None, *, seed: int = 0, flip_prob: float = 0.5, **kwargs
) -> tuple[CocoDetection, CocoDetection]:
    """The embedded synthetic dataset, generated on first use into the cache.

    Args:
        root: its folder (default: ``<cache>/synthetic-...`` keyed by the settings).
        seed: the generator's seed.
        flip_prob: probability of a horizontal flip of a training image.
        **kwargs (Any): settings of :func:`make_synthetic_coco` (``num_train``, ``num_val``, ``image_size``).

    Returns:
        ``(train, val)`` :class:`~paa_toolkit.data.CocoDetection`; the validation set shares the training
        set's class mapping.
    """
    from .coco import CocoDetection

    root = make_synthetic_coco(root, seed=seed, **kwargs)
    train = CocoDetection(root / "images", root / "train.json", train=True, flip_prob=flip_prob)
    val = CocoDetection(root / "images", root / "val.json", category_ids=train.category_ids)
    return train, val


__all__ = ["CATEGORIES", "default_cache_dir", "default_dataset", "make_synthetic_coco"]

"""COCO-format detection dataset (pycocotools), its collate function and a results helper.

Images come back at their ORIGINAL size as float32 ``[3, H, W]`` in ``[0, 1]``. Resizing by the
shorter side (and multi-scale training), pixel normalisation and padding are the model's job
(torchvision's ``GeneralizedRCNNTransform``, as in torchvision's FCOS), so predictions come back in
original image coordinates and go to ``COCOeval`` unchanged.

Targets follow torchvision's detection API: ``boxes[n, 4]`` float32 xyxy, ``labels[n]`` int64 in
``0..C-1`` (COCO category ids are not contiguous; ``category_ids[label]`` maps back), plus
``image_id`` and ``crowd_boxes[k, 4]`` (``iscrowd=1`` regions: never assigned, never trained on).

Bad input fails early, at construction, with a one-line ``ValueError`` naming the annotation file
and the item: every field is checked for type and range, every image file path must stay inside the
image folder, and every image header is read (format, mode, size as displayed against the annotated
width/height); :meth:`CocoDetection.check_images` decodes every image, for a check before training.
Questionable boxes are skipped and counted in :attr:`CocoDetection.skipped` (or raise, with
``on_bad_annotation="error"``). Pixels are read by :mod:`.images` (any bit depth and mode, EXIF
orientation applied, transparency composited). ``docs/robustness.md`` tabulates every case.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections.abc import Container, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from .images import WHITE, ImageNotFoundError, ImageReadError, check_background, image_header, read_rgb, shown

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("images", "annotations", "categories")
BAD_ANNOTATION_POLICIES = ("skip", "error")


def load_coco_json(ann_file: str | Path) -> dict[str, Any]:
    """Read a COCO annotation file; malformed JSON or missing top-level keys raise ``ValueError``."""
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 JSON text ({e.reason} at byte {e.start})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: top level must be a JSON object with keys {list(REQUIRED_KEYS)}, got a {type(data).__name__}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing top-level key(s) {missing}; COCO format needs {list(REQUIRED_KEYS)}")
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got a {type(data[key]).__name__}")
    return data


def _short(value: Any, limit: int = 60) -> str:
    """``value`` for an error message: ints as they are, anything else as a repr cut to ``limit``."""
    text = str(value) if _is_int(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _item(path: Path, key: str, index: int, entry: Any) -> str:
    """``file: annotations[12] (id=345)`` — how every error names the offending entry."""
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{path}: {key}[{index}]" + (f" (id={_short(ident)})" if ident is not None else "")


ENTRY_NOUN = {"categories": "category", "images": "image", "annotations": "annotation"}
INT64 = range(-(2**63), 2**63)  # ids go through int64 tensors (labels → category ids, image ids)


def _check_entry(
    path: Path, key: str, index: int, entry: Any, fields: Sequence[str], int_fields: Sequence[str], seen_ids: Container
) -> str:
    """An entry of ``key`` is an object with ``fields``, 64-bit integer ``int_fields`` and an ``id`` not
    in ``seen_ids``; returns how errors name it (:func:`_item`)."""
    where = _item(path, key, index, entry)
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(entry).__name__}")
    missing = [f for f in fields if f not in entry]
    if missing:
        raise ValueError(f"{where} is missing field(s) {missing}")
    for field in int_fields:
        if not (_is_int(entry[field]) and entry[field] in INT64):
            raise ValueError(f"{where}: '{field}' must be an integer (64-bit), got {_short(entry[field])}")
    if entry["id"] in seen_ids:
        raise ValueError(f"{where}: duplicate {ENTRY_NOUN[key]} id {entry['id']}")
    return where


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite JSON number (not a bool; an int too large for a float is not finite)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _check_segmentation(where: str, seg: Any, width: int, height: int) -> tuple[list | dict | None, int]:
    """``(segmentation to keep, polygons dropped)``; raises ``ValueError`` on a malformed one.

    Polygons: lists of an even number of finite coordinates, no farther outside the image than its
    own width/height; those of fewer than 3 points (pycocotools would misread them as boxes) are
    dropped and counted. RLE: ``{"counts": list of run lengths or compressed string, "size":
    [height, width]}`` of the image, runs adding up to its pixel count. ``[]`` (no mask): ``None``.
    """
    if isinstance(seg, list):
        if not all(isinstance(p, list) and len(p) % 2 == 0 and all(_is_number(v) for v in p) for p in seg):
            raise ValueError(
                f"{where}: 'segmentation' polygons must be lists of an even number of finite "
                f"coordinates [x1, y1, x2, y2, ...], got {_short(seg)}"
            )
        for poly in seg:
            if not (
                all(-width <= x <= 2 * width for x in poly[0::2])
                and all(-height <= y <= 2 * height for y in poly[1::2])
            ):
                raise ValueError(
                    f"{where}: 'segmentation' polygon {_short(poly)} lies far outside its {width}x{height} image"
                )
        polygons = [p for p in seg if len(p) >= 6]
        return (polygons or None), len(seg) - len(polygons)
    if isinstance(seg, dict) and set(seg) >= {"counts", "size"}:
        size, counts = seg["size"], seg["counts"]
        if not (
            isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size) and size == [height, width]
        ):
            raise ValueError(
                f"{where}: RLE 'segmentation' size must be [height, width] of its image, "
                f"[{height}, {width}], got {_short(size)}"
            )
        runs = _rle_runs(counts) if isinstance(counts, str) else counts
        if not (isinstance(runs, list) and all(_is_int(r) and r >= 0 for r in runs) and sum(runs) == height * width):
            raise ValueError(
                f"{where}: RLE 'segmentation' counts must be run lengths (a list of non-negative "
                f"integers, or the compressed string) adding up to {height}x{width} pixels, "
                f"got {_short(counts)}"
            )
        return {"counts": counts, "size": size}, 0
    raise ValueError(
        f"{where}: 'segmentation' must be a list of polygons or an RLE object "
        f"{{'counts': ..., 'size': [height, width]}}, got {_short(seg)}"
    )


def _rle_runs(text: str) -> list[int] | None:
    """The run lengths of a compressed RLE string (pycocotools' ``rleFrString``), or None if malformed."""
    runs: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p == len(text) or k == 7 or not 0 <= ord(text[p]) - 48 < 64:  # cut short, > 32 bits, bad char
                return None
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        runs.append(x + runs[-2] if len(runs) > 2 else x)
    return runs


def _first_of(errors: Sequence[Exception]) -> Exception:
    """One error for many: the first, with a count of the others."""
    more = f"; {len(errors) - 1} more image(s) fail too" if len(errors) > 1 else ""
    return type(errors[0])(f"{errors[0]}{more}")


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset: ``image_dir`` holds the files named by ``ann_file``.

    Works with the COCO 2017 layout, e.g. ``CocoDetection("coco/val2017",
    "coco/annotations/instances_val2017.json")``, and with :func:`~paa_toolkit.data.make_synthetic_coco`.

    Construction checks the whole annotation file and reads every image header (so a missing,
    unreadable or mis-sized image stops it, in either split); :meth:`check_images` also decodes
    every image. Errors are ``ValueError`` (image files: :class:`~.images.ImageReadError`, also an
    ``OSError``; missing ones :class:`~.images.ImageNotFoundError`, also a ``FileNotFoundError``), one
    line naming the annotation file and the image or annotation.

    Args:
        train: apply the training augmentation (random horizontal flip with ``flip_prob``).
        category_ids: contiguous label → COCO category id; default: all categories, sorted by id.
            Pass the training set's list to the validation set to share one mapping. Annotations of
            categories left out are dropped (counted in ``skipped["category_not_selected"]``).
        on_bad_annotation: ``"skip"`` drops boxes with non-positive size or wholly outside their
            image and counts them in :attr:`skipped`; ``"error"`` raises ``ValueError`` instead.
            Boxes partly outside are clipped to the image (counted in :attr:`clipped`). Fields of the
            wrong type or range (``iscrowd`` other than 0/1/bool, a negative ``area``, …) always raise.
        allow_absolute_paths: read ``file_name`` values that are absolute paths as they are. By
            default a ``file_name`` must be a relative path that stays inside ``image_dir``: absolute
            paths, ``..`` and symbolic links leading out are refused (without looking at the outside file).
        background: RGB (0..255) onto which transparent pixels are composited; default white.

    Attributes:
        coco: the cleaned ground truth as a ``pycocotools.coco.COCO`` object, ready for ``COCOeval``:
            only validated fields (images: id, file_name, width, height; annotations: id, image_id,
            category_id, bbox, area, iscrowd and a valid segmentation; categories: id, name,
            supercategory), skipped boxes removed, clipped boxes clipped, only the selected categories.
        category_ids, category_names: per contiguous label.
        image_ids: per dataset index (sorted). Images without annotations are kept.
        skipped: counts of dropped annotations by reason; clipped: count of clipped boxes;
        dropped_polygons: count of segmentation polygons of fewer than 3 points left out of ``coco``.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        train: bool = False,
        flip_prob: float = 0.5,
        category_ids: list[int] | None = None,
        on_bad_annotation: str = "skip",
        allow_absolute_paths: bool = False,
        background: tuple[int, int, int] = WHITE,
    ):
        if on_bad_annotation not in BAD_ANNOTATION_POLICIES:
            raise ValueError(f"on_bad_annotation must be one of {BAD_ANNOTATION_POLICIES}, got {on_bad_annotation!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.train = train
        self.flip_prob = flip_prob
        self.allow_absolute_paths = allow_absolute_paths
        self.background = check_background(background)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir} (images of {self.ann_file})")
        data = load_coco_json(self.ann_file)

        categories = self._check_categories(data["categories"])
        self.category_ids = self._select_categories(categories, category_ids)
        self.category_names = [categories[c]["name"] for c in self.category_ids]
        images, paths = self._check_images(data["images"])
        self.image_ids = sorted(images)
        self._paths = [paths[i] for i in self.image_ids]
        self._sizes = [(images[i]["height"], images[i]["width"]) for i in self.image_ids]

        self.skipped: dict[str, int] = {}
        self.clipped = 0
        self.dropped_polygons = 0
        annotations = self._clean_annotations(data["annotations"], categories, images, on_bad_annotation)
        self._targets = self._group_by_image(annotations)

        self.coco = COCO()
        self.coco.dataset = {
            "images": [images[i] for i in self.image_ids],
            "annotations": annotations,
            "categories": [categories[c] for c in self.category_ids],
        }
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
            self.coco.createIndex()
        if self.skipped:
            log.warning("%s: skipped annotations %s", self.ann_file, self.skipped)
        if self.clipped:
            log.warning("%s: clipped %d box(es) partly outside their image", self.ann_file, self.clipped)
        if self.dropped_polygons:
            log.warning(
                "%s: left out %d segmentation polygon(s) of fewer than 3 points", self.ann_file, self.dropped_polygons
            )

    # ---- validation (construction time, once) -------------------------------------------------
    def _check_categories(self, entries: list) -> dict[int, dict]:
        categories: dict[int, dict] = {}
        for i, c in enumerate(entries):
            where = _check_entry(self.ann_file, "categories", i, c, ("id", "name"), ("id",), categories)
            if not isinstance(c["name"], str):
                raise ValueError(f"{where}: 'name' must be a string, got {_short(c['name'])}")
            categories[c["id"]] = {
                "id": c["id"],
                "name": c["name"],
                **({"supercategory": c["supercategory"]} if isinstance(c.get("supercategory"), str) else {}),
            }
        if not categories:
            raise ValueError(f"{self.ann_file}: 'categories' is empty; a detector needs at least one class")
        return categories

    def _select_categories(self, categories: dict[int, dict], category_ids: list[int] | None) -> list[int]:
        if category_ids is None:
            return sorted(categories)
        chosen = list(category_ids)
        unknown = [c for c in chosen if c not in categories]
        if unknown:
            raise ValueError(
                f"category_ids {unknown} are not among the categories of {self.ann_file} (ids {sorted(categories)})"
            )
        if len(set(chosen)) != len(chosen) or not chosen:
            raise ValueError(f"category_ids must be a non-empty list without repeats, got {chosen}")
        return chosen

    def _check_images(self, entries: list) -> tuple[dict[int, dict], dict[int, Path]]:
        """id → clean image entry (width/height as displayed, from the header when not given), id → path."""
        if not entries:
            raise ValueError(f"{self.ann_file}: no images ('images' is empty); nothing to train or evaluate on")
        images: dict[int, dict] = {}
        paths: dict[int, Path] = {}
        missing, unreadable = [], []
        for i, im in enumerate(entries):
            where = _check_entry(self.ann_file, "images", i, im, ("id", "file_name"), ("id",), images)
            given = {k: im[k] for k in ("width", "height") if k in im}
            if not all(_is_int(v) and v > 0 for v in given.values()):
                raise ValueError(
                    f"{where}: width/height must be positive integers, "
                    f"got {_short(im.get('width'))}/{_short(im.get('height'))}"
                )
            path = self._image_path(where, im["file_name"])
            try:
                header = image_header(path)
            except ImageNotFoundError:
                missing.append(f"{shown(path)} (image_id={im['id']})")
                continue
            except ImageReadError as e:
                unreadable.append(self._read_error(path, im["id"], e.reason))
                continue
            size = {"width": header.width, "height": header.height}
            if any(size[k] != v for k, v in given.items()):
                raise self._size_error(
                    path,
                    im["id"],
                    (header.width, header.height),
                    (given.get("width", header.width), given.get("height", header.height)),
                    header.orientation,
                )
            images[im["id"]] = {"id": im["id"], "file_name": im["file_name"], **size}
            paths[im["id"]] = path
        if missing:
            raise ImageNotFoundError(
                f"{len(missing)} image file(s) listed in {self.ann_file} not found, e.g. {', '.join(missing[:3])}"
            )
        if unreadable:
            raise _first_of(unreadable)
        return images, paths

    def _image_path(self, where: str, file_name: Any) -> Path:
        """``image_dir / file_name``, refused unless it stays inside ``image_dir``.

        The verdict comes from the name and from where the links on its way point, never from whether
        the file it reaches exists, so an error does not tell whether an outside file exists.
        """
        if not isinstance(file_name, str) or not file_name.strip() or "\0" in file_name:
            raise ValueError(
                f"{where}: 'file_name' must be a non-empty string (a path relative to "
                f"{self.image_dir}), got {_short(file_name)}"
            )
        name = PurePath(file_name)
        if name.is_absolute():
            if self.allow_absolute_paths:
                return Path(name)
            why = "it is an absolute path (pass allow_absolute_paths=True to read those)"
        elif ".." in name.parts:
            why = "'..' is not allowed"
        elif not Path(os.path.realpath(self.image_dir / name)).is_relative_to(os.path.realpath(self.image_dir)):
            why = "a symbolic link leads out of it"
        else:
            return self.image_dir / name
        raise ValueError(
            f"{where}: file_name {_short(file_name, 300)} is outside the image folder {self.image_dir}: "
            f"{why}; file names must be relative paths inside it"
        )

    def _read_error(self, path: Path, image_id: int, reason: str, cls: type = ImageReadError) -> ImageReadError:
        error = cls(f"cannot read image {shown(path)} (image_id={image_id}): {reason} (listed in {self.ann_file})")
        error.reason = reason
        return error

    def _size_error(
        self, path: Path, image_id: int, actual: tuple[int, int], said: tuple[int, int], orientation: int
    ) -> ValueError:
        hint = ""
        if orientation in (5, 6, 7, 8) and said == actual[::-1]:
            hint = (
                f"; its EXIF Orientation ({orientation}) turns it by 90 degrees, and sizes and boxes must "
                f"refer to the image as displayed"
            )
        return ValueError(
            f"{shown(path)}: image is {actual[0]}x{actual[1]} but {self.ann_file} says width={said[0]}, "
            f"height={said[1]} (image_id={image_id}){hint}"
        )

    def _clean_annotations(self, entries: list, categories: dict, images: dict, policy: str) -> list[dict]:
        """Check fields; convert xywh → xyxy; clip boxes partly outside; skip (or raise on) bad boxes."""
        kept, boxes, sizes = [], [], []
        selected = set(self.category_ids)
        seen_ids: set = set()
        for i, a in enumerate(entries):
            where = _check_entry(
                self.ann_file,
                "annotations",
                i,
                a,
                ("id", "image_id", "category_id", "bbox"),
                ("id", "image_id", "category_id"),
                seen_ids,
            )
            seen_ids.add(a["id"])
            if a["image_id"] not in images:
                raise ValueError(f"{where}: image_id {a['image_id']!r} is not in 'images'")
            if a["category_id"] not in categories:
                raise ValueError(
                    f"{where}: category_id {a['category_id']!r} is not in 'categories' (ids {sorted(categories)})"
                )
            box = a["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
                raise ValueError(
                    f"{where}: 'bbox' must be [x, y, width, height] of 4 finite numbers, got {_short(box)}"
                )
            iscrowd = a.get("iscrowd", 0)
            if not (isinstance(iscrowd, int) and iscrowd in (0, 1)):  # bool is an int
                raise ValueError(f"{where}: 'iscrowd' must be 0, 1, true or false, got {_short(iscrowd)}")
            clean = {
                "id": a["id"],
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [float(v) for v in box],
                "iscrowd": int(iscrowd),
            }
            if "area" in a:
                if not (_is_number(a["area"]) and a["area"] >= 0):
                    raise ValueError(f"{where}: 'area' must be a finite number >= 0, got {_short(a['area'])}")
                clean["area"] = float(a["area"])
            if "segmentation" in a:
                image = images[a["image_id"]]
                segmentation, dropped = _check_segmentation(where, a["segmentation"], image["width"], image["height"])
                self.dropped_polygons += dropped
                if segmentation is not None:
                    clean["segmentation"] = segmentation
            if a["category_id"] not in selected:
                self.skipped["category_not_selected"] = self.skipped.get("category_not_selected", 0) + 1
                continue
            kept.append(clean)
            boxes.append(clean["bbox"])
            sizes.append((images[a["image_id"]]["width"], images[a["image_id"]]["height"]))
        if not kept:
            return []
        xywh = np.asarray(boxes, dtype=np.float64)
        with np.errstate(over="ignore"):  # x + width may overflow to inf: clipped below
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        wh = np.asarray(sizes, dtype=np.float64)
        clipped = np.clip(xyxy, 0.0, np.concatenate([wh, wh], axis=1))
        degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
        outside = ~degenerate & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
        was_clipped = ~degenerate & ~outside & (clipped != xyxy).any(axis=1)
        for reason, bad in (("degenerate_box", degenerate), ("outside_image", outside)):
            if bad.any() and policy == "error":
                ids = [kept[j]["id"] for j in np.flatnonzero(bad)[:5]]
                what = "width or height <= 0" if reason == "degenerate_box" else "wholly outside its image"
                raise ValueError(
                    f"{self.ann_file}: {int(bad.sum())} annotation(s) with bbox {what}, e.g. annotation id(s) {ids}"
                )
            if bad.any():
                self.skipped[reason] = self.skipped.get(reason, 0) + int(bad.sum())
        self.clipped = int(was_clipped.sum())
        out = []
        for j in np.flatnonzero(~(degenerate | outside)):
            a, (x1, y1, x2, y2) = kept[j], clipped[j].tolist()
            area = (x2 - x1) * (y2 - y1)
            out.append(
                {
                    **a,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": min(a.get("area", area), area) if was_clipped[j] else a.get("area", area),
                }
            )
        return out

    def _group_by_image(self, annotations: list[dict]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """image id → (boxes xyxy [n, 4], labels [n], crowd boxes [k, 4]), as numpy, built once."""
        label_of = {c: i for i, c in enumerate(self.category_ids)}
        per_image: dict[int, tuple[list, list, list]] = {}
        for a in annotations:
            x, y, w, h = a["bbox"]
            boxes, labels, crowd = per_image.setdefault(a["image_id"], ([], [], []))
            if a["iscrowd"]:
                crowd.append((x, y, x + w, y + h))
            else:
                boxes.append((x, y, x + w, y + h))
                labels.append(label_of[a["category_id"]])
        return {
            i: (
                np.asarray(b, np.float32).reshape(-1, 4),
                np.asarray(lab, np.int64),
                np.asarray(c, np.float32).reshape(-1, 4),
            )
            for i, (b, lab, c) in per_image.items()
        }

    # ---- access ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def annotation_counts(self) -> dict[str, int]:
        """``images``; ``annotations`` in the file, of them ``crowd`` (``iscrowd`` 1: never trained on) and
        ``skipped`` (:attr:`skipped`); and ``boxes``: the rest, what a training learns from."""
        kept = self.coco.dataset["annotations"]
        crowd, skipped = sum(a["iscrowd"] for a in kept), sum(self.skipped.values())
        return {
            "images": len(self),
            "annotations": len(kept) + skipped,
            "crowd": crowd,
            "skipped": skipped,
            "boxes": len(kept) - crowd,
        }

    def _read(self, index: int) -> np.ndarray:
        """The pixels of image ``index`` as float32 ``[H, W, 3]``, checked against the annotated size."""
        path, image_id = self._paths[index], self.image_ids[index]
        try:
            pixels = read_rgb(path, self.background)
        except ImageReadError as e:
            raise self._read_error(path, image_id, e.reason, type(e)) from None
        height, width = self._sizes[index]
        if pixels.shape[:2] != (height, width):
            raise self._size_error(path, image_id, pixels.shape[1::-1], (width, height), 1)
        return pixels

    def load_image(self, index: int) -> Tensor:
        """The image as float32 ``[3, H, W]`` in ``[0, 1]``, as displayed (:mod:`.images`: any bit
        depth and mode; EXIF orientation applied; transparency composited onto :attr:`background`)."""
        return torch.from_numpy(np.ascontiguousarray(self._read(index).transpose(2, 0, 1)))

    def check_images(self) -> None:
        """Decode every image, as training and evaluation will, and raise if any fails.

        Construction reads only the headers; this finds what only decoding does (truncated or
        corrupt pixel data), so that a bad file stops a run before training instead of at the batch
        (or the final evaluation) that holds it. Raises the first failure (an :class:`ImageReadError`
        or the size ``ValueError``), with a count of the others. Takes about as long as one epoch's
        image loading.
        """
        failures = []
        for index in range(len(self)):
            try:
                self._read(index)
            except ValueError as e:  # ImageReadError is a ValueError
                failures.append(e)
        if failures:
            raise _first_of(failures)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image = self.load_image(index)
        image_id = self.image_ids[index]
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
        boxes, labels, crowd = (torch.from_numpy(a.copy()) for a in self._targets.get(image_id, empty))
        if self.train and self.flip_prob > 0 and torch.rand(()) < self.flip_prob:
            image = image.flip(-1)
            width = image.shape[-1]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            crowd = torch.stack([width - crowd[:, 2], crowd[:, 1], width - crowd[:, 0], crowd[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": labels, "image_id": image_id, "crowd_boxes": crowd}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.ann_file}, images={len(self)}, classes={self.category_names}, "
            f"train={self.train}, skipped={self.skipped}, clipped={self.clipped})"
        )


def collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """Images stay a list (sizes differ; the model's transform resizes and pads them)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def detections_to_coco_results(
    detections: Sequence[dict[str, Tensor]],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
) -> list[dict]:
    """torchvision-style outputs (xyxy ``boxes``, ``scores``, contiguous ``labels``) → COCO result dicts."""
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection dicts but {len(image_ids)} image ids")
    cats = torch.as_tensor(list(category_ids), dtype=torch.int64)
    results = []
    for det, image_id in zip(detections, image_ids):
        boxes = det["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores = det["scores"].detach().float().cpu().tolist()
        labels = cats[det["labels"].detach().cpu().long()].tolist()
        results += [
            {"image_id": int(image_id), "category_id": c, "bbox": b, "score": s}
            for b, s, c in zip(xywh, scores, labels)
        ]
    return results


def detections_from_coco_results(
    results: Sequence[dict],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    source: str = "results",
) -> list[dict[str, Tensor]]:
    """COCO result dicts → one torchvision-style ``{"boxes" (xyxy), "scores", "labels"}`` per image of
    ``image_ids`` (empty where there is none): the inverse of :func:`detections_to_coco_results`. A
    result of an image or category that is not listed raises ``ValueError`` naming ``source``."""
    if not isinstance(results, list):
        raise ValueError(f"{source}: COCO results are a JSON list of detections, got a {type(results).__name__}")
    position = {int(i): n for n, i in enumerate(image_ids)}
    label = {int(c): n for n, c in enumerate(category_ids)}
    rows: list[list[tuple[list[float], float, int]]] = [[] for _ in image_ids]
    for k, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise ValueError(f"{source}[{k}]: a detection needs image_id, category_id, bbox, score; got {r!r}")
        if r["image_id"] not in position or r["category_id"] not in label:
            raise ValueError(
                f"{source}[{k}]: image_id {r['image_id']} or category_id {r['category_id']} is not in the annotations"
            )
        x, y, w, h = r["bbox"]
        rows[position[r["image_id"]]].append(([x, y, x + w, y + h], float(r["score"]), label[r["category_id"]]))
    return [
        {
            "boxes": torch.tensor([b for b, _, _ in row], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([s for _, s, _ in row], dtype=torch.float32),
            "labels": torch.tensor([c for _, _, c in row], dtype=torch.int64),
        }
        for row in rows
    ]


def coco_from_detections(
    coco_gt: COCO,
    detections: Sequence[dict[str, Tensor]],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
) -> COCO:
    """The detections as a ``COCO`` results object for ``COCOeval(coco_gt, coco_dt, "bbox")``.

    Unlike ``coco_gt.loadRes``, an empty result list gives an empty (valid) object instead of failing.
    """
    results = detections_to_coco_results(detections, image_ids, category_ids)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "annotations": [],
        "categories": list(coco_gt.dataset["categories"]),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


__all__ = [
    "CocoDetection",
    "collate",
    "coco_from_detections",
    "detections_from_coco_results",
    "detections_to_coco_results",
    "load_coco_json",
]

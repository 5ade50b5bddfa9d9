"""COCO-format detection dataset (pycocotools), its collate function and a results helper.

Images come back at their ORIGINAL size as float32 ``[3, H, W]`` in ``[0, 1]``. Resizing by the
shorter side (and multi-scale training), pixel normalisation and padding are the model's job
(torchvision's ``GeneralizedRCNNTransform``, as in torchvision's FCOS), so predictions come back in
original image coordinates and go to ``COCOeval`` unchanged.

Targets follow torchvision's detection API: ``boxes[n, 4]`` float32 xyxy, ``labels[n]`` int64 in
``0..C-1`` (COCO category ids are not contiguous; ``category_ids[label]`` maps back), plus
``image_id`` and ``crowd_boxes[k, 4]`` (``iscrowd=1`` regions: never assigned, never trained on).

Bad input fails early with an error naming the file and the item; questionable boxes are skipped
and counted in :attr:`CocoDetection.skipped` (or raise, with ``on_bad_annotation="error"``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any, Container, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

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
        raise ValueError(f"{path}: top level must be a JSON object with keys {list(REQUIRED_KEYS)}, "
                         f"got a {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing top-level key(s) {missing}; COCO format needs {list(REQUIRED_KEYS)}")
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got a {type(data[key]).__name__}")
    return data


def _item(path: Path, key: str, index: int, entry: Any) -> str:
    """``file: annotations[12] (id=345)`` — how every error names the offending entry."""
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{path}: {key}[{index}]" + (f" (id={ident})" if ident is not None else "")


ENTRY_NOUN = {"categories": "category", "images": "image", "annotations": "annotation"}


def _check_entry(path: Path, key: str, index: int, entry: Any, fields: Sequence[str], int_fields: Sequence[str],
                 seen_ids: Container) -> str:
    """An entry of ``key`` is an object with ``fields``, integer ``int_fields`` and an ``id`` not in
    ``seen_ids``; returns how errors name it (:func:`_item`)."""
    where = _item(path, key, index, entry)
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(entry).__name__}")
    missing = [f for f in fields if f not in entry]
    if missing:
        raise ValueError(f"{where} is missing field(s) {missing}")
    for field in int_fields:
        if not _is_int(entry[field]):
            raise ValueError(f"{where}: '{field}' must be an integer, got {entry[field]!r}")
    if entry["id"] in seen_ids:
        raise ValueError(f"{where}: duplicate {ENTRY_NOUN[key]} id {entry['id']}")
    return where


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset: ``image_dir`` holds the files named by ``ann_file``.

    Works with the COCO 2017 layout, e.g. ``CocoDetection("coco/val2017",
    "coco/annotations/instances_val2017.json")``, and with :func:`~paa_toolkit.data.make_synthetic_coco`.

    Args:
        train: apply the training augmentation (random horizontal flip with ``flip_prob``).
        category_ids: contiguous label → COCO category id; default: all categories, sorted by id.
            Pass the training set's list to the validation set to share one mapping. Annotations of
            categories left out are dropped (counted in ``skipped["category_not_selected"]``).
        on_bad_annotation: ``"skip"`` drops boxes with non-positive size or wholly outside their
            image and counts them in :attr:`skipped`; ``"error"`` raises ``ValueError`` instead.
            Boxes partly outside are clipped to the image (counted in :attr:`clipped`).

    Attributes:
        coco: the cleaned ground truth (skipped boxes removed, clipped boxes clipped, only the
            selected categories) as a ``pycocotools.coco.COCO`` object, ready for ``COCOeval``.
        category_ids, category_names: per contiguous label.
        image_ids: per dataset index (sorted). Images without annotations are kept.
        skipped: counts of dropped annotations by reason; clipped: count of clipped boxes.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        train: bool = False,
        flip_prob: float = 0.5,
        category_ids: list[int] | None = None,
        on_bad_annotation: str = "skip",
    ):
        if on_bad_annotation not in BAD_ANNOTATION_POLICIES:
            raise ValueError(f"on_bad_annotation must be one of {BAD_ANNOTATION_POLICIES}, got {on_bad_annotation!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.train = train
        self.flip_prob = flip_prob
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir} (images of {self.ann_file})")
        data = load_coco_json(self.ann_file)

        categories = self._check_categories(data["categories"])
        self.category_ids = self._select_categories(categories, category_ids)
        self.category_names = [categories[c]["name"] for c in self.category_ids]
        images = self._check_images(data["images"])
        self.image_ids = sorted(images)
        self._paths = [self.image_dir / images[i]["file_name"] for i in self.image_ids]
        self._sizes = [(images[i]["height"], images[i]["width"]) for i in self.image_ids]

        self.skipped: dict[str, int] = {}
        self.clipped = 0
        annotations = self._clean_annotations(data["annotations"], categories, images, on_bad_annotation)
        self._targets = self._group_by_image(annotations)

        gt = {k: v for k, v in data.items() if k not in REQUIRED_KEYS}
        gt.update(images=[images[i] for i in self.image_ids], annotations=annotations,
                  categories=[categories[c] for c in self.category_ids])
        self.coco = COCO()
        self.coco.dataset = gt
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
            self.coco.createIndex()
        if self.skipped:
            log.warning("%s: skipped annotations %s", self.ann_file, self.skipped)
        if self.clipped:
            log.warning("%s: clipped %d box(es) partly outside their image", self.ann_file, self.clipped)

    # ---- validation (construction time, once) -------------------------------------------------
    def _check_categories(self, entries: list) -> dict[int, dict]:
        categories: dict[int, dict] = {}
        for i, c in enumerate(entries):
            _check_entry(self.ann_file, "categories", i, c, ("id", "name"), ("id",), categories)
            categories[c["id"]] = c
        if not categories:
            raise ValueError(f"{self.ann_file}: 'categories' is empty; a detector needs at least one class")
        return categories

    def _select_categories(self, categories: dict[int, dict], category_ids: list[int] | None) -> list[int]:
        if category_ids is None:
            return sorted(categories)
        chosen = list(category_ids)
        unknown = [c for c in chosen if c not in categories]
        if unknown:
            raise ValueError(f"category_ids {unknown} are not among the categories of {self.ann_file} "
                             f"(ids {sorted(categories)})")
        if len(set(chosen)) != len(chosen) or not chosen:
            raise ValueError(f"category_ids must be a non-empty list without repeats, got {chosen}")
        return chosen

    def _check_images(self, entries: list) -> dict[int, dict]:
        if not entries:
            raise ValueError(f"{self.ann_file}: no images ('images' is empty); nothing to train or evaluate on")
        images: dict[int, dict] = {}
        missing_files = []
        for i, im in enumerate(entries):
            _check_entry(self.ann_file, "images", i, im, ("id", "file_name"), ("id",), images)
            path = self.image_dir / str(im["file_name"])
            if not path.is_file():
                missing_files.append(path)
                continue
            if "width" not in im or "height" not in im:  # read the size from the file header
                im = {**im, **dict(zip(("width", "height"), self._header_size(path)))}
            if not (_is_int(im["width"]) and _is_int(im["height"]) and im["width"] > 0 and im["height"] > 0):
                raise ValueError(f"{_item(self.ann_file, 'images', i, im)}: width/height must be positive "
                                 f"integers, got {im['width']!r}/{im['height']!r}")
            images[im["id"]] = im
        if missing_files:
            raise FileNotFoundError(
                f"{len(missing_files)} image file(s) listed in {self.ann_file} not found, "
                f"e.g. {', '.join(map(str, missing_files[:3]))}")
        return images

    @staticmethod
    def _header_size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as im:
                return im.size
        except OSError as e:
            raise OSError(f"cannot read image {path}: {e}") from None

    def _clean_annotations(self, entries: list, categories: dict, images: dict, policy: str) -> list[dict]:
        """Check fields; convert xywh → xyxy; clip boxes partly outside; skip (or raise on) bad boxes."""
        kept, boxes, sizes = [], [], []
        selected = set(self.category_ids)
        seen_ids: set = set()
        for i, a in enumerate(entries):
            where = _check_entry(self.ann_file, "annotations", i, a, ("id", "image_id", "category_id", "bbox"),
                                 ("id", "image_id", "category_id"), seen_ids)
            seen_ids.add(a["id"])
            if a["image_id"] not in images:
                raise ValueError(f"{where}: image_id {a['image_id']!r} is not in 'images'")
            if a["category_id"] not in categories:
                raise ValueError(f"{where}: category_id {a['category_id']!r} is not in 'categories' "
                                 f"(ids {sorted(categories)})")
            box = a["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
                raise ValueError(f"{where}: 'bbox' must be [x, y, width, height] of 4 finite numbers, got {box!r}")
            if a["category_id"] not in selected:
                self.skipped["category_not_selected"] = self.skipped.get("category_not_selected", 0) + 1
                continue
            kept.append(a)
            boxes.append(box)
            sizes.append((images[a["image_id"]]["width"], images[a["image_id"]]["height"]))
        if not kept:
            return []
        xywh = np.asarray(boxes, dtype=np.float64)
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
                raise ValueError(f"{self.ann_file}: {int(bad.sum())} annotation(s) with bbox {what}, "
                                 f"e.g. annotation id(s) {ids}")
            if bad.any():
                self.skipped[reason] = self.skipped.get(reason, 0) + int(bad.sum())
        self.clipped = int(was_clipped.sum())
        out = []
        for j in np.flatnonzero(~(degenerate | outside)):
            a, (x1, y1, x2, y2) = kept[j], clipped[j].tolist()
            area = (x2 - x1) * (y2 - y1)
            out.append({**a, "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": min(float(a.get("area", area)), area) if was_clipped[j] else a.get("area", area),
                        "iscrowd": int(bool(a.get("iscrowd", 0)))})
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
        return {i: (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(lab, np.int64),
                    np.asarray(c, np.float32).reshape(-1, 4)) for i, (b, lab, c) in per_image.items()}

    # ---- access ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, index: int) -> Tensor:
        """The image as float32 ``[3, H, W]`` in ``[0, 1]`` (grey, RGBA, palette → RGB)."""
        path, image_id = self._paths[index], self.image_ids[index]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError as e:
            raise OSError(f"cannot read image {path} (image_id={image_id}): {e}") from None
        height, width = self._sizes[index]
        if im.size != (width, height):
            raise ValueError(f"{path}: image is {im.size[0]}x{im.size[1]} but {self.ann_file} says "
                             f"width={width}, height={height} (image_id={image_id})")
        return pil_to_tensor(im).float().div_(255.0)

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
        return (f"{type(self).__name__}({self.ann_file}, images={len(self)}, classes={self.category_names}, "
                f"train={self.train}, skipped={self.skipped}, clipped={self.clipped})")


def collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """Images stay a list (sizes differ; the model's transform resizes and pads them)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def detections_to_coco_results(
    detections: Sequence[dict[str, Tensor]], image_ids: Sequence[int], category_ids: Sequence[int],
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
        results += [{"image_id": int(image_id), "category_id": c, "bbox": b, "score": s}
                    for b, s, c in zip(xywh, scores, labels)]
    return results


def coco_from_detections(
    coco_gt: COCO, detections: Sequence[dict[str, Tensor]], image_ids: Sequence[int], category_ids: Sequence[int],
) -> COCO:
    """The detections as a ``COCO`` results object for ``COCOeval(coco_gt, coco_dt, "bbox")``.

    Unlike ``coco_gt.loadRes``, an empty result list gives an empty (valid) object instead of failing.
    """
    results = detections_to_coco_results(detections, image_ids, category_ids)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                       "categories": list(coco_gt.dataset["categories"])}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


__all__ = ["CocoDetection", "collate", "coco_from_detections", "detections_to_coco_results", "load_coco_json"]

"""Property: whatever a COCO annotation file holds, the loader gives a clear error or a correct dataset.

A clear error is a one-line ``ValueError`` (image errors too: :class:`ImageReadError` is one) naming
the annotation file; a correct dataset loads every image and target within its image, and
pycocotools evaluates its ground truth (and rasterises every kept segmentation) without failing.
Any other exception fails the test.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.cocoeval import COCOeval

from paa_toolkit.data import CocoDetection, coco_from_detections

W, H = 40, 30


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Images of every kind the fuzzer names (good, odd, corrupt, out of bounds), all 40×30 as displayed."""
    root = tmp_path_factory.mktemp("fuzz")
    images = root / "imgs"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "a.png")
    Image.fromarray(rgb[..., 0]).save(images / "b.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(images / "grey16.png")
    Image.fromarray(rgb[..., 0] % 2).convert("P").save(images / "palette.png", transparency=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb.transpose(1, 0, 2).copy()).save(images / "rotated.jpg", exif=exif)
    (images / "corrupt.png").write_bytes(b"\x89PNG not really")
    whole = (images / "a.png").read_bytes()
    (images / "truncated.png").write_bytes(whole[: len(whole) // 2])
    Image.fromarray(rgb).save(root / "outside.png")
    (images / "link_out.png").symlink_to(root / "outside.png")
    return root


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(2**62, 2**70),
    st.floats(),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(["counts", "size", "x"]), st.integers(0, 3), max_size=2),
)


def often(good: st.SearchStrategy, otherwise: st.SearchStrategy = JUNK, one_in: int = 20) -> st.SearchStrategy:
    """``good`` but about one time in ``one_in`` ``otherwise``: an example has about one odd field, so
    that many load and each field is broken on its own. (The odd pick is a middle value of the
    range, which Hypothesis does not favour as it does the bounds.)"""
    return st.integers(0, one_in).flatmap(lambda k: otherwise if k == one_in // 2 else good)


GOOD_FILES = ["a.png", "b.png", "grey16.png", "palette.png", "rotated.jpg"]
BAD_FILES = ["corrupt.png", "truncated.png", "link_out.png", "missing.png", "../outside.png", "sub/../a.png", "", "sub"]
coordinate = often(st.one_of(st.integers(-20, 60), st.floats(-20, 60)), st.sampled_from([1e308, -1e308, 10**400]))
box = often(
    st.tuples(st.integers(0, W - 1), st.integers(0, H - 1), st.floats(0.5, W), st.floats(0.5, H)).map(list),
    st.lists(coordinate, min_size=4, max_size=4) | JUNK,
    one_in=4,
)
polygon = st.lists(coordinate, min_size=0, max_size=10)
rle = st.fixed_dictionaries(
    {
        "counts": st.one_of(
            st.just([W * H]),
            st.lists(st.integers(-2, W * H), max_size=4),
            st.text(alphabet="0123456789:;<=>?@ABC!", max_size=6),
        ),
        "size": often(st.just([H, W]), st.lists(st.integers(-1, W), max_size=3), one_in=4),
    }
)


def image(ident: int) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {
            "id": often(st.just(ident)),
            "file_name": often(st.sampled_from(GOOD_FILES), st.one_of(st.sampled_from(BAD_FILES), JUNK), one_in=10),
        },
        optional={
            "width": often(st.just(W), st.sampled_from([H, 1, W + 1]) | JUNK),
            "height": often(st.just(H), st.sampled_from([W, 1, H + 1]) | JUNK),
        },
    )


images = often(st.tuples(image(10), image(20)).map(list), st.lists(image(30), max_size=2), one_in=10)
annotation = st.fixed_dictionaries(
    {
        "id": often(st.integers(0, 9)),
        "image_id": often(st.sampled_from([10, 20]), st.just(30) | JUNK),
        "category_id": often(st.sampled_from([5, 2, 9]), st.just(4) | JUNK),
        "bbox": box,
    },
    optional={
        "iscrowd": often(st.sampled_from([0, 1, True, False])),
        "area": often(st.floats(0, 1e4)),
        "segmentation": often(st.one_of(st.lists(polygon, max_size=2), rle)),
    },
)
category = st.fixed_dictionaries(
    {"id": often(st.sampled_from([5, 2, 9])), "name": often(st.sampled_from(["cat", "dog"]))}
)
dataset = st.fixed_dictionaries(
    {
        "images": images,
        "annotations": often(
            st.lists(annotation, min_size=1, max_size=4, unique_by=lambda a: repr(a["id"])), st.just([]), one_in=10
        ),
        "categories": often(
            st.just([{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 9, "name": "emu"}]),
            st.lists(category, max_size=3),
            one_in=4,
        ),
    }
)


def assert_correct(ds: CocoDetection) -> None:
    """Every image loads as displayed, every target lies in its image, pycocotools takes the ground truth."""
    detections = []
    for index in range(len(ds)):
        image, target = ds[index]
        info = ds.coco.imgs[target["image_id"]]
        assert image.shape == (3, info["height"], info["width"]) and image.dtype == torch.float32
        assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        for boxes in (target["boxes"], target["crowd_boxes"]):
            assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes[:, :2] >= 0).all()
            assert (boxes[:, 2] <= info["width"]).all() and (boxes[:, 3] <= info["height"]).all()
        assert ((target["labels"] >= 0) & (target["labels"] < ds.num_classes)).all()
        detections.append({**target, "scores": torch.ones(len(target["labels"]))})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ds.coco, coco_from_detections(ds.coco, detections, ds.image_ids, ds.category_ids), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    for ann in ds.coco.dataset["annotations"]:
        if "segmentation" in ann:
            assert ds.coco.annToMask(ann).shape == (
                ds.coco.imgs[ann["image_id"]]["height"],
                ds.coco.imgs[ann["image_id"]]["width"],
            )


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=dataset)
def test_any_annotation_file_gives_a_clear_error_naming_it_or_a_correct_dataset(folder, data):
    ann_file = folder / "ann.json"
    ann_file.write_text(json.dumps(data))
    try:
        ds = CocoDetection(folder / "imgs", ann_file)
        ds.check_images()
    except ValueError as e:
        assert str(ann_file) in str(e) and "\n" not in str(e), str(e)
        return
    assert_correct(ds)

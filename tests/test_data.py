"""Specifications of the COCO-format loader and the embedded synthetic dataset."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.cocoeval import COCOeval

from paa_toolkit.data import (CATEGORIES, CocoDetection, coco_from_detections, collate, default_dataset,
                              make_synthetic_coco)
from paa_toolkit.data.synthetic import MARKER, arc_mask, ell_mask

W, H = 40, 30  # the tiny hand-written dataset: two 40×30 images


def write_dataset(tmp_path: Path, annotations=None, images=None, categories=None, **top) -> tuple[Path, Path]:
    """Two images (ids 10, 20) and categories 5 "cat", 2 "dog", 9 "emu" — ids deliberately unsorted."""
    image_dir = tmp_path / "imgs"
    image_dir.mkdir(exist_ok=True)
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:, :W // 2] = 200  # left half bright: makes flips visible
    Image.fromarray(pixels).save(image_dir / "a.png")
    Image.fromarray(pixels[..., 0]).save(image_dir / "b.png")  # greyscale file
    data = {
        "images": images if images is not None else [
            {"id": 10, "file_name": "a.png", "width": W, "height": H},
            {"id": 20, "file_name": "b.png", "width": W, "height": H}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 10, "category_id": 9, "bbox": [2, 3, 10, 5]},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [20, 10, 4, 8]},
            {"id": 3, "image_id": 10, "category_id": 5, "bbox": [0, 0, 6, 6], "iscrowd": 1},
            {"id": 4, "image_id": 20, "category_id": 5, "bbox": [1, 1, 3, 3]}],
        "categories": categories if categories is not None else [
            {"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 9, "name": "emu"}],
        **top,
    }
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(data))
    return image_dir, ann_file


@pytest.fixture
def tiny(tmp_path):
    return CocoDetection(*write_dataset(tmp_path))


# ---- the loader ----------------------------------------------------------------------------------
def test_non_contiguous_category_ids_map_to_sorted_contiguous_labels(tiny):
    assert tiny.category_ids == [2, 5, 9]
    assert tiny.category_names == ["dog", "cat", "emu"]
    _, target = tiny[0]  # image 10: emu then dog
    assert target["labels"].tolist() == [2, 0]
    assert target["labels"].dtype == torch.int64


def test_category_ids_argument_sets_the_mapping_and_drops_other_classes(tmp_path):
    ds = CocoDetection(*write_dataset(tmp_path), category_ids=[9, 5])
    _, target = ds[0]
    assert target["labels"].tolist() == [0]  # emu → 0; the dog annotation is dropped
    assert ds.skipped == {"category_not_selected": 1}
    assert ds.coco.getCatIds() == [9, 5]


def test_category_ids_argument_with_unknown_id_raises(tmp_path):
    with pytest.raises(ValueError, match=r"\[4\].*ann\.json"):
        CocoDetection(*write_dataset(tmp_path), category_ids=[4, 5])


def test_boxes_are_converted_from_xywh_to_xyxy(tiny):
    _, target = tiny[0]
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 24, 18]]
    assert target["boxes"].dtype == torch.float32
    assert target["image_id"] == 10


def test_crowd_annotations_go_to_crowd_boxes_not_to_boxes_or_labels(tiny):
    _, target = tiny[0]
    assert target["crowd_boxes"].tolist() == [[0, 0, 6, 6]]
    assert len(target["boxes"]) == len(target["labels"]) == 2
    _, target = tiny[1]
    assert target["crowd_boxes"].shape == (0, 4)


def test_image_is_float_rgb_in_unit_range_at_original_size(tiny):
    image, _ = tiny[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert image[:, 0, 0].tolist() == pytest.approx([200 / 255] * 3)
    assert image[:, 0, -1].tolist() == [0, 0, 0]


def test_greyscale_and_rgba_images_load_as_three_channels(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    Image.new("RGBA", (W, H), (10, 20, 30, 40)).save(image_dir / "a.png")
    ds = CocoDetection(image_dir, ann_file)
    assert ds[0][0][:, 5, 5].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])
    assert ds[1][0].shape == (3, H, W)


def test_horizontal_flip_mirrors_image_boxes_and_crowd_boxes(tmp_path):
    ds = CocoDetection(*write_dataset(tmp_path), train=True, flip_prob=1.0)
    image, target = ds[0]
    assert image[:, 0, -1].tolist() == pytest.approx([200 / 255] * 3)  # bright half now on the right
    assert image[:, 0, 0].tolist() == [0, 0, 0]
    assert target["boxes"].tolist() == [[W - 12, 3, W - 2, 8], [W - 24, 10, W - 20, 18]]
    assert target["crowd_boxes"].tolist() == [[W - 6, 0, W, 6]]
    assert target["labels"].tolist() == [2, 0]


def test_no_flip_without_train_even_with_flip_prob_one(tmp_path):
    ds = CocoDetection(*write_dataset(tmp_path), train=False, flip_prob=1.0)
    assert ds[0][1]["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 24, 18]]


def test_collate_keeps_images_and_targets_as_lists(tiny):
    images, targets = collate([tiny[0], tiny[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert [t["image_id"] for t in targets] == [10, 20]
    assert images[1].shape == (3, H, W)


def test_ground_truth_boxes_as_detections_evaluate_to_ap_one(tiny):
    detections, image_ids = [], []
    for i in range(len(tiny)):
        _, t = tiny[i]
        detections.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))})
        image_ids.append(t["image_id"])
    ev = COCOeval(tiny.coco, coco_from_detections(tiny.coco, detections, image_ids, tiny.category_ids), "bbox")
    ev.evaluate(), ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # all areas, 100 detections
    assert (precision > -1).all()  # every class has ground truth at every IoU threshold
    assert np.allclose(precision, 1.0)  # COCOeval divides by tp + fp + eps


def test_empty_detections_give_a_valid_results_object(tiny):
    none = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}] * 2
    coco_dt = coco_from_detections(tiny.coco, none, tiny.image_ids, tiny.category_ids)
    assert coco_dt.getAnnIds() == [] and coco_dt.getImgIds() == tiny.coco.getImgIds()


# ---- bad input -----------------------------------------------------------------------------------
def test_malformed_json_names_file_line_and_column(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    ann_file.write_text('{"images": [],\n  "annotations": [,]}')
    with pytest.raises(ValueError, match=r"ann\.json: malformed JSON at line 2, column 19"):
        CocoDetection(image_dir, ann_file)


def test_missing_annotation_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key_names_file_and_key(tmp_path, key):
    image_dir, ann_file = write_dataset(tmp_path)
    data = json.loads(ann_file.read_text())
    del data[key]
    ann_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"ann\.json: missing top-level key\(s\) \['{key}'\]"):
        CocoDetection(image_dir, ann_file)


@pytest.mark.parametrize("field", ["bbox", "category_id", "image_id"])
def test_annotation_missing_field_names_file_index_id_and_field(tmp_path, field):
    annotation = {"id": 77, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3, 3]}
    del annotation[field]
    with pytest.raises(ValueError, match=rf"ann\.json: annotations\[0\] \(id=77\) is missing field\(s\) \['{field}'\]"):
        CocoDetection(*write_dataset(tmp_path, annotations=[annotation]))


def test_malformed_bbox_names_annotation(tmp_path):
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=7\): 'bbox' must be"):
        CocoDetection(*write_dataset(tmp_path, annotations=[
            {"id": 7, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3]}]))


@pytest.mark.parametrize("bbox", [[5, 5, 0, 4], [5, 5, 4, -1]])
def test_zero_or_negative_size_box_is_skipped_and_counted(tmp_path, bbox):
    ds = CocoDetection(*write_dataset(tmp_path, annotations=[
        {"id": 1, "image_id": 10, "category_id": 5, "bbox": bbox},
        {"id": 2, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3, 3]}]))
    assert ds.skipped == {"degenerate_box": 1}
    assert ds[0][1]["boxes"].tolist() == [[1, 1, 4, 4]]
    assert ds.coco.getAnnIds() == [2]  # the evaluation ground truth agrees with training


def test_zero_size_box_raises_naming_annotation_id_in_error_mode(tmp_path):
    with pytest.raises(ValueError, match=r"ann\.json: 1 annotation\(s\) with bbox width or height <= 0.*\[31\]"):
        CocoDetection(*write_dataset(tmp_path, annotations=[
            {"id": 31, "image_id": 10, "category_id": 5, "bbox": [5, 5, 0, 4]}]), on_bad_annotation="error")


def test_box_wholly_outside_image_is_skipped_or_raises(tmp_path):
    annotations = [{"id": 8, "image_id": 10, "category_id": 5, "bbox": [W + 1, 2, 5, 5]}]
    ds = CocoDetection(*write_dataset(tmp_path, annotations=annotations))
    assert ds.skipped == {"outside_image": 1} and len(ds[0][1]["boxes"]) == 0
    with pytest.raises(ValueError, match=r"wholly outside its image.*\[8\]"):
        CocoDetection(*write_dataset(tmp_path, annotations=annotations), on_bad_annotation="error")


def test_box_partly_outside_image_is_clipped(tmp_path):
    ds = CocoDetection(*write_dataset(tmp_path, annotations=[
        {"id": 1, "image_id": 10, "category_id": 5, "bbox": [-3, 20, 10, 20]}]))
    assert ds[0][1]["boxes"].tolist() == [[0, 20, 7, H]]
    assert ds.clipped == 1 and ds.skipped == {}
    assert ds.coco.anns[1]["bbox"] == [0, 20, 7, H - 20]


def test_unknown_category_id_names_annotation_id(tmp_path):
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=55\): category_id 4 is not in 'categories'"):
        CocoDetection(*write_dataset(tmp_path, annotations=[
            {"id": 55, "image_id": 10, "category_id": 4, "bbox": [1, 1, 3, 3]}]))


def test_unknown_image_id_names_annotation_id(tmp_path):
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=56\): image_id 99 is not in 'images'"):
        CocoDetection(*write_dataset(tmp_path, annotations=[
            {"id": 56, "image_id": 99, "category_id": 5, "bbox": [1, 1, 3, 3]}]))


def test_missing_image_file_raises_at_construction_naming_path(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    (image_dir / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"ann\.json not found, e\.g\. .*imgs/b\.png"):
        CocoDetection(image_dir, ann_file)


def test_unreadable_image_raises_at_load_naming_path(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    ds = CocoDetection(image_dir, ann_file)
    (image_dir / "b.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match=r"cannot read image .*imgs/b\.png \(image_id=20\)"):
        ds[1]


def test_image_size_differing_from_json_raises_naming_path(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    ds = CocoDetection(image_dir, ann_file)
    Image.new("RGB", (H, W)).save(image_dir / "a.png")  # transposed
    with pytest.raises(ValueError, match=r"a\.png: image is 30x40 but .*ann\.json says width=40, height=30"):
        ds[0]


def test_empty_dataset_raises(tmp_path):
    with pytest.raises(ValueError, match=r"ann\.json: no images"):
        CocoDetection(*write_dataset(tmp_path, images=[], annotations=[]))


# ---- the synthetic dataset -----------------------------------------------------------------------
SMALL = dict(num_train=48, num_val=12, image_size=128)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_synthetic_coco(tmp_path_factory.mktemp("synthetic") / "ds", seed=3, **SMALL)


def test_synthetic_same_seed_gives_byte_identical_json(synthetic, tmp_path):
    again = make_synthetic_coco(tmp_path / "again", seed=3, **SMALL)
    for name in ("train.json", "val.json"):
        assert (again / name).read_bytes() == (synthetic / name).read_bytes()


def test_synthetic_other_seed_gives_other_annotations(synthetic, tmp_path):
    other = make_synthetic_coco(tmp_path / "other", seed=4, **SMALL)
    assert (other / "train.json").read_bytes() != (synthetic / "train.json").read_bytes()


def test_synthetic_complete_folder_is_returned_without_rewriting(synthetic):
    before = {p: p.stat().st_mtime_ns for p in synthetic.rglob("*")}
    assert make_synthetic_coco(synthetic, seed=3, **SMALL) == synthetic
    assert {p: p.stat().st_mtime_ns for p in synthetic.rglob("*")} == before


def test_synthetic_partial_folder_is_rebuilt(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "train.json").write_text('{"images": [')  # a killed run's leftovers, no marker
    make_synthetic_coco(root, seed=1, num_train=4, num_val=2, image_size=64)
    assert (root / MARKER).is_file()
    assert len(json.loads((root / "train.json").read_text())["images"]) == 4
    assert not list(tmp_path.glob(".ds.partial-*"))


def test_synthetic_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        make_synthetic_coco(tmp_path, num_train=2, num_val=1, image_size=64)


def test_synthetic_default_root_is_a_named_folder_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAA_TOOLKIT_CACHE", str(tmp_path))
    root = make_synthetic_coco(seed=2, num_train=3, num_val=2, image_size=64)
    assert root.parent == tmp_path and root.name.startswith("synthetic-v1-seed2-n3-2-64px-")


def test_synthetic_category_ids_are_not_contiguous(synthetic):
    ids = [c["id"] for c in json.loads((synthetic / "train.json").read_text())["categories"]]
    assert ids == sorted(ids) and len(ids) == 6
    assert ids != list(range(ids[0], ids[0] + len(ids)))


def test_synthetic_covers_all_classes_sizes_crowds_and_empty_images(synthetic):
    boxes = []
    for split in ("train.json", "val.json"):
        data = json.loads((synthetic / split).read_text())
        solid = [a for a in data["annotations"] if not a["iscrowd"]]
        assert {a["category_id"] for a in solid} == {c["id"] for c in CATEGORIES}
        assert any(a["iscrowd"] for a in data["annotations"])
        annotated = {a["image_id"] for a in data["annotations"]}
        assert any(im["id"] not in annotated for im in data["images"])
        boxes += [a["bbox"] for a in solid]
    w, h = np.asarray(boxes, np.float64)[:, 2:].T
    longest = np.maximum(w, h)
    assert longest.min() <= 10 and longest.max() >= 0.4 * SMALL["image_size"]  # tiny to half the image
    assert (w / h).min() < 0.25 and (w / h).max() > 4  # thin shapes both ways


def test_synthetic_boxes_lie_inside_their_images(synthetic):
    data = json.loads((synthetic / "train.json").read_text())
    b = np.asarray([a["bbox"] for a in data["annotations"]])
    assert (b[:, :2] >= 0).all() and (b[:, :2] + b[:, 2:] <= SMALL["image_size"]).all() and (b[:, 2:] > 0).all()


@pytest.mark.parametrize("mask", [ell_mask(40, 30, 9), ell_mask(30, 40, 8, mirror=True),
                                  arc_mask(40, 40, 6, 0, 180), arc_mask(44, 36, 7, 100, 270)])
def test_acentric_shapes_have_their_box_centre_off_the_object(mask):
    ys, xs = np.nonzero(mask > 0.5)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    assert mask[math.floor(cy), math.floor(cx)] == 0


def test_default_dataset_reads_back_train_and_val(synthetic):
    train, val = default_dataset(synthetic, seed=3, **SMALL)
    assert train.train and not val.train
    assert val.category_ids == train.category_ids == [c["id"] for c in CATEGORIES]
    assert train.skipped == {} and train.clipped == 0
    assert len(train) == SMALL["num_train"] and len(val) == SMALL["num_val"]
    assert not set(train.image_ids) & set(val.image_ids)
    image, target = val[0]
    assert image.shape == (3, 128, 128)
    assert (target["labels"] < len(CATEGORIES)).all()

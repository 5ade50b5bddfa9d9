"""Specifications of the COCO-format loader and the embedded synthetic dataset."""

from __future__ import annotations

import json
import math
import re
import struct
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from paa_toolkit.data import (
    CATEGORIES,
    CocoDetection,
    ImageReadError,
    coco_from_detections,
    collate,
    default_dataset,
    make_synthetic_coco,
    read_image,
)
from paa_toolkit.data.images import to_rgb
from paa_toolkit.data.synthetic import MARKER, arc_mask, ell_mask

W, H = 40, 30  # the tiny hand-written dataset: two 40×30 images


def write_dataset(tmp_path: Path, annotations=None, images=None, categories=None, **top) -> tuple[Path, Path]:
    """Two images (ids 10, 20) and categories 5 "cat", 2 "dog", 9 "emu" — ids deliberately unsorted."""
    image_dir = tmp_path / "imgs"
    image_dir.mkdir(exist_ok=True)
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:, : W // 2] = 200  # left half bright: makes flips visible
    Image.fromarray(pixels).save(image_dir / "a.png")
    Image.fromarray(pixels[..., 0]).save(image_dir / "b.png")  # greyscale file
    data = {
        "images": images
        if images is not None
        else [
            {"id": 10, "file_name": "a.png", "width": W, "height": H},
            {"id": 20, "file_name": "b.png", "width": W, "height": H},
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 10, "category_id": 9, "bbox": [2, 3, 10, 5]},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [20, 10, 4, 8]},
            {"id": 3, "image_id": 10, "category_id": 5, "bbox": [0, 0, 6, 6], "iscrowd": 1},
            {"id": 4, "image_id": 20, "category_id": 5, "bbox": [1, 1, 3, 3]},
        ],
        "categories": categories
        if categories is not None
        else [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 9, "name": "emu"}],
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


def test_greyscale_image_loads_as_three_equal_channels(tiny):
    image = tiny[1][0]  # b.png is mode L
    assert image.shape == (3, H, W)
    assert image[:, 0, 0].tolist() == pytest.approx([200 / 255] * 3) and image[:, 0, -1].tolist() == [0, 0, 0]


def test_rgba_pixels_are_composited_onto_white_not_their_hidden_colour(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    Image.new("RGBA", (W, H), (10, 20, 30, 40)).save(image_dir / "a.png")  # alpha 40/255
    image = CocoDetection(image_dir, ann_file)[0][0]
    a = 40 / 255
    assert image[:, 5, 5].tolist() == pytest.approx([c / 255 * a + (1 - a) for c in (10, 20, 30)], abs=1e-6)


# ---- pixels: bit depth, mode, transparency, orientation, size -------------------------------------
def png_bytes(pixels: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (Pillow writes 16-bit greyscale only): ``pixels[h, w, c]`` uint16, colour type
    0 grey, 2 RGB, 4 grey + alpha, 6 RGBA."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = pixels.shape[:2]
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def ramp16(channels: int) -> np.ndarray:
    """Distinct 16-bit values over the W×H image, the low byte not zero (so 8-bit truncation shows)."""
    values = np.arange(H * W * channels, dtype=np.int64) * 40 + 7
    return (values % 65536).astype(np.uint16).reshape(H, W, channels)


def test_sixteen_bit_greyscale_png_loads_to_its_values_over_65535(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    pixels = ramp16(1)
    (image_dir / "a.png").write_bytes(png_bytes(pixels, color_type=0))
    image = CocoDetection(image_dir, ann_file)[0][0]
    expected = torch.from_numpy(pixels[..., 0].astype(np.float32) / 65535)
    for channel in image:
        torch.testing.assert_close(channel, expected, rtol=0, atol=1e-7)
    assert 0.0 < image.min() and image.max() < 1.0  # not the all-white of an 8-bit clamp


def test_sixteen_bit_rgb_png_loads_at_eight_bit_precision(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    pixels = ramp16(3)
    (image_dir / "a.png").write_bytes(png_bytes(pixels, color_type=2))
    image = CocoDetection(image_dir, ann_file)[0][0]
    expected = torch.from_numpy(pixels.astype(np.float32) / 65535).permute(2, 0, 1)
    torch.testing.assert_close(image, expected, rtol=0, atol=1 / 255)


def test_palette_png_with_a_transparent_entry_is_composited_onto_the_stated_background(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    palette = Image.new("P", (W, H), 0)
    palette.putpalette([250, 0, 0, 0, 250, 0])  # entry 0 red, entry 1 green (hidden: transparent)
    palette.paste(1, (0, 0, W // 2, H))
    palette.save(image_dir / "a.png", transparency=1)
    on_white = CocoDetection(image_dir, ann_file)[0][0]
    on_blue = CocoDetection(image_dir, ann_file, background=(0, 0, 255))[0][0]
    assert on_white[:, 0, 0].tolist() == [1, 1, 1] and on_blue[:, 0, 0].tolist() == [0, 0, 1]
    assert on_white[:, 0, -1].tolist() == on_blue[:, 0, -1].tolist() == pytest.approx([250 / 255, 0, 0])


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("1", 1, (1, 1, 1)),
        ("L", 51, (0.2, 0.2, 0.2)),
        ("P", 0, (0, 0, 0)),  # Pillow's default palette: entry 0 is black
        ("I;16", 13107, (0.2, 0.2, 0.2)),
        ("I", 52428, (0.8, 0.8, 0.8)),  # Pillow's mode for 16-bit PGM/TIFF
        ("F", 0.25, (0.25, 0.25, 0.25)),
        ("RGBX", (255, 0, 51, 0), (1, 0, 0.2)),
        ("CMYK", (0, 255, 0, 0), (1, 0, 1)),  # magenta
        ("YCbCr", (255, 128, 128), (1, 1, 1)),
        ("HSV", (85, 255, 255), (0, 1, 0)),
        ("LAB", (0, 128, 128), (0, 0, 0)),
        ("LA", (51, 0), (1, 1, 1)),  # fully transparent: the background
        ("La", (51, 255), (0.2, 0.2, 0.2)),
        ("PA", (0, 255), (0, 0, 0)),
        ("RGBa", (51, 0, 0, 255), (0.2, 0, 0)),
    ],
)
def test_every_supported_mode_converts_to_rgb_in_unit_range(mode, colour, expected):
    rgb = to_rgb(Image.new(mode, (3, 2), colour))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb, np.broadcast_to(np.float32(expected), rgb.shape), atol=1.5 / 255)


@pytest.mark.parametrize(
    "mode, value, message",
    [
        ("F", 2.0, r"float \(mode F\) pixel values must be finite and in \[0, 1\]"),
        ("F", float("nan"), r"float \(mode F\) pixel values must be finite"),
        ("I", 70000, r"mode I values 70000\.\.70000 are outside 0\.\.65535"),
    ],
)
def test_float_and_integer_images_out_of_range_are_refused_naming_file(tmp_path, mode, value, message):
    image_dir, ann_file = write_dataset(tmp_path)
    Image.new(mode, (W, H), value).save(image_dir / "a.tif")
    data = json.loads(ann_file.read_text())
    data["images"][0]["file_name"] = "a.tif"
    ann_file.write_text(json.dumps(data))
    ds = CocoDetection(image_dir, ann_file)  # the header is fine; the values show on decoding
    with pytest.raises(ImageReadError, match=rf"a\.tif \(image_id=10\): {message}.*ann\.json"):
        ds.check_images()


def exif_rotated_jpeg(path: Path) -> None:
    """Stored 30 wide × 40 high with a bright top-left block; EXIF Orientation 6 (display: turn 90°
    clockwise), so it displays 40 wide × 30 high with the block top-right."""
    stored = np.zeros((W, H, 3), np.uint8)
    stored[:10, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)


def test_exif_rotated_jpeg_loads_as_displayed_matching_the_annotated_size(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    data = json.loads(ann_file.read_text())
    data["images"][0]["file_name"] = "a.jpg"  # 40 × 30, as displayed
    ann_file.write_text(json.dumps(data))
    exif_rotated_jpeg(image_dir / "a.jpg")
    image = CocoDetection(image_dir, ann_file)[0][0]
    assert image.shape == (3, H, W)
    assert image[:, 3, W - 4].min() > 0.9 and image[:, 3, 3].max() < 0.1  # the block is top-right


def test_exif_rotated_jpeg_annotated_with_its_stored_size_is_refused_with_a_hint(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    data = json.loads(ann_file.read_text())
    data["images"][0].update(file_name="a.jpg", width=H, height=W)  # the stored, unrotated size
    ann_file.write_text(json.dumps(data))
    exif_rotated_jpeg(image_dir / "a.jpg")
    with pytest.raises(
        ValueError,
        match=r"a\.jpg: image is 40x30 but .*ann\.json says width=30, height=40 "
        r"\(image_id=10\); its EXIF Orientation \(6\) turns it by 90 degrees",
    ):
        CocoDetection(image_dir, ann_file)


def test_image_size_is_read_as_displayed_when_the_annotation_omits_it(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    data = json.loads(ann_file.read_text())
    data["images"][0] = {"id": 10, "file_name": "a.jpg"}
    ann_file.write_text(json.dumps(data))
    exif_rotated_jpeg(image_dir / "a.jpg")
    ds = CocoDetection(image_dir, ann_file)
    assert ds.coco.imgs[10]["width"] == W and ds.coco.imgs[10]["height"] == H


@pytest.mark.parametrize("limit", [1000, 500])  # 40×30 = 1200 pixels: Pillow warns above 1000, raises above 2 × 500
def test_image_above_the_decompression_bomb_limit_is_a_clear_error_not_a_warning(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    image_dir, ann_file = write_dataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping would fail the test
        with pytest.raises(
            ImageReadError,
            match=r"cannot read image .*a\.png \(image_id=10\): .*"
            r"1,?200 pixels.* limit .*MAX_IMAGE_PIXELS.*ann\.json",
        ):
            CocoDetection(image_dir, ann_file)


@pytest.mark.parametrize("size, loads", [((32, 1), True), ((1, 32), True), ((33, 1), False), ((1, 40), False)])
def test_aspect_ratio_above_32_to_1_is_refused_naming_file(tmp_path, size, loads):
    image_dir, ann_file = write_dataset(tmp_path, annotations=[])
    Image.new("L", size, 9).save(image_dir / "a.png")
    data = json.loads(ann_file.read_text())
    data["images"][0].update(width=size[0], height=size[1])
    ann_file.write_text(json.dumps(data))
    if loads:
        assert CocoDetection(image_dir, ann_file)[0][0].shape == (3, size[1], size[0])
    else:
        with pytest.raises(ImageReadError, match=r"a\.png \(image_id=10\): .*aspect ratio above 32:1"):
            CocoDetection(image_dir, ann_file)


def test_one_pixel_image_loads(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path, annotations=[])
    Image.new("RGB", (1, 1), (255, 0, 0)).save(image_dir / "a.png")
    data = json.loads(ann_file.read_text())
    data["images"][0].update(width=1, height=1)
    ann_file.write_text(json.dumps(data))
    assert CocoDetection(image_dir, ann_file)[0][0].tolist() == [[[1.0]], [[0.0]], [[0.0]]]


def test_read_image_gives_detect_the_same_pixels_as_the_dataset(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    (image_dir / "a.png").write_bytes(png_bytes(ramp16(1), color_type=0))
    assert torch.equal(read_image(image_dir / "a.png"), CocoDetection(image_dir, ann_file)[0][0])


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
        CocoDetection(
            *write_dataset(tmp_path, annotations=[{"id": 7, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3]}])
        )


@pytest.mark.parametrize("bbox", [[5, 5, 0, 4], [5, 5, 4, -1]])
def test_zero_or_negative_size_box_is_skipped_and_counted(tmp_path, bbox):
    ds = CocoDetection(
        *write_dataset(
            tmp_path,
            annotations=[
                {"id": 1, "image_id": 10, "category_id": 5, "bbox": bbox},
                {"id": 2, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3, 3]},
            ],
        )
    )
    assert ds.skipped == {"degenerate_box": 1}
    assert ds[0][1]["boxes"].tolist() == [[1, 1, 4, 4]]
    assert ds.coco.getAnnIds() == [2]  # the evaluation ground truth agrees with training


def test_zero_size_box_raises_naming_annotation_id_in_error_mode(tmp_path):
    with pytest.raises(ValueError, match=r"ann\.json: 1 annotation\(s\) with bbox width or height <= 0.*\[31\]"):
        CocoDetection(
            *write_dataset(tmp_path, annotations=[{"id": 31, "image_id": 10, "category_id": 5, "bbox": [5, 5, 0, 4]}]),
            on_bad_annotation="error",
        )


def test_box_wholly_outside_image_is_skipped_or_raises(tmp_path):
    annotations = [{"id": 8, "image_id": 10, "category_id": 5, "bbox": [W + 1, 2, 5, 5]}]
    ds = CocoDetection(*write_dataset(tmp_path, annotations=annotations))
    assert ds.skipped == {"outside_image": 1} and len(ds[0][1]["boxes"]) == 0
    with pytest.raises(ValueError, match=r"wholly outside its image.*\[8\]"):
        CocoDetection(*write_dataset(tmp_path, annotations=annotations), on_bad_annotation="error")


def test_the_data_config_chooses_what_happens_to_bad_boxes(tmp_path):
    from paa_toolkit.data.build import DataConfig, build_datasets

    image_dir, ann = write_dataset(
        tmp_path, annotations=[{"id": 8, "image_id": 10, "category_id": 5, "bbox": [W + 1, 2, 5, 5]}]
    )
    cfg = DataConfig(dataset="coco", image_dir=str(image_dir), train_ann=str(ann), val_ann=str(ann))
    assert build_datasets(cfg)[0].skipped == {"outside_image": 1}
    with pytest.raises(ValueError, match=r"wholly outside its image"):
        build_datasets(replace(cfg, on_bad_annotation="error"))


def test_box_partly_outside_image_is_clipped(tmp_path):
    ds = CocoDetection(
        *write_dataset(tmp_path, annotations=[{"id": 1, "image_id": 10, "category_id": 5, "bbox": [-3, 20, 10, 20]}])
    )
    assert ds[0][1]["boxes"].tolist() == [[0, 20, 7, H]]
    assert ds.clipped == 1 and ds.skipped == {}
    assert ds.coco.anns[1]["bbox"] == [0, 20, 7, H - 20]


def test_unknown_category_id_names_annotation_id(tmp_path):
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=55\): category_id 4 is not in 'categories'"):
        CocoDetection(
            *write_dataset(tmp_path, annotations=[{"id": 55, "image_id": 10, "category_id": 4, "bbox": [1, 1, 3, 3]}])
        )


def test_unknown_image_id_names_annotation_id(tmp_path):
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=56\): image_id 99 is not in 'images'"):
        CocoDetection(
            *write_dataset(tmp_path, annotations=[{"id": 56, "image_id": 99, "category_id": 5, "bbox": [1, 1, 3, 3]}])
        )


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


def test_unreadable_image_fails_construction_naming_file_image_id_and_annotation_file(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    (image_dir / "b.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"cannot read image .*imgs/b\.png \(image_id=20\): .*ann\.json") as e:
        CocoDetection(image_dir, ann_file)
    assert isinstance(e.value, ValueError) and isinstance(e.value, OSError)


def test_several_unreadable_images_are_reported_in_one_error(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    for name in ("a.png", "b.png"):
        (image_dir / name).write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"a\.png \(image_id=10\).*; 1 more image\(s\) fail too$"):
        CocoDetection(image_dir, ann_file)


def test_truncated_image_passes_construction_but_check_images_names_it(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(image_dir / "a.png")
    data = (image_dir / "a.png").read_bytes()
    (image_dir / "a.png").write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    ds = CocoDetection(image_dir, ann_file)
    with pytest.raises(ImageReadError, match=r"cannot read image .*imgs/a\.png \(image_id=10\): .*ann\.json"):
        ds.check_images()


def test_check_images_passes_on_good_images(tiny):
    tiny.check_images()


def test_image_size_differing_from_json_fails_at_construction(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    Image.new("RGB", (H, W)).save(image_dir / "a.png")  # transposed
    with pytest.raises(
        ValueError,
        match=r"a\.png: image is 30x40 but .*ann\.json says width=40, height=30 "
        r"\(image_id=10\)$",
    ):
        CocoDetection(image_dir, ann_file)


# ---- image paths stay inside the image folder ------------------------------------------------------
def with_file_name(tmp_path: Path, file_name) -> tuple[Path, Path]:
    image_dir, ann_file = write_dataset(tmp_path)
    data = json.loads(ann_file.read_text())
    data["images"][1]["file_name"] = file_name
    ann_file.write_text(json.dumps(data))
    return image_dir, ann_file


def outside_error(tmp_path: Path, file_name, outside: Path, exists: bool, **kwargs) -> str:
    """The error for ``file_name`` (image id 20), with the outside file there or not."""
    if exists:
        Image.new("L", (W, H)).save(outside)
    else:
        outside.unlink(missing_ok=True)
    with pytest.raises(ValueError) as e:
        CocoDetection(*with_file_name(tmp_path, file_name), **kwargs)
    return str(e.value)


def test_dot_dot_file_name_is_refused_naming_annotation_and_image_without_telling_if_it_exists(tmp_path):
    there, absent = (outside_error(tmp_path, "../x.png", tmp_path / "x.png", exists) for exists in (True, False))
    assert there == absent
    assert re.fullmatch(
        r".*ann\.json: images\[1\] \(id=20\): file_name '\.\./x\.png' is outside the image "
        r"folder .*imgs: '\.\.' is not allowed; file names must be relative paths inside it",
        there,
    )


def test_dot_dot_inside_a_name_that_would_come_back_is_refused_too(tmp_path):
    with pytest.raises(ValueError, match=r"file_name 'sub/\.\./b\.png' is outside the image folder"):
        CocoDetection(*with_file_name(tmp_path, "sub/../b.png"))


def test_absolute_file_name_is_refused_without_telling_if_it_exists(tmp_path):
    outside = tmp_path / "x.png"
    there, absent = (outside_error(tmp_path, str(outside), outside, exists) for exists in (True, False))
    assert there == absent
    assert re.search(
        r"ann\.json: images\[1\] \(id=20\): file_name '.*x\.png' is outside the image folder .*: "
        r"it is an absolute path \(pass allow_absolute_paths=True to read those\)",
        there,
    )


def test_absolute_file_name_is_read_when_allowed(tmp_path):
    outside = tmp_path / "x.png"
    Image.new("L", (W, H), 51).save(outside)
    ds = CocoDetection(*with_file_name(tmp_path, str(outside)), allow_absolute_paths=True)
    assert ds[1][0][:, 0, 0].tolist() == pytest.approx([0.2] * 3)


def test_symlink_leading_out_of_the_image_folder_is_refused_without_telling_if_its_target_exists(tmp_path):
    image_dir = tmp_path / "imgs"
    image_dir.mkdir()
    (image_dir / "link.png").symlink_to(tmp_path / "x.png")
    there, absent = (outside_error(tmp_path, "link.png", tmp_path / "x.png", exists) for exists in (True, False))
    assert there == absent
    assert re.search(
        r"ann\.json: images\[1\] \(id=20\): file_name 'link\.png' is outside the image folder "
        r".*: a symbolic link leads out of it",
        there,
    )


def test_folder_symlink_leading_out_of_the_image_folder_is_refused(tmp_path):
    image_dir = tmp_path / "imgs"
    image_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (image_dir / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    there, absent = (
        outside_error(tmp_path, "more/x.png", tmp_path / "elsewhere" / "x.png", exists) for exists in (True, False)
    )
    assert there == absent and "file_name 'more/x.png' is outside the image folder" in there


def test_symlink_to_a_file_inside_the_image_folder_is_read(tmp_path):
    image_dir, ann_file = with_file_name(tmp_path, "sub/link.png")
    (image_dir / "sub").mkdir()
    (image_dir / "sub" / "link.png").symlink_to(image_dir / "b.png")
    assert CocoDetection(image_dir, ann_file)[1][0].shape == (3, H, W)


def test_image_folder_reached_through_a_symlink_is_fine(tmp_path):
    image_dir, ann_file = write_dataset(tmp_path)
    (tmp_path / "alias").symlink_to(image_dir)
    assert len(CocoDetection(tmp_path / "alias", ann_file)) == 2


@pytest.mark.parametrize("file_name", ["", "  ", 7, None, ["b.png"], "b\0.png"])
def test_file_name_that_is_not_a_non_empty_string_is_refused(tmp_path, file_name):
    with pytest.raises(ValueError, match=r"ann\.json: images\[1\] \(id=20\): 'file_name' must be a non-empty string"):
        CocoDetection(*with_file_name(tmp_path, file_name))


# ---- annotation fields: type and range ------------------------------------------------------------
def one_annotation(tmp_path: Path, **fields) -> tuple[Path, Path]:
    return write_dataset(
        tmp_path, annotations=[{"id": 7, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3, 3], **fields}]
    )


@pytest.mark.parametrize("iscrowd", ["no", "0", 2, -1, 0.0, 1.0, None, [1]])
def test_iscrowd_other_than_0_1_or_a_bool_is_refused_naming_annotation(tmp_path, iscrowd):
    with pytest.raises(
        ValueError, match=r"ann\.json: annotations\[0\] \(id=7\): 'iscrowd' must be 0, 1, true or false"
    ):
        CocoDetection(*one_annotation(tmp_path, iscrowd=iscrowd))


@pytest.mark.parametrize("iscrowd, crowd", [(0, False), (1, True), (False, False), (True, True)])
def test_iscrowd_0_1_false_true_are_read_as_such(tmp_path, iscrowd, crowd):
    _, target = CocoDetection(*one_annotation(tmp_path, iscrowd=iscrowd))[0]
    assert len(target["crowd_boxes"]) == int(crowd) and len(target["boxes"]) == 1 - int(crowd)


@pytest.mark.parametrize("area", [-1, "9", float("nan"), float("inf"), None, True, 10**400])
def test_area_that_is_not_a_finite_non_negative_number_is_refused(tmp_path, area):
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=7\): 'area' must be a finite number >= 0"):
        CocoDetection(*one_annotation(tmp_path, area=area))


def test_given_area_is_kept_and_missing_area_is_the_box_area(tmp_path):
    ds = CocoDetection(
        *write_dataset(
            tmp_path,
            annotations=[
                {"id": 1, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3, 3], "area": 4.5},
                {"id": 2, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3, 2]},
            ],
        )
    )
    assert ds.coco.anns[1]["area"] == 4.5 and ds.coco.anns[2]["area"] == 6


@pytest.mark.parametrize("bbox", [[1, 1, 10**400, 3], [1, float("nan"), 3, 3], [1, 1, True, 3], "1 1 3 3"])
def test_bbox_of_non_finite_or_oversized_numbers_is_a_clear_error(tmp_path, bbox):
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id=7\): 'bbox' must be \[x, y, width, height\]"):
        CocoDetection(*one_annotation(tmp_path, bbox=bbox))


def test_huge_but_finite_bbox_is_clipped_to_the_image(tmp_path):
    ds = CocoDetection(*one_annotation(tmp_path, bbox=[1, 1, 1e308, 1e308]))
    assert ds[0][1]["boxes"].tolist() == [[1, 1, W, H]] and ds.clipped == 1


@pytest.mark.parametrize("field", ["id", "image_id", "category_id"])
def test_ids_beyond_64_bits_are_refused(tmp_path, field):
    with pytest.raises(ValueError, match=rf"annotations\[0\].*'{field}' must be an integer \(64-bit\)"):
        CocoDetection(*one_annotation(tmp_path, **{field: 2**63}))


def test_category_name_that_is_not_a_string_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"ann\.json: categories\[0\] \(id=5\): 'name' must be a string, got None"):
        CocoDetection(*write_dataset(tmp_path, categories=[{"id": 5, "name": None}]))


POLYGON = [1, 1, 4, 1, 4, 4, 1, 4]


def rle(counts) -> dict:
    return {"counts": counts, "size": [H, W]}


@pytest.mark.parametrize(
    "segmentation",
    [
        [POLYGON],
        [POLYGON, [2, 2, 3, 2, 3, 3]],
        rle([5, 10, H * W - 15]),
        rle(mask_utils.encode(np.asfortranarray(np.eye(H, W, dtype=np.uint8)))["counts"].decode()),
    ],
)
def test_valid_segmentation_is_kept_and_pycocotools_can_rasterise_it(tmp_path, segmentation):
    ds = CocoDetection(*one_annotation(tmp_path, segmentation=segmentation))
    assert ds.coco.anns[7]["segmentation"] == segmentation
    assert ds.coco.annToMask(ds.coco.anns[7]).shape == (H, W)


def test_empty_segmentation_list_is_accepted_and_left_out_of_the_ground_truth(tmp_path):
    ds = CocoDetection(*one_annotation(tmp_path, segmentation=[]))
    assert "segmentation" not in ds.coco.anns[7]


def test_polygons_of_fewer_than_3_points_are_left_out_and_counted(tmp_path):
    ds = CocoDetection(*one_annotation(tmp_path, segmentation=[[1, 1, 4, 4], POLYGON]))
    assert ds.coco.anns[7]["segmentation"] == [POLYGON] and ds.dropped_polygons == 1
    assert ds.skipped == {}  # the annotation itself is kept


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ([[1, 1, 4, 1, 4]], "polygons must be lists of an even number of finite coordinates"),
        ([[1, 1, 4, "1", 4, 4]], "polygons must be lists of an even number"),
        ([1, 1, 4, 1, 4, 4], "polygons must be lists"),  # a bare polygon, not a list of them
        ([[1, 1, 4, 1, 4, 1e9]], "polygon .* lies far outside its 40x30 image"),
        (rle([5, 10]), r"counts must be run lengths .* adding up to 30x40 pixels"),
        (rle([5, -5, H * W]), r"counts must be run lengths"),
        (rle("!!garbage"), r"counts must be run lengths"),
        (
            {"counts": [H * W], "size": [W, H]},
            r"RLE 'segmentation' size must be \[height, width\] of its image, \[30, 40\]",
        ),
        ({"counts": [H * W]}, r"'segmentation' must be a list of polygons or an RLE object"),
        ("polygon", r"'segmentation' must be a list of polygons or an RLE object"),
        (None, r"'segmentation' must be a list of polygons or an RLE object"),
    ],
)
def test_malformed_segmentation_is_refused_naming_annotation(tmp_path, segmentation, message):
    with pytest.raises(ValueError, match=rf"ann\.json: annotations\[0\] \(id=7\): .*{message}"):
        CocoDetection(*one_annotation(tmp_path, segmentation=segmentation))


def test_ground_truth_for_evaluation_holds_only_validated_fields(tmp_path):
    image_dir, ann_file = write_dataset(
        tmp_path,
        info="not a dict",
        licenses=7,
        images=[
            {"id": 10, "file_name": "a.png", "width": W, "height": H, "license": "junk", "coco_url": None},
            {"id": 20, "file_name": "b.png", "width": W, "height": H},
        ],
        annotations=[
            {
                "id": 1,
                "image_id": 10,
                "category_id": 5,
                "bbox": [1, 1, 3, 3],
                "ignore": "yes",
                "attributes": {"occluded": "maybe"},
                "iscrowd": False,
            }
        ],
        categories=[{"id": 5, "name": "cat", "supercategory": 3, "keypoints": "x"}],
    )
    ds = CocoDetection(image_dir, ann_file)
    assert ds.coco.dataset == {
        "images": [
            {"id": 10, "file_name": "a.png", "width": W, "height": H},
            {"id": 20, "file_name": "b.png", "width": W, "height": H},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [1.0, 1.0, 3.0, 3.0], "iscrowd": 0, "area": 9.0}
        ],
        "categories": [{"id": 5, "name": "cat"}],
    }


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


@pytest.mark.parametrize(
    "mask",
    [ell_mask(40, 30, 9), ell_mask(30, 40, 8, mirror=True), arc_mask(40, 40, 6, 0, 180), arc_mask(44, 36, 7, 100, 270)],
)
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

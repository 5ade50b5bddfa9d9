"""A run's data settings (the config section ``data``) and the datasets they describe: the embedded
synthetic set, or any COCO-format folder.

    train_ds, val_ds = build_datasets(DataConfig())   # CocoDetection pair sharing one label mapping
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .coco import CocoDetection
from .synthetic import make_synthetic_coco

DATASETS = ("synthetic", "coco")


@dataclass
class DataConfig:
    """Where the images come from: the embedded synthetic dataset, or any COCO-format folder."""

    dataset: str = "synthetic"  # the embedded synthetic set (generated once, cached) or a COCO-format folder
    root: str | None = None  # coco: folder holding train2017/, val2017/, annotations/; synthetic: cache folder
    image_dir: str | None = None  # coco: overrides <root>/{train,val}2017 (one folder for both splits)
    train_ann: str | None = None  # coco: default <root>/annotations/instances_train2017.json
    val_ann: str | None = None  # coco: default <root>/annotations/instances_val2017.json
    synthetic_seed: int = 0  # synthetic: generator seed
    synthetic_num_train: int = 800  # synthetic: training images
    synthetic_num_val: int = 100  # synthetic: validation images
    synthetic_image_size: int = 256  # synthetic: image side in pixels
    flip_prob: float = 0.5  # training augmentation: probability of a horizontal flip
    num_workers: int = 0  # DataLoader worker processes; 0: load in the main process
    batch_size: int = 4  # images per process and step (global batch: × processes)
    on_bad_annotation: str = "skip"  # boxes of zero size or outside their image: skipped and counted, or an error


def dataset_paths(data: DataConfig) -> tuple[Path, Path, Path, Path]:
    """``(train image dir, train annotations, val image dir, val annotations)`` of the configured dataset."""
    if data.dataset == "synthetic":
        root = make_synthetic_coco(
            data.root,
            seed=data.synthetic_seed,
            num_train=data.synthetic_num_train,
            num_val=data.synthetic_num_val,
            image_size=data.synthetic_image_size,
        )
        return root / "images", root / "train.json", root / "images", root / "val.json"
    root = Path(data.root) if data.root else None
    train_dir = Path(data.image_dir) if data.image_dir else root / "train2017"
    val_dir = Path(data.image_dir) if data.image_dir else root / "val2017"
    train_ann = Path(data.train_ann) if data.train_ann else root / "annotations" / "instances_train2017.json"
    val_ann = Path(data.val_ann) if data.val_ann else root / "annotations" / "instances_val2017.json"
    return train_dir, train_ann, val_dir, val_ann


def build_datasets(data: DataConfig) -> tuple[CocoDetection, CocoDetection]:
    """Training set (random flips) and validation set sharing its label mapping."""
    train_dir, train_ann, val_dir, val_ann = dataset_paths(data)
    train_ds = CocoDetection(
        train_dir, train_ann, train=True, flip_prob=data.flip_prob, on_bad_annotation=data.on_bad_annotation
    )
    val_ds = CocoDetection(
        val_dir, val_ann, train=False, category_ids=train_ds.category_ids, on_bad_annotation=data.on_bad_annotation
    )
    return train_ds, val_ds


__all__ = ["DATASETS", "DataConfig", "build_datasets", "dataset_paths"]

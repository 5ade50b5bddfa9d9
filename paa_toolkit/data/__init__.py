"""Data: a COCO-format dataset (:mod:`.coco`), its image reader (:mod:`.images`), the embedded synthetic
default (:mod:`.synthetic`) and the pair of datasets a run's settings describe (:mod:`.build`).

Datasets return images at their original size; resizing, normalisation and padding belong to the
model (torchvision's ``GeneralizedRCNNTransform``), so predictions are in original coordinates.
"""

from .build import DATASETS, DataConfig, build_datasets, dataset_paths
from .coco import CocoDetection, coco_from_detections, collate, detections_to_coco_results, load_coco_json
from .images import ImageNotFoundError, ImageReadError, read_image
from .synthetic import CATEGORIES, default_cache_dir, default_dataset, make_synthetic_coco

__all__ = [
    "CATEGORIES",
    "DATASETS",
    "CocoDetection",
    "DataConfig",
    "ImageNotFoundError",
    "ImageReadError",
    "build_datasets",
    "coco_from_detections",
    "collate",
    "dataset_paths",
    "default_cache_dir",
    "default_dataset",
    "detections_to_coco_results",
    "load_coco_json",
    "make_synthetic_coco",
    "read_image",
]

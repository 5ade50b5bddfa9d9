"""The detector's parts: backbone + FPN (Fig. 5), the PAA head, the losses (Eq. 5–8), post-processing
(§3.2 unified score, §3.3 score voting) and :class:`PAADetector`, which follows torchvision's detection API.

    model = build_model(ModelConfig(backbone="resnet50", width=256), num_classes=80)  # ModelConfig: paa_toolkit.engine
    losses = model(images, targets)     # train: {"loss_cls", "loss_box", "loss_iou"}
    detections = model(images)          # eval: [{"boxes", "scores", "labels", "ious"}]

The ONNX export (:mod:`paa_toolkit.model.onnx_export`) is imported on its own: it is only needed to export.
"""

from __future__ import annotations

from .backbone import BACKBONES, NORMS, PYRAMIDS, ResNetFPN, build_backbone
from .detector import PAADetector, build_model
from .head import AUX_CHOICES, HeadOutputs, PAAHead
from .losses import LossWeights, detection_losses, quality_focal_loss
from .postprocess import (
    VOTING_SIGMA,
    InferenceConfig,
    clip_boxes,
    merge_tta,
    postprocess_detections,
    unified_scores,
    vote_boxes,
)

__all__ = [
    "AUX_CHOICES",
    "BACKBONES",
    "HeadOutputs",
    "InferenceConfig",
    "LossWeights",
    "NORMS",
    "PAADetector",
    "PAAHead",
    "PYRAMIDS",
    "ResNetFPN",
    "VOTING_SIGMA",
    "build_backbone",
    "build_model",
    "clip_boxes",
    "detection_losses",
    "merge_tta",
    "postprocess_detections",
    "quality_focal_loss",
    "unified_scores",
    "vote_boxes",
]

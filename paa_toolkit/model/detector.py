"""PAADetector: ResNet/ResNeXt + FPN, the PAA head and assigner, behind torchvision's detection API.

    model = build_model(ModelConfig(), num_classes=5)
    losses = model(images, targets)          # train mode: {"loss_cls", "loss_box", "loss_iou"}
    detections = model(images)               # eval mode: [{"boxes", "scores", "labels", "ious"}]

Images are ``list[Tensor[3, H, W]]`` in [0, 1] of any sizes; targets ``list[{"boxes": xyxy float,
"labels": int64 in [0, num_classes)}]``. Resizing (shorter side, multi-scale in training),
normalisation and padding (to a multiple of 32, as the reference code's SIZE_DIVISIBILITY and
torchvision's FCOS) happen inside, with torchvision's GeneralizedRCNNTransform,
and detections come back in the original image coordinates — exactly as torchvision's FCOS.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..assign import Assigner, AssignmentDiagnostics, build_assigner
from ..structures import AnchorGrid, PaddedTargets, decode_boxes, make_anchor_grid, pad_targets
from .backbone import build_backbone
from .head import PAAHead
from .losses import LossWeights, detection_losses
from .postprocess import merge_tta, postprocess_detections

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class AssignmentSnapshot:
    """One look at the assigner during training (for Fig. 4a / Fig. 7 replays), in resized-image pixels.

    ``images`` are the resized, un-normalised images as uint8 ``[3, h, w]`` (no padding);
    ``scales[i] = (sy, sx)`` maps original to resized coordinates.
    """

    diagnostics: AssignmentDiagnostics
    anchors: Tensor  # [A, 4]
    num_per_level: list[int]
    strides: list[int]
    matched_gt: Tensor  # [B, A]
    pred_boxes: Tensor  # [B, A, 4]
    cls_scores: Tensor  # [B, A] probability of each anchor's best class
    gt_boxes: Tensor  # [B, M, 4]
    gt_labels: Tensor  # [B, M]
    gt_valid: Tensor  # [B, M]
    image_sizes: list[tuple[int, int]]
    scales: list[tuple[float, float]]
    images: list[Tensor]

    def to(self, device: torch.device | str) -> "AssignmentSnapshot":
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (Tensor, AssignmentDiagnostics)):
                value = value.to(device)
            elif f.name == "images":
                value = [v.to(device) for v in value]
            moved[f.name] = value
        return AssignmentSnapshot(**moved)


class PAADetector(nn.Module):
    """The PAA detector (§3, Fig. 5): one anchor per location, IoU prediction, PAA assignment.

    Args:
        backbone: module returning P3–P7 feature maps, with ``out_channels`` and ``strides``.
        num_classes: number of object classes (no background class; labels are 0..C-1).
        head: :class:`PAAHead` (towers, classification / box / auxiliary convs).
        assigner: any :class:`~paa_toolkit.assign.Assigner` (PAA, FNP, FSR, ATSS, max-IoU).
        anchor_scale: anchor size = stride × scale (paper: 8; Table 4: 4/6/10).
        aux: "iou" (IoU prediction), "centerness" or "none" — Table 1 right.
        size_divisible: pad each batch to a multiple of this (128, P7's stride: every P7 cell covers
            image; 32 as the reference code and torchvision's FCOS is cheaper at other sizes).
        score_voting: apply score voting (§3.3) at inference.
        tta_scales / tta_flip: multi-scale and flip testing when ``tta_scales`` is non-empty.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        head: PAAHead,
        assigner: Assigner,
        *,
        anchor_scale: float = 8.0,
        aux: str = "iou",
        loss_weights: LossWeights = LossWeights(),
        min_size: int | tuple[int, ...] = 800,
        max_size: int = 1333,
        size_divisible: int = 128,
        test_min_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        topk_per_level: int = 1000,
        detections_per_img: int = 100,
        score_voting: bool = False,
        voting_sigma: float = 0.025,
        tta_scales: tuple[int, ...] = (),
        tta_flip: bool = True,
    ):
        super().__init__()
        if aux not in ("iou", "centerness", "none"):
            raise ValueError(f"unknown aux head {aux!r}; valid choices: iou, centerness, none")
        self.backbone, self.head, self.assigner = backbone, head, assigner
        self.num_classes, self.anchor_scale, self.aux = num_classes, anchor_scale, aux
        self.strides = list(backbone.strides)
        self.loss_weights = loss_weights
        self.train_min_sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        self.test_min_size = test_min_size or self.train_min_sizes[-1]
        self.transform = GeneralizedRCNNTransform(
            self.train_min_sizes, max_size, image_mean or IMAGENET_MEAN, image_std or IMAGENET_STD,
            size_divisible=size_divisible,
        )
        self.post = dict(score_thresh=score_thresh, nms_thresh=nms_thresh, topk_per_level=topk_per_level,
                         detections_per_img=detections_per_img, score_voting=score_voting,
                         voting_sigma=voting_sigma, aux=aux)
        self.tta_scales, self.tta_flip = tuple(tta_scales), tta_flip
        self.last_stats: dict[str, float] = {}
        self._anchor_cache: dict[tuple, AnchorGrid] = {}

    # ----- pieces -------------------------------------------------------------------------------
    def anchors_for(self, feature_sizes: list[tuple[int, int]], like: Tensor) -> AnchorGrid:
        key = (tuple(feature_sizes), like.device, like.dtype)
        if key not in self._anchor_cache:
            if len(self._anchor_cache) > 32:
                self._anchor_cache.clear()
            self._anchor_cache[key] = make_anchor_grid(
                feature_sizes, self.strides, self.anchor_scale, device=like.device, dtype=like.dtype)
        return self._anchor_cache[key]

    def run_network(self, images_tensor: Tensor):
        """Backbone, FPN and head on a padded batch → (head outputs, anchors, decoded boxes of every anchor)."""
        features = list(self.backbone(images_tensor).values())
        out = self.head(features)
        anchors = self.anchors_for(out.feature_sizes, out.box_deltas)
        pred_boxes = decode_boxes(out.box_deltas, anchors.boxes)
        return out, anchors, pred_boxes

    def assign(self, anchors: AnchorGrid, targets: PaddedTargets, out, pred_boxes: Tensor, diagnostics=False):
        """Procedure 1 on detached predictions (ATSS / max-IoU ignore them)."""
        return self.assigner(anchors, targets, out.cls_logits.detach(), pred_boxes.detach(),
                             return_diagnostics=diagnostics)

    # ----- torchvision API ----------------------------------------------------------------------
    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the model needs targets (list of {'boxes', 'labels'})")
        if targets is not None:
            check_targets(targets, self.num_classes)
        if not self.training and self.tta_scales:
            return self._forward_tta(images)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        self.transform.min_size = self.train_min_sizes if self.training else (self.test_min_size,)
        batch, targets = self.transform(images, targets)
        out, anchors, pred_boxes = self.run_network(batch.tensors)
        if self.training:
            padded = pad_targets(targets, device=pred_boxes.device)
            assignment = self.assign(anchors, padded, out, pred_boxes)
            losses = detection_losses(out.cls_logits, pred_boxes, out.aux_logits, anchors, padded, assignment,
                                      self.aux, self.loss_weights)
            num_gt = int(padded.valid.sum())
            num_pos = int(assignment.positive.sum())
            self.last_stats = {"num_pos": float(num_pos), "num_gt": float(num_gt),
                               "pos_per_gt": num_pos / max(num_gt, 1)}
            return losses
        detections = postprocess_detections(out.cls_logits, pred_boxes, out.aux_logits, anchors.num_per_level,
                                            batch.image_sizes, **self.post)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    @torch.no_grad()
    def _forward_tta(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Multi-scale + horizontal-flip testing: run each variant, map back, merge (NMS + voting)."""
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        saved = self.transform.min_size
        per_variant = []
        try:
            for scale in self.tta_scales:
                self.transform.min_size = (scale,)
                for flip in ((False, True) if self.tta_flip else (False,)):
                    inputs = [img.flip(-1) if flip else img for img in images]
                    batch, _ = self.transform(inputs)
                    out, anchors, pred_boxes = self.run_network(batch.tensors)
                    dets = postprocess_detections(out.cls_logits, pred_boxes, out.aux_logits, anchors.num_per_level,
                                                  batch.image_sizes, **{**self.post, "score_voting": False})
                    dets = self.transform.postprocess(dets, batch.image_sizes, original_sizes)
                    if flip:
                        for det, (_, w) in zip(dets, original_sizes):
                            det["boxes"] = det["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]).to(det["boxes"]) \
                                + torch.tensor([w, 0, w, 0]).to(det["boxes"])
                    per_variant.append(dets)
        finally:
            self.transform.min_size = saved
        return [merge_tta([variant[i] for variant in per_variant], nms_thresh=self.post["nms_thresh"],
                          detections_per_img=self.post["detections_per_img"],
                          score_voting=self.post["score_voting"], voting_sigma=self.post["voting_sigma"])
                for i in range(len(images))]

    @torch.no_grad()
    def inspect_assignment(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> AssignmentSnapshot:
        """Run the assigner with diagnostics on ``images`` (no training step, no randomness)."""
        was_training = self.training
        self.eval()  # deterministic resize, BatchNorm statistics untouched
        self.transform.min_size = (self.test_min_size,)
        try:
            check_targets(targets, self.num_classes)
            batch, resized = self.transform(images, [dict(t) for t in targets])
            out, anchors, pred_boxes = self.run_network(batch.tensors)
            padded = pad_targets(resized, device=pred_boxes.device)
            assignment = self.assign(anchors, padded, out, pred_boxes, diagnostics=True)
        finally:
            self.train(was_training)
        mean = torch.tensor(self.transform.image_mean, device=batch.tensors.device)[:, None, None]
        std = torch.tensor(self.transform.image_std, device=batch.tensors.device)[:, None, None]
        pictures = [((batch.tensors[i, :, :h, :w] * std + mean).clamp(0, 1) * 255).to(torch.uint8)
                    for i, (h, w) in enumerate(batch.image_sizes)]
        scales = [(h / img.shape[-2], w / img.shape[-1]) for (h, w), img in zip(batch.image_sizes, images)]
        return AssignmentSnapshot(
            diagnostics=assignment.diagnostics, anchors=anchors.boxes, num_per_level=list(anchors.num_per_level),
            strides=self.strides, matched_gt=assignment.matched_gt, pred_boxes=pred_boxes,
            cls_scores=out.cls_logits.sigmoid().max(-1).values, gt_boxes=padded.boxes, gt_labels=padded.labels,
            gt_valid=padded.valid, image_sizes=[tuple(s) for s in batch.image_sizes], scales=scales,
            images=pictures,
        ).to("cpu")


def check_targets(targets: list[dict[str, Tensor]], num_classes: int) -> None:
    """Clear errors for malformed targets instead of a deep torch traceback."""
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise ValueError(f"target {i} must have 'boxes' and 'labels', got keys {sorted(t)}")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {i}: 'boxes' must be [N, 4] xyxy, got shape {tuple(boxes.shape)}")
        if labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        if boxes.numel() and not torch.isfinite(boxes).all():
            raise ValueError(f"target {i}: 'boxes' contain NaN or inf")
        if boxes.numel() and ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
            bad = ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).nonzero()[0].item()
            raise ValueError(f"target {i}: box {bad} {boxes[bad].tolist()} has zero or negative size (xyxy expected)")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"target {i}: labels must be in [0, {num_classes}), got {labels.tolist()}")


def build_model(cfg, num_classes: int) -> nn.Module:
    """Build the detector described by a :class:`~paa_toolkit.engine.config.ModelConfig`.

    ``cfg.arch`` "paa" gives :class:`PAADetector`; "fcos" and "retinanet" give torchvision's own
    detectors on the same backbone and resolution (the baselines of the ablation tables).
    """
    backbone = build_backbone(cfg.backbone, weights_path=cfg.backbone_weights, norm=cfg.backbone_norm,
                              dcn=cfg.dcn, out_channels=cfg.width)
    min_size = cfg.min_size if isinstance(cfg.min_size, int) else tuple(range(cfg.min_size[0], cfg.min_size[1] + 1, 32))
    common = dict(min_size=min_size, max_size=cfg.max_size, size_divisible=cfg.size_divisible,
                  score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img)
    test_min_size = cfg.test_min_size or (cfg.min_size if isinstance(cfg.min_size, int) else cfg.min_size[0])
    if cfg.arch == "paa":
        head = PAAHead(backbone.out_channels, num_classes, width=cfg.width, num_convs=cfg.num_convs, aux=cfg.aux,
                       dcn_last=cfg.dcn, num_levels=len(backbone.strides))
        assigner = build_assigner(cfg.assigner, boundary=cfg.boundary, topk=cfg.topk, score_lambda=cfg.score_lambda,
                                  fnp_num=cfg.fnp_num, fsr_thresh=cfg.fsr_thresh)
        return PAADetector(backbone, num_classes, head, assigner, anchor_scale=cfg.anchor_scale, aux=cfg.aux,
                           loss_weights=LossWeights(cfg.reg_loss_weight, cfg.iou_loss_weight),
                           topk_per_level=cfg.topk_per_level, score_voting=cfg.score_voting,
                           voting_sigma=cfg.voting_sigma, tta_scales=tuple(cfg.tta_scales) if cfg.tta else (),
                           test_min_size=test_min_size, **common)
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if cfg.arch == "fcos":
        return FCOS(backbone, num_classes, topk_candidates=cfg.topk_per_level, **common)
    if cfg.arch == "retinanet":
        sizes = tuple((s * 4, int(s * 4 * 2 ** (1 / 3)), int(s * 4 * 2 ** (2 / 3))) for s in backbone.strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        return RetinaNet(backbone, num_classes, anchor_generator=anchors, topk_candidates=cfg.topk_per_level, **common)
    raise ValueError(f"unknown arch {cfg.arch!r}; valid choices: paa, fcos, retinanet")

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

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..assign import Assigner, Assignment, build_assigner, config_of
from ..assign.stats import log_figures
from ..assign.trace import AssignmentSnapshot
from ..structures import AnchorGrid, PaddedTargets, decode_boxes, make_anchor_grid, pad_targets
from .backbone import build_backbone
from .head import AUX_CHOICES, PAAHead
from .losses import LossWeights, detection_losses
from .postprocess import InferenceConfig, hflip_boxes, merge_tta, postprocess_detections

#: what an assignment hook receives after each training forward: statistics of that batch's assignment
AssignmentHook = Callable[[dict[str, float]], None]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class PAADetector(nn.Module):
    """The PAA detector (§3, Fig. 5): one anchor per location, IoU prediction, PAA assignment.

    Args:
        backbone: module returning P3–P7 feature maps, with ``out_channels`` and ``strides``.
        num_classes: number of object classes (no background class; labels are 0..C-1).
        head: :class:`PAAHead` (towers, classification / box / auxiliary convs).
        assigner: any :class:`~paa_toolkit.assign.Assigner` (PAA, FNP, FSR, ATSS, max-IoU).
        anchor_scale: anchor size = stride × scale (paper: 8; Table 4: 4/6/10).
        aux: "iou" (IoU prediction), "centerness" or "none" — Table 1 right.
        loss_weights: λ1, λ2 of Eq. (8).
        min_size: training sizes of the shorter side (one is drawn per batch), as torchvision's
            ``GeneralizedRCNNTransform`` (``model.transform.min_size`` can be set later).
        max_size: the longest side at most.
        size_divisible: pad each batch to a multiple of this (128, P7's stride: every P7 cell covers
            image; 32 as the reference code and torchvision's FCOS is cheaper at other sizes).
        inference: test-time settings (:class:`~.postprocess.InferenceConfig`), read at every call.

    The detector keeps no per-call state: ``forward`` never rewrites its transform or settings.
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
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        inference: InferenceConfig | None = None,
    ):
        super().__init__()
        if aux not in AUX_CHOICES:
            raise ValueError(f"unknown aux head {aux!r}; valid choices: {', '.join(AUX_CHOICES)}")
        self.backbone, self.head, self.assigner = backbone, head, assigner
        self.num_classes, self.anchor_scale, self.aux = num_classes, anchor_scale, aux
        self.strides = list(backbone.strides)
        self.loss_weights = loss_weights
        self.transform = GeneralizedRCNNTransform(
            (min_size,) if isinstance(min_size, int) else tuple(min_size),
            max_size,
            image_mean or IMAGENET_MEAN,
            image_std or IMAGENET_STD,
            size_divisible=size_divisible,
        )
        self.inference = inference if inference is not None else InferenceConfig()
        self._assignment_hooks: list[AssignmentHook] = []
        self._diagnostic_hooks: list[AssignmentHook] = []  # the hooks that also want the diagnostics' figures
        self._anchor_cache: dict[tuple, AnchorGrid] = {}

    # ----- pieces -------------------------------------------------------------------------------
    @property
    def test_min_size(self) -> int:
        """The shorter side at test time: ``inference.min_size``, else the transform's largest size."""
        return self.inference.min_size or int(self.transform.min_size[-1])

    def eval_transform(self, size: int | None = None) -> GeneralizedRCNNTransform:
        """The transform in eval mode at shorter side ``size`` (default :attr:`test_min_size`)."""
        size = size or self.test_min_size
        t = self.transform
        if size == t.min_size[-1]:
            return t
        return GeneralizedRCNNTransform(
            (size,), t.max_size, t.image_mean, t.image_std, size_divisible=t.size_divisible
        ).train(False)

    def register_assignment_hook(self, hook: AssignmentHook, diagnostics: bool = False) -> Callable[[], None]:
        """Call ``hook(stats)`` after every training forward with the batch's assignment statistics
        (``num_pos``, ``num_gt``, ``pos_per_gt``); returns a function that removes the hook.

        With ``diagnostics=True`` the stats also hold the figures of
        :func:`~paa_toolkit.assign.stats.log_figures` (GTs without a positive, overall and by size,
        EM iterations, collapsed fits, positives per GT by size): while such a hook is registered the
        assigner computes its diagnostics in every training forward (from tensors it has computed
        anyway, under no_grad: the losses and the random draws are unchanged).
        """
        hooks = self._diagnostic_hooks if diagnostics else self._assignment_hooks
        hooks.append(hook)
        return lambda: hooks.remove(hook)

    def anchors_for(self, feature_sizes: list[tuple[int, int]], like: Tensor) -> AnchorGrid:
        """The anchor grid of these feature-map sizes (cached; computed in the graph while tracing)."""
        if torch.jit.is_tracing():  # traced sizes: the exported graph builds the grid of each input
            return make_anchor_grid(
                feature_sizes, self.strides, self.anchor_scale, device=like.device, dtype=like.dtype
            )
        key = (tuple(feature_sizes), like.device, like.dtype)
        if key not in self._anchor_cache:
            if len(self._anchor_cache) > 32:
                self._anchor_cache.clear()
            self._anchor_cache[key] = make_anchor_grid(
                feature_sizes, self.strides, self.anchor_scale, device=like.device, dtype=like.dtype
            )
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
        return self.assigner(
            anchors, targets, out.cls_logits.detach(), pred_boxes.detach(), return_diagnostics=diagnostics
        )

    def postprocess(self, out, anchors: AnchorGrid, pred_boxes: Tensor, image_sizes, score_voting: bool):
        """§3.2–3.3 with the current :attr:`inference` settings (resized-image coordinates)."""
        kwargs = {**self.inference.postprocess_kwargs(self.aux), "score_voting": score_voting}
        return postprocess_detections(
            out.cls_logits, pred_boxes, out.aux_logits, anchors.num_per_level, image_sizes, **kwargs
        )

    def _report(self, assignment: Assignment, targets: PaddedTargets) -> None:
        if self._assignment_hooks or self._diagnostic_hooks:
            num_gt, num_pos = int(targets.valid.sum()), int(assignment.positive.sum())
            stats = {"num_pos": float(num_pos), "num_gt": float(num_gt), "pos_per_gt": num_pos / max(num_gt, 1)}
            for hook in self._assignment_hooks:
                hook(stats)
            if self._diagnostic_hooks:
                stats = {**stats, **log_figures(assignment.diagnostics)}
                for hook in self._diagnostic_hooks:
                    hook(stats)

    # ----- torchvision API ----------------------------------------------------------------------
    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the model needs targets (list of {'boxes', 'labels'})")
        if targets is not None:
            check_targets(targets, self.num_classes)
        if not self.training and self.inference.tta_scales:
            return self._forward_tta(images)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        transform = self.transform if self.training else self.eval_transform()
        batch, targets = transform(images, targets)
        out, anchors, pred_boxes = self.run_network(batch.tensors)
        if self.training:
            padded = pad_targets(targets, device=pred_boxes.device)
            assignment = self.assign(anchors, padded, out, pred_boxes, diagnostics=bool(self._diagnostic_hooks))
            losses = detection_losses(
                out.cls_logits, pred_boxes, out.aux_logits, anchors, padded, assignment, self.aux, self.loss_weights
            )
            self._report(assignment, padded)
            return losses
        detections = self.postprocess(out, anchors, pred_boxes, batch.image_sizes, self.inference.score_voting)
        return transform.postprocess(detections, batch.image_sizes, original_sizes)

    @torch.no_grad()
    def _forward_tta(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Multi-scale + horizontal-flip testing (Table 3 "*"): run each variant, map back, merge (NMS + voting)."""
        cfg = self.inference
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        per_variant = []
        for scale in cfg.tta_scales:
            transform = self.eval_transform(scale)
            for flip in (False, True) if cfg.tta_flip else (False,):
                batch, _ = transform([img.flip(-1) if flip else img for img in images])
                out, anchors, pred_boxes = self.run_network(batch.tensors)
                dets = self.postprocess(out, anchors, pred_boxes, batch.image_sizes, score_voting=False)
                dets = transform.postprocess(dets, batch.image_sizes, original_sizes)
                if flip:
                    for det, (_, w) in zip(dets, original_sizes):
                        det["boxes"] = hflip_boxes(det["boxes"], w)
                per_variant.append(dets)
        return [
            merge_tta(
                [variant[i] for variant in per_variant],
                nms_thresh=cfg.nms_thresh,
                detections_per_img=cfg.detections_per_img,
                score_voting=cfg.score_voting,
                voting_sigma=cfg.voting_sigma,
            )
            for i in range(len(images))
        ]

    @torch.no_grad()
    def inspect_assignment(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> AssignmentSnapshot:
        """Run the assigner with diagnostics on ``images`` at the test size (no training step, no randomness)."""
        was_training = self.training
        self.eval()  # deterministic resize, BatchNorm statistics untouched
        try:
            check_targets(targets, self.num_classes)
            transform = self.eval_transform()
            batch, resized = transform(images, [dict(t) for t in targets])
            out, anchors, pred_boxes = self.run_network(batch.tensors)
            padded = pad_targets(resized, device=pred_boxes.device)
            assignment = self.assign(anchors, padded, out, pred_boxes, diagnostics=True)
        finally:
            self.train(was_training)
        mean = torch.tensor(self.transform.image_mean, device=batch.tensors.device)[:, None, None]
        std = torch.tensor(self.transform.image_std, device=batch.tensors.device)[:, None, None]
        pictures = [
            ((batch.tensors[i, :, :h, :w] * std + mean).clamp(0, 1) * 255).to(torch.uint8)
            for i, (h, w) in enumerate(batch.image_sizes)
        ]
        scales = [(h / img.shape[-2], w / img.shape[-1]) for (h, w), img in zip(batch.image_sizes, images)]
        return AssignmentSnapshot(
            diagnostics=assignment.diagnostics,
            anchors=anchors.boxes,
            num_per_level=list(anchors.num_per_level),
            strides=self.strides,
            matched_gt=assignment.matched_gt,
            pred_boxes=pred_boxes,
            cls_scores=out.cls_logits.sigmoid().max(-1).values,
            cls_logits=out.cls_logits,
            gt_boxes=padded.boxes,
            gt_labels=padded.labels,
            gt_valid=padded.valid,
            image_sizes=[tuple(s) for s in batch.image_sizes],
            scales=scales,
            images=pictures,
            settings=config_of(self.assigner),
            anchor_scale=float(self.anchor_scale),
        ).to("cpu")


def check_targets(targets: list[dict[str, Tensor]], num_classes: int) -> None:
    """Clear errors for malformed targets instead of a deep torch traceback."""
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise ValueError(f"target {i} must have 'boxes' and 'labels', got keys {sorted(t)}")
        boxes, labels = t["boxes"], t["labels"]
        for name, value in (("boxes", boxes), ("labels", labels)):
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"target {i}: {name!r} must be a torch.Tensor, got {type(value).__name__} (use torch.as_tensor)"
                )
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


def _retinanet_v2_head(backbone: nn.Module, anchors, num_classes: int) -> nn.Module:
    """torchvision's RetinaNet head as its ``retinanet_resnet50_fpn_v2`` builds it: GroupNorm(32) in both towers
    (as PAA's, ATSS's and FCOS's heads) and the GIoU box loss (as theirs). The v1 head — no normalisation, convs
    initialised with std 0.01, tuned for 256 channels — does not start learning at the miniature's width 32:
    its towers shrink the features about 6 × per conv, and the classification loss stayed between 0.95 and its
    initial 1.1 for 2,400 iterations (AP 0.001 on ``bench-pretrained``, benchmarks/ablations.md)."""
    from torchvision.models.detection.retinanet import RetinaNetHead

    head = RetinaNetHead(
        backbone.out_channels,
        anchors.num_anchors_per_location()[0],
        num_classes,
        norm_layer=partial(nn.GroupNorm, 32),
    )
    head.regression_head._loss_type = "giou"  # torchvision's own switch, as retinanet_resnet50_fpn_v2 sets it
    return head


def build_model(cfg, num_classes: int, assign=None, inference: InferenceConfig | None = None) -> nn.Module:
    """Build the detector of a :class:`~paa_toolkit.engine.config.ModelConfig` (with its ``assign``
    :class:`~paa_toolkit.assign.AssignConfig` and test-time :class:`~.postprocess.InferenceConfig`).

    ``cfg.arch`` "paa" gives :class:`PAADetector`; "fcos" and "retinanet" give torchvision's own
    detectors on the same backbone and resolution (the baselines of the ablation tables; RetinaNet with
    torchvision's v2 head, GroupNorm towers and GIoU loss).

    Args:
        cfg (paa_toolkit.engine.ModelConfig): the model settings (architecture, backbone, width, sizes).
        num_classes: object classes, without a background class.
        assign (AssignConfig | None): the assignment settings (None: the paper's).
        inference: the test-time settings (None: the defaults of :class:`~.postprocess.InferenceConfig`).

    Returns:
        The detector (``nn.Module``, torchvision's detection API): ``model(images, targets)`` in train
        mode returns the loss dict, ``model(images)`` in eval mode one dict per image with ``boxes [D, 4]``,
        ``scores [D]``, ``labels [D]`` (and ``ious [D]`` with the IoU head).
    """
    inference = inference if inference is not None else InferenceConfig()
    backbone = build_backbone(
        cfg.backbone,
        weights_path=cfg.backbone_weights,
        norm=cfg.backbone_norm,
        dcn=cfg.dcn,
        out_channels=cfg.width,
        trainable_layers=cfg.backbone_trainable_layers,
        pyramid=cfg.pyramid,
    )
    min_size = cfg.min_size if isinstance(cfg.min_size, int) else tuple(range(cfg.min_size[0], cfg.min_size[1] + 1, 32))
    common = dict(min_size=min_size, max_size=cfg.max_size, size_divisible=cfg.size_divisible)
    if cfg.arch == "paa":
        head = PAAHead(
            backbone.out_channels,
            num_classes,
            width=cfg.width,
            num_convs=cfg.num_convs,
            aux=cfg.aux,
            dcn_last=cfg.dcn,
            num_levels=len(backbone.strides),
        )
        return PAADetector(
            backbone,
            num_classes,
            head,
            build_assigner(assign),
            anchor_scale=cfg.anchor_scale,
            aux=cfg.aux,
            loss_weights=LossWeights(cfg.box_loss_weight, cfg.aux_loss_weight),
            inference=replace(inference),
            **common,
        )
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    common.update(
        score_thresh=inference.score_thresh,
        nms_thresh=inference.nms_thresh,
        detections_per_img=inference.detections_per_img,
        topk_candidates=inference.topk_per_level,
    )
    if cfg.arch == "fcos":  # one point per location, its "anchor" one stride wide (torchvision's default for P3–P7)
        points = AnchorGenerator(tuple((s,) for s in backbone.strides), ((1.0,),) * len(backbone.strides))
        return FCOS(backbone, num_classes, anchor_generator=points, **common)
    if cfg.arch == "retinanet":
        sizes = tuple((s * 4, int(s * 4 * 2 ** (1 / 3)), int(s * 4 * 2 ** (2 / 3))) for s in backbone.strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        return RetinaNet(
            backbone,
            num_classes,
            anchor_generator=anchors,
            head=_retinanet_v2_head(backbone, anchors, num_classes),
            **common,
        )
    raise ValueError(f"unknown arch {cfg.arch!r}; valid choices: paa, fcos, retinanet")

"""ONNX export of the PAA detector: one image in, boxes / scores / labels out, post-processing included.

    export_onnx(model, "paa.onnx")                  # traced, then checked by onnx.checker
    session = onnxruntime.InferenceSession("paa.onnx", providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": image.numpy()})   # float [3, H, W] in [0, 1], any H, W

The graph is :class:`ExportableDetector`: the detector's eval transform (shorter side to the test
size, normalisation, padding), the network, the box decoding and :func:`~.postprocess.batched_detections`
— the function eager inference runs — with score voting (Eq. 9–10) when ``inference.score_voting``.
It is traced by ``torch.onnx.export(..., dynamo=False)`` at opset 17, the exporter torchvision's
detection models export with (``torchvision.ops.nms`` becomes ONNX ``NonMaxSuppression``); the
``torch.export``-based exporter stops at the data-dependent sizes of the post-processing (at NMS
for torchvision's FCOS as well).

What differs from eager PyTorch (``tests/test_export.py`` bounds it on several images and two sizes):

* NMS runs in float32 (ONNX ``NonMaxSuppression`` takes no float64: torchvision's exporter casts);
  eager uses float64 so that the class offsets of ``batched_nms`` stay exact. Only boxes whose IoU
  lies within ~1e-6 of ``nms_thresh`` can be decided differently.
* Score voting lets every candidate column vote (padding has weight 0) instead of cutting the IoU
  matrix to the most valid candidates of an image: the same result, summed in another order.
* The resize is ONNX ``Resize`` (bilinear, half-pixel) to the output size eager PyTorch computes
  (in float64, in the graph): pixels agree to ~3e-7, so scores agree to ~1e-6 and boxes to ~1e-3 px.
* Test-time augmentation (``inference.tta_scales``) is not exported: :class:`ExportableDetector`
  refuses a model that has it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .detector import PAADetector
from .postprocess import batched_detections

#: the ONNX opset: torchvision's detection models export at 11–17; 17 is the newest the legacy exporter documents
OPSET = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["boxes", "scores", "labels"]


class ExportableDetector(nn.Module):
    """A :class:`PAADetector` as a function of one image: ``image[3, H, W]`` (float in [0, 1]) →
    ``(boxes[N, 4] xyxy in the image's pixels, scores[N], labels[N] int64)``, best first.

    The same detections as ``detector([image])[0]`` (boxes, scores, labels), with the detector's
    :attr:`~PAADetector.inference` settings as they are when the module is built or traced.
    """

    def __init__(self, detector: PAADetector):
        super().__init__()
        if not isinstance(detector, PAADetector):
            raise ValueError(f"only the PAA detector exports (model.arch 'paa'), got {type(detector).__name__}")
        if detector.inference.tta_scales:
            raise ValueError(
                "test-time augmentation (test.tta_scales) is not exported; export with --test.tta_scales []"
            )
        self.detector = detector

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        det = self.detector
        transform = det.eval_transform()
        resized = self.resize(transform.normalize(image), det.test_min_size, transform.max_size)
        batch = transform.batch_images([resized], size_divisible=transform.size_divisible)  # padded [1, 3, H', W']
        out, anchors, pred_boxes = det.run_network(batch)
        sizes = torch._shape_as_tensor(resized)[1:][None]  # [1, 2]: the resized image before padding
        _, result = batched_detections(
            out.cls_logits,
            pred_boxes,
            out.aux_logits,
            anchors.num_per_level,
            sizes,
            **det.inference.postprocess_kwargs(det.aux),
        )
        # back to the input image's pixels (GeneralizedRCNNTransform.postprocess)
        ratio = torch._shape_as_tensor(image)[1:].float() / sizes[0].float()  # (h, w)
        boxes = result["boxes"] * torch.stack([ratio[1], ratio[0], ratio[1], ratio[0]])
        return boxes, result["scores"], result["labels"]

    @staticmethod
    def resize(image: Tensor, min_size: int, max_size: int) -> Tensor:
        """GeneralizedRCNNTransform's eval resize (shorter side ``min_size``, longer at most ``max_size``),
        with the output size computed in the graph in float64 as eager Python does, then given to the
        bilinear resize as a size (ONNX ``Resize`` with a scale factor samples other positions)."""
        hw = torch._shape_as_tensor(image)[1:].double()
        # 1-d float64 throughout: the exporter computes 0-dim operands in float32
        scale = (hw.new_tensor([min_size, max_size]) / hw.sort().values).amin(0, keepdim=True)
        size = (hw * scale).floor().long()
        return nn.functional.interpolate(image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)[0]


def export_onnx(
    model: PAADetector, path: str | Path, example: Tensor | None = None, metadata: dict[str, str] | None = None
) -> Path:
    """Trace ``model`` (eval mode) into an ONNX file with dynamic image height and width, ``metadata``
    stored as the model's metadata properties; the file is checked by ``onnx.checker``.
    ``example``: the image traced (default: random, at the test size)."""
    import onnx  # an optional dependency of the library (requirements.txt pins it)

    wrapper = ExportableDetector(model).eval()
    if example is None:
        size = model.test_min_size
        example = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter announces its deprecation, and tracing warns about Python values that are
        # constant here by construction (settings, strides, shape checks); tests/test_export.py checks
        # the graph on other sizes instead
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                "boxes": {0: "detections"},
                "scores": {0: "detections"},
                "labels": {0: "detections"},
            },
        )
    proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def onnx_session(path: str | Path):
    """An ``onnxruntime.InferenceSession`` on the CPU."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def detection_difference(expected: dict[str, Tensor], actual: dict[str, Tensor]) -> dict[str, float]:
    """How far ``actual`` detections are from ``expected`` (each ``{"boxes", "scores", "labels"}``).

    Each expected detection is paired with the unpaired actual one of the same label whose box is
    nearest (so that two near-equal scores listed in the other order still pair up). Returns the
    counts, ``unpaired`` (expected detections with no partner) and the largest box-coordinate (px)
    and score differences over the pairs.
    """
    boxes, scores, labels = (torch.as_tensor(actual[k]) for k in ("boxes", "scores", "labels"))
    free = torch.ones(len(boxes), dtype=torch.bool)
    box_diff = score_diff = 0.0
    unpaired = 0
    for box, score, label in zip(expected["boxes"], expected["scores"], expected["labels"]):
        distance = (boxes - box).abs().amax(-1) if len(boxes) else boxes.new_zeros(0)
        distance = distance.masked_fill(~free | (labels != label), float("inf"))
        if not len(distance) or not torch.isfinite(distance.min()):
            unpaired += 1
            continue
        j = int(distance.argmin())
        free[j] = False
        box_diff, score_diff = max(box_diff, float(distance[j])), max(score_diff, float((scores[j] - score).abs()))
    return {
        "expected": float(len(expected["boxes"])),
        "actual": float(len(boxes)),
        "unpaired": float(unpaired),
        "max_box_diff": box_diff,
        "max_score_diff": score_diff,
    }


__all__ = [
    "ExportableDetector",
    "INPUT_NAMES",
    "OPSET",
    "OUTPUT_NAMES",
    "detection_difference",
    "export_onnx",
    "onnx_session",
]

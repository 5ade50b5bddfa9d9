"""Export (model/onnx_export.py, python -m paa_toolkit.export): ONNX with post-processing, checked against eager
PyTorch."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from paa_toolkit.engine.config import ModelConfig
from paa_toolkit.model.detector import build_model
from paa_toolkit.model.onnx_export import ExportableDetector, detection_difference
from paa_toolkit.model.postprocess import InferenceConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = ModelConfig(width=32, num_convs=1, min_size=96, max_size=160)
#: every candidate passes at random init (probabilities ≈ the 0.01 prior), so NMS and voting have work
ALL_CANDIDATES = InferenceConfig(score_thresh=0.0, detections_per_img=40)
SIZES = [(96, 96), (75, 130), (150, 83)]


def tiny(inference: InferenceConfig = ALL_CANDIDATES) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY, num_classes=3, inference=inference).eval()


def images(sizes=SIZES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


def as_dict(outputs) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in zip(("boxes", "scores", "labels"), outputs)}


@pytest.mark.parametrize("voting", [True, False])
def test_the_exportable_module_gives_the_detectors_detections_bit_for_bit(voting):
    model = tiny(replace(ALL_CANDIDATES, score_voting=voting))
    wrapper = ExportableDetector(model)
    with torch.no_grad():
        for image in images():
            expected, actual = model([image])[0], as_dict(wrapper(image))
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(expected[key], actual[key]), key


def test_the_exportable_module_refuses_test_time_augmentation_and_other_detectors():
    with pytest.raises(ValueError, match="tta_scales"):
        ExportableDetector(tiny(replace(ALL_CANDIDATES, tta_scales=[96, 128])))
    with pytest.raises(ValueError, match="only the PAA detector"):
        ExportableDetector(torch.nn.Linear(2, 2))


def test_onnx_export_matches_eager_pytorch_on_several_images_and_sizes(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from paa_toolkit.export import BOX_TOLERANCE_PX, SCORE_TOLERANCE
    from paa_toolkit.model.onnx_export import export_onnx, onnx_session

    model = tiny()
    path = export_onnx(model, tmp_path / "paa.onnx", metadata={"category_names": '["a", "b", "c"]'})
    onnx.checker.check_model(onnx.load(str(path)))
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["category_names"] == '["a", "b", "c"]'
    session = onnx_session(path)
    for image in images():  # traced at 96 × 96; run at other sizes and aspect ratios
        with torch.no_grad():
            expected = model([image])[0]
        diff = detection_difference(expected, as_dict(session.run(None, {"image": image.numpy()})))
        assert diff["expected"] == diff["actual"] == 40 and diff["unpaired"] == 0
        assert diff["max_box_diff"] <= BOX_TOLERANCE_PX and diff["max_score_diff"] <= SCORE_TOLERANCE


def test_an_onnx_model_with_no_candidate_returns_empty_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from paa_toolkit.model.onnx_export import export_onnx, onnx_session

    model = tiny(InferenceConfig())  # random init: every probability ≈ 0.01 < score_thresh 0.05
    session = onnx_session(export_onnx(model, tmp_path / "paa.onnx"))
    boxes, scores, labels = session.run(None, {"image": images()[1].numpy()})
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


def test_detection_difference_pairs_swapped_near_ties():
    expected = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
        "scores": torch.tensor([0.5, 0.5]),
        "labels": torch.tensor([0, 0]),
    }
    swapped = {k: v.flip(0) for k, v in expected.items()}
    assert detection_difference(expected, swapped)["max_box_diff"] == 0
    moved = dict(swapped, boxes=swapped["boxes"] + 0.5)
    assert detection_difference(expected, moved)["max_box_diff"] == 0.5
    other_class = dict(swapped, labels=torch.tensor([1, 1]))
    assert detection_difference(expected, other_class)["unpaired"] == 2


def test_export_cli_writes_and_validates_an_onnx_file(reference_run, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from paa_toolkit.export import main

    out = tmp_path / "paa.onnx"
    assert main([str(reference_run[0]), "--out", str(out), "--test.score_thresh", "0"]) == 0
    assert torch.is_grad_enabled()  # the command leaves the process as it found it
    text = capsys.readouterr().out
    assert "passes onnx.checker" in text and "same detections within" in text
    assert len([line for line in text.splitlines() if "×" in line]) == 4  # 2 images × 2 sizes
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["inference"])["score_thresh"] == 0.0 and len(json.loads(meta["category_names"])) >= 1


def test_the_network_traces_with_torch_jit_trace_and_runs_at_other_sizes():
    """README "Export": torch.jit.trace of the whole exportable module generalises to other sizes."""
    model = tiny()
    wrapper = ExportableDetector(model)
    with torch.no_grad(), pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(wrapper, (images()[0],), check_trace=False)
    with torch.no_grad():
        for image in images()[1:]:
            expected, actual = model([image])[0], as_dict(traced(image))
            assert torch.equal(expected["labels"], actual["labels"])
            torch.testing.assert_close(actual["boxes"], expected["boxes"])

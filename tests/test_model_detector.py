"""PAADetector (model/detector.py): torchvision's detection API, no per-call state, typed test-time settings."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from paa_toolkit.assign import AssignConfig
from paa_toolkit.engine.config import ModelConfig
from paa_toolkit.model.detector import build_model
from paa_toolkit.model.postprocess import InferenceConfig

TINY = ModelConfig(width=32, num_convs=1, min_size=64, max_size=128)
TARGET = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 44.0]]), "labels": torch.tensor([1])}


def tiny(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(replace(TINY, **changes), num_classes=3)


def test_the_test_size_of_a_multi_scale_model_is_the_upper_training_size():
    model = tiny(min_size=[64, 128], max_size=256).eval()
    assert model.test_min_size == 128
    batch, _ = model.eval_transform()([torch.rand(3, 50, 50)])
    assert batch.image_sizes[0] == (128, 128)


def test_a_users_transform_min_size_is_honoured_in_eval_and_training():
    model = tiny().eval()
    model.transform.min_size = (96,)
    with torch.no_grad():
        snapshot = model.inspect_assignment([torch.rand(3, 48, 48)], [TARGET])
    assert snapshot.image_sizes == [(96, 96)]
    seen = []
    model.transform.register_forward_hook(lambda m, i, out: seen.append(out[0].image_sizes[0]))
    model.train()(([torch.rand(3, 48, 48)]), [TARGET])
    assert seen == [(96, 96)]


def test_forward_leaves_the_transform_and_the_settings_unchanged():
    model = tiny(min_size=[64, 96]).eval()
    model.inference = InferenceConfig(min_size=64, score_thresh=0.0)
    before = (model.transform.min_size, replace(model.inference))
    with torch.no_grad():
        model([torch.rand(3, 70, 90)])
    model.train()([torch.rand(3, 70, 90)], [TARGET])
    assert (model.transform.min_size, model.inference) == before


def test_changing_the_inference_settings_changes_the_next_prediction():
    model = tiny().eval()
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        model.inference = InferenceConfig(score_thresh=0.0, score_voting=False, detections_per_img=7)
        assert len(model([image])[0]["boxes"]) == 7
        model.inference = replace(model.inference, detections_per_img=3)
        assert len(model([image])[0]["boxes"]) == 3


def test_multi_scale_flip_testing_returns_the_detection_contract_in_original_coordinates():
    model = tiny().eval()
    model.inference = InferenceConfig(score_thresh=0.0, tta_scales=[64, 96], detections_per_img=20)
    with torch.no_grad():
        (det,) = model([torch.rand(3, 40, 80)])
    assert set(det) >= {"boxes", "scores", "labels"} and len(det["boxes"]) == 20
    assert (det["boxes"][:, [0, 2]] <= 80 + 1e-3).all() and (det["boxes"][:, [1, 3]] <= 40 + 1e-3).all()


def test_assignment_hooks_receive_each_training_batchs_positive_counts():
    model = tiny().train()
    seen = []
    remove = model.register_assignment_hook(seen.append)
    model([torch.rand(3, 64, 64)] * 2, [TARGET, TARGET])
    assert seen[0]["num_gt"] == 2 and seen[0]["pos_per_gt"] == seen[0]["num_pos"] / 2 > 0
    remove()
    model([torch.rand(3, 64, 64)], [TARGET])
    assert len(seen) == 1


def test_a_diagnostics_hook_gets_the_log_figures_and_leaves_losses_and_random_draws_unchanged():
    images, targets = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))] * 2, [TARGET, TARGET]
    results = {}
    for with_diagnostics in (False, True):
        model, seen = tiny().train(), []
        if with_diagnostics:
            model.register_assignment_hook(seen.append, diagnostics=True)
        torch.manual_seed(5)
        losses = model(images, targets)
        results[with_diagnostics] = (losses, torch.get_rng_state(), seen)
    (plain, rng_plain, _), (diag, rng_diag, seen) = results[False], results[True]
    assert plain.keys() == diag.keys() and all(torch.equal(plain[k], diag[k]) for k in plain)
    assert torch.equal(rng_plain, rng_diag)  # the multi-scale draw and everything after it unchanged
    stats = seen[0]
    assert stats["num_gt"] == 2 and stats["gt_without_pos"] == 0.0 and stats["pos_per_gt_medium"] == stats["pos_per_gt"]
    assert stats["em_iters"] >= 1 and 0.0 <= stats["em_collapsed"] <= 1.0
    assert math.isnan(stats["gt_without_pos_small"])  # the 32 × 36 px box is medium at every training size


def test_the_snapshot_records_the_assigners_settings():
    torch.manual_seed(0)
    model = build_model(TINY, 3, AssignConfig(rule="d", topk=4, score_lambda=0.5)).eval()
    with torch.no_grad():
        snapshot = model.inspect_assignment([torch.rand(3, 64, 64)], [TARGET])
    assert snapshot.settings == AssignConfig(rule="d", topk=4, score_lambda=0.5)
    assert snapshot.cls_logits.shape == (1, snapshot.anchors.shape[0], 3)


def test_non_tensor_boxes_give_a_clear_error():
    model = tiny().train()
    with pytest.raises(ValueError, match="target 0"):
        model([torch.rand(3, 64, 64)], [{"boxes": [[1.0, 2.0, 3.0, 4.0]], "labels": torch.tensor([0])}])


def test_model_backbone_trainable_layers_freezes_the_body_from_the_top_down():
    frozen = build_model(ModelConfig(width=32, backbone_trainable_layers=0), num_classes=3)
    body = frozen.backbone.body
    assert not any(p.requires_grad for p in body.parameters())
    assert all(p.requires_grad for p in frozen.backbone.fpn.parameters())
    top_only = build_model(ModelConfig(width=32, backbone_trainable_layers=1), num_classes=3).backbone.body
    assert top_only.layer4[0].conv1.weight.requires_grad and not top_only.layer3[0].conv1.weight.requires_grad


def test_model_backbone_trainable_layers_out_of_range_names_the_field():
    from paa_toolkit.engine.config import ConfigError, TrainConfig, validate

    cfg = TrainConfig()
    cfg.model.backbone_trainable_layers = 6
    with pytest.raises(ConfigError, match="model.backbone_trainable_layers.*got 6"):
        validate(cfg)


def test_the_retinanet_baseline_learns_to_classify_at_the_miniatures_width():
    """torchvision's v1 RetinaNet head (no normalisation, std-0.01 convs) kept its initial classification loss at
    width 32 (AP 0 in every grid before); the v2 head (GroupNorm, GIoU) the baseline now uses learns."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="retinanet", width=32, min_size=128, max_size=128), num_classes=3)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules())
    assert model.head.regression_head._loss_type == "giou"
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    boxes = torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 64.0, 100.0, 90.0], [20.0, 80.0, 44.0, 110.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([0, 1, 2])} for _ in images]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0025, momentum=0.9)
    model.train()
    first = None
    for _ in range(25):
        losses = model(images, targets)
        first = first if first is not None else losses["classification"].item()
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert losses["classification"].item() < 0.8 * first

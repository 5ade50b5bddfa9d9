"""The pre-trained start of the miniature (engine/pretrain.py): the presence task, the cache, the config."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from paa_toolkit.engine import pretrain
from paa_toolkit.engine.config import ConfigError, TrainConfig, validate
from paa_toolkit.engine.pretrain import PretrainSettings, presence_dataset, train_classifier, with_pretrained_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_presence_targets_mark_the_classes_an_image_holds_crowds_left_out(synthetic_root):
    files, targets = presence_dataset(synthetic_root, "train", 6)
    data = json.loads((synthetic_root / "train.json").read_text())
    ids = sorted(c["id"] for c in data["categories"])
    expected = torch.zeros(len(data["images"]), 6)
    row = {img["id"]: i for i, img in enumerate(data["images"])}
    for ann in data["annotations"]:
        if not ann["iscrowd"]:
            expected[row[ann["image_id"]], ids.index(ann["category_id"])] = 1
    assert torch.equal(targets, expected) and len(files) == len(data["images"]) and all(f.is_file() for f in files)


def test_a_few_steps_of_pre_training_give_a_groupnorm_classifier_and_held_out_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("PAA_TOOLKIT_CACHE", str(tmp_path))
    settings = PretrainSettings(num_train=8, num_val=8, iterations=2, batch_size=4)
    model, figures = train_classifier(settings, progress=False)
    assert isinstance(model.bn1, nn.GroupNorm) and model.fc.out_features == 6
    assert set(figures) == {"val_mAP", "val_label_accuracy", "train_loss_last"}
    assert 0 <= figures["val_label_accuracy"] <= 1


def test_the_weights_are_trained_once_then_read_from_the_cache(tmp_path, monkeypatch):
    calls = []

    def fake_training(settings, progress):
        calls.append(settings)
        net = torchvision.models.resnet18(weights=None, norm_layer=lambda c: nn.GroupNorm(16, c), num_classes=6)
        return net, {"val_mAP": 0.5, "val_label_accuracy": 0.5, "train_loss_last": 1.0}

    monkeypatch.setattr(pretrain, "train_classifier", fake_training)
    first = pretrain.pretrained_backbone("resnet18", cache_dir=tmp_path, progress=False)
    again = pretrain.pretrained_backbone("resnet18", cache_dir=tmp_path, progress=False)
    assert first == again and first.is_file() and len(calls) == 1
    assert json.loads(first.with_suffix(".json").read_text())["settings"]["backbone"] == "resnet18"
    assert not list(tmp_path.glob("pretrained/*.lock"))  # the lock is released

    monkeypatch.setattr(pretrain, "pretrained_backbone", lambda backbone: first)
    cfg = TrainConfig()
    cfg.model.backbone_pretrain = "synthetic"
    resolved = with_pretrained_weights(cfg)
    assert resolved.model.backbone_weights == str(first) and cfg.model.backbone_weights is None
    assert with_pretrained_weights(TrainConfig()).model.backbone_weights is None


def test_pre_trained_groupnorm_weights_need_a_groupnorm_backbone_and_no_other_weights():
    cfg = TrainConfig()
    cfg.model.backbone_pretrain, cfg.model.backbone_norm = "synthetic", "frozen_bn"
    with pytest.raises(ConfigError, match="model.backbone_pretrain 'synthetic' gives GroupNorm weights"):
        validate(cfg)

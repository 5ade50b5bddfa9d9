"""The pre-trained start of the miniature (engine/pretrain.py): the presence task, the cache, the config."""

from __future__ import annotations

import json
from types import SimpleNamespace

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


# ---- the detection pre-training (issue 19) ----------------------------------------------------------------------
def test_the_detection_pre_training_is_the_bench_paa_run_on_another_generator_seed_from_random_weights():
    settings = pretrain.DetectionPretrainSettings()
    cfg = pretrain.detection_pretrain_config(settings)
    validate(cfg)
    bench = pretrain.presets.bench_budget()
    assert (cfg.data.synthetic_seed, bench.data.synthetic_seed) == (1000, 0)  # none of its images is a bench image
    assert (cfg.model.arch, cfg.assign.rule, cfg.model.aux) == ("paa", "c", "iou")  # the paper's defaults
    assert (cfg.model.pyramid, cfg.model.min_size, cfg.model.width) == (bench.model.pyramid, 128, bench.model.width)
    assert cfg.model.backbone_pretrain == "none" and cfg.model.backbone_weights is None  # no recursion
    assert (cfg.solver.max_iters, cfg.solver.lr) == (2 * bench.solver.max_iters, 4 * bench.solver.lr)
    other = pretrain.DetectionPretrainSettings(data_seed=1001)
    assert pretrain.detection_pretrained_path(other) != pretrain.detection_pretrained_path(settings)


def test_detection_pre_training_trains_once_and_keeps_the_resnet_body_under_torchvision_names(tmp_path, monkeypatch):
    monkeypatch.setenv("PAA_TOOLKIT_CACHE", str(tmp_path))  # the synthetic images of the run go there too
    tiny = pretrain.presets.budget("tiny")

    def tiny_run(settings):  # the pre-training's shape at smoke-test size: a real run, in seconds
        cfg = pretrain.presets.budget("tiny")
        cfg.data.synthetic_seed, cfg.seed = settings.data_seed, settings.seed
        return cfg

    monkeypatch.setattr(pretrain, "detection_pretrain_config", tiny_run)
    path = pretrain.detection_pretrained_backbone("resnet18", cache_dir=tmp_path)
    body = torch.load(path, weights_only=True)
    net = torchvision.models.resnet18(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    missing, unexpected = net.load_state_dict(body, strict=False)
    assert not unexpected and set(missing) == {"fc.weight", "fc.bias"}  # every body tensor, under its own name
    run = path.with_name(f"{path.stem}-run")
    detector = torch.load(run / "last.pth", weights_only=True)["model"]
    assert torch.equal(body["layer4.1.conv2.weight"], detector["backbone.body.layer4.1.conv2.weight"])
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["settings"]["data_seed"] == 1000 and 0 <= record["val_metrics"]["AP"] <= 1
    assert json.loads((run / "final_metrics.json").read_text())["iteration"] == tiny.solver.max_iters

    def no_second_training(*args, **kwargs):
        raise AssertionError("trained twice")

    monkeypatch.setattr(pretrain.subprocess, "run", no_second_training)
    assert pretrain.detection_pretrained_backbone("resnet18", cache_dir=tmp_path) == path
    assert not list(tmp_path.glob("pretrained/*.lock"))


def test_a_failed_detection_pre_training_names_its_run_and_leaves_no_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": 1})())
    with pytest.raises(RuntimeError, match=r"detection pre-training failed \(exit 1\); its run: .*-run"):
        pretrain.detection_pretrained_backbone("resnet18", cache_dir=tmp_path)
    assert not list(tmp_path.glob("pretrained/*.pth"))


def test_the_detection_pre_training_runs_on_its_fixed_thread_count_whoever_starts_it(tmp_path, monkeypatch):
    """Its float sums depend on the thread split: a 2-thread caller (or a 1-thread grid job) must get one body."""
    seen = []
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(
        pretrain.subprocess, "run", lambda *a, **k: seen.append(k["env"]) or SimpleNamespace(returncode=1)
    )
    with pytest.raises(RuntimeError):
        pretrain.detection_pretrained_backbone("resnet18", cache_dir=tmp_path)
    assert pretrain.PRETRAIN_THREADS == 1
    assert seen[0]["OMP_NUM_THREADS"] == seen[0]["MKL_NUM_THREADS"] == "1"


@pytest.mark.parametrize("choice", ["detection", "detection-atss"])
def test_backbone_pretrain_detection_resolves_to_the_cached_body_of_its_own_pre_training(tmp_path, monkeypatch, choice):
    monkeypatch.setattr(
        pretrain, "detection_pretrained_backbone", lambda backbone, choice: tmp_path / f"{backbone}-{choice}.pth"
    )
    cfg = TrainConfig()
    cfg.model.backbone_pretrain = choice
    validate(cfg)
    assert with_pretrained_weights(cfg).model.backbone_weights == str(tmp_path / f"resnet18-{choice}.pth")


def test_the_atss_pre_training_differs_from_paas_only_in_the_assigner_and_keeps_paas_cache_name():
    paa, atss = (pretrain.DetectionPretrainSettings.for_choice(c, "resnet18") for c in ("detection", "detection-atss"))
    assert paa == pretrain.DetectionPretrainSettings()  # PAA's cached body keeps its file name
    a, b = (pretrain.detection_pretrain_config(s).to_dict() for s in (paa, atss))
    assert {k for k in a if a[k] != b[k]} == {"assign", "name"}
    assert {k for k in a["assign"] if a["assign"][k] != b["assign"][k]} == {"rule"}
    assert (a["assign"]["rule"], b["assign"]["rule"]) == ("c", "atss")
    paa_path, atss_path = (pretrain.detection_pretrained_path(s) for s in (paa, atss))
    assert paa_path.name.startswith("resnet18-detection-") and atss_path.name.startswith("resnet18-detection-atss-")
    assert pretrain.presets.budget("bench-pretrained-atss").model.backbone_pretrain == "detection-atss"


def test_a_failed_atss_pre_training_says_which_pre_training_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": 1})())
    with pytest.raises(RuntimeError, match=r"the detection-atss pre-training failed \(exit 1\)"):
        pretrain.detection_pretrained_backbone("resnet18", cache_dir=tmp_path, choice="detection-atss")


def test_the_pre_trainings_own_seed_draws_its_fpn_and_head_again_and_only_that_seed_is_flagged(caplog, monkeypatch):
    from paa_toolkit.engine import presets
    from paa_toolkit.engine.checkpoint import default_model_builder
    from paa_toolkit.engine.sampling import seed_everything

    def start(cfg: TrainConfig) -> dict[str, torch.Tensor]:  # the trainer's order: seed, then build
        seed_everything(cfg.seed)
        model = default_model_builder(cfg, 6)
        return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.body.")}

    def detection(seed: int) -> TrainConfig:
        cfg = presets.bench_pretrained_budget()
        cfg.seed = seed
        return cfg

    def without_body(cfg: TrainConfig) -> TrainConfig:
        cfg.model.backbone_pretrain = "none"
        return cfg

    pre_training = start(pretrain.detection_pretrain_config(pretrain.DetectionPretrainSettings()))
    for seed in (0, 1):
        drawn = start(without_body(detection(seed)))
        same = [torch.equal(drawn[k], pre_training[k]) for k in drawn if drawn[k].dim() == 4]  # random convs
        assert len(same) >= 10 and (all(same) if seed == 0 else not any(same))
        assert pretrain.shares_pretraining_start(detection(seed)) == (seed == 0)
    assert not pretrain.shares_pretraining_start(without_body(detection(0)))
    monkeypatch.setattr(pretrain, "detection_pretrained_backbone", lambda *a, **k: "body.pth")
    with caplog.at_level("WARNING"):
        with_pretrained_weights(detection(1))
        assert caplog.text == ""
        with_pretrained_weights(detection(0))
    assert "seed 0 is the detection pre-training's own seed" in caplog.text

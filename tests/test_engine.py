"""Specifications of the engine: config overrides and validation, the lr schedule, atomic checkpoints,
exact resume, the non-finite-loss stop, COCO evaluation, assignment traces and the entry points."""
import json
import os
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from training_crash import TrainingCrash, crash_at_training_call  # tests/training_crash.py

from paa_toolkit.data.coco import CocoDetection
from paa_toolkit.data.synthetic import make_synthetic_coco
from paa_toolkit.engine.checkpoint import (
    LAST, PREVIOUS, CheckpointError, find_resumable, load_checkpoint, save_checkpoint,
)
from paa_toolkit.engine.config import ModelConfig, SolverConfig, TrainConfig, parse_args, set_field
from paa_toolkit.engine.evaluate import evaluate_coco, iou_prediction_error
from paa_toolkit.engine.trainer import (
    DeterministicBatchSampler, NonFiniteLossError, WarmupStepSchedule, load_trace, lr_at, read_metrics,
    trace_image_indices, train,
)


# ---- fixtures: a 6-image synthetic dataset and the smallest detector that trains ---------------
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "syn", seed=0, num_train=6, num_val=3, image_size=64)


def tiny_config(root, run_dir, **overrides) -> TrainConfig:
    cfg = TrainConfig()
    settings = {
        "data.root": str(root), "data.synthetic_num_train": 6, "data.synthetic_num_val": 3,
        "data.synthetic_image_size": 64, "data.batch_size": 2, "model.width": 64, "model.num_convs": 1,
        "model.min_size": [64, 96], "model.max_size": 128, "model.tta_scales": [64],
        "solver.max_iters": 4, "solver.warmup_iters": 2, "output_dir": str(run_dir), "device": "cpu",
        "log_every": 1, "checkpoint_every": 2, "eval_batch_size": 3, "trace_images": 2, "trace_iters": [],
        **overrides,
    }
    for key, value in settings.items():
        set_field(cfg, key, value)
    return cfg


def _paa_builder():
    """The project's detector once it is importable; None until then."""
    try:
        from paa_toolkit.model.detector import build_model
    except ImportError:
        return None
    return build_model


class TinyFCOS(nn.Module):
    """Stand-in until the PAA detector exists: torchvision FCOS on a 32-channel ResNet-18 FPN, with a
    stub ``inspect_assignment`` and ``last_stats`` so the trainer's optional paths run."""

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        from torchvision.models import resnet18
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7
        from torchvision.ops.misc import FrozenBatchNorm2d

        body = resnet18(norm_layer=FrozenBatchNorm2d)
        backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512],
                                   cfg.width, extra_blocks=LastLevelP6P7(cfg.width, cfg.width))
        sizes = tuple(cfg.min_size) if isinstance(cfg.min_size, list) else cfg.min_size
        self.net = FCOS(backbone, num_classes, min_size=sizes, max_size=cfg.max_size)
        self.last_stats = {}

    def forward(self, images, targets=None):
        out = self.net(images, targets)
        if self.training:
            self.last_stats = {"num_pos": 3.0, "pos_per_gt": 1.5}
        return out

    @torch.no_grad()
    def inspect_assignment(self, images, targets):
        valid = torch.ones(len(targets), max(len(t["boxes"]) for t in targets), dtype=torch.bool)
        for i, t in enumerate(targets):
            valid[i, len(t["boxes"]):] = False
        return SimpleNamespace(matched_gt=torch.zeros(len(targets), 5, dtype=torch.int64), gt_valid=valid)


def build_tiny(cfg: ModelConfig, num_classes: int) -> nn.Module:
    builder = _paa_builder()
    return builder(cfg, num_classes) if builder is not None else TinyFCOS(cfg, num_classes)


def weights(path):
    return load_checkpoint(path)["model"]


# ---- config -------------------------------------------------------------------------------------
def test_cli_sets_dotted_fields_and_short_aliases():
    cfg = parse_args(["--solver.lr", "0.02", "--model.aux", "centerness", "--max-iters", "7",
                      "--model.min_size", "[224, 288]", "--assigner", "atss", "--model.score_voting", "false"])
    assert (cfg.solver.lr, cfg.model.aux, cfg.solver.max_iters) == (0.02, "centerness", 7)
    assert (cfg.model.min_size, cfg.model.assigner, cfg.model.score_voting) == ([224, 288], "atss", False)


def test_yaml_file_overrides_defaults_and_command_line_wins(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"solver": {"lr": 0.05, "max_iters": 9}, "model": {"assigner": "fsr"}, "seed": 3}))
    cfg = parse_args(["--config", str(path), "--lr", "0.02"])
    assert (cfg.solver.lr, cfg.solver.max_iters, cfg.model.assigner, cfg.seed) == (0.02, 9, "fsr", 3)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-0.01"], "solver.lr must be > 0, got -0.01"),
    (["--assigner", "hungarian"], "model.assigner: unknown value 'hungarian'; valid choices: paa, fnp, fsr, atss, max_iou"),
    (["--model.topk", "0"], "model.topk (K of Procedure 1) must be >= 1, got 0"),
    (["--model.boundary", "e"], "valid choices: a, b, c, d"),
    (["--backbone", "vgg16"], "valid choices: resnet18, resnet34, resnet50"),
    (["--model.aux", "quality"], "valid choices: iou, centerness, none"),
    (["--model.width", "wide"], "model.width: expected int, got 'wide'"),
    (["--arch", "fcos", "--model.width", "48"], "model.width must be a multiple of 32 for arch fcos"),
    (["--batch-size", "0"], "data.batch_size must be >= 1, got 0"),
    (["--model.nms_thresh", "1.5"], "model.nms_thresh must be in (0, 1], got 1.5"),
    (["--dataset", "imagenet"], "data.dataset: unknown value 'imagenet'; valid choices: synthetic, coco"),
    (["--arch", "yolo"], "model.arch: unknown value 'yolo'; valid choices: paa, fcos, retinanet"),
    (["--device", "tpu"], "device: unknown value 'tpu'; valid choices: auto, cpu, cuda, cuda:N, mps"),
    (["--solver.momentum", "1"], "solver.momentum must be in [0, 1), got 1.0"),
])
def test_bad_value_exits_2_with_one_line_error_naming_the_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " in last_line and message in last_line


def test_config_round_trips_through_dict_and_rejects_unknown_keys():
    cfg = parse_args(["--model.aux", "none", "--solver.step_fractions", "0.5,0.75"])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown config field 'model.depth'"):
        TrainConfig.from_dict({"model": {"depth": 3}})


# ---- lr schedule --------------------------------------------------------------------------------
def test_lr_warms_up_linearly_then_steps_at_the_paper_fractions():
    solver = SolverConfig(lr=0.01, reference_batch_size=16, warmup_iters=10, warmup_factor=1 / 3, max_iters=135)
    lr = [lr_at(i, solver, batch_size=16) for i in range(135)]
    assert lr[0] == pytest.approx(0.01 / 3)
    assert lr[5] == pytest.approx(0.01 * (1 / 3 * 0.5 + 0.5))
    assert lr[10] == lr[89] == pytest.approx(0.01)
    assert lr[90] == lr[119] == pytest.approx(0.001)  # 90k / 135k
    assert lr[120] == pytest.approx(0.0001)  # 120k / 135k
    assert lr_at(20, solver, batch_size=4) == pytest.approx(0.0025)  # linear scaling to the batch


def test_lambda_lr_scheduler_follows_the_schedule():
    solver = SolverConfig(lr=0.1, reference_batch_size=1, warmup_iters=3, max_iters=8, step_fractions=[0.5])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupStepSchedule(solver))
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(i, solver, 1) for i in range(8)])


# ---- data order ---------------------------------------------------------------------------------
def test_batch_of_an_iteration_does_not_depend_on_where_the_run_started():
    straight = list(DeterministicBatchSampler(5, 2, seed=1, start=0, end=6))
    resumed = list(DeterministicBatchSampler(5, 2, seed=1, start=3, end=6))
    assert resumed == straight[3:]
    first_epoch = [i for batch in straight for i, _ in batch][:5]
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]


# ---- checkpoints --------------------------------------------------------------------------------
def test_torn_last_checkpoint_is_never_resumed_from(tmp_path):
    save_checkpoint({"iteration": 1, "w": torch.ones(100)}, tmp_path)
    save_checkpoint({"iteration": 2, "w": torch.full((100,), 2.0)}, tmp_path)
    data = (tmp_path / LAST).read_bytes()
    (tmp_path / LAST).write_bytes(data[: len(data) // 2])  # killed mid-write (without the atomic rename)
    path, state = find_resumable(tmp_path)
    assert path.name == PREVIOUS and state["iteration"] == 1


def test_bit_flipped_checkpoint_fails_its_digest(tmp_path):
    save_checkpoint({"iteration": 1, "w": torch.zeros(10_000)}, tmp_path)
    data = bytearray((tmp_path / LAST).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / LAST).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / LAST)
    assert find_resumable(tmp_path) is None


def test_saving_leaves_no_temporary_files(tmp_path):
    for i in range(3):
        save_checkpoint({"iteration": i}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST, PREVIOUS]
    assert load_checkpoint(tmp_path / LAST)["iteration"] == 2


# ---- training loop ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_run(synthetic_root, tmp_path_factory):
    """One finished run (4 iterations, traces at 0/2/4, an evaluation at 2) that several tests inspect."""
    run_dir = tmp_path_factory.mktemp("reference")
    cfg = tiny_config(synthetic_root, run_dir, trace_iters=[0, 2, 4], eval_every=2)
    return run_dir, train(cfg, build_model=build_tiny, progress=False)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(synthetic_root, reference_run, tmp_path):
    def crashing(cfg, n):
        return crash_at_training_call(build_tiny(cfg, n), call=3)  # dies in iteration 2, after its checkpoint

    cfg = tiny_config(synthetic_root, tmp_path, trace_iters=[0, 2, 4], eval_every=2)
    with pytest.raises(TrainingCrash):
        train(cfg, build_model=crashing, progress=False)
    assert load_checkpoint(tmp_path / LAST)["iteration"] == 2
    train(tiny_config(synthetic_root, tmp_path, trace_iters=[0, 2, 4], eval_every=2, resume="auto"),
          build_model=build_tiny, progress=False)

    straight, resumed = weights(reference_run[0] / LAST), weights(tmp_path / LAST)
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    records = [(r["kind"], r["iteration"]) for r in read_metrics(tmp_path)]
    assert records == [(r["kind"], r["iteration"]) for r in read_metrics(reference_run[0])]  # no duplicates


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(synthetic_root, tmp_path):
    def diverging(cfg, n):
        model = build_tiny(cfg, n)
        calls = {"n": 0}

        def hook(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] == 3:
                    return {k: v * float("nan") for k, v in output.items()}
            return output

        model.register_forward_hook(hook)
        return model

    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at iteration 2 .*Last good checkpoint: .*last\.pth"):
        train(tiny_config(synthetic_root, tmp_path), build_model=diverging, progress=False)
    state = load_checkpoint(tmp_path / LAST)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_trace_files_are_written_at_the_chosen_iterations(reference_run):
    run_dir, _ = reference_run
    assert sorted(p.name for p in (run_dir / "trace").iterdir()) == ["iter_000000.pt", "iter_000002.pt", "iter_000004.pt"]
    trace = load_trace(run_dir / "trace" / "iter_000002.pt")
    assert trace["iteration"] == 2 and len(trace["image_ids"]) == 2
    assert trace["snapshot"].matched_gt.shape[0] == 2
    assert [r["iteration"] for r in read_metrics(run_dir) if r["kind"] == "trace"] == [0, 2, 4]


def test_run_folder_holds_config_metrics_plots_and_final_metrics(reference_run):
    run_dir, result = reference_run
    assert {"config.yaml", "metrics.jsonl", "final_metrics.json", "losses.png", "ap.png",
            "positives_per_gt.png", LAST, PREVIOUS} <= {p.name for p in run_dir.iterdir()}
    assert TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())).solver.max_iters == 4
    assert json.loads((run_dir / "final_metrics.json").read_text())["AP"] == result.metrics["AP"]
    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records if r["kind"] == "eval"] == [2, 4]
    train_record = next(r for r in records if r["kind"] == "train")
    assert {"lr", "loss", "pos_per_gt", "imgs_per_s"} <= train_record.keys()


# ---- evaluation ---------------------------------------------------------------------------------
class ReplayModel(nn.Module):
    """Returns the dataset's own ground truth (``perfect``) or nothing, image after image, in order."""

    def __init__(self, dataset, perfect: bool):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.targets = [dataset[i][1] for i in range(len(dataset))] if perfect else None
        self.seen = 0

    def forward(self, images, targets=None):
        out = []
        for _ in images:
            if self.targets is None:
                out.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)})
            else:
                t = self.targets[self.seen]
                n = len(t["boxes"])
                out.append({"boxes": t["boxes"], "scores": torch.ones(n), "labels": t["labels"], "ious": torch.ones(n)})
            self.seen += 1
        return out


@pytest.fixture(scope="module")
def val_set(synthetic_root):
    train_set = CocoDetection(synthetic_root / "images", synthetic_root / "train.json")
    return CocoDetection(synthetic_root / "images", synthetic_root / "val.json", category_ids=train_set.category_ids)


def test_perfect_predictions_score_ap_one(val_set):
    metrics = evaluate_coco(ReplayModel(val_set, perfect=True), val_set, batch_size=2)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["iou_error"] == pytest.approx(0.0)


def test_no_predictions_score_ap_zero(val_set):
    metrics = evaluate_coco(ReplayModel(val_set, perfect=False), val_set, batch_size=2)
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0
    assert "iou_error" not in metrics  # the model predicts no IoUs


def test_iou_error_is_mean_absolute_gap_to_best_same_class_gt():
    detections = [{"boxes": torch.tensor([[0.0, 0, 10, 5], [0.0, 0, 10, 10]]), "scores": torch.ones(2),
                   "labels": torch.tensor([0, 1]), "ious": torch.tensor([0.8, 0.1])}]
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    # first: true IoU 0.5 (|0.8 - 0.5| = 0.3); second: no GT of class 1, true IoU 0 (|0.1 - 0| = 0.1)
    errors = iou_prediction_error(detections, targets)
    assert errors["iou_error"] == pytest.approx(0.2) and errors["iou_error_tp"] == pytest.approx(0.3)


# ---- entry points -------------------------------------------------------------------------------
def test_evaluate_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from paa_toolkit.evaluate import main

    assert main([str(tmp_path / "nope.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: checkpoint not found: {tmp_path / 'nope.pth'}"


def test_detect_cli_reports_a_missing_image_in_one_line(tmp_path, capsys):
    from paa_toolkit.detect import main

    assert main([str(tmp_path / "cat.jpg"), "--checkpoint", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: image not found: {tmp_path / 'cat.jpg'}"


needs_detector = pytest.mark.skipif(_paa_builder() is None, reason="needs paa_toolkit.model.detector.build_model")


@needs_detector
def test_detect_cli_writes_an_image_with_boxes(synthetic_root, reference_run, tmp_path, capsys):
    from paa_toolkit.detect import main

    image = sorted((synthetic_root / "images").iterdir())[0]
    assert main([str(image), "--checkpoint", str(reference_run[0]), "--out", str(tmp_path), "--score-thresh", "0"]) == 0
    assert (tmp_path / f"{image.stem}.png").is_file()
    assert capsys.readouterr().out.startswith(str(tmp_path / f"{image.stem}.png"))


@needs_detector
def test_evaluate_cli_reproduces_the_final_metrics_of_a_run(reference_run, tmp_path):
    from paa_toolkit.evaluate import main

    run_dir, result = reference_run
    assert main([str(run_dir), "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["AP"] == pytest.approx(result.metrics["AP"])


def test_trace_images_zero_traces_no_image(val_set):
    assert trace_image_indices(val_set, 0) == []
    assert len(trace_image_indices(val_set, 2)) == 2

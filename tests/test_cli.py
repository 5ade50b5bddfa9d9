"""Specifications of the command lines: config overrides, one-line user errors, the entry points' outputs."""

import json
import math
import shutil

import pytest
import yaml

from paa_toolkit.cli import parse_args
from paa_toolkit.engine.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- config overrides ---------------------------------------------------------------------------
def test_cli_sets_dotted_fields_and_short_aliases():
    cfg = parse_args(
        [
            "--solver.lr",
            "0.02",
            "--model.aux",
            "centerness",
            "--max-iters",
            "7",
            "--model.min_size",
            "[224, 288]",
            "--rule",
            "atss",
            "--test.score_voting",
            "false",
        ]
    )
    assert (cfg.solver.lr, cfg.model.aux, cfg.solver.max_iters) == (0.02, "centerness", 7)
    assert (cfg.model.min_size, cfg.assign.rule, cfg.test.score_voting) == ([224, 288], "atss", False)


def test_yaml_file_overrides_defaults_and_command_line_wins(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"solver": {"lr": 0.05, "max_iters": 9}, "assign": {"rule": "fsr"}, "seed": 3}))
    cfg = parse_args(["--config", str(path), "--lr", "0.02"])
    assert (cfg.solver.lr, cfg.solver.max_iters, cfg.assign.rule, cfg.seed) == (0.02, 9, "fsr", 3)


def test_budget_starts_from_the_named_recipe_and_the_file_and_command_line_still_win(tmp_path):
    from paa_toolkit.engine.presets import bench_budget

    assert parse_args(["--budget", "bench"]).to_dict() == bench_budget().to_dict()
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"solver": {"max_iters": 9, "lr": 0.05}}))
    cfg = parse_args(["--budget", "bench", "--config", str(path), "--lr", "0.02"])
    assert (cfg.model.pyramid, cfg.data.synthetic_image_size, cfg.solver.max_iters, cfg.solver.lr) == (
        "p2-p6",
        128,
        9,
        0.02,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "-0.01"], "solver.lr must be > 0, got -0.01"),
        (
            ["--rule", "hungarian"],
            "assign.rule: unknown value 'hungarian'; valid choices: a, b, c, d, fnp, fsr, atss, max_iou",
        ),
        (["--assign.topk", "0"], "assign.topk (K of Procedure 1) must be >= 1, got 0"),
        (["--assign.rule", "e"], "valid choices: a, b, c, d"),
        (["--backbone", "vgg16"], "valid choices: resnet18, resnet34, resnet50"),
        (["--model.aux", "quality"], "valid choices: iou, centerness, none"),
        (["--model.width", "wide"], "model.width: expected int, got 'wide'"),
        (["--arch", "fcos", "--model.width", "48"], "model.width must be a multiple of 32 for arch fcos"),
        (["--batch-size", "0"], "data.batch_size must be >= 1, got 0"),
        (["--test.nms_thresh", "1.5"], "test.nms_thresh must be in (0, 1], got 1.5"),
        (["--dataset", "imagenet"], "data.dataset: unknown value 'imagenet'; valid choices: synthetic, coco"),
        (["--arch", "yolo"], "model.arch: unknown value 'yolo'; valid choices: paa, fcos, retinanet"),
        (["--device", "tpu"], "device: unknown value 'tpu'; valid choices: auto, cpu, cuda, cuda:N, mps"),
        (["--solver.momentum", "1"], "solver.momentum must be in [0, 1), got 1.0"),
        (
            ["--assign.low_quality", "best"],
            "assign.low_quality: unknown value 'best'; valid choices: reference, gt, ensure",
        ),
        (["--assign.gmm_init", "kmeans"], "assign.gmm_init: unknown value 'kmeans'; valid choices: paper, data"),
        (["--assign.gmm_max_iter", "0"], "assign.gmm_max_iter must be >= 1, got 0"),
        (["--budget", "huge"], "argument --budget: invalid choice: 'huge' (choose from 'bench'"),
        (["--model.backbone_trainable_layers", "7"], "model.backbone_trainable_layers must be in [0, 5]"),
    ],
)
def test_bad_value_exits_2_with_one_line_error_naming_the_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " in last_line and message in last_line


def test_the_assignment_remedies_of_issue_9_reach_the_assigner_from_the_command_line():
    from paa_toolkit.assign import build_assigner

    cfg = parse_args(
        [
            "--assign.low_quality",
            "gt",
            "--assign.gmm_init",
            "data",
            "--assign.gmm_tol",
            "1e-8",
            "--assign.gmm_max_iter",
            "500",
        ]
    )
    assigner = build_assigner(cfg.assign)
    assert (assigner.low_quality, assigner.gmm_init, assigner.gmm_tol, assigner.gmm_max_iter) == (
        "gt",
        "data",
        1e-8,
        500,
    )
    defaults = build_assigner(parse_args([]).assign)  # the faithful default: the authors' matcher and EM
    assert (defaults.low_quality, defaults.gmm_init, defaults.gmm_tol, defaults.gmm_max_iter) == (
        "reference",
        "paper",
        1e-3,
        100,
    )


def test_an_abbreviated_option_is_an_error_not_a_guess(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--max-it", "7"])  # not --max-iters
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --max-it 7" in capsys.readouterr().err


def test_config_round_trips_through_dict_and_rejects_unknown_keys():
    cfg = parse_args(["--model.aux", "none", "--solver.step_fractions", "0.5,0.75"])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown config field 'model.depth'"):
        TrainConfig.from_dict({"model": {"depth": 3}})


# ---- entry points -------------------------------------------------------------------------------
def test_train_cli_draws_the_training_curves_into_the_run_folder(synthetic_root, tmp_path):
    from paa_toolkit.train import main

    argv = [
        "--data.root",
        str(synthetic_root),
        "--data.synthetic_num_train",
        "6",
        "--data.synthetic_num_val",
        "3",
        "--data.synthetic_image_size",
        "64",
        "--batch-size",
        "2",
        "--model.width",
        "32",
        "--model.num_convs",
        "1",
        "--model.min_size",
        "64",
        "--model.max_size",
        "64",
        "--max-iters",
        "2",
        "--solver.warmup_iters",
        "1",
        "--output-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--log_every",
        "1",
        "--checkpoint_every",
        "0",
        "--eval_batch_size",
        "3",
        "--trace_iters",
        "[]",
    ]
    assert main(argv) == 0
    assert {"losses.png", "ap.png", "positives_per_gt.png"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "assignment.png").stat().st_size > 5000  # the assigner's diagnostics (issue 9)


@pytest.mark.parametrize(
    "rule, extra, figure",
    [
        ("tal", [], "tal_metric"),
        ("simota", [], "dynamic_k"),
        ("tal", ["--assign.tal_soft_target", "false"], "tal_metric"),
    ],
)
def test_train_cli_trains_paas_successors_and_logs_their_figures(synthetic_root, tmp_path, rule, extra, figure):
    from paa_toolkit.engine.run_files import read_metrics
    from paa_toolkit.train import main

    argv = [
        "--data.root",
        str(synthetic_root),
        "--data.synthetic_num_train",
        "6",
        "--data.synthetic_num_val",
        "3",
        "--data.synthetic_image_size",
        "64",
        "--batch-size",
        "2",
        "--model.width",
        "32",
        "--model.num_convs",
        "1",
        "--model.min_size",
        "64",
        "--model.max_size",
        "64",
        "--max-iters",
        "2",
        "--solver.warmup_iters",
        "1",
        "--output-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--log_every",
        "1",
        "--checkpoint_every",
        "0",
        "--eval_batch_size",
        "3",
        "--trace_iters",
        "[2]",
        "--assign.rule",
        rule,
        *extra,
    ]
    assert main(argv) == 0
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert len(train) == 2 and all(figure in r and "gt_without_pos" in r and "em_iters" not in r for r in train)
    assert all(math.isfinite(r["loss_cls"]) for r in train)


def test_evaluate_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from paa_toolkit.evaluate import main

    assert main([str(tmp_path / "nope.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: checkpoint not found: {tmp_path / 'nope.pth'}"


def test_detect_cli_reports_a_missing_image_in_one_line(tmp_path, capsys):
    from paa_toolkit.detect import main

    assert main([str(tmp_path / "cat.jpg"), "--checkpoint", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: image not found: {tmp_path / 'cat.jpg'}"


def test_detect_cli_writes_an_image_with_boxes(synthetic_root, reference_run, tmp_path, capsys):
    from paa_toolkit.detect import main

    image = sorted((synthetic_root / "images").iterdir())[0]
    assert main([str(image), "--checkpoint", str(reference_run[0]), "--out", str(tmp_path), "--score-thresh", "0"]) == 0
    assert (tmp_path / f"{image.stem}.png").is_file()
    assert capsys.readouterr().out.startswith(str(tmp_path / f"{image.stem}.png"))


def test_evaluate_cli_reproduces_the_final_metrics_of_a_run(reference_run, tmp_path):
    from paa_toolkit.evaluate import main

    run_dir, result = reference_run
    output = tmp_path / "new" / "folder" / "m.json"  # missing folders are created
    assert main([str(run_dir), "--output", str(output)]) == 0
    assert json.loads(output.read_text())["AP"] == pytest.approx(result.metrics["AP"])


def test_detect_cli_never_writes_two_images_to_one_output(synthetic_root, reference_run, tmp_path, capsys):
    from paa_toolkit.detect import main

    source = sorted((synthetic_root / "images").iterdir())
    images = {"a/x.png": source[0], "b/x.png": source[1], "b/x.jpg": source[2]}  # same stem in two folders
    for name, original in images.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(original, tmp_path / "in" / name)
    out = tmp_path / "out"
    argv = [str(tmp_path / "in" / name) for name in images]
    assert main(argv + ["--checkpoint", str(reference_run[0]), "--out", str(out), "--score-thresh", "0"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a/x.png", "b/x.jpg.png", "b/x.png.png"]  # mirrored; suffix kept where stems clash
    assert len({(out / w).read_bytes() for w in written}) == 3  # three different drawings
    printed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == [str(out / w) for w in ("a/x.png", "b/x.png.png", "b/x.jpg.png", "detections.json")]


# ---- --help ---------------------------------------------------------------------------------------
def _help_text(monkeypatch, columns: int = 80) -> str:
    from paa_toolkit.cli import build_parser

    monkeypatch.setenv("COLUMNS", str(columns))
    return build_parser("python -m paa_toolkit.train").format_help()


def test_every_config_field_has_a_one_line_description():
    from paa_toolkit.cli import _dotted_fields
    from paa_toolkit.engine.config import SECTIONS, field_docs

    undocumented = [
        dotted
        for dotted, f in _dotted_fields()
        if not field_docs(SECTIONS.get(dotted.split(".")[0], TrainConfig)).get(f.name)
    ]
    assert undocumented == []


def test_help_fits_80_columns_and_groups_options_by_section(monkeypatch):
    text = _help_text(monkeypatch)
    assert max(len(line) for line in text.splitlines()) <= 80
    titles = [line.split(" ")[0] for line in text.splitlines() if line.endswith(">):")]
    assert titles == ["model", "assign", "test", "data", "solver", "run"]


def test_help_lists_choices_and_each_spelling_once(monkeypatch):
    text = " ".join(_help_text(monkeypatch).split())  # undo the wrapping
    assert "--assign.rule, --rule VALUE" in text
    assert "[a, b, c, d, fnp, fsr, atss, max_iou, tal, simota] (default: c)" in text
    assert "tal: TOOD's task-aligned assignment" in text and "simota: YOLOX's SimOTA" in text  # each rule described
    assert "[iou, centerness, none] (default: iou)" in text
    assert text.count("--output-dir") == 1 and "--model.backbone-norm" not in text
    assert parse_args(["--model.backbone-norm", "bn"]).model.backbone_norm == "bn"  # still accepted


def test_help_explains_the_learning_rate_the_run_uses(monkeypatch):
    text = " ".join(_help_text(monkeypatch).split())
    assert "the default run trains at 0.0025 = 0.01 × data.batch_size 4 / solver.reference_batch_size 16" in text


def test_help_describes_what_happens_to_bad_annotations(monkeypatch, capsys):
    text = " ".join(_help_text(monkeypatch).split())
    assert "--data.on_bad_annotation VALUE boxes of zero size or outside their image: skipped and counted" in text
    with pytest.raises(SystemExit):
        parse_args(["--data.on_bad_annotation", "ignore"])
    assert "valid choices: skip, error" in capsys.readouterr().err


def test_detect_writes_coco_results_that_evaluate_scores_like_the_checkpoint(
    synthetic_root, reference_run, tmp_path, capsys
):
    from paa_toolkit.detect import main as detect
    from paa_toolkit.evaluate import main as evaluate

    run_dir, result = reference_run
    val = json.loads((synthetic_root / "val.json").read_text())
    images = [str(synthetic_root / "images" / image["file_name"]) for image in val["images"]]
    assert (
        detect(
            [
                *images,
                "--checkpoint",
                str(run_dir),
                "--out",
                str(tmp_path),
                "--score-thresh",
                "0",
                "--test.score_thresh",
                "0",
                "--annotations",
                str(synthetic_root / "val.json"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "detections.json").read_text())
    assert {r["image_id"] for r in results} <= {image["id"] for image in val["images"]}
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"} and len(results[0]["bbox"]) == 4
    assert (
        evaluate(
            ["--detections", str(tmp_path / "detections.json"), str(run_dir), "--output", str(tmp_path / "d.json")]
        )
        == 0
    )
    assert evaluate([str(run_dir), "--test.score_thresh", "0", "--output", str(tmp_path / "m.json")]) == 0
    from_json, from_model = (json.loads((tmp_path / name).read_text()) for name in ("d.json", "m.json"))
    assert from_json["num_detections"] == from_model["num_detections"] == len(results) > 0
    assert from_json["AP"] == pytest.approx(from_model["AP"], abs=1e-4)


def test_evaluate_reports_a_bad_detections_file_in_one_line(reference_run, tmp_path, capsys):
    from paa_toolkit.evaluate import main

    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps([{"image_id": 123456, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    assert main(["--detections", str(bad), str(reference_run[0])]) == 1
    assert "image_id 123456 or category_id 1 is not in the annotations" in capsys.readouterr().err

"""Specifications of failing safely: bad data and bad values through the command lines, degenerate and
crowded images, divergence, SIGKILL and torn checkpoints.

The loader's own checks (each bad field of a COCO file, skip / error policies) are specified in
``test_data.py``; the injected-NaN stop in ``test_engine_loop.py``, torn / bit-flipped checkpoint
files in ``test_engine_checkpoint.py`` and the parser's rejection of negative lr / unknown assigner /
K = 0 in ``test_cli.py``. Here: the same faults end to end — what a user of ``python -m
paa_toolkit.train`` sees.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paa_toolkit.cli import parse_args
from paa_toolkit.data.build import DataConfig, build_datasets
from paa_toolkit.engine.checkpoint import (
    FINAL_METRICS,
    LAST,
    PREVIOUS,
    default_model_builder,
    load_checkpoint,
    save_checkpoint,
)
from paa_toolkit.engine.loop import TrainingRun, train
from paa_toolkit.engine.run_files import CONFIG_FILE, METRICS_FILE, MetricsLog, read_metrics
from paa_toolkit.engine.run_folder import LOCK_FILE, acquire_lock
from paa_toolkit.train import main as train_main

from full_disk import fdopen_on_a_full_disk  # tests/full_disk.py
from tiny_training import tiny_config, weights  # tests/tiny_training.py
from training_crash import TrainingCrash, crash_at_training_call  # tests/training_crash.py

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the in-process runs (one thread)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- data: a hand-written COCO folder and the tiny synthetic set ---------------------------------
W, H = 48, 40


def write_coco(folder: Path, annotations=None, images=None, sizes=((W, H), (W, H))) -> tuple[Path, Path]:
    """Images ``0.png``, ``1.png``, … (ids 10, 20, …) and categories 5 "cat", 7 "dog"."""
    image_dir = folder / "imgs"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image_dir / f"{i}.png")
    data = {
        "images": images
        if images is not None
        else [{"id": 10 * (i + 1), "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in enumerate(sizes)],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [4, 4, 20, 16]},
            {"id": 2, "image_id": 20, "category_id": 7, "bbox": [10, 8, 12, 24]},
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    ann_file = folder / "ann.json"
    ann_file.write_text(json.dumps(data))
    return image_dir, ann_file


def coco_args(image_dir: Path, ann_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        "coco",
        "--data.image_dir",
        str(image_dir),
        "--data.train_ann",
        str(ann_file),
        "--data.val_ann",
        str(ann_file),
        "--output-dir",
        str(run_dir),
        "--device",
        "cpu",
        "--model.width",
        "32",
        "--model.num_convs",
        "1",
        "--model.min_size",
        "64",
        "--model.max_size",
        "96",
        "--max-iters",
        "2",
        "--batch-size",
        "2",
        "--trace_images",
        "0",
        "--trace_iters",
        "[]",
        *extra,
    ]


def tiny_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """8 iterations of a tiny detector on 64-px images; checkpoints every 2 iterations."""
    return [
        "--data.root",
        str(root),
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
        "[64, 96]",
        "--model.max_size",
        "128",
        "--max-iters",
        "8",
        "--solver.warmup_iters",
        "2",
        "--lr",
        "0.05",
        "--output-dir",
        str(run_dir),
        "--device",
        "cpu",
        "--log_every",
        "1",
        "--checkpoint_every",
        "2",
        "--eval_batch_size",
        "3",
        "--trace_images",
        "1",
        "--trace_iters",
        "0,4,8",
        *extra,
    ]


def one_error_line(err: str) -> str:
    """The ``error: …`` message of a failed command (after any progress-bar output); no traceback."""
    assert "Traceback" not in err, err
    found = re.findall(r"error: [^\n\r]*", err)
    assert len(found) == 1, err
    return found[0]


def same_weights(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


# ---- bad annotation files and images, through the training command line --------------------------
def _drop(key):
    def edit(data):
        del data[key]

    return edit


def _set(path, value):
    def edit(data):
        target = data
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return edit


BAD_FILES = {
    "malformed_json": (None, r"ann\.json: malformed JSON at line 1, column \d+"),
    "missing_top_level_key": (_drop("annotations"), r"ann\.json: missing top-level key\(s\) \['annotations'\]"),
    "annotation_without_bbox": (
        lambda d: d["annotations"][1].pop("bbox"),
        r"ann\.json: annotations\[1\] \(id=2\) is missing field\(s\) \['bbox'\]",
    ),
    "image_without_file_name": (
        lambda d: d["images"][0].pop("file_name"),
        r"ann\.json: images\[0\] \(id=10\) is missing field\(s\) \['file_name'\]",
    ),
    "unknown_category_id": (
        _set(["annotations", 0, "category_id"], 4),
        r"annotations\[0\] \(id=1\): category_id 4 is not in 'categories' \(ids \[5, 7\]\)",
    ),
    "bbox_of_strings": (
        _set(["annotations", 1, "bbox"], ["1", "2", "3", "4"]),
        r"annotations\[1\] \(id=2\): 'bbox' must be \[x, y, width, height\] of 4 finite numbers",
    ),
    "missing_image_file": ("unlink", r"1 image file\(s\) listed in .*ann\.json not found, e\.g\. .*imgs/1\.png"),
    "no_images": (lambda d: d.update(images=[], annotations=[]), r"ann\.json: no images"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_training_cli_names_file_and_item_of_bad_annotations_in_one_line(tmp_path, capsys, case):
    edit, expected = BAD_FILES[case]
    image_dir, ann_file = write_coco(tmp_path)
    if edit is None:
        ann_file.write_text('{"images": [}')
    elif edit == "unlink":
        (image_dir / "1.png").unlink()
    else:
        data = json.loads(ann_file.read_text())
        edit(data)
        ann_file.write_text(json.dumps(data))
    assert train_main(coco_args(image_dir, ann_file, tmp_path / "run")) == 1
    assert re.search(expected, one_error_line(capsys.readouterr().err))
    assert not (tmp_path / "run" / LAST).exists()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_met_during_training_is_named_in_one_line(tmp_path, capsys, num_workers):
    image_dir, ann_file = write_coco(tmp_path)
    (image_dir / "1.png").write_bytes(b"\x89PNG but truncated")  # width/height come from the JSON
    args = coco_args(image_dir, ann_file, tmp_path / "run", "--data.num_workers", str(num_workers))
    assert train_main(args) == 1
    line = one_error_line(capsys.readouterr().err)  # a DataLoader worker's traceback is unwrapped
    assert re.fullmatch(r"error: cannot read image .*imgs/1\.png \(image_id=20\): .*", line), line


def test_skipped_and_clipped_boxes_are_counted_in_the_log(tmp_path, caplog):
    image_dir, ann_file = write_coco(
        tmp_path,
        annotations=[
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [4, 4, 0, 16]},  # zero width
            {"id": 2, "image_id": 10, "category_id": 5, "bbox": [4, 4, 10, -3]},  # negative height
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [W + 5, 4, 10, 10]},  # wholly outside
            {"id": 4, "image_id": 20, "category_id": 7, "bbox": [-6, 30, 20, 20]},  # partly outside: clipped
            {"id": 5, "image_id": 20, "category_id": 5, "bbox": [2, 2, 8, 8]},
        ],
    )
    data = DataConfig(dataset="coco", image_dir=str(image_dir), train_ann=str(ann_file), val_ann=str(ann_file))
    with caplog.at_level(logging.WARNING, logger="paa_toolkit.data.coco"):
        train_set, _ = build_datasets(data)
    messages = [r.getMessage() for r in caplog.records]
    assert f"{ann_file}: skipped annotations {{'degenerate_box': 2, 'outside_image': 1}}" in messages
    assert f"{ann_file}: clipped 1 box(es) partly outside their image" in messages
    # and the training targets hold exactly the two kept boxes, the clipped one inside its image
    boxes = torch.cat([train_set[i][1]["boxes"] for i in range(len(train_set))])
    assert len(boxes) == 2 and boxes[:, 0].min() >= 0 and boxes[:, 3].max() <= H


# ---- degenerate and crowded images -----------------------------------------------------------------
def test_images_without_objects_train_beside_images_with_objects_and_evaluate(tmp_path):
    image_dir, ann_file = write_coco(
        tmp_path, sizes=((W, H),) * 3, annotations=[{"id": 1, "image_id": 10, "category_id": 5, "bbox": [4, 4, 20, 16]}]
    )  # images 20 and 30: no object
    _, no_objects = write_coco(tmp_path / "val", annotations=[])  # images 0.png, 1.png: also in image_dir
    args = coco_args(
        image_dir,
        ann_file,
        tmp_path / "run",
        "--data.val_ann",
        str(no_objects),
        "--log_every",
        "1",
        "--batch-size",
        "1",
        "--max-iters",
        "3",
    )  # one epoch: each image once
    result = train(parse_args(args), progress=False)
    assert result.iteration == 3 and result.metrics["AP"] == -1.0  # COCOeval: no ground truth
    state = load_checkpoint(tmp_path / "run" / LAST)
    assert all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())
    losses = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert sorted(r["loss_box"] > 0 for r in losses) == [False, False, True]  # the two empty images: no box loss
    assert all(r["loss_cls"] > 0 for r in losses)


def crowd(id_, image_id, bbox):
    return {"id": id_, "image_id": image_id, "category_id": 5, "bbox": bbox, "iscrowd": 1}


@pytest.mark.parametrize(
    "annotations, counts",
    [
        ([], "2 images, 0 annotations (0 iscrowd, 0 skipped)"),
        (
            [crowd(1, 10, [4, 4, 20, 16]), crowd(2, 20, [10, 8, 12, 24])],
            "2 images, 2 annotations (2 iscrowd, 0 skipped)",
        ),
        (
            [crowd(1, 10, [4, 4, 20, 16]), {"id": 2, "image_id": 20, "category_id": 7, "bbox": [10, 8, 0, 24]}],
            "2 images, 2 annotations (1 iscrowd, 1 skipped: {'degenerate_box': 1})",
        ),
    ],
    ids=["no_annotations", "all_crowd", "crowd_and_degenerate"],
)
def test_a_training_set_without_a_box_to_learn_from_is_refused_with_the_counts(tmp_path, capsys, annotations, counts):
    image_dir, ann_file = write_coco(tmp_path, annotations=annotations)
    assert train_main(coco_args(image_dir, ann_file, tmp_path / "run")) == 1
    assert one_error_line(capsys.readouterr().err) == (
        f"error: {ann_file}: no box to train on: {counts}, 0 usable boxes. Training needs annotations with "
        "iscrowd 0 and a box of positive size inside their image"
    )
    assert list((tmp_path / "run").iterdir()) == []  # refused before the run folder was written to


CROWDED_STEP = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from PIL import Image
    from paa_toolkit.data.coco import CocoDetection
    from paa_toolkit.engine.config import ModelConfig
    from paa_toolkit.model.detector import build_model

    folder, size = sys.argv[1], 320
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(f"{folder}/img.png")
    xy, wh = rng.uniform(0, size - 30, (500, 2)), rng.uniform(4, 30, (500, 2))
    annotations = [{"id": i + 1, "image_id": 1 if i < 500 else 2, "category_id": 1 + i % 3,
                    "bbox": [*xy[i % 500].tolist(), *wh[i % 500].tolist()]} for i in range(501)]
    json.dump({"images": [{"id": 1, "file_name": "img.png", "width": size, "height": size},
                          {"id": 2, "file_name": "img.png", "width": size, "height": size}],
               "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]},
              open(f"{folder}/ann.json", "w"))
    data = CocoDetection(folder, f"{folder}/ann.json", train=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model(ModelConfig(width=32, num_convs=1, min_size=size, max_size=size), data.num_classes).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    stats, report = [], []
    model.register_assignment_hook(stats.append)
    for index in (1, 1, 0, 0):  # image 2 (one object) twice, then image 1 (500 objects) twice
        image, target = data[index]
        losses = model([image], [target])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        report.append({"num_gt": stats[-1]["num_gt"], "num_pos": stats[-1]["num_pos"],
                       "losses": [float(v) for v in losses.values()],
                       "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    print(json.dumps(report))
""")


def test_image_with_500_objects_trains_within_bounded_memory(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CROWDED_STEP, str(tmp_path)],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, _, crowded, _ = report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (one["num_gt"], crowded["num_gt"]) == (1, 500)
    assert crowded["num_pos"] >= 100  # the crowd is actually assigned anchors
    assert all(np.isfinite(step["losses"]).all() for step in report)
    # IoU [B, A, M] and the candidate tensors grow with the objects (~40 MiB here); the rest does not
    extra_mib = report[-1]["peak_rss_mib"] - one["peak_rss_mib"]
    assert extra_mib < 200, f"500 objects raised the peak RSS by {extra_mib:.0f} MiB"


# ---- divergence ------------------------------------------------------------------------------------
def test_diverging_run_stops_with_one_line_and_keeps_a_finite_last_good_checkpoint(synthetic_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = tiny_args(synthetic_root, run_dir, "--lr", "1000", "--solver.warmup_iters", "0", "--checkpoint_every", "1")
    assert train_main(args) == 1
    line = one_error_line(capsys.readouterr().err)
    match = re.fullmatch(
        r"error: non-finite loss at iteration (\d+) \(.*nan.*\); training stopped\. "
        r"Last good checkpoint: (.*)\. Try a lower --lr.*",
        line,
    )
    assert match, line
    stopped_at, checkpoint = int(match[1]), Path(match[2])
    assert checkpoint == run_dir / LAST
    state = load_checkpoint(checkpoint)  # intact: its digest matches
    assert state["iteration"] == stopped_at
    assert all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())
    assert not (run_dir / "final_metrics.json").exists()


# ---- SIGKILL and torn checkpoints ------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(synthetic_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(parse_args(tiny_args(synthetic_root, run_dir)), progress=False)
    return run_dir


@pytest.mark.slow
def test_run_killed_with_sigkill_and_resumed_ends_with_the_same_weights(synthetic_root, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "paa_toolkit.train", *tiny_args(synthetic_root, run_dir)]
    process = subprocess.Popen(command, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run_dir / LAST).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # as soon as the first checkpoint (iteration 2) is in place
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run_dir / "final_metrics.json").exists()
    assert load_checkpoint(run_dir / LAST)["iteration"] < 8

    resumed = subprocess.run(command + ["--resume"], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    same_weights(load_checkpoint(run_dir / LAST)["model"], load_checkpoint(uninterrupted / LAST)["model"])
    records = [(r["kind"], r["iteration"]) for r in read_metrics(run_dir)]
    assert records == [(r["kind"], r["iteration"]) for r in read_metrics(uninterrupted)]  # each record once


def crash_in_training_forward(call: int):
    """A model builder whose ``call``-th training forward raises (a crash mid-run)."""
    return lambda cfg, num_classes: crash_at_training_call(default_model_builder(cfg, num_classes), call)


def test_torn_last_checkpoint_and_leftover_temp_file_are_never_resumed_from(
    synthetic_root, uninterrupted, tmp_path, caplog
):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingCrash):  # dies in iteration 4, after the checkpoint at 4 (previous: 2)
        train(parse_args(tiny_args(synthetic_root, run_dir)), build_model=crash_in_training_forward(5), progress=False)
    good = load_checkpoint(run_dir / LAST)
    assert good["iteration"] == 4 and load_checkpoint(run_dir / PREVIOUS)["iteration"] == 2
    # a complete, valid checkpoint of a later iteration that never got renamed into place ...
    decoy = {**good, "iteration": 6, "model": {k: torch.zeros_like(v) for k, v in good["model"].items()}}
    save_checkpoint(decoy, tmp_path / "decoy")
    stale = run_dir / f".{LAST}.abc123.tmp"
    (tmp_path / "decoy" / LAST).rename(stale)
    # ... and last.pth torn half-way (a copy that bypassed the atomic rename)
    data = (run_dir / LAST).read_bytes()
    (run_dir / LAST).write_bytes(data[: len(data) // 2])

    with caplog.at_level(logging.INFO):
        train(parse_args(tiny_args(synthetic_root, run_dir, "--resume")), progress=False)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(r"skipping checkpoint .*last\.pth is unreadable", messages)
    assert f"resumed from {run_dir / PREVIOUS} at iteration 2" in messages
    same_weights(load_checkpoint(run_dir / LAST)["model"], load_checkpoint(uninterrupted / LAST)["model"])
    assert not stale.exists()  # removed by the next successful save


def test_a_bit_flipped_last_checkpoint_is_set_aside_and_never_rotated_over_the_good_fallback(
    synthetic_root, uninterrupted, tmp_path, caplog, monkeypatch
):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingCrash):  # dies in iteration 4, after the checkpoint at 4 (previous: 2)
        train(parse_args(tiny_args(synthetic_root, run_dir)), build_model=crash_in_training_forward(5), progress=False)
    flipped = bytearray((run_dir / LAST).read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # one byte of the weights
    (run_dir / LAST).write_bytes(bytes(flipped))

    fallbacks, save = [], TrainingRun.save_checkpoint

    def save_and_verify_the_fallback(self, done):
        save(self, done)
        fallbacks.append((done, load_checkpoint(run_dir / PREVIOUS)["iteration"]))  # raises if it does not verify

    monkeypatch.setattr(TrainingRun, "save_checkpoint", save_and_verify_the_fallback)
    with caplog.at_level(logging.INFO):
        train(parse_args(tiny_args(synthetic_root, run_dir, "--resume")), progress=False)
    assert re.search(r"skipping checkpoint .*last\.pth is corrupt", caplog.text)
    assert f"resumed from {run_dir / PREVIOUS} at iteration 2" in caplog.text
    assert f"moved {run_dir / LAST}, which failed verification, to {run_dir / 'last.pth.corrupt'}" in caplog.text
    assert (run_dir / "last.pth.corrupt").read_bytes() == bytes(flipped)
    assert fallbacks == [(4, 2), (6, 4), (8, 6)]  # a verified previous.pth after each new checkpoint
    same_weights(load_checkpoint(run_dir / LAST)["model"], load_checkpoint(uninterrupted / LAST)["model"])


# ---- a kill at any moment --------------------------------------------------------------------------
def kill_when_replacing(name: str, nth: int = 1) -> None:
    """From now on in this process, SIGKILL it at the ``nth`` ``os.replace`` onto a file called ``name``
    (the temporary file is complete; the rename never happens)."""
    real_replace, count = os.replace, {"n": 0}

    def replace(src, dst):
        if Path(dst).name == name:
            count["n"] += 1
            if count["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    os.replace = replace


def kill_mid_metrics_line(nth: int) -> None:
    """From now on in this process, SIGKILL it half-way through appending the ``nth`` metrics record."""
    real_write, count = MetricsLog.write, {"n": 0}

    def write(self, record):
        count["n"] += 1
        if count["n"] == nth:
            line = json.dumps(record) + "\n"
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line[: len(line) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(self, record)

    MetricsLog.write = write


#: moment → (how to arm the kill, what the kill leaves). The run: 4 iterations, checkpoints at 2 and 4,
#: traces at 0/2/4, an evaluation at 2; records: trace 0, train 1, train 2, eval 2, trace 2, train 3, ...
KILL_MOMENTS = {
    "writing_config": (lambda: kill_when_replacing(CONFIG_FILE), ".config.yaml.*.tmp"),
    "appending_a_metrics_line": (lambda: kill_mid_metrics_line(6), METRICS_FILE),  # train 3, cut in half
    "writing_a_trace": (lambda: kill_when_replacing("iter_000002.pt"), "trace/.iter_000002.pt.*.tmp"),
    "writing_a_checkpoint": (lambda: kill_when_replacing(PREVIOUS), ".last.pth.*.tmp"),  # before last → previous
    "rotating_the_checkpoints": (lambda: kill_when_replacing(LAST, nth=2), ".last.pth.*.tmp"),  # no last.pth now
    "writing_final_metrics": (lambda: kill_when_replacing(FINAL_METRICS), ".final_metrics.json.*.tmp"),
}


def killed_in_a_fork(work) -> None:
    """Run ``work`` in a forked copy of this process (same modules, same threads) and wait for it to be SIGKILLed."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            work()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed: wait status {status}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(
    "moment",
    [  # ~12 s each; two in the fast suite
        moment
        if moment in ("appending_a_metrics_line", "rotating_the_checkpoints")
        else pytest.param(moment, marks=pytest.mark.slow)
        for moment in KILL_MOMENTS
    ],
)
def test_a_run_killed_at_any_moment_resumes_to_the_same_weights_and_records(
    synthetic_root, reference_run, tmp_path, caplog, moment
):
    arm, leftover = KILL_MOMENTS[moment]
    settings = {"trace_iters": [0, 2, 4], "eval_every": 2}  # as the reference run's

    def killed_run():
        arm()
        train(tiny_config(synthetic_root, tmp_path, **settings), progress=False)

    killed_in_a_fork(killed_run)
    assert list(tmp_path.glob(leftover)), f"the kill left no {leftover}"
    with caplog.at_level(logging.WARNING):
        train(tiny_config(synthetic_root, tmp_path, resume="auto", **settings), progress=False)
    assert "taking over the lock of PID" in caplog.text  # the killed process's
    if moment == "appending_a_metrics_line":
        assert f"{tmp_path / METRICS_FILE}: line 6 is not a complete JSON record" in caplog.text
    same_weights(weights(tmp_path / LAST), weights(reference_run[0] / LAST), atol=0)
    records = [(r["kind"], r["iteration"]) for r in read_metrics(tmp_path)]
    assert records == [(r["kind"], r["iteration"]) for r in read_metrics(reference_run[0])]
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / LOCK_FILE).exists()


def test_training_cli_stopped_by_sigterm_exits_143_naming_the_checkpoint_and_resumes_bit_exact(
    synthetic_root, uninterrupted, tmp_path, capsys, monkeypatch
):
    run_dir, step, calls = tmp_path / "run", TrainingRun.step, {"n": 0}

    def step_then_sigterm(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` while iteration 3 runs
        return step(self, *args)

    monkeypatch.setattr(TrainingRun, "step", step_then_sigterm)
    assert train_main(tiny_args(synthetic_root, run_dir)) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted; continue with --output-dir {run_dir} --resume "
        f"(SIGTERM after iteration 3; checkpoint {run_dir / LAST} written)"
    )
    monkeypatch.setattr(TrainingRun, "step", step)
    assert train_main(tiny_args(synthetic_root, run_dir, "--resume")) == 0
    same_weights(weights(run_dir / LAST), weights(uninterrupted / LAST), atol=0)


# ---- failed writes and reads -----------------------------------------------------------------------
def test_disk_full_at_a_checkpoint_stops_with_one_line_and_keeps_the_previous_checkpoint(
    synthetic_root, tmp_path, capsys, monkeypatch
):
    run_dir, checkpoint_writes = tmp_path / "run", []

    def second_checkpoint(path):  # the checkpoint of iteration 4 finds the disk full
        checkpoint_writes.extend([path] if os.path.basename(path).startswith(f".{LAST}.") else [])
        return len(checkpoint_writes) == 2 and checkpoint_writes[-1] == path

    monkeypatch.setattr(os, "fdopen", fdopen_on_a_full_disk(room=1000, full=second_checkpoint))
    assert train_main(tiny_args(synthetic_root, run_dir)) == 1
    assert one_error_line(capsys.readouterr().err) == (
        f"error: cannot write {run_dir / LAST}: No space left on device; "
        f"the previous checkpoint {run_dir / LAST} is unchanged"
    )
    assert load_checkpoint(run_dir / LAST)["iteration"] == 2 and not list(run_dir.glob("*.tmp"))


def test_disk_full_at_the_start_names_the_lock_file_and_leaves_no_lock_behind(
    synthetic_root, tmp_path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(os, "fdopen", fdopen_on_a_full_disk(full=lambda path: Path(path).name == LOCK_FILE))
    assert train_main(tiny_args(synthetic_root, run_dir)) == 1
    assert (
        one_error_line(capsys.readouterr().err) == f"error: cannot write {run_dir / LOCK_FILE}: No space left on device"
    )
    assert list(run_dir.iterdir()) == []
    monkeypatch.undo()  # space freed: a retry at once claims the folder (no "being claimed by another process")
    acquire_lock(run_dir).release()


def test_a_digest_valid_checkpoint_without_config_is_refused_in_one_line(uninterrupted, tmp_path, capsys):
    from paa_toolkit.detect import main as detect_main
    from paa_toolkit.evaluate import main as evaluate_main

    state = load_checkpoint(uninterrupted / LAST)
    del state["config"]
    save_checkpoint(state, tmp_path)  # a valid digest over the other entries
    expected = (
        f"error: checkpoint {tmp_path / LAST} is not a training checkpoint of paa_toolkit: "
        "missing or malformed entries ['config']"
    )
    assert evaluate_main([str(tmp_path)]) == 1
    assert one_error_line(capsys.readouterr().err) == expected
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert detect_main([str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / LAST), "--out", str(tmp_path)]) == 1
    assert one_error_line(capsys.readouterr().err) == expected


def test_an_unreadable_last_checkpoint_stops_the_resume_instead_of_falling_back(
    synthetic_root, uninterrupted, tmp_path, capsys, monkeypatch
):
    import paa_toolkit.engine.checkpoint as checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    load = torch.load

    def denied(path, *args, **kwargs):
        if Path(path).name == LAST:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", denied)
    before = (run_dir / LAST).read_bytes()
    assert train_main(tiny_args(synthetic_root, run_dir, "--resume")) == 1
    assert (
        one_error_line(capsys.readouterr().err) == f"error: cannot read checkpoint {run_dir / LAST}: Permission denied"
    )
    assert (run_dir / LAST).read_bytes() == before  # not replaced by a run resumed from previous.pth


def test_an_output_dir_whose_parent_is_a_file_is_one_line_naming_it(synthetic_root, tmp_path, capsys):
    (tmp_path / "runs").write_text("a file, not a folder")
    assert train_main(tiny_args(synthetic_root, tmp_path / "runs" / "a")) == 1
    assert (
        one_error_line(capsys.readouterr().err)
        == f"error: cannot create the run folder {tmp_path / 'runs' / 'a'}: Not a directory"
    )


def test_an_output_dir_without_permission_is_one_line_naming_it(synthetic_root, tmp_path, capsys, monkeypatch):
    mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if self == tmp_path / "locked" / "run":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    assert train_main(tiny_args(synthetic_root, tmp_path / "locked" / "run")) == 1
    assert (
        one_error_line(capsys.readouterr().err)
        == f"error: cannot create the run folder {tmp_path / 'locked' / 'run'}: Permission denied"
    )


@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda:x", "device: malformed index in 'cuda:x': N of cuda:N is a device number >= 0"),
        ("cuda:-1", "device: malformed index in 'cuda:-1': N of cuda:N is a device number >= 0"),
        ("cpu:1", "device: unknown value 'cpu:1'; valid choices: auto, cpu, cuda, cuda:N, mps"),
    ],
)
def test_a_malformed_device_is_a_usage_error_of_every_command(synthetic_root, tmp_path, capsys, device, message):
    from paa_toolkit.detect import main as detect_main

    for command in (
        lambda: train_main(tiny_args(synthetic_root, tmp_path / "run", "--device", device)),
        lambda: detect_main(["x.png", "--checkpoint", str(tmp_path), "--device", device]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            command()
        assert exit_info.value.code == 2
        assert re.search(f"error: {re.escape(message)}", capsys.readouterr().err.strip().splitlines()[-1])


def test_a_cuda_index_beyond_the_devices_is_refused_naming_them(monkeypatch):
    from paa_toolkit.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ValueError,
        match=r"^device 'cuda:2' requested but this machine has 2 CUDA device\(s\): "
        r"cuda:0 to cuda:1$",
    ):
        resolve_device("cuda:2")


# ---- bad values on the command lines ---------------------------------------------------------------


def test_training_module_rejects_k_zero_without_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "paa_toolkit.train", "--assign.topk", "0"],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("error: assign.topk (K of Procedure 1) must be >= 1, got 0")


def test_evaluate_cli_rejects_an_unknown_assigner_listing_the_choices(uninterrupted, capsys):
    from paa_toolkit.evaluate import main

    assert main([str(uninterrupted), "--assign.rule", "hungarian"]) == 1
    assert (
        one_error_line(capsys.readouterr().err) == "error: assign.rule: unknown value 'hungarian'; valid choices: "
        "a, b, c, d, fnp, fsr, atss, max_iou, tal, simota"
    )


def test_world_size_without_torchrun_rendezvous_is_a_clear_error(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT not set: start .* torchrun"):
        train(parse_args(tiny_args(synthetic_root, tmp_path)), progress=False)

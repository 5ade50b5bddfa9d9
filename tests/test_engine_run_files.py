"""Specifications of the run folder's files: atomic writes, the metrics log on resume, the trace set and format."""

import errno
import json
import logging
import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import torch

from paa_toolkit.assign.config import AssignConfig
from paa_toolkit.data.coco import CocoDetection
from paa_toolkit.engine import run_files
from paa_toolkit.engine.run_files import (
    TRACE_FORMAT,
    TRACE_VERSION,
    MetricsLog,
    TraceFileError,
    atomic_write_text,
    load_trace,
    read_metrics,
    save_trace,
    trace_image_indices,
)
from paa_toolkit.widgets.compute import load_snapshot, open_source, random_snapshot

from full_disk import FullDiskFile, fdopen_on_a_full_disk  # tests/full_disk.py
from planted_code import PlantedCommand  # tests/planted_code.py


def test_atomic_text_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "final_metrics.json"
    path.write_text("old")
    atomic_write_text(path, '{"AP": 0.5}')
    assert path.read_text() == '{"AP": 0.5}'
    assert [p.name for p in tmp_path.iterdir()] == ["final_metrics.json"]


def test_resumed_metrics_log_drops_what_the_interrupted_run_wrote_after_its_checkpoint(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in (
        {"kind": "trace", "iteration": 0},
        {"kind": "train", "iteration": 2},
        {"kind": "eval", "iteration": 2},
        {"kind": "trace", "iteration": 2},
        {"kind": "train", "iteration": 3},
    ):
        log.write(record)
    MetricsLog(tmp_path / "metrics.jsonl", resume_from=2)  # the checkpoint was taken after iteration 2
    assert [(r["kind"], r["iteration"]) for r in read_metrics(tmp_path)] == [("trace", 0), ("train", 2), ("eval", 2)]


def test_trace_images_zero_traces_no_image(synthetic_root):
    dataset = CocoDetection(synthetic_root / "images", synthetic_root / "val.json")
    assert trace_image_indices(dataset, 0) == []
    assert len(trace_image_indices(dataset, 2)) == 2


# ---- metrics lines cut off by a kill -------------------------------------------------------------
def test_metrics_reader_skips_a_torn_last_line_with_a_warning_naming_file_and_line(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "iteration": 1}\n{"kind": "train", "iteration": 2}\n{"kind": "tra')
    with caplog.at_level(logging.WARNING):
        records = read_metrics(path)
    assert records == [{"kind": "train", "iteration": 1}, {"kind": "train", "iteration": 2}]
    assert f"{path}: line 3 is not a complete JSON record" in caplog.text


def test_resumed_metrics_log_rewrites_the_file_without_its_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "iteration": 1}\n{"kind": "train", "iteration": 2}\n{"kind": "train", "it')
    MetricsLog(path, resume_from=2, final_iteration=4).write({"kind": "train", "iteration": 3})
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_resumed_metrics_log_drops_the_final_evaluation_the_resumed_run_repeats(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in (
        {"kind": "train", "iteration": 4},
        {"kind": "trace", "iteration": 4},
        {"kind": "eval", "iteration": 4},
    ):
        log.write(record)
    MetricsLog(tmp_path / "metrics.jsonl", resume_from=4, final_iteration=4)  # killed before final_metrics.json
    assert [(r["kind"], r["iteration"]) for r in read_metrics(tmp_path)] == [("train", 4)]


# ---- failed writes -------------------------------------------------------------------------------
def test_disk_full_during_a_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    monkeypatch.setattr(os, "fdopen", fdopen_on_a_full_disk(room=2))
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(path))}: No space left on device$") as error:
        atomic_write_text(path, "new contents")
    assert error.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_disk_full_while_appending_a_metrics_record_names_the_file(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    monkeypatch.setattr(
        run_files, "open", lambda *args, **kwargs: FullDiskFile(open(*args, **kwargs), room=0), raising=False
    )  # the file run_files appends to finds the disk full
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(log.path))}: No space left on device$"):
        log.write({"kind": "train", "iteration": 1})


def test_a_write_into_a_folder_that_cannot_be_created_names_the_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(tmp_path / 'file' / 'x.json'))}: "):
        atomic_write_text(tmp_path / "file" / "x.json", "{}")


# ---- the trace format ----------------------------------------------------------------------------
def same(a, b) -> bool:
    """Equal values, tensors and dataclasses compared field by field, types included."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if is_dataclass(a):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_a_trace_round_trips_every_snapshot_field_nested_dataclasses_included(tmp_path):
    snapshot = random_snapshot(3, topk=5, score_lambda=0.5, with_logits=True)
    save_trace(tmp_path / "iter_000007.pt", snapshot, 7, image_ids=[10, 20], dataset_indices=[0, 1])
    trace = load_trace(tmp_path / "iter_000007.pt")
    assert (trace["iteration"], trace["image_ids"], trace["dataset_indices"]) == (7, [10, 20], [0, 1])
    assert same(trace["snapshot"], snapshot)
    assert trace["snapshot"].settings == AssignConfig(topk=5, score_lambda=0.5)
    # written as plain values: the strict loader reads it
    assert isinstance(torch.load(tmp_path / "iter_000007.pt", weights_only=True)["snapshot"]["diagnostics"], dict)


class PlantedCode:
    """Unpickling this runs ``open(marker, "w")``: what a crafted trace file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_trace_with_planted_code_is_refused_and_the_code_never_runs(tmp_path):
    marker, bait = tmp_path / "code_ran", tmp_path / "trace" / "iter_000000.pt"
    bait.parent.mkdir()
    torch.save({"format": TRACE_FORMAT, "format_version": TRACE_VERSION, "snapshot": PlantedCode(marker)}, bait)
    for reader in (load_trace, load_snapshot, lambda p: open_source(p.parent.parent).snapshot(0)):
        with pytest.raises(TraceFileError, match=rf"{re.escape(str(bait))}: holds pickled Python objects \(exec\)"):
            reader(bait)
    assert not marker.exists()
    torch.load(bait, weights_only=False)  # the bait is real: a full unpickling runs it
    assert marker.exists()


def test_a_trace_with_a_planted_shell_command_is_refused_as_pickled_objects(tmp_path):
    marker, bait = tmp_path / "command_ran", tmp_path / "iter_000000.pt"
    torch.save({"format": TRACE_FORMAT, "format_version": TRACE_VERSION, "snapshot": PlantedCommand(marker)}, bait)
    with pytest.raises(
        TraceFileError,
        match=rf"^{re.escape(str(bait))}: holds pickled Python objects "
        rf"\({os.system.__module__}\.system\), which are not loaded",
    ):
        load_trace(bait)
    assert not marker.exists()


def test_a_trace_of_the_old_pickled_format_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "iter_000004.pt"
    torch.save({"iteration": 4, "snapshot": random_snapshot(0)}, path)  # the format before version 2
    with pytest.raises(
        TraceFileError,
        match=r"iter_000004\.pt: holds pickled Python objects .*AssignmentSnapshot.*"
        r"older paa_toolkit.*--overwrite",
    ):
        load_trace(path)


@pytest.mark.parametrize(
    "contents, message",
    [
        (
            {"format": TRACE_FORMAT, "format_version": TRACE_VERSION + 1},
            "trace format 3; this paa_toolkit reads format 2",
        ),
        ({"iteration": 4, "model": {}}, "not a paa_toolkit trace file"),
        (
            {"format": TRACE_FORMAT, "format_version": TRACE_VERSION, "snapshot": {"anchors": torch.zeros(1, 4)}},
            r"snapshot: missing field\(s\) \['cls_logits', 'cls_scores', 'diagnostics'",
        ),
    ],
)
def test_a_foreign_or_newer_trace_is_refused_naming_the_file(tmp_path, contents, message):
    torch.save(contents, tmp_path / "iter_000001.pt")
    with pytest.raises(TraceFileError, match=f"^{re.escape(str(tmp_path / 'iter_000001.pt'))}: .*{message}"):
        load_trace(tmp_path / "iter_000001.pt")


@pytest.mark.parametrize("kept", [500, 5000])  # 5,000 bytes: torch raises "OSError: Invalid argument"
def test_a_torn_trace_file_is_refused_naming_the_file(tmp_path, kept):
    path = save_trace(tmp_path / "iter_000001.pt", random_snapshot(0), 1)
    path.write_bytes(path.read_bytes()[:kept])
    with pytest.raises(TraceFileError, match=f"^{re.escape(str(path))}: not a (readable )?trace file"):
        load_trace(path)

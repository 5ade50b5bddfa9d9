"""Specifications of the run folder's files: atomic writes, the metrics log on resume, the trace set."""

from paa_toolkit.data.coco import CocoDetection
from paa_toolkit.engine.run_files import MetricsLog, atomic_write_text, read_metrics, trace_image_indices


def test_atomic_text_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "final_metrics.json"
    path.write_text("old")
    atomic_write_text(path, '{"AP": 0.5}')
    assert path.read_text() == '{"AP": 0.5}'
    assert [p.name for p in tmp_path.iterdir()] == ["final_metrics.json"]


def test_resumed_metrics_log_drops_what_the_interrupted_run_wrote_after_its_checkpoint(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in ({"kind": "trace", "iteration": 0}, {"kind": "train", "iteration": 2},
                   {"kind": "eval", "iteration": 2}, {"kind": "trace", "iteration": 2},
                   {"kind": "train", "iteration": 3}):
        log.write(record)
    MetricsLog(tmp_path / "metrics.jsonl", resume_from=2)  # the checkpoint was taken after iteration 2
    assert [(r["kind"], r["iteration"]) for r in read_metrics(tmp_path)] == [("trace", 0), ("train", 2), ("eval", 2)]


def test_trace_images_zero_traces_no_image(synthetic_root):
    dataset = CocoDetection(synthetic_root / "images", synthetic_root / "val.json")
    assert trace_image_indices(dataset, 0) == []
    assert len(trace_image_indices(dataset, 2)) == 2

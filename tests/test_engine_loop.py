"""Specifications of the training loop: exact resume, the non-finite-loss stop, Ctrl-C / SIGTERM, assignment
traces, the run folder."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from paa_toolkit.engine.checkpoint import FINAL_METRICS, LAST, PREVIOUS, default_model_builder, load_checkpoint
from paa_toolkit.engine.config import TrainConfig
from paa_toolkit.engine.loop import LogWindow, NonFiniteLossError, train
from paa_toolkit.engine.run_files import METRICS_FILE, MetricsLog, load_trace, read_metrics
from paa_toolkit.engine.run_folder import LOCK_FILE
from paa_toolkit.engine.signals import TrainingInterrupted

from tiny_training import tiny_config, weights  # tests/tiny_training.py
from training_crash import TrainingCrash, crash_at_training_call, signal_at_training_call  # tests/training_crash.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(synthetic_root, reference_run, tmp_path):
    def crashing(cfg, n):
        return crash_at_training_call(
            default_model_builder(cfg, n), call=3
        )  # dies in iteration 2, after its checkpoint

    cfg = tiny_config(synthetic_root, tmp_path, trace_iters=[0, 2, 4], eval_every=2)
    with pytest.raises(TrainingCrash):
        train(cfg, build_model=crashing, progress=False)
    assert load_checkpoint(tmp_path / LAST)["iteration"] == 2
    train(tiny_config(synthetic_root, tmp_path, trace_iters=[0, 2, 4], eval_every=2, resume="auto"), progress=False)

    straight, resumed = weights(reference_run[0] / LAST), weights(tmp_path / LAST)
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    records = [(r["kind"], r["iteration"]) for r in read_metrics(tmp_path)]
    assert records == [(r["kind"], r["iteration"]) for r in read_metrics(reference_run[0])]  # no duplicates


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(synthetic_root, tmp_path):
    def diverging(cfg, n):
        model = default_model_builder(cfg, n)
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
    assert sorted(p.name for p in (run_dir / "trace").iterdir()) == [
        "iter_000000.pt",
        "iter_000002.pt",
        "iter_000004.pt",
    ]
    trace = load_trace(run_dir / "trace" / "iter_000002.pt")
    assert trace["iteration"] == 2 and len(trace["image_ids"]) == 2
    assert trace["snapshot"].matched_gt.shape[0] == 2
    assert [r["iteration"] for r in read_metrics(run_dir) if r["kind"] == "trace"] == [0, 2, 4]


def test_run_folder_holds_config_metrics_checkpoints_and_final_metrics(reference_run):
    run_dir, result = reference_run
    assert {"config.yaml", "metrics.jsonl", FINAL_METRICS, LAST, PREVIOUS} <= {p.name for p in run_dir.iterdir()}
    assert TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())).solver.max_iters == 4
    assert json.loads((run_dir / FINAL_METRICS).read_text())["AP"] == result.metrics["AP"]
    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records if r["kind"] == "eval"] == [2, 4]
    train_record = next(r for r in records if r["kind"] == "train")
    assert {"lr", "loss", "pos_per_gt", "imgs_per_s"} <= train_record.keys()


def test_metrics_are_fsynced_before_each_checkpoint_is_renamed_into_place(synthetic_root, tmp_path, monkeypatch):
    events, fsync, replace, write = [], os.fsync, os.replace, MetricsLog.write

    def recording_fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        fsync(fd)

    def recording_replace(src, dst):
        events.append(("rename", Path(dst).name))
        replace(src, dst)

    def recording_write(self, record):
        events.append((record["kind"], record["iteration"]))
        write(self, record)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(MetricsLog, "write", recording_write)
    train(tiny_config(synthetic_root, tmp_path), progress=False)  # checkpoints at iterations 2 and 4
    for iteration in (2, 4):
        logged = events.index(("train", iteration))
        renamed = events.index(("rename", LAST), logged)
        assert ("fsync", METRICS_FILE) in events[logged:renamed], events[logged:renamed]


# ---- Ctrl-C and SIGTERM --------------------------------------------------------------------------
@pytest.mark.parametrize("signum, call", [(signal.SIGINT, 1), (signal.SIGTERM, 3)])
def test_a_signal_mid_run_saves_that_iteration_and_the_resumed_run_ends_bit_exact(
    synthetic_root, reference_run, tmp_path, signum, call
):
    handler = signal.getsignal(signum)
    cfg = tiny_config(synthetic_root, tmp_path, trace_iters=[0, 2, 4], eval_every=2)
    with pytest.raises(TrainingInterrupted) as stopped:  # the signal arrives in iteration `call` (1-based)
        train(
            cfg,
            build_model=lambda c, n: signal_at_training_call(default_model_builder(c, n), call, signum),
            progress=False,
        )
    assert (stopped.value.signum, stopped.value.iteration, stopped.value.checkpoint) == (signum, call, tmp_path / LAST)
    assert load_checkpoint(tmp_path / LAST)["iteration"] == call  # 3: not a checkpoint iteration of the schedule
    assert signal.getsignal(signum) is handler and not (tmp_path / LOCK_FILE).exists()
    train(tiny_config(synthetic_root, tmp_path, trace_iters=[0, 2, 4], eval_every=2, resume="auto"), progress=False)

    straight, resumed = weights(reference_run[0] / LAST), weights(tmp_path / LAST)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    records = [(r["kind"], r["iteration"]) for r in read_metrics(tmp_path)]
    assert records == [(r["kind"], r["iteration"]) for r in read_metrics(reference_run[0])]


def test_a_second_signal_stops_at_once_keeping_the_checkpoints_written(synthetic_root, tmp_path):
    with pytest.raises(KeyboardInterrupt) as stopped:  # two Ctrl-C in iteration 3: no wait for its end
        train(
            tiny_config(synthetic_root, tmp_path),
            build_model=lambda c, n: signal_at_training_call(default_model_builder(c, n), 3, signal.SIGINT, times=2),
            progress=False,
        )
    assert not isinstance(stopped.value, TrainingInterrupted)
    assert load_checkpoint(tmp_path / LAST)["iteration"] == 2 and not (tmp_path / LOCK_FILE).exists()


def test_every_train_record_holds_the_assignment_diagnostics(reference_run):
    run_dir, _ = reference_run
    records = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert len(records) == 4  # log_every 1
    for r in records:
        assert {"gt_without_pos", "gt_without_cand", "em_iters", "em_collapsed", "em_not_converged"} <= r.keys()
        assert 0.0 <= r["gt_without_pos"] <= 1.0 and r["em_iters"] >= 1
        assert any(k.startswith("gt_without_pos_") for k in r) and any(k.startswith("pos_per_gt_") for k in r)
    assert json.loads(json.dumps(records)) == records  # plain JSON numbers: no NaN written


def test_the_log_window_averages_past_nan_and_drops_keys_that_were_nan_throughout():
    window = LogWindow()
    for value in (1.0, float("nan"), 3.0):
        window.add(
            {
                "loss": torch.tensor(value if value == value else 2.0),
                "gt_without_pos_large": value,
                "gt_without_pos_small": float("nan"),
            }
        )
    stats = window.close(images_per_step=2)
    assert stats["loss"] == pytest.approx(2.0) and stats["gt_without_pos_large"] == pytest.approx(2.0)
    assert "gt_without_pos_small" not in stats and stats["imgs_per_s"] > 0

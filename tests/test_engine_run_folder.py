"""Specifications of a run folder's claim: the lock, refusing / continuing / replacing the run in it,
stale temporary files (engine/run_folder.py)."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

from paa_toolkit.cli import parse_args
from paa_toolkit.engine.checkpoint import (
    CORRUPT,
    LAST,
    PREVIOUS,
    CheckpointError,
    find_resume_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from paa_toolkit.engine.loop import train
from paa_toolkit.engine.run_folder import LOCK_FILE, RunFolderError, acquire_lock, claim_run_folder

from planted_code import PlantedCommand  # tests/planted_code.py
from tiny_training import tiny_config  # tests/tiny_training.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def snapshot_of(folder) -> dict[str, bytes]:
    """Every file below ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def finished_run(reference_run, tmp_path):
    """A copy of the finished reference run (4 iterations, traces at 0/2/4) plus a file of the user's."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run[0], run_dir)
    (run_dir / "notes.txt").write_text("mine")
    return run_dir


# ---- refuse, continue, replace -------------------------------------------------------------------
def test_training_into_a_finished_run_without_resume_is_refused_and_changes_nothing(synthetic_root, finished_run):
    before = snapshot_of(finished_run)
    with pytest.raises(
        RunFolderError,
        match=r"already holds a finished run \(iteration 4, final_metrics\.json\): "
        r"continue it with --resume, or replace it with --overwrite",
    ):
        train(tiny_config(synthetic_root, finished_run), progress=False)
    assert snapshot_of(finished_run) == before  # no lock left behind either


def test_a_mistyped_option_into_a_finished_run_is_refused_by_the_parser_and_changes_nothing(finished_run, capsys):
    from paa_toolkit.train import main

    before = snapshot_of(finished_run)
    with pytest.raises(SystemExit) as exit_info:
        main(["--output-dir", str(finished_run), "--max-iter", "10"])  # --max-iters, abbreviated
    assert exit_info.value.code == 2 and "unrecognized arguments: --max-iter 10" in capsys.readouterr().err
    assert snapshot_of(finished_run) == before


def test_an_unfinished_run_is_refused_too_naming_its_checkpoint(finished_run):
    (finished_run / "final_metrics.json").unlink()
    with pytest.raises(RunFolderError, match=r"holds an unfinished run \(checkpoint last\.pth\)"):
        claim_run_folder(finished_run, resume=False, overwrite=False)


def test_overwrite_deletes_the_old_runs_files_and_nothing_else(finished_run, caplog):
    (finished_run / "losses.png").write_bytes(b"png")
    with caplog.at_level(logging.WARNING):
        lock = claim_run_folder(finished_run, resume=False, overwrite=True)
    assert "--overwrite: deleting a finished run" in caplog.text
    assert sorted(p.name for p in finished_run.iterdir()) == [LOCK_FILE, "notes.txt"]  # trace/ gone with its files
    lock.release()
    assert sorted(p.name for p in finished_run.iterdir()) == ["notes.txt"]


def test_resume_and_overwrite_together_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--resume", "--overwrite"])
    assert "resume and overwrite exclude each other" in capsys.readouterr().err


def test_resume_where_no_checkpoint_was_written_starts_afresh_and_deletes_the_leftovers(tmp_path, caplog):
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace" / "iter_000000.pt").write_bytes(b"old")
    (tmp_path / "metrics.jsonl").write_text('{"kind": "trace", "iteration": 0}\n')
    with caplog.at_level(logging.WARNING):
        claim_run_folder(tmp_path, resume=True, overwrite=False).release()
    assert "starting from scratch" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_resume_with_only_corrupt_checkpoints_is_an_error_not_a_fresh_start(synthetic_root, tmp_path):
    (tmp_path / LAST).write_bytes(b"torn")
    (tmp_path / PREVIOUS).write_bytes(b"torn too")
    with pytest.raises(CheckpointError, match="no checkpoint of .* loads .*use --overwrite instead"):
        find_resume_checkpoint(tiny_config(synthetic_root, tmp_path, resume="auto"))


@pytest.mark.parametrize("resume", ["auto", "the run folder"])  # --resume, or --resume RUN --output-dir RUN
def test_resume_moves_a_planted_last_checkpoint_aside_so_that_the_fallback_survives_the_next_checkpoints(
    synthetic_root, finished_run, caplog, resume
):
    marker = finished_run / "command_ran"
    torch.save({"x": PlantedCommand(marker)}, finished_run / LAST)  # a planted pickle in place of iteration 4
    planted = (finished_run / LAST).read_bytes()
    resume = "auto" if resume == "auto" else str(finished_run)
    with caplog.at_level(logging.WARNING):
        path, state = find_resume_checkpoint(tiny_config(synthetic_root, finished_run, resume=resume))
    assert (path.name, state["iteration"]) == (PREVIOUS, 2) and not marker.exists()
    assert f"moved {finished_run / LAST}, which failed verification, to {finished_run / CORRUPT}" in caplog.text
    assert (finished_run / CORRUPT).read_bytes() == planted and not (finished_run / LAST).exists()
    for iteration in (3, 4):  # the next two checkpoints: previous.pth verifies after each
        save_checkpoint({**state, "iteration": iteration}, finished_run)
        assert load_checkpoint(finished_run / PREVIOUS)["iteration"] == iteration - 1


def test_stale_temporaries_of_the_runs_files_are_removed_and_other_files_kept(tmp_path):
    stale = [
        tmp_path / ".last.pth.1a2b3c4d.tmp",
        tmp_path / ".metrics.jsonl.00ff00ff.tmp",
        tmp_path / "trace" / ".iter_000004.pt.deadbeef.tmp",
    ]
    kept = [tmp_path / ".notes.txt.1a2b3c4d.tmp", tmp_path / "trace" / ".last.pth.1a2b3c4d.tmp"]
    (tmp_path / "trace").mkdir()
    for path in stale + kept:
        path.write_bytes(b"x")
    claim_run_folder(tmp_path, resume=True, overwrite=False).release()
    assert [p.exists() for p in stale] == [False] * 3 and all(p.exists() for p in kept)


def test_a_folder_that_cannot_be_created_is_named_in_the_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=f"cannot create the run folder {tmp_path / 'file' / 'run'}: "):
        claim_run_folder(tmp_path / "file" / "run", resume=False, overwrite=False)


# ---- the lock ------------------------------------------------------------------------------------
def test_a_second_training_on_a_locked_folder_stops_naming_the_holders_pid(synthetic_root, tmp_path):
    holder = acquire_lock(tmp_path)  # a live process (this one) trains there
    with pytest.raises(RunFolderError, match=rf"{tmp_path} is in use by another training: PID {os.getpid()} on "):
        train(tiny_config(synthetic_root, tmp_path), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]  # nothing written
    holder.release()


def test_a_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    pid = dead_pid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": time.time()}))
    with caplog.at_level(logging.WARNING):
        lock = acquire_lock(tmp_path)
    assert f"taking over the lock of PID {pid}, which no longer runs" in caplog.text
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere", "since": time.time()}))
    with pytest.raises(RunFolderError, match=rf"on elsewhere, .*delete {tmp_path / LOCK_FILE}"):
        acquire_lock(tmp_path)


def test_an_empty_lock_file_is_taken_over_only_once_it_is_old(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("")  # its writer died between creating and filling it, or is filling it right now
    with pytest.raises(RunFolderError, match="being claimed by another process right now"):
        acquire_lock(tmp_path)
    os.utime(lock, (time.time() - 120, time.time() - 120))
    assert acquire_lock(tmp_path).path == lock


def test_the_lock_is_released_when_training_ends(reference_run):
    assert not (reference_run[0] / LOCK_FILE).exists()

"""Specifications of checkpoints that survive a kill mid-write: digest, fallback, no temporary files."""

import argparse
import io
import os
import re
import zipfile

import pytest
import torch

from paa_toolkit.engine.checkpoint import (
    LAST,
    PREVIOUS,
    CheckpointError,
    find_resumable,
    load_checkpoint,
    save_checkpoint,
)

from planted_code import PlantedCommand  # tests/planted_code.py


@pytest.mark.parametrize("kept", [0.001, 0.0125, 0.5, 0.9999])  # 0.0125: torch raises "OSError: Invalid argument"
def test_torn_last_checkpoint_is_never_resumed_from(tmp_path, kept):
    save_checkpoint({"iteration": 1, "w": torch.ones(100_000)}, tmp_path)
    save_checkpoint({"iteration": 2, "w": torch.full((100_000,), 2.0)}, tmp_path)
    data = (tmp_path / LAST).read_bytes()
    (tmp_path / LAST).write_bytes(data[: round(len(data) * kept)])  # killed mid-write (without the atomic rename)
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


def checkpoint_with_empty_pickle(path):
    """A torch zip archive whose pickle (``data.pkl``) is empty: it stops before its first opcode."""
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"" if name.endswith("/data.pkl") else source.read(name))


PICKLED = "holds pickled Python objects \\({}\\), which are not loaded because unpickling can run code"


@pytest.mark.parametrize(
    "case, reason",
    [
        (
            "planted_shell_command",
            PICKLED.format(rf"{os.system.__module__}\.system"),
        ),  # "unsupported GLOBAL posix.system"
        ("unlisted_class", PICKLED.format(r"argparse\.Namespace")),  # "Unsupported global: GLOBAL argparse.Namespace"
        ("empty_pickle", "EOFError"),
    ],
)
def test_an_unsafe_or_broken_checkpoint_is_refused_in_one_line_without_torchs_unsafe_advice(tmp_path, case, reason):
    path, marker = tmp_path / LAST, tmp_path / "command_ran"
    if case == "empty_pickle":
        checkpoint_with_empty_pickle(path)
    else:
        torch.save({"x": PlantedCommand(marker) if case == "planted_shell_command" else argparse.Namespace()}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert re.fullmatch(
        rf"checkpoint {re.escape(str(path))} is unreadable \(torn or not a checkpoint\): {reason}", message
    ), message
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists()

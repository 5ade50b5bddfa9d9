"""Specifications of checkpoints that survive a kill mid-write: digest, fallback, no temporary files."""
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

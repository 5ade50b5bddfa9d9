"""The few torch.distributed helpers the library needs; all are no-ops in a single process.

Multi-process training is started by ``torchrun``, which sets ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every process::

    torchrun --standalone --nproc_per_node 2 -m paa_toolkit.train ...

:func:`process_group_from_env` turns that environment into a process group (NCCL on GPUs, Gloo on
CPU) and destroys it again at exit; the other helpers (:func:`all_reduce_sum`,
:func:`all_gather_object`, :func:`broadcast_object`, :func:`from_rank_zero`,
:func:`rank_zero_first`) just return their input (or call the function) when no group is
initialised, so the same code runs in one process.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_writer() -> bool:
    """Only rank 0 writes files, logs metrics and shows progress."""
    return rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / compiled wrapper (for state dicts and the model's own methods)."""
    return getattr(model, "module", model)


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


#: the device names of ``--device``
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def device_name_problem(name: str) -> str | None:
    """What is wrong with a ``--device`` value (None: nothing); N of ``cuda:N`` is a number >= 0."""
    kind, colon, index = str(name).partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (colon and kind != "cuda"):
        return f"unknown value {name!r}; valid choices: {DEVICE_CHOICES}"
    if colon and not re.fullmatch(r"[0-9]+", index):
        return f"malformed index in {name!r}: N of cuda:N is a device number >= 0 (cuda:0, cuda:1, ...)"
    return None


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else CPU. Under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``."""
    problem = device_name_problem(name)
    if problem:
        raise ValueError(f"device: {problem}")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(
            f"device {name!r} requested but this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}"
        )
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        device = torch.device("cuda", local_rank())
    return device


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, Gloo otherwise (CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group_from_env(device: torch.device) -> Iterator[bool]:
    """Initialise the process group described by torchrun's environment; destroy it on exit.

    Yields True when this call created the group. Does nothing (yields False) in a single process
    or when a group already exists (then its creator destroys it).
    """
    if is_distributed() or not launched_by_torchrun():
        yield False
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
            "start multi-process training with torchrun"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method="env://")
    try:
        yield True
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def rank_zero_first(fn: Callable[[], T]) -> T:
    """``fn()`` in every process, rank 0 first, then each machine's local rank 0, then the rest.

    For work that writes a shared cache (e.g. building the synthetic dataset): the later calls find
    it complete, whether the machines share a filesystem or not.
    """
    if not is_distributed():
        return fn()
    result = fn() if rank() == 0 else None
    barrier()
    if rank() != 0 and local_rank() == 0:
        result = fn()
    barrier()
    if local_rank() != 0:
        result = fn()
    return result  # type: ignore[return-value]


def all_reduce_sum(value: Tensor) -> Tensor:
    """Sum of ``value`` over all processes (a copy; the input is untouched)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def mean_over_processes(value: Tensor) -> Tensor:
    """``all_reduce_sum(value) / world_size()``: the reference code's per-GPU average normaliser."""
    return all_reduce_sum(value) / world_size()


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` in every process (picklable objects, e.g. CPU tensors)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def from_rank_zero(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 only; its result — or the exception it raised — in every process.

    For decisions that must agree across processes (which checkpoint to resume from).
    """
    if not is_distributed():
        return fn()
    outcome: tuple[bool, Any] | None = None
    if rank() == 0:
        try:
            outcome = (True, fn())
        except Exception as e:  # re-raised everywhere, so no process waits for the others forever
            outcome = (False, e)
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` in every process (the others pass anything, e.g. None)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


__all__ = [
    "DEVICE_CHOICES",
    "all_gather_object",
    "all_reduce_sum",
    "backend_for",
    "barrier",
    "broadcast_object",
    "device_name_problem",
    "from_rank_zero",
    "is_distributed",
    "is_writer",
    "launched_by_torchrun",
    "local_rank",
    "mean_over_processes",
    "process_group_from_env",
    "rank",
    "rank_zero_first",
    "resolve_device",
    "unwrap",
    "world_size",
]

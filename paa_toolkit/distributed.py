"""The few torch.distributed helpers the library needs; all are no-ops in a single process."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


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

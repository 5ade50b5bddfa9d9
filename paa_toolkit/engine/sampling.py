"""Exact resume: the data order, each sample's augmentation and every RNG as functions of the seed.

The batch of iteration ``i`` — and, through its ``sample_seed``, the augmentation of each image — is
a pure function of ``(seed, i)`` (:class:`DeterministicBatchSampler`, :class:`SeededSamples`), and
checkpoints hold every global RNG (:func:`rng_state`): a run resumed at iteration k ends with the same
weights as an uninterrupted one (CPU, fixed seed). Evaluation and tracing run inside
:func:`rng_untouched`, so they never shift the training RNG.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class DeterministicBatchSampler(Sampler):
    """Batches for iterations ``start..end-1`` as lists of ``(index, sample_seed)``.

    Samples form one stream, epoch after epoch, each epoch a permutation drawn from ``(seed,
    epoch)``; iteration ``i`` takes stream positions ``[i·B, (i+1)·B)`` (B = batch × world size,
    this rank's slice of it). So the batch of any iteration — and, through ``sample_seed``, its
    augmentation — is known without replaying the run: resuming mid-epoch is exact.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start: int, end: int, rank: int = 0, world_size: int = 1
    ):
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.end, self.rank, self.world_size = start, end, rank, world_size
        self._perm: tuple[int, Tensor] | None = None

    def permutation(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        first = (iteration * self.world_size + self.rank) * self.batch_size
        out = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.n)
            sample_seed = int(np.random.SeedSequence([self.seed, position, 1]).generate_state(1)[0])
            out.append((int(self.permutation(epoch)[offset]), sample_seed))
        return out

    def state(self, iteration: int) -> dict[str, int]:
        """Where the stream stands before ``iteration`` (saved in checkpoints, for reference)."""
        epoch, offset = divmod(iteration * self.world_size * self.batch_size, self.n)
        return {"seed": self.seed, "iteration": iteration, "epoch": epoch, "offset": offset}

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return (self.batch(i) for i in range(self.start, self.end))

    def __len__(self) -> int:
        return max(self.end - self.start, 0)


class SeededSamples(Dataset):
    """``dataset[index]`` with every RNG seeded from ``sample_seed`` (and the caller's RNG untouched),
    so augmentation depends on the sample's place in the stream, not on workers or history."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also re-seed CUDA's (outside the fork) and, before
            # CUDA starts, record a stack trace per sample for its lazy seeding (0.08 ms a call, measured)
            torch.random.default_generator.manual_seed(sample_seed)
            random.seed(sample_seed)
            np.random.seed(sample_seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's, torch's (and CUDA's, once used) global RNG states, as plain values and tensors."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@contextlib.contextmanager
def rng_untouched(device: torch.device):
    """Evaluation and tracing must not shift the training RNG (or resumed runs would differ)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)


__all__ = [
    "DeterministicBatchSampler",
    "SeededSamples",
    "rng_state",
    "rng_untouched",
    "seed_everything",
    "set_rng_state",
]

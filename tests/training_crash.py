"""A crash or a signal between training iterations, for the resume tests (imported by test_engine_loop
and test_faults)."""

import os
from collections.abc import Callable

from torch import nn


class TrainingCrash(Exception):
    """Raised by :func:`crash_at_training_call`: stands for a process dying mid-run."""


def at_training_call(model: nn.Module, call: int, action: Callable[[], None]) -> nn.Module:
    """Run ``action()`` at the start of the ``call``-th training-mode forward of ``model``."""
    count = {"n": 0}

    def hook(module, inputs):
        if module.training:
            count["n"] += 1
            if count["n"] == call:
                action()

    model.register_forward_pre_hook(hook)
    return model


def crash_at_training_call(model: nn.Module, call: int) -> nn.Module:
    """Make the ``call``-th training-mode forward of ``model`` raise :class:`TrainingCrash`."""

    def crash():
        raise TrainingCrash()

    return at_training_call(model, call, crash)


def signal_at_training_call(model: nn.Module, call: int, signum: int, times: int = 1) -> nn.Module:
    """The ``call``-th training-mode forward sends ``signum`` to this process ``times`` times (Ctrl-C, kill)."""
    return at_training_call(model, call, lambda: [os.kill(os.getpid(), signum) for _ in range(times)])

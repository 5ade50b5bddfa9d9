"""A crash between training iterations, for the resume tests (imported by test_engine_loop and test_faults)."""
from torch import nn


class TrainingCrash(Exception):
    """Raised by :func:`crash_at_training_call`: stands for a process dying mid-run."""


def crash_at_training_call(model: nn.Module, call: int) -> nn.Module:
    """Make the ``call``-th training-mode forward of ``model`` raise :class:`TrainingCrash`."""
    count = {"n": 0}

    def hook(module, inputs):
        if module.training:
            count["n"] += 1
            if count["n"] == call:
                raise TrainingCrash()

    model.register_forward_pre_hook(hook)
    return model

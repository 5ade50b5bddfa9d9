"""Ctrl-C and SIGTERM during training: finish the iteration, write a checkpoint, stop.

    with StopOnSignal(device) as stop:
        ...                                      # set-up: a signal acts as usual
        stop.arm()
        for ...:
            ...                                  # one whole iteration: step, log, checkpoint, eval
            if stop.requested():                 # SIGINT / SIGTERM arrived meanwhile
                ...                              # checkpoint at this iteration, raise TrainingInterrupted
        stop.disarm()

While armed, the first SIGINT or SIGTERM only sets a flag, so no step is cut in half (an optimiser
step half applied could not be resumed exactly); the loop checks it between iterations. A second one
raises ``KeyboardInterrupt`` at once (the checkpoints already written are complete: they are
written atomically). Under torchrun the processes agree (one all-reduce per iteration), so all of
them stop after the same iteration. Outside the main thread, signals are left alone; leaving the
``with`` block puts the previous handlers back.
"""

from __future__ import annotations

import logging
import signal
import threading

import torch

from .. import distributed

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint at ``iteration``."""

    def __init__(self, signum: int | None, iteration: int, checkpoint):
        what = signal.Signals(signum).name if signum else "a signal to another process"
        super().__init__(f"{what} after iteration {iteration}; checkpoint {checkpoint} written")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


class StopOnSignal:
    """While active, SIGINT / SIGTERM request a stop at the next iteration boundary (see the module docstring)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        return self

    def __exit__(self, *exc) -> None:
        self.disarm()

    def arm(self) -> None:
        """From now on, a signal requests a stop instead of interrupting."""
        if threading.current_thread() is threading.main_thread() and not self._previous:
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def disarm(self) -> None:
        """The handlers from before :meth:`arm` again."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopped at once")
        self.signum = signum
        log.warning(
            "%s: stopping after this iteration, with a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def requested(self) -> bool:
        """True once a signal arrived (in any process of the group)."""
        if not distributed.is_distributed():
            return self.signum is not None
        flag = torch.tensor([float(self.signum is not None)], device=self.device)
        return bool(distributed.all_reduce_sum(flag).item() > 0)


__all__ = ["SIGNALS", "StopOnSignal", "TrainingInterrupted"]

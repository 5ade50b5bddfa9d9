"""Reading torch files without running their code: ``torch.load(weights_only=True)`` and one-line errors.

A checkpoint, a trace or a backbone state dict is read with ``weights_only=True``: a file that holds pickled
Python objects is refused, never unpickled. When torch refuses or fails, :func:`load_error` says why in one
line, without torch's advice to retry with the full unpickler (advice that would run any code the file holds).
Below ``model/`` and ``engine/``, so that both read files the same way.
"""

from __future__ import annotations

import errno
import pickle
import re
from pathlib import Path
from typing import Any

import torch

#: how torch names a global it refuses to unpickle: ``Unsupported global: GLOBAL argparse.Namespace was not an
#: allowed global …``, or for a module it blocks, ``Trying to load unsupported GLOBAL posix.system whose module …``
PICKLED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|Trying to load unsupported GLOBAL) (\S+)")


def _unwrapped(error: BaseException) -> BaseException:
    """The error a failed weights-only load raised inside torch: torch re-raises it as "Weights only load
    failed. … Re-running `torch.load` with `weights_only` set to `False` will likely succeed …", advice
    that would run any code the file holds."""
    if isinstance(error, pickle.UnpicklingError) and error.__context__ is not None:
        return error.__context__
    return error


def pickled_global(error: BaseException) -> str | None:
    """The pickled global (``posix.system``) for which ``torch.load(weights_only=True)`` refused a file, if any."""
    found = PICKLED_GLOBAL.search(str(_unwrapped(error)))
    return found[1] if found else None


def load_error(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line and without torch's advice to retry with the
    unsafe full unpickler."""
    name = pickled_global(error)
    if name is not None:
        return f"holds pickled Python objects ({name}), which are not loaded because unpickling can run code"
    error = _unwrapped(error)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__  # a pickle that stops early: a bare EOFError


class UnreadableTorchFile(ValueError):
    """Torch could not read a file's bytes: torn, foreign, or holding pickled objects. The message is
    :func:`load_error`'s one line; ``pickled`` names the refused global (``posix.system``), if that was why."""

    def __init__(self, reason: str, pickled: str | None):
        super().__init__(reason)
        self.pickled = pickled


#: errors of the system, not of the file's bytes: reading again elsewhere (or later) may succeed
OS_FAULTS = frozenset({errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT, errno.EISDIR, errno.ENXIO, errno.EBUSY})


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, its failures sorted into the system's and the file's.

    The one reader of checkpoints, traces and backbone weights; each caller words its own message.

    Args:
        path: the file to read.
        map_location: where the tensors go.

    Returns:
        What the file holds: tensors in dicts / lists / tuples and plain values, never an unpickled object.

    Raises:
        OSError: the system's fault (errno in :data:`OS_FAULTS`: permission, I/O, ...), torch's error unchanged.
        UnreadableTorchFile: the file's fault — torn (some cuts make torch raise ``OSError: [Errno 22] Invalid
            argument``), not a torch file, or holding pickled objects.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        if e.errno in OS_FAULTS:
            raise
        raise UnreadableTorchFile(load_error(e), pickled_global(e)) from None
    except Exception as e:  # pickled objects, a torn zip archive, not a torch file ...
        raise UnreadableTorchFile(load_error(e), pickled_global(e)) from None


__all__ = ["OS_FAULTS", "PICKLED_GLOBAL", "UnreadableTorchFile", "load_error", "load_tensors", "pickled_global"]

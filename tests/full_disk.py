"""A disk that fills up, for the failed-write tests (imported by test_engine_run_files and test_faults):
``monkeypatch.setattr(os, "fdopen", fdopen_on_a_full_disk(...))``."""

import errno
import io
import os
from collections.abc import Callable


class FullDiskFile(io.RawIOBase):
    """A file whose writes raise ``OSError(ENOSPC)`` once ``room`` bytes are written."""

    def __init__(self, f, room: int):
        super().__init__()
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.f.fileno()

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        try:
            super().close()  # flushes, so self.f must still be open
        finally:
            self.f.close()


def fdopen_on_a_full_disk(room: int = 0, full: Callable[[str], bool] = lambda path: True):
    """An ``os.fdopen`` whose files opened for writing at a path for which ``full(path)`` is true have ``room``
    bytes left (Linux: the path is read from ``/proc/self/fd``)."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        if "w" in mode and full(os.readlink(f"/proc/self/fd/{fd}")):
            return FullDiskFile(f, room)
        return f

    return fdopen

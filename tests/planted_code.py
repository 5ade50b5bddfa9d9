"""A crafted file's payload, for the safe-loading tests (imported by test_engine_run_files and
test_engine_checkpoint): ``torch.save({"x": PlantedCommand(marker)}, path)``."""

import os
import shlex
from pathlib import Path


class PlantedCommand:
    """Unpickling this runs ``os.system("touch marker")``; pickled as ``posix.system``, which torch's safe
    loader refuses as "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)

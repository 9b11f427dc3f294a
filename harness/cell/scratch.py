"""The cell's private scratch directory (ivshmem backing files, the QMP socket): one owner.

The harness creates it and removes it, after the VM is stopped *and* the host has read the guest's
bytes from the backing files. The guardian (harness/vm/guardian.py) removes it only when the harness
itself is gone, as a last resort, so a kill of a hung guest can no longer pull the files away from the
host checks.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType


class Scratch:
    def __init__(self, prefix: str = "p2p-hil-") -> None:
        self._prefix = prefix
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError("scratch directory used before create() or after remove()")
        return self._path

    def create(self) -> Path:
        self._path = Path(tempfile.mkdtemp(prefix=self._prefix))
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None

    def __enter__(self) -> Path:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

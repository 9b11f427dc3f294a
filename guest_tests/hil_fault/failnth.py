"""The calling thread's /proc/thread-self/fail-nth (fs/proc/base.c proc_fail_nth_write/read).

Writing N makes the N-th allocation that passes the ignore checks (see knobs.py) fail in this thread
(lib/fault-inject.c should_fail_ex: every counted site decrements current->fail_nth; the one that
takes it to 0 fails). Reading it back after the operation: 0 means the fault was injected; N minus
the number of sites the operation reached otherwise - then the operation has fewer than N sites and
the sweep of it is complete. The value left is cleared before anything else runs in the thread.

The file names the thread that opened it: open it in the thread that runs the operations.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

FAIL_NTH = "/proc/thread-self/fail-nth"


class FailNth:
    """One thread's fail-nth, opened once; `arm(n)` and `left()` are one syscall each."""

    def __init__(self, path: str = FAIL_NTH) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._zero = b"0"
        # Written now, so reading into it later cannot page-fault while a fault is still armed (a
        # failed page-table allocation there would turn the read into EFAULT).
        self._buf = bytearray(b" " * 32)

    def arm(self, n: int) -> None:
        os.write(self.fd, str(n).encode())

    def arm_bytes(self, encoded: bytes) -> None:
        """arm() with the number already encoded: nothing left to allocate once armed."""
        os.write(self.fd, encoded)

    def left(self) -> int:
        count = os.preadv(self.fd, [self._buf], 0)
        return int(bytes(self._buf[:count]))

    def disarm(self) -> None:
        os.write(self.fd, self._zero)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

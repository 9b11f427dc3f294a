"""Cache directory mechanics: cross-process locks, atomic directory creation, small JSON records.

Everything served from the cache is either a directory renamed into place when complete, or a build
directory with a completion record written last: an interrupted run never leaves something that a
later run would mistake for a finished result.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.paths import cache_dir


def kernels_root() -> Path:
    return cache_dir() / "kernels"


def apt_root() -> Path:
    return cache_dir() / "apt"


def ccache_root() -> Path:
    return cache_dir() / "ccache"


@contextlib.contextmanager
def locked(name: str, *, progress: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on kernels/locks/<name>.lock (released by the kernel if we die)."""
    lock_dir = kernels_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress is not None:
                progress(f"waiting for another p2p-hil run that holds the {name} lock")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp directory next to `final`; rename it to `final` only if the block succeeds.

    Call with the lock for `final` held. Leftovers of earlier interrupted attempts are removed first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

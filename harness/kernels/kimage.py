"""KernelImage: what every other layer gets from harness.kernels (kept apart to avoid import cycles)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[str], None]


@dataclass(frozen=True)
class KernelImage:
    """A bootable kernel.

    spec          the spec as the user wrote it ("debian:7.2", "src:debian-7.2", ...)
    version       uname -r of the kernel
    image         bzImage / vmlinuz to boot
    modules_root  unpacked tree whose usr/lib/modules/<version>/ holds the modules (Debian images);
                  `vng --run <modules_root>/usr/lib/modules/<version>/vmlinuz` finds them there
    build_dir     prepared kernel build tree (.config, Module.symvers) for M= module builds
    config        the kernel's .config, when known
    source        identity of what it was made from (package=version, tree commit + diff hash, ...)
    """

    spec: str
    version: str
    image: Path
    modules_root: Path | None = None
    build_dir: Path | None = None
    config: Path | None = None
    source: str = ""

"""What the kernel says about live dma-bufs: /proc/self/fdinfo/<fd> and debugfs dma_buf/bufinfo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BUFINFO = Path("/sys/kernel/debug/dma_buf/bufinfo")


@dataclass(frozen=True, slots=True)
class BufInfoEntry:
    size: int
    count: int  # file references
    exp_name: str  # the exporter's KBUILD_MODNAME ("vfio_pci_core")
    ino: int  # the dma-buf file's inode number: matches os.fstat(fd).st_ino
    name: str


def parse_fdinfo(text: str) -> dict[str, str]:
    """`key:\\tvalue` lines (dma_buf_show_fdinfo adds size, count, exp_name, name to pos/flags/...)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def fdinfo(fd: int) -> dict[str, str]:
    return parse_fdinfo(Path(f"/proc/self/fdinfo/{fd}").read_text())


def parse_bufinfo(text: str) -> list[BufInfoEntry]:
    """The per-buffer lines of bufinfo (drivers/dma-buf/dma-buf.c, dma_buf_debug_show):
    "%08zu\\t%08x\\t%08x\\t%08ld\\t%s\\t%08llu\\t%s" = size, flags, mode, count, exp_name, ino, name.
    Fence and attachment lines start with a tab and are skipped.
    """
    entries = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 7 or not parts[0].isdigit():
            continue
        size, _flags, _mode, count, exp_name, ino, name = parts
        entries.append(BufInfoEntry(int(size), int(count), exp_name, int(ino), name))
    return entries


def bufinfo() -> list[BufInfoEntry] | None:
    """Every dma-buf in the system, or None without debugfs."""
    try:
        return parse_bufinfo(BUFINFO.read_text())
    except OSError:
        return None


def fd_inode(fd: int) -> int:
    return os.fstat(fd).st_ino

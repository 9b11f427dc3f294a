"""The leak invariants as facts: what exists before a step must be exactly what exists after a failed one.

A snapshot is a flat mapping of named facts (each a hashable value); `changes` compares two of them.
The collectors below read what the kernel exposes: debugfs dma_buf/bufinfo (every dma-buf with its file
reference count and attached devices), the process's fds, the importer modules' STATUS per handle, and
on a kernel with DMA-API debugging (the debug variant) its error count and its live mappings per device.

Why the DMA-API facts: a mapping without an IOVA (dma-direct, iommu=pt) leaves nothing else to measure
when an error path forgets to unmap it, and dma-debug prints only its first error (num_errors = 1), so
after one WARN every later DMA-API error is silent unless its count is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from hil_importer.bufinfo import parse_attachments
from hil_vfio.dmabuf import BUFINFO, parse_bufinfo

Facts = dict[str, object]
FD_DIR = Path("/proc/self/fd")
DMA_API = Path("/sys/kernel/debug/dma-api")


def changes(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    """Each fact that differs, appeared or vanished, as "name: before -> after" (pure)."""
    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, "absent"), after.get(key, "absent")
        if old != new:
            out.append(f"{key}: {old} -> {new}")
    return out


def bufinfo_facts(text: str) -> Facts:
    """Per dma-buf: size, file references and attached devices; and how many there are (pure)."""
    entries = parse_bufinfo(text)
    attached = parse_attachments(text)
    facts: Facts = {"dma-bufs": len(entries)}
    for entry in entries:
        devices = ", ".join(attached.get(entry.ino, [])) or "none"
        facts[f"dma-buf ino {entry.ino} ({entry.exp_name})"] = (
            f"size {entry.size}, {entry.count} refs, attached: {devices}"
        )
    return facts


def read_bufinfo_facts() -> Facts:
    try:
        return bufinfo_facts(BUFINFO.read_text())
    except OSError as exc:
        return {"dma-bufs": f"unreadable: {exc}"}


def fd_facts() -> Facts:
    """The process's open fds and what each refers to (the listing's own fd is gone when read)."""
    facts: Facts = {}
    for name in os.listdir(FD_DIR):
        try:
            facts[f"fd {name}"] = os.readlink(FD_DIR / name)
        except OSError:
            continue
    return facts


def dma_api_entry_facts(dump: str) -> Facts:
    """Live DMA-API mappings per device from dma-api/dump (kernel/dma/debug.c dump_show: "<driver>
    <device> <type> idx ..."), virtio's left out: its queues map and unmap all the time (pure)."""
    counts: dict[str, int] = {}
    for line in dump.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("virtio"):
            continue
        key = f"dma-api mappings of {fields[1]} ({fields[0]})"
        counts[key] = counts.get(key, 0) + 1
    return dict(counts)


def dma_api_dump_lines(limit: int, root: Path = DMA_API) -> list[str]:
    """The first `limit` live mappings dma-debug lists, virtio's left out (as in the facts)."""
    try:
        lines = (root / "dump").read_text().splitlines()
    except OSError as exc:
        return [f"unreadable: {exc}"]
    return [line for line in lines if line.split()[:1] and not line.startswith("virtio")][:limit]


def dma_api_facts(root: Path = DMA_API) -> Facts:
    """DMA-API debugging's error count and live mappings; nothing on a kernel without it."""
    if not root.is_dir():
        return {}
    try:
        facts: Facts = {"dma-api errors": int((root / "error_count").read_text())}
        facts.update(dma_api_entry_facts((root / "dump").read_text()))
    except (OSError, ValueError) as exc:
        return {"dma-api": f"unreadable: {exc}"}
    return facts


def system_facts(extra: Callable[[], Facts] | None = None) -> Facts:
    facts = read_bufinfo_facts()
    facts.update(fd_facts())
    facts.update(dma_api_facts())
    if extra is not None:
        facts.update(extra())
    return facts

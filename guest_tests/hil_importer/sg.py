"""DMA lists as the importer modules report them, and the ioctl plumbing both drivers share."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from hil_vfio.device import ioctl

from hil_importer import abi

DEFAULT_CAPACITY = 64


@dataclass(frozen=True, slots=True)
class SgEntry:
    dma_addr: int
    length: int

    def __str__(self) -> str:
        return f"{self.dma_addr:#x}+{self.length:#x}"


@dataclass(frozen=True, slots=True)
class DmaList:
    entries: tuple[SgEntry, ...]
    orig_nents: int  # 0: the exporter built no CPU list (dma_buf_phys_vec_to_sgt)

    @property
    def total(self) -> int:
        return sum(e.length for e in self.entries)

    def describe(self) -> list[str]:
        return [str(e) for e in self.entries]


@dataclass(frozen=True, slots=True)
class Version:
    abi_version: int
    features: int


def call(fd: int, request: int, obj: ctypes.Structure, what: str) -> None:
    ioctl(fd, request, ctypes.addressof(obj), what)


def read_version(fd: int) -> Version:
    v = abi.hil_version()
    call(fd, abi.HIL_IOC_VERSION, v, "HIL_IOC_VERSION")
    if v.abi_version != abi.ABI_VERSION:
        raise OSError(0, f"module ABI {v.abi_version}, this driver speaks {abi.ABI_VERSION}")
    return Version(int(v.abi_version), int(v.features))


def sg_request(
    fd: int, request: int, handle: int, what: str, *, direction: int = 0, capacity: int = DEFAULT_CAPACITY
) -> tuple[abi.hil_sg_request, DmaList]:
    """One MAP/SG-style ioctl: the request as the kernel filled it, and the entries it copied."""
    capacity = max(1, min(capacity, abi.SG_MAX_CAPACITY))
    entries = (abi.hil_sg_entry * capacity)()
    req = abi.hil_sg_request(handle=handle, direction=direction, capacity=capacity,
                             entries_ptr=ctypes.addressof(entries))  # fmt: skip
    call(fd, request, req, what)
    count = min(int(req.nents), capacity)
    dma = DmaList(tuple(SgEntry(int(e.dma_addr), int(e.len)) for e in entries[:count]), int(req.orig_nents))
    return req, dma


def full_list(
    first: tuple[abi.hil_sg_request, DmaList], again: Callable[[int], tuple[abi.hil_sg_request, DmaList]]
) -> DmaList:
    """`first`, or when the kernel had more entries than fitted, `again(nents)` (a SG-style re-read)."""
    req, dma = first
    if int(req.nents) > len(dma.entries):
        req, dma = again(int(req.nents))
        if int(req.nents) != len(dma.entries):
            raise OSError(
                0, f"the mapping changed while being read: {req.nents} != {len(dma.entries)} entries"
            )
    return dma


def open_node(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


class ModuleNode:
    """One open device node of a test module, ABI version checked; closing it makes the module
    release everything made through it (the modules clean up per open file)."""

    def __init__(self, node: str) -> None:
        self.fd = open_node(node)
        self.version: Version = read_version(self.fd)

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

"""QEMU's edu DMA engine (hw/misc/edu.c) driven from user space through its VFIO device fd.

The same register sequence as the kernel-side helper (guest_tests/modules/hil_edu.h), with its QEMU
quirks: registers at 0x80.. take 4- or 8-byte accesses only (8 here, one load or store each through the
mmap'd BAR0); writes are ignored while a transfer runs (so a leftover running transfer is EBUSY, not
silently reprogrammed); the transfer runs from a QEMU timer 100 ms of virtual time after the start
command and clears cmd bit 0 when done; and a range outside edu's 4 KiB buffer at 0x40000 makes QEMU
abort with hw_error(), so it is refused here before any register is written. A DMA the vIOMMU refuses
still "completes" on edu's side: only the bytes tell.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import time
from dataclasses import dataclass

from hil_iommufd.cdev import CdevDevice

REG_DMA_SRC = 0x80
REG_DMA_DST = 0x88
REG_DMA_CNT = 0x90
REG_DMA_CMD = 0x98
REGS_LEN = 0x100
CMD_RUN = 0x1
CMD_TO_PCI = 0x2  # edu's buffer -> the device address
BUFFER_ADDR = 0x40000
BUFFER_SIZE = 4096
TIMEOUT_S = 5.0
POLL_S = 0.001

PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2

FROM_ADDR = 0  # the device address -> edu's buffer
TO_ADDR = 1  # edu's buffer -> the device address
DIRECTION_NAMES = {FROM_ADDR: "addr->edu", TO_ADDR: "edu->addr"}


@dataclass(frozen=True, slots=True)
class Transfer:
    direction: int
    dma_addr: int
    length: int
    buf_offset: int
    elapsed_s: float  # start command to engine idle, measured here

    def describe(self) -> str:
        return (
            f"{DIRECTION_NAMES[self.direction]} {self.dma_addr:#x}+{self.length:#x} "
            f"(buffer +{self.buf_offset:#x}) {self.elapsed_s * 1000:.1f} ms"
        )


def check_transfer(direction: int, length: int, buf_offset: int) -> None:
    """EINVAL for what would make QEMU abort (edu_check_range) or is no transfer at all."""
    if direction not in DIRECTION_NAMES:
        raise OSError(errno.EINVAL, f"edu: direction {direction} is neither {FROM_ADDR} nor {TO_ADDR}")
    if length <= 0 or buf_offset < 0 or buf_offset + length > BUFFER_SIZE:
        raise OSError(errno.EINVAL, f"edu: [{buf_offset:#x}, +{length:#x}) is not inside its 4 KiB buffer")


class UserEdu:
    """edu's BAR0 mmap'd through its VFIO device, memory and bus mastering on until `close`."""

    def __init__(self, dev: CdevDevice) -> None:
        region = dev.region(0)
        if not region.flags & VFIO_REGION_INFO_FLAG_MMAP or region.size < REGS_LEN:
            raise OSError(errno.ENODEV, f"edu BAR0 of {dev.bdf} cannot be mmap'd: {region}")
        self._dev = dev
        self._saved_command = dev.config_read16(PCI_COMMAND)
        dev.config_write16(PCI_COMMAND, self._saved_command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)
        self._regs: mmap.mmap | None = mmap.mmap(
            dev.fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=region.offset
        )

    def close(self) -> None:
        if self._regs is not None:
            regs, self._regs = self._regs, None
            regs.close()
            if self._dev.fd >= 0:
                self._dev.config_write16(PCI_COMMAND, self._saved_command)

    def _reg(self, offset: int) -> ctypes.c_uint64:
        if self._regs is None:
            raise OSError(errno.EBADF, "edu: closed")
        # A ctypes integer over the mapping: .value is one 8-byte load; setting it is an 8-byte load then
        # an 8-byte store (CPython's Q_set keeps untouched bits), harmless on edu's DMA registers.
        return ctypes.c_uint64.from_buffer(self._regs, offset)

    def read64(self, offset: int) -> int:
        return int(self._reg(offset).value)

    def write64(self, offset: int, value: int) -> None:
        self._reg(offset).value = value

    def dma(
        self, direction: int, dma_addr: int, length: int, *, buf_offset: int = 0, timeout: float = TIMEOUT_S
    ) -> Transfer:
        """One transfer between edu's buffer and `dma_addr` (an IOVA of edu's IOAS); waits for idle."""
        check_transfer(direction, length, buf_offset)
        if self.read64(REG_DMA_CMD) & CMD_RUN:
            raise OSError(errno.EBUSY, "edu: an earlier transfer is still running")
        buf = BUFFER_ADDR + buf_offset
        to_addr = direction == TO_ADDR
        self.write64(REG_DMA_SRC, buf if to_addr else dma_addr)
        self.write64(REG_DMA_DST, dma_addr if to_addr else buf)
        self.write64(REG_DMA_CNT, length)
        started = time.monotonic()
        self.write64(REG_DMA_CMD, CMD_RUN | (CMD_TO_PCI if to_addr else 0))
        while self.read64(REG_DMA_CMD) & CMD_RUN:
            if time.monotonic() - started > timeout:
                raise OSError(errno.ETIMEDOUT, f"edu: transfer not done after {timeout:.1f} s")
            time.sleep(POLL_S)
        return Transfer(direction, dma_addr, length, buf_offset, time.monotonic() - started)

"""The iommufd importer as a VMM sets it up: an iommufd with one IOAS, the DMA engine (edu) bound to it
through its VFIO cdev and attached to the IOAS, and a scratch buffer of ordinary memory mapped into the
same IOAS (IOMMU_IOAS_MAP) so that tests can see what edu read, without trusting edu's buffer."""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass, field

from hil_iommufd.cdev import CdevDevice
from hil_iommufd.edu import BUFFER_SIZE, UserEdu
from hil_iommufd.iommufd import Iommufd, IovaRange

SCRATCH_IOVA = 0x1000_0000  # 256 MiB: far below the dma-buf mappings, outside every reserved region
SCRATCH_PAGES = 2  # page 0: what edu reads first (overwrites its buffer); page 1: what edu writes out


@dataclass
class IommufdImporter:
    iommufd: Iommufd
    edu_dev: CdevDevice
    edu: UserEdu
    hwpt_id: int
    devid: int
    iova_ranges: list[IovaRange]
    iova_alignment: int
    _scratch: mmap.mmap
    _scratch_view: ctypes.Array[ctypes.c_char] | None = None
    fds: list[int] = field(default_factory=list)  # dma-bufs to close after the IOAS is gone

    @classmethod
    def open(cls, edu_bdf: str) -> IommufdImporter:
        ctx = Iommufd()
        dev: CdevDevice | None = None
        try:
            dev = CdevDevice.open(edu_bdf)
            devid = dev.bind(ctx.fd)
            hwpt_id = dev.attach(ctx.ioas_id)
            ranges, alignment = ctx.iova_ranges()
            scratch = mmap.mmap(-1, SCRATCH_PAGES * mmap.PAGESIZE)
            view = (ctypes.c_char * len(scratch)).from_buffer(scratch)
            ctx.map_user(ctypes.addressof(view), len(scratch), SCRATCH_IOVA)
            edu = UserEdu(dev)
        except BaseException:
            if dev is not None:
                dev.close()
            ctx.close()
            raise
        return cls(ctx, dev, edu, hwpt_id, devid, ranges, alignment, scratch, view)

    def close(self) -> None:
        """edu quiet first, then the device (unbinds), then the IOAS (unmaps all), then the dma-bufs."""
        self.edu.close()
        self.edu_dev.close()
        self.iommufd.close()
        self._scratch_view = None
        self._scratch.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def scratch_iova(self, page: int) -> int:
        return SCRATCH_IOVA + page * mmap.PAGESIZE

    def scratch_read(self, page: int, length: int = BUFFER_SIZE) -> bytes:
        start = page * mmap.PAGESIZE
        return bytes(self._scratch[start : start + length])

    def scratch_write(self, page: int, data: bytes) -> None:
        start = page * mmap.PAGESIZE
        self._scratch[start : start + len(data)] = data

    def iova_allowed(self, iova: int, length: int) -> bool:
        return any(r.holds(iova, length) for r in self.iova_ranges)

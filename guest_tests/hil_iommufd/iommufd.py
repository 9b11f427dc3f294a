"""An iommufd context (/dev/iommu) with one IOAS: allocate, map a file (a dma-buf) or user memory,
unmap, list the allowed IOVA ranges. Errors are OSError with the kernel's errno."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from hil_vfio.device import ioctl_ref

from hil_iommufd import uapi

DEV_IOMMU = "/dev/iommu"
READ_WRITE = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE


@dataclass(frozen=True, slots=True)
class IovaRange:
    start: int
    last: int  # inclusive, as the kernel reports it

    def holds(self, iova: int, length: int) -> bool:
        return self.start <= iova and iova + length - 1 <= self.last


def map_file_request(
    ioas_id: int, fd: int, start: int, length: int, iova: int, flags: int
) -> uapi.iommu_ioas_map_file:
    return uapi.iommu_ioas_map_file(
        size=ctypes.sizeof(uapi.iommu_ioas_map_file),
        flags=flags,
        ioas_id=ioas_id,
        fd=fd,
        start=start,
        length=length,
        iova=iova,
    )


class Iommufd:
    """/dev/iommu opened, one IOAS allocated; `close` destroys the IOAS (unmapping all) and closes."""

    def __init__(self) -> None:
        self.fd = os.open(DEV_IOMMU, os.O_RDWR | os.O_CLOEXEC)
        try:
            alloc = uapi.iommu_ioas_alloc(size=ctypes.sizeof(uapi.iommu_ioas_alloc))
            ioctl_ref(self.fd, uapi.IOMMU_IOAS_ALLOC, alloc, "IOMMU_IOAS_ALLOC")
        except BaseException:
            os.close(self.fd)
            raise
        self.ioas_id = int(alloc.out_ioas_id)

    def __enter__(self) -> Iommufd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)  # releases the IOAS and every mapping in it

    def map_file(
        self,
        fd: int,
        start: int,
        length: int,
        iova: int,
        flags: int = READ_WRITE | uapi.IOMMU_IOAS_MAP_FIXED_IOVA,
    ) -> int:
        """IOMMU_IOAS_MAP_FILE of bytes [start, start + length) of `fd` at `iova`; returns the IOVA used."""
        req = map_file_request(self.ioas_id, fd, start, length, iova, flags)
        what = f"IOMMU_IOAS_MAP_FILE(fd {fd}, start {start:#x}, length {length:#x}, iova {iova:#x})"
        ioctl_ref(self.fd, uapi.IOMMU_IOAS_MAP_FILE, req, what)
        return int(req.iova)

    def map_user(self, address: int, length: int, iova: int) -> int:
        """IOMMU_IOAS_MAP of user memory at `address` (pinned by the kernel) at `iova`."""
        req = uapi.iommu_ioas_map(
            size=ctypes.sizeof(uapi.iommu_ioas_map),
            flags=READ_WRITE | uapi.IOMMU_IOAS_MAP_FIXED_IOVA,
            ioas_id=self.ioas_id,
            user_va=address,
            length=length,
            iova=iova,
        )
        ioctl_ref(self.fd, uapi.IOMMU_IOAS_MAP, req, f"IOMMU_IOAS_MAP(length {length:#x}, iova {iova:#x})")
        return int(req.iova)

    def unmap(self, iova: int, length: int) -> int:
        """IOMMU_IOAS_UNMAP; returns the bytes the kernel says it unmapped."""
        req = uapi.iommu_ioas_unmap(
            size=ctypes.sizeof(uapi.iommu_ioas_unmap), ioas_id=self.ioas_id, iova=iova, length=length
        )
        ioctl_ref(
            self.fd, uapi.IOMMU_IOAS_UNMAP, req, f"IOMMU_IOAS_UNMAP(iova {iova:#x}, length {length:#x})"
        )
        return int(req.length)

    def noiommu_get_pa(self, iova: int, length: int, flags: int = 0) -> tuple[int, int]:
        """IOMMU_IOAS_NOIOMMU_GET_PA (7.3, a no-IOMMU device's IOAS): (physical address behind `iova`,
        bytes physically contiguous from there, at most `length`)."""
        req = uapi.iommu_ioas_noiommu_get_pa(
            size=ctypes.sizeof(uapi.iommu_ioas_noiommu_get_pa),
            flags=flags,
            ioas_id=self.ioas_id,
            iova=iova,
            length=length,
        )
        what = f"IOMMU_IOAS_NOIOMMU_GET_PA(iova {iova:#x}, length {length:#x}, flags {flags:#x})"
        ioctl_ref(self.fd, uapi.IOMMU_IOAS_NOIOMMU_GET_PA, req, what)
        return int(req.out_phys), int(req.length)

    def iova_ranges(self, capacity: int = 16) -> tuple[list[IovaRange], int]:
        """(allowed IOVA ranges, IOVA alignment): they narrow with every device attached."""
        ranges = (uapi.iommu_iova_range * capacity)()
        req = uapi.iommu_ioas_iova_ranges(
            size=ctypes.sizeof(uapi.iommu_ioas_iova_ranges),
            ioas_id=self.ioas_id,
            num_iovas=capacity,
            allowed_iovas=ctypes.addressof(ranges),
        )
        ioctl_ref(self.fd, uapi.IOMMU_IOAS_IOVA_RANGES, req, "IOMMU_IOAS_IOVA_RANGES")
        count = min(int(req.num_iovas), capacity)
        found = [IovaRange(int(r.start), int(r.last)) for r in ranges[:count]]
        return found, int(req.out_iova_alignment)

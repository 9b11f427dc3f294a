"""A VFIO device opened through its character device (/dev/vfio/devices/vfioN) and bound to an iommufd:
the path iommufd-based VMMs use, instead of the legacy container and group.

drivers/vfio/device_cdev.c (v7.2): the fd gives no access until VFIO_DEVICE_BIND_IOMMUFD succeeded
(that call opens the device), then VFIO_DEVICE_ATTACH_IOMMUFD_PT puts the device's DMA into an IOAS.
A device without an IOMMU gets no cdev at all (drivers/vfio/vfio.h:361-363, vfio_device_add).
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from hil_vfio.device import ioctl_ref
from hil_vfio.uapi import VFIO_DEVICE_GET_REGION_INFO, VFIO_PCI_CONFIG_REGION_INDEX, vfio_region_info

from hil_iommufd import uapi

PCI_DEVICES = Path("/sys/bus/pci/devices")
DEV_VFIO_DEVICES = Path("/dev/vfio/devices")


class NoCdevError(RuntimeError):
    """The device has no VFIO cdev (not bound to vfio-pci, or no IOMMU)."""


def cdev_name(bdf: str) -> str:
    """vfioN from sysfs: the vfio_device registered for `bdf` is a child in its vfio-dev/ class dir."""
    directory = PCI_DEVICES / bdf / "vfio-dev"
    names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if len(names) != 1:
        raise NoCdevError(f"{directory}: expected one vfioN entry, found {names} (bound to vfio-pci?)")
    return names[0]


def cdev_path(bdf: str) -> Path:
    return DEV_VFIO_DEVICES / cdev_name(bdf)


@dataclass(frozen=True, slots=True)
class Region:
    index: int
    flags: int
    size: int
    offset: int  # of the region in the device fd (pread/pwrite/mmap)


@dataclass
class CdevDevice:
    """An open VFIO device cdev; bound and attached by the caller. `close` unbinds (and detaches)."""

    bdf: str
    path: Path
    fd: int
    devid: int | None = None
    pt_id: int | None = None

    @classmethod
    def open(cls, bdf: str) -> CdevDevice:
        path = cdev_path(bdf)
        if not path.exists():
            raise NoCdevError(f"{path} does not exist although sysfs names it (CONFIG_VFIO_DEVICE_CDEV off?)")
        return cls(bdf, path, os.open(path, os.O_RDWR | os.O_CLOEXEC))

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def bind(self, iommufd_fd: int) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD; returns the device id iommufd gave the bond."""
        bind = uapi.vfio_device_bind_iommufd(
            argsz=ctypes.sizeof(uapi.vfio_device_bind_iommufd), iommufd=iommufd_fd
        )
        ioctl_ref(self.fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind, f"VFIO_DEVICE_BIND_IOMMUFD({self.path.name})")
        self.devid = int(bind.out_devid)
        return self.devid

    def attach(self, pt_id: int) -> int:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT to an IOAS; returns the hw pagetable id the kernel made for it."""
        attach = uapi.vfio_device_attach_iommufd_pt(
            argsz=ctypes.sizeof(uapi.vfio_device_attach_iommufd_pt), pt_id=pt_id
        )
        ioctl_ref(
            self.fd, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach, f"VFIO_DEVICE_ATTACH_IOMMUFD_PT({pt_id})"
        )
        self.pt_id = int(attach.pt_id)
        return self.pt_id

    def region(self, index: int) -> Region:
        info = vfio_region_info(argsz=ctypes.sizeof(vfio_region_info), index=index)
        ioctl_ref(self.fd, VFIO_DEVICE_GET_REGION_INFO, info, f"VFIO_DEVICE_GET_REGION_INFO({index})")
        return Region(index, int(info.flags), int(info.size), int(info.offset))

    def config_read16(self, offset: int) -> int:
        base = self.region(VFIO_PCI_CONFIG_REGION_INDEX).offset
        value: int = struct.unpack("<H", os.pread(self.fd, 2, base + offset))[0]
        return value

    def config_write16(self, offset: int, value: int) -> None:
        base = self.region(VFIO_PCI_CONFIG_REGION_INDEX).offset
        written = os.pwrite(self.fd, struct.pack("<H", value), base + offset)
        if written != 2:
            raise OSError(0, f"short config write at {offset:#x}: {written} of 2 bytes")

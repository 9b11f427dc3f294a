"""Revoking a VFIO dma-buf from userspace: PCI_COMMAND.MEMORY through the VFIO config region, and the
VFIO device calls the other revocation paths need (device info and reset, the request eventfd).

vfio_pci_config.c (v7.2) vfio_basic_config_write(): a COMMAND write without MEMORY calls
vfio_pci_dma_buf_move(vdev, true) -- invalidate every importer, then wait (no timeout) until each has
unmapped -- and one with MEMORY back on calls vfio_pci_dma_buf_move(vdev, false), which invalidates
once more while un-revoking. So a revoke + restore is seen by an importer as two callbacks.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct

from hil_vfio import VfioDevice, region_info
from hil_vfio.device import ioctl, ioctl_ref
from hil_vfio.ioc import IO
from hil_vfio.uapi import (
    VFIO_BASE,
    VFIO_DEVICE_GET_INFO,
    VFIO_DEVICE_RESET,
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_TYPE,
)

PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 0x2


def read_command(dev: VfioDevice) -> int:
    offset = region_info(dev, VFIO_PCI_CONFIG_REGION_INDEX).offset + PCI_COMMAND
    value: int = struct.unpack("<H", os.pread(dev.device_fd, 2, offset))[0]
    return value


def set_memory_enable(dev: VfioDevice, enabled: bool) -> None:
    """Blocks while an importer that was told to unmap has not (that is the point of STUBBORN)."""
    offset = region_info(dev, VFIO_PCI_CONFIG_REGION_INDEX).offset + PCI_COMMAND
    command = read_command(dev)
    command = command | PCI_COMMAND_MEMORY if enabled else command & ~PCI_COMMAND_MEMORY
    written = os.pwrite(dev.device_fd, struct.pack("<H", command), offset)
    if written != 2:
        raise OSError(0, f"short config write: {written} of 2 bytes")


# --- VFIO_DEVICE_RESET ---------------------------------------------------------------------------
# include/uapi/linux/vfio.h (v7.2); VFIO ioctls are _IO (size 0), see hil_vfio.uapi.
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
VFIO_PCI_REQ_IRQ_INDEX = 4
VFIO_DEVICE_SET_IRQS = IO(VFIO_TYPE, VFIO_BASE + 10)


class vfio_device_info(ctypes.Structure):  # noqa: N801 (the C struct's name)
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("num_regions", ctypes.c_uint32),
        ("num_irqs", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class vfio_irq_set_eventfd(ctypes.Structure):  # noqa: N801
    """struct vfio_irq_set with one s32 eventfd as its data[]."""

    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("start", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
    )


def device_flags(dev: VfioDevice) -> int:
    info = vfio_device_info(argsz=ctypes.sizeof(vfio_device_info))
    ioctl_ref(dev.device_fd, VFIO_DEVICE_GET_INFO, info, "VFIO_DEVICE_GET_INFO")
    return int(info.flags)


def reset_device(dev: VfioDevice) -> None:
    """VFIO_DEVICE_RESET (vfio_pci_ioctl_reset: EINVAL when the device has no reset method)."""
    ioctl(dev.device_fd, VFIO_DEVICE_RESET, None, "VFIO_DEVICE_RESET")


def request_eventfd(dev: VfioDevice) -> int:
    """An eventfd that VFIO signals when the kernel wants the device back (unbind, hot-unplug).

    vfio_unregister_group_dev() calls vfio_pci_core_request() every 10 s until the device is released.
    The caller owns (closes) the returned fd; closing the device unregisters it.
    """
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    req = vfio_irq_set_eventfd(argsz=ctypes.sizeof(vfio_irq_set_eventfd),
                               flags=VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                               index=VFIO_PCI_REQ_IRQ_INDEX, start=0, count=1, fd=efd)  # fmt: skip
    try:
        ioctl_ref(dev.device_fd, VFIO_DEVICE_SET_IRQS, req, "VFIO_DEVICE_SET_IRQS(REQ)")
    except BaseException:
        os.close(efd)
        raise
    return efd


def wait_readable(fd: int, timeout: float) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)

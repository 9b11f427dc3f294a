"""The parts of include/uapi/linux/vfio.h (and linux/dma-buf.h) the tests use, mirrored with ctypes.

Every ioctl number is derived from the header's own macro expression; the values are pinned by the
host-side unit tests (tests/test_guest_vfio_uapi.py).
"""

from __future__ import annotations

import ctypes
from typing import Final

from hil_vfio.ioc import IO, IOW

# --- vfio.h: the ioctl type and base -------------------------------------------------------------
VFIO_TYPE: Final = ";"
VFIO_BASE: Final = 100
VFIO_API_VERSION: Final = 0

# Container (/dev/vfio/vfio) ioctls. The header documents _IOW/_IOR shapes in comments but defines
# all VFIO ioctls with _IO (size 0): the number must be _IO's.
VFIO_GET_API_VERSION: Final = IO(VFIO_TYPE, VFIO_BASE + 0)
VFIO_CHECK_EXTENSION: Final = IO(VFIO_TYPE, VFIO_BASE + 1)
VFIO_SET_IOMMU: Final = IO(VFIO_TYPE, VFIO_BASE + 2)
# Group (/dev/vfio/N) ioctls.
VFIO_GROUP_GET_STATUS: Final = IO(VFIO_TYPE, VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER: Final = IO(VFIO_TYPE, VFIO_BASE + 4)
VFIO_GROUP_UNSET_CONTAINER: Final = IO(VFIO_TYPE, VFIO_BASE + 5)
VFIO_GROUP_GET_DEVICE_FD: Final = IO(VFIO_TYPE, VFIO_BASE + 6)
# Device fd ioctls.
VFIO_DEVICE_GET_INFO: Final = IO(VFIO_TYPE, VFIO_BASE + 7)
VFIO_DEVICE_GET_REGION_INFO: Final = IO(VFIO_TYPE, VFIO_BASE + 8)
VFIO_DEVICE_RESET: Final = IO(VFIO_TYPE, VFIO_BASE + 11)
VFIO_DEVICE_FEATURE: Final = IO(VFIO_TYPE, VFIO_BASE + 17)

# IOMMU backends (VFIO_SET_IOMMU / VFIO_CHECK_EXTENSION arguments).
VFIO_TYPE1_IOMMU: Final = 1
VFIO_TYPE1v2_IOMMU: Final = 3
VFIO_NOIOMMU_IOMMU: Final = 8

VFIO_GROUP_FLAGS_VIABLE: Final = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET: Final = 1 << 1

VFIO_REGION_INFO_FLAG_READ: Final = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE: Final = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP: Final = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS: Final = 1 << 3

# enum { VFIO_PCI_BAR0_REGION_INDEX, ... }
VFIO_PCI_BAR0_REGION_INDEX: Final = 0
VFIO_PCI_BAR1_REGION_INDEX: Final = 1
VFIO_PCI_BAR2_REGION_INDEX: Final = 2
VFIO_PCI_BAR5_REGION_INDEX: Final = 5
VFIO_PCI_ROM_REGION_INDEX: Final = 6
VFIO_PCI_CONFIG_REGION_INDEX: Final = 7
VFIO_PCI_VGA_REGION_INDEX: Final = 8

VFIO_DEVICE_FEATURE_MASK: Final = 0xFFFF
VFIO_DEVICE_FEATURE_GET: Final = 1 << 16
VFIO_DEVICE_FEATURE_SET: Final = 1 << 17
VFIO_DEVICE_FEATURE_PROBE: Final = 1 << 18
VFIO_DEVICE_FEATURE_DMA_BUF: Final = 11


class vfio_group_status(ctypes.Structure):  # noqa: N801 (the C struct's name)
    _fields_ = (("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32))


class vfio_region_info(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("size", ctypes.c_uint64),  # __aligned_u64: already 8-aligned at offset 16
        ("offset", ctypes.c_uint64),
    )


class vfio_device_feature(ctypes.Structure):  # noqa: N801
    """The fixed header; `__u8 data[]` follows it (offsetof(data) == sizeof == 8)."""

    _fields_ = (("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32))


class vfio_region_dma_range(ctypes.Structure):  # noqa: N801
    _fields_ = (("offset", ctypes.c_uint64), ("length", ctypes.c_uint64))


class vfio_device_feature_dma_buf(ctypes.Structure):  # noqa: N801
    """The fixed part; `struct vfio_region_dma_range dma_ranges[nr_ranges]` follows it (at +16)."""

    _fields_ = (
        ("region_index", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("nr_ranges", ctypes.c_uint32),
    )


def dma_buf_request_type(nr_ranges: int) -> type[ctypes.Structure]:
    """vfio_device_feature + vfio_device_feature_dma_buf + dma_ranges[nr_ranges], laid out as in C.

    The ranges start at offset 8 + 16 = 24, a multiple of 8, so ctypes adds no padding anywhere.
    """
    return type(
        f"vfio_dma_buf_request_{nr_ranges}",
        (ctypes.Structure,),
        {
            "_fields_": (
                ("feature", vfio_device_feature),
                ("dma_buf", vfio_device_feature_dma_buf),
                ("dma_ranges", vfio_region_dma_range * nr_ranges),
            )
        },
    )


# --- linux/dma-buf.h: ioctl type 'b' -------------------------------------------------------------
DMA_BUF_BASE: Final = "b"


class dma_buf_sync(ctypes.Structure):  # noqa: N801
    _fields_ = (("flags", ctypes.c_uint64),)


DMA_BUF_IOCTL_SYNC: Final = IOW(DMA_BUF_BASE, 0, ctypes.sizeof(dma_buf_sync))
# _IOW(DMA_BUF_BASE, 1, const char *): the size is that of a pointer.
DMA_BUF_SET_NAME: Final = IOW(DMA_BUF_BASE, 1, ctypes.sizeof(ctypes.c_char_p))

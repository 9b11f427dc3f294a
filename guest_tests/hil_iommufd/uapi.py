"""The parts of include/uapi/linux/iommufd.h and the VFIO device-cdev ioctls of linux/vfio.h that the
iommufd importer uses, mirrored with ctypes.

Every number is derived from the header's own macro expression (all are _IO, size 0: the struct's size
travels in its first field); tests/test_guest_iommufd_uapi.py pins each number, size and offset against
the kernel tree's header compiled on the host.
"""

from __future__ import annotations

import ctypes
from typing import Final

from hil_vfio.ioc import IO
from hil_vfio.uapi import VFIO_BASE, VFIO_TYPE

# --- iommufd.h ---------------------------------------------------------------------------------
IOMMUFD_TYPE: Final = ";"
IOMMUFD_CMD_DESTROY: Final = 0x80
IOMMUFD_CMD_IOAS_ALLOC: Final = 0x81
IOMMUFD_CMD_IOAS_IOVA_RANGES: Final = 0x84
IOMMUFD_CMD_IOAS_MAP: Final = 0x85
IOMMUFD_CMD_IOAS_UNMAP: Final = 0x86
IOMMUFD_CMD_IOAS_MAP_FILE: Final = 0x8F
IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA: Final = 0x95  # 7.3 (CONFIG_IOMMUFD_NOIOMMU); not in 7.2's header

IOMMU_DESTROY: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)
IOMMU_IOAS_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
IOMMU_IOAS_IOVA_RANGES: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)
IOMMU_IOAS_MAP: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)
IOMMU_IOAS_UNMAP: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)
IOMMU_IOAS_MAP_FILE: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE)
IOMMU_IOAS_NOIOMMU_GET_PA: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA)

# enum iommufd_ioas_map_flags
IOMMU_IOAS_MAP_FIXED_IOVA: Final = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE: Final = 1 << 1
IOMMU_IOAS_MAP_READABLE: Final = 1 << 2


class iommu_destroy(ctypes.Structure):  # noqa: N801 (the C struct's name)
    _fields_ = (("size", ctypes.c_uint32), ("id", ctypes.c_uint32))


class iommu_ioas_alloc(ctypes.Structure):  # noqa: N801
    _fields_ = (("size", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("out_ioas_id", ctypes.c_uint32))


class iommu_iova_range(ctypes.Structure):  # noqa: N801
    _fields_ = (("start", ctypes.c_uint64), ("last", ctypes.c_uint64))


class iommu_ioas_iova_ranges(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("ioas_id", ctypes.c_uint32),
        ("num_iovas", ctypes.c_uint32),
        ("__reserved", ctypes.c_uint32),
        ("allowed_iovas", ctypes.c_uint64),  # user pointer to iommu_iova_range[num_iovas]
        ("out_iova_alignment", ctypes.c_uint64),
    )


class iommu_ioas_map(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("ioas_id", ctypes.c_uint32),
        ("__reserved", ctypes.c_uint32),
        ("user_va", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("iova", ctypes.c_uint64),
    )


class iommu_ioas_map_file(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("ioas_id", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("start", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("iova", ctypes.c_uint64),
    )


class iommu_ioas_noiommu_get_pa(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("ioas_id", ctypes.c_uint32),
        ("__reserved", ctypes.c_uint32),
        ("iova", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("out_phys", ctypes.c_uint64),
    )


class iommu_ioas_unmap(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("ioas_id", ctypes.c_uint32),
        ("iova", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
    )


# --- vfio.h: the device cdev (/dev/vfio/devices/vfioN) ---------------------------------------------
VFIO_DEVICE_BIND_IOMMUFD: Final = IO(VFIO_TYPE, VFIO_BASE + 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT: Final = IO(VFIO_TYPE, VFIO_BASE + 19)
VFIO_DEVICE_DETACH_IOMMUFD_PT: Final = IO(VFIO_TYPE, VFIO_BASE + 20)
VFIO_DEVICE_BIND_FLAG_TOKEN: Final = 1 << 0
VFIO_DEVICE_ATTACH_PASID: Final = 1 << 0


class vfio_device_bind_iommufd(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("iommufd", ctypes.c_int32),
        ("out_devid", ctypes.c_uint32),
        ("token_uuid_ptr", ctypes.c_uint64),
    )


class vfio_device_attach_iommufd_pt(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("pt_id", ctypes.c_uint32),
        ("pasid", ctypes.c_uint32),
    )


class vfio_device_detach_iommufd_pt(ctypes.Structure):  # noqa: N801
    _fields_ = (("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("pasid", ctypes.c_uint32))


STRUCTS: Final[tuple[type[ctypes.Structure], ...]] = (
    iommu_destroy,
    iommu_ioas_alloc,
    iommu_iova_range,
    iommu_ioas_iova_ranges,
    iommu_ioas_map,
    iommu_ioas_map_file,
    iommu_ioas_unmap,
    vfio_device_bind_iommufd,
    vfio_device_attach_iommufd_pt,
    vfio_device_detach_iommufd_pt,
)
"""Every mirrored struct (the host test compiles sizeof/offsetof of each against the kernel header)."""

IOCTLS: Final[dict[str, int]] = {
    "IOMMU_DESTROY": IOMMU_DESTROY,
    "IOMMU_IOAS_ALLOC": IOMMU_IOAS_ALLOC,
    "IOMMU_IOAS_IOVA_RANGES": IOMMU_IOAS_IOVA_RANGES,
    "IOMMU_IOAS_MAP": IOMMU_IOAS_MAP,
    "IOMMU_IOAS_UNMAP": IOMMU_IOAS_UNMAP,
    "IOMMU_IOAS_MAP_FILE": IOMMU_IOAS_MAP_FILE,
    "VFIO_DEVICE_BIND_IOMMUFD": VFIO_DEVICE_BIND_IOMMUFD,
    "VFIO_DEVICE_ATTACH_IOMMUFD_PT": VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    "VFIO_DEVICE_DETACH_IOMMUFD_PT": VFIO_DEVICE_DETACH_IOMMUFD_PT,
}
"""C macro name -> the number used here (pinned against the header)."""

# 7.3's additions, pinned against the 7.3 tree's header when it is unpacked (the 7.2 header lacks them).
STRUCTS_7_3: Final[tuple[type[ctypes.Structure], ...]] = (iommu_ioas_noiommu_get_pa,)
IOCTLS_7_3: Final[dict[str, int]] = {"IOMMU_IOAS_NOIOMMU_GET_PA": IOMMU_IOAS_NOIOMMU_GET_PA}

CONSTANTS: Final[dict[str, int]] = {
    "IOMMU_IOAS_MAP_FIXED_IOVA": IOMMU_IOAS_MAP_FIXED_IOVA,
    "IOMMU_IOAS_MAP_WRITEABLE": IOMMU_IOAS_MAP_WRITEABLE,
    "IOMMU_IOAS_MAP_READABLE": IOMMU_IOAS_MAP_READABLE,
    "VFIO_DEVICE_BIND_FLAG_TOKEN": VFIO_DEVICE_BIND_FLAG_TOKEN,
    "VFIO_DEVICE_ATTACH_PASID": VFIO_DEVICE_ATTACH_PASID,
}

"""A VFIO device opened through the legacy container/group API, and its dma-buf export.

The legacy API because the Debian kernels have IOMMUFD off. All ioctls go through libc's ioctl via
ctypes: fcntl.ioctl copies buffer arguments and returns 0 on success, so it cannot return the new fd
that VFIO_DEVICE_FEATURE(DMA_BUF) and VFIO_GROUP_GET_DEVICE_FD return.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hil_vfio import uapi
from hil_vfio.sysfs import VfioGroup, VfioSetupError, group_members, vfio_group

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int

DEFAULT_OPEN_FLAGS = os.O_RDWR | os.O_CLOEXEC


def errname(err: int | None) -> str:
    """The errno's symbol (EINVAL) for reports; the number as text when it has none."""
    return errno.errorcode.get(err or 0, str(err))


def ioctl(fd: int, request: int, arg: int | None, what: str) -> int:
    """libc ioctl(fd, request, arg); `arg` is an address or a plain value. OSError with the real errno."""
    ret = _libc.ioctl(fd, request, arg)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)} ({errname(err)})")
    return int(ret)


def ioctl_ref(
    fd: int, request: int, obj: ctypes.Structure | ctypes.c_int | ctypes.Array[ctypes.c_char], what: str
) -> int:
    """ioctl with a pointer to `obj` (which the caller keeps alive across the call)."""
    return ioctl(fd, request, ctypes.addressof(obj), what)


@dataclass(frozen=True, slots=True)
class RegionInfo:
    index: int
    flags: int
    size: int
    offset: int

    @property
    def mmap(self) -> bool:
        return bool(self.flags & uapi.VFIO_REGION_INFO_FLAG_MMAP)


@dataclass(frozen=True, slots=True)
class DmaRange:
    offset: int
    length: int


@dataclass
class VfioDevice:
    """Owns the container, group and device fds (closed in reverse order by `close`)."""

    bdf: str
    group: VfioGroup
    container_fd: int
    group_fd: int
    device_fd: int
    iommu_type: int

    def close(self) -> None:
        for name in ("device_fd", "group_fd", "container_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)


@contextlib.contextmanager
def open_device(bdf: str) -> Iterator[VfioDevice]:
    """Open `bdf` (already bound to vfio-pci) through a fresh container; everything closed on exit."""
    group = vfio_group(bdf)
    fds: list[int] = []
    try:
        container = os.open("/dev/vfio/vfio", os.O_RDWR | os.O_CLOEXEC)
        fds.append(container)
        version = ioctl(container, uapi.VFIO_GET_API_VERSION, None, "VFIO_GET_API_VERSION")
        if version != uapi.VFIO_API_VERSION:
            raise VfioSetupError(f"VFIO API version {version}, expected {uapi.VFIO_API_VERSION}")
        group_fd = os.open(group.path, os.O_RDWR | os.O_CLOEXEC)
        fds.append(group_fd)
        _check_viable(group_fd, group)
        container_arg = ctypes.c_int(container)
        ioctl_ref(group_fd, uapi.VFIO_GROUP_SET_CONTAINER, container_arg, "VFIO_GROUP_SET_CONTAINER")
        iommu_type = uapi.VFIO_NOIOMMU_IOMMU if group.noiommu else uapi.VFIO_TYPE1v2_IOMMU
        if not ioctl(container, uapi.VFIO_CHECK_EXTENSION, iommu_type, "VFIO_CHECK_EXTENSION"):
            raise VfioSetupError(f"the VFIO container does not support IOMMU type {iommu_type}")
        ioctl(container, uapi.VFIO_SET_IOMMU, iommu_type, "VFIO_SET_IOMMU")
        name = ctypes.create_string_buffer(bdf.encode())
        device_fd = ioctl_ref(group_fd, uapi.VFIO_GROUP_GET_DEVICE_FD, name, "VFIO_GROUP_GET_DEVICE_FD")
        fds.append(device_fd)
    except BaseException:
        for fd in reversed(fds):
            os.close(fd)
        raise
    device = VfioDevice(bdf, group, container, group_fd, device_fd, iommu_type)
    try:
        yield device
    finally:
        device.close()


def _check_viable(group_fd: int, group: VfioGroup) -> None:
    status = uapi.vfio_group_status(argsz=ctypes.sizeof(uapi.vfio_group_status))
    ioctl_ref(group_fd, uapi.VFIO_GROUP_GET_STATUS, status, "VFIO_GROUP_GET_STATUS")
    if not status.flags & uapi.VFIO_GROUP_FLAGS_VIABLE:
        # Every device in the group must be unbound or on a VFIO-safe driver; say which is not.
        raise VfioSetupError(
            f"VFIO group {group.number} is not viable: members {group_members(group.number)}"
        )


def region_info(dev: VfioDevice, index: int) -> RegionInfo:
    info = uapi.vfio_region_info(argsz=ctypes.sizeof(uapi.vfio_region_info), index=index)
    ioctl_ref(dev.device_fd, uapi.VFIO_DEVICE_GET_REGION_INFO, info, f"VFIO_DEVICE_GET_REGION_INFO({index})")
    return RegionInfo(index=index, flags=int(info.flags), size=int(info.size), offset=int(info.offset))


def dma_buf_request(
    region_index: int,
    ranges: Sequence[DmaRange],
    *,
    open_flags: int = DEFAULT_OPEN_FLAGS,
    flags: int = 0,
    feature_flags: int = uapi.VFIO_DEVICE_FEATURE_GET,
    argsz: int | None = None,
    nr_ranges: int | None = None,
) -> ctypes.Structure:
    """The VFIO_DEVICE_FEATURE argument; argsz/nr_ranges override the correct values (for error tests)."""
    request_type = uapi.dma_buf_request_type(len(ranges))
    request = request_type()
    request.feature.argsz = ctypes.sizeof(request_type) if argsz is None else argsz
    request.feature.flags = feature_flags | uapi.VFIO_DEVICE_FEATURE_DMA_BUF
    request.dma_buf.region_index = region_index
    request.dma_buf.open_flags = open_flags
    request.dma_buf.flags = flags
    request.dma_buf.nr_ranges = len(ranges) if nr_ranges is None else nr_ranges
    for slot, dma_range in zip(request.dma_ranges, ranges, strict=True):
        slot.offset = dma_range.offset
        slot.length = dma_range.length
    return request


def export_dma_buf(
    dev: VfioDevice,
    region_index: int,
    ranges: Sequence[DmaRange],
    *,
    open_flags: int = DEFAULT_OPEN_FLAGS,
    flags: int = 0,
    feature_flags: int = uapi.VFIO_DEVICE_FEATURE_GET,
    argsz: int | None = None,
    nr_ranges: int | None = None,
) -> int:
    """VFIO_DEVICE_FEATURE(GET | DMA_BUF): a new dma-buf fd for `ranges` of region `region_index`."""
    request = dma_buf_request(
        region_index,
        ranges,
        open_flags=open_flags,
        flags=flags,
        feature_flags=feature_flags,
        argsz=argsz,
        nr_ranges=nr_ranges,
    )
    return ioctl_ref(dev.device_fd, uapi.VFIO_DEVICE_FEATURE, request, "VFIO_DEVICE_FEATURE(DMA_BUF)")


def probe_dma_buf(dev: VfioDevice) -> int:
    """0 if the device supports the dma-buf feature, else the errno of VFIO_DEVICE_FEATURE_PROBE."""
    header = uapi.vfio_device_feature(
        argsz=ctypes.sizeof(uapi.vfio_device_feature),
        flags=uapi.VFIO_DEVICE_FEATURE_PROBE
        | uapi.VFIO_DEVICE_FEATURE_GET
        | uapi.VFIO_DEVICE_FEATURE_DMA_BUF,
    )
    try:
        ioctl_ref(dev.device_fd, uapi.VFIO_DEVICE_FEATURE, header, "VFIO_DEVICE_FEATURE(PROBE DMA_BUF)")
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


def dmabuf_size(fd: int) -> int:
    """A dma-buf's size: its llseek supports exactly SEEK_END(0) to discover it."""
    size = os.lseek(fd, 0, os.SEEK_END)
    os.lseek(fd, 0, os.SEEK_SET)
    return size

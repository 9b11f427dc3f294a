"""hil_vfio: a small typed VFIO helper for the in-guest tests (ctypes + stdlib only)."""

from hil_vfio.device import (
    DEFAULT_OPEN_FLAGS,
    DmaRange,
    RegionInfo,
    VfioDevice,
    dma_buf_request,
    dmabuf_size,
    errname,
    export_dma_buf,
    open_device,
    probe_dma_buf,
    region_info,
)
from hil_vfio.sysfs import (
    NoIommuUnsupportedError,
    VfioGroup,
    VfioSetupError,
    bind_to_vfio,
    resolve_bdf,
    vfio_group,
)

__all__ = [
    "DEFAULT_OPEN_FLAGS",
    "DmaRange",
    "NoIommuUnsupportedError",
    "RegionInfo",
    "VfioDevice",
    "VfioGroup",
    "VfioSetupError",
    "bind_to_vfio",
    "dma_buf_request",
    "dmabuf_size",
    "errname",
    "export_dma_buf",
    "open_device",
    "probe_dma_buf",
    "region_info",
    "resolve_bdf",
    "vfio_group",
]

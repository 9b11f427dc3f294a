"""guest_tests/modules/hil_importer_abi.h mirrored with ctypes.

tests/test_modules_abi.py compiles the C header on the host and checks every size, offset, constant
and request number below against it.
"""

from __future__ import annotations

import ctypes
from typing import Final

from hil_vfio.ioc import IOR, IOW, IOWR

ABI_VERSION: Final = 1
MAGIC: Final = 0xB9
SG_MAX_CAPACITY: Final = 16384

FEAT_REVOKE_CB: Final = 1 << 0
FEAT_INVALIDATE_MAPPINGS: Final = 1 << 1
FEAT_MOVE_NOTIFY: Final = 1 << 2
FEAT_ATTACH_REVOCABLE: Final = 1 << 3
FEAT_UMEM_REVOCABLE: Final = 1 << 4
FEAT_UMEM_PINNED_DMA_DEV: Final = 1 << 5

P2P_NO_P2P: Final = 1 << 0
P2P_NO_REVOKE_CB: Final = 1 << 1
P2P_STUBBORN: Final = 1 << 2

DMA_BIDIRECTIONAL: Final = 0
DMA_TO_DEVICE: Final = 1
DMA_FROM_DEVICE: Final = 2

RDMA_REVOCABLE: Final = 0
RDMA_PINNED: Final = 1
RDMA_DYNAMIC: Final = 2

EDU_FROM_ADDR: Final = 0
EDU_TO_ADDR: Final = 1
EDU_BUFFER_SIZE: Final = 4096

# include/rdma/ib_verbs.h enum ib_access_flags
IB_ACCESS_LOCAL_WRITE: Final = 1 << 0
IB_ACCESS_REMOTE_WRITE: Final = 1 << 1
IB_ACCESS_REMOTE_READ: Final = 1 << 2


class hil_version(ctypes.Structure):  # noqa: N801 (C name)
    _fields_ = (("abi_version", ctypes.c_uint32), ("features", ctypes.c_uint32))


class hil_pci_function(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("domain", ctypes.c_uint32),
        ("bus", ctypes.c_uint8),
        ("devfn", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    )


class hil_p2p_attach(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("version", ctypes.c_uint32),
        ("dmabuf_fd", ctypes.c_int32),
        ("dev", hil_pci_function),
        ("flags", ctypes.c_uint32),
        ("dma_mask_bits", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("dma_mask", ctypes.c_uint64),
    )


class hil_sg_entry(ctypes.Structure):  # noqa: N801
    _fields_ = (("dma_addr", ctypes.c_uint64), ("len", ctypes.c_uint64))


class hil_sg_request(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("handle", ctypes.c_uint32),
        ("direction", ctypes.c_uint32),
        ("capacity", ctypes.c_uint32),
        ("nents", ctypes.c_uint32),
        ("entries_ptr", ctypes.c_uint64),
        ("orig_nents", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class hil_handle(ctypes.Structure):  # noqa: N801
    _fields_ = (("handle", ctypes.c_uint32), ("pad", ctypes.c_uint32))


class hil_p2p_status(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("handle", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("mapped", ctypes.c_uint32),
        ("revocations", ctypes.c_uint32),
        ("last_map_errno", ctypes.c_int32),
        ("nents", ctypes.c_uint32),
        ("dmabuf_size", ctypes.c_uint64),
    )


class hil_edu_dma(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("dev", hil_pci_function),
        ("direction", ctypes.c_uint32),
        ("buf_offset", ctypes.c_uint32),
        ("dma_addr", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("timeout_ms", ctypes.c_uint32),
        ("elapsed_us", ctypes.c_uint32),
    )


class hil_rdma_reg(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("version", ctypes.c_uint32),
        ("dmabuf_fd", ctypes.c_int32),
        ("dev", hil_pci_function),
        ("mode", ctypes.c_uint32),
        ("access", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("dma_mask_bits", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
    )


class hil_rdma_status(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("handle", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("mapped", ctypes.c_uint32),
        ("revoked", ctypes.c_uint32),
        ("revocations", ctypes.c_uint32),
        ("nents", ctypes.c_uint32),
    )


def _size(struct: type[ctypes.Structure]) -> int:
    return ctypes.sizeof(struct)


HIL_IOC_VERSION: Final = IOR(MAGIC, 0x00, _size(hil_version))
HIL_P2P_IOC_ATTACH: Final = IOWR(MAGIC, 0x01, _size(hil_p2p_attach))
HIL_P2P_IOC_MAP: Final = IOWR(MAGIC, 0x02, _size(hil_sg_request))
HIL_P2P_IOC_SG: Final = IOWR(MAGIC, 0x03, _size(hil_sg_request))
HIL_P2P_IOC_UNMAP: Final = IOW(MAGIC, 0x04, _size(hil_handle))
HIL_P2P_IOC_DETACH: Final = IOW(MAGIC, 0x05, _size(hil_handle))
HIL_P2P_IOC_STATUS: Final = IOWR(MAGIC, 0x06, _size(hil_p2p_status))
HIL_P2P_IOC_EDU_DMA: Final = IOWR(MAGIC, 0x07, _size(hil_edu_dma))
HIL_RDMA_IOC_REG: Final = IOWR(MAGIC, 0x11, _size(hil_rdma_reg))
HIL_RDMA_IOC_SG: Final = IOWR(MAGIC, 0x12, _size(hil_sg_request))
HIL_RDMA_IOC_DEREG: Final = IOW(MAGIC, 0x13, _size(hil_handle))
HIL_RDMA_IOC_STATUS: Final = IOWR(MAGIC, 0x14, _size(hil_rdma_status))

STRUCTS: Final = (
    hil_version,
    hil_pci_function,
    hil_p2p_attach,
    hil_sg_entry,
    hil_sg_request,
    hil_handle,
    hil_p2p_status,
    hil_edu_dma,
    hil_rdma_reg,
    hil_rdma_status,
)

"""Typed driver for /dev/hil_rdma (hil_rdma_importer.ko): ib_umem dma-buf registrations."""

from __future__ import annotations

from dataclasses import dataclass

from hil_importer import abi
from hil_importer.pci import PciFunction
from hil_importer.sg import (
    DEFAULT_CAPACITY,
    DmaList,
    ModuleNode,
    call,
    full_list,
    sg_request,
)

RDMA_NODE = "/dev/hil_rdma"


@dataclass(frozen=True, slots=True)
class RdmaStatus:
    mode: int
    mapped: bool
    revoked: bool
    revocations: int
    nents: int


class RdmaImporter(ModuleNode):
    """One open /dev/hil_rdma; closing it releases every umem registered through it."""

    def __init__(self, node: str = RDMA_NODE) -> None:
        super().__init__(node)

    def register(
        self,
        dmabuf_fd: int,
        dev: PciFunction,
        *,
        offset: int,
        length: int,
        mode: int = abi.RDMA_REVOCABLE,
        access: int = abi.IB_ACCESS_LOCAL_WRITE,
        dma_mask_bits: int = 0,
    ) -> int:
        req = abi.hil_rdma_reg(version=abi.ABI_VERSION, dmabuf_fd=dmabuf_fd, mode=mode, access=access,
                               offset=offset, length=length, dma_mask_bits=dma_mask_bits)  # fmt: skip
        req.dev.domain, req.dev.bus, req.dev.devfn = dev.domain, dev.bus, dev.devfn
        call(self.fd, abi.HIL_RDMA_IOC_REG, req, f"HIL_RDMA_IOC_REG({dev.bdf}, mode={mode})")
        return int(req.handle)

    def sg(self, handle: int, capacity: int = DEFAULT_CAPACITY) -> DmaList:
        return full_list(self._sg(handle, capacity), lambda n: self._sg(handle, n))

    def _sg(self, handle: int, capacity: int) -> tuple[abi.hil_sg_request, DmaList]:
        return sg_request(self.fd, abi.HIL_RDMA_IOC_SG, handle, "HIL_RDMA_IOC_SG", capacity=capacity)

    def deregister(self, handle: int) -> None:
        call(self.fd, abi.HIL_RDMA_IOC_DEREG, abi.hil_handle(handle=handle), "HIL_RDMA_IOC_DEREG")

    def status(self, handle: int) -> RdmaStatus:
        st = abi.hil_rdma_status(handle=handle)
        call(self.fd, abi.HIL_RDMA_IOC_STATUS, st, "HIL_RDMA_IOC_STATUS")
        return RdmaStatus(int(st.mode), bool(st.mapped), bool(st.revoked), int(st.revocations), int(st.nents))

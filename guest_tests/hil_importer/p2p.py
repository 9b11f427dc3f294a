"""Typed driver for /dev/hil_p2p (hil_p2p_importer.ko): attach, map, unmap, detach, status."""

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

P2P_NODE = "/dev/hil_p2p"


@dataclass(frozen=True, slots=True)
class Attachment:
    handle: int
    dma_mask: int  # the importing device's DMA mask after attach


@dataclass(frozen=True, slots=True)
class P2pStatus:
    flags: int
    mapped: bool
    revocations: int
    last_map_errno: int  # 0 or the positive errno of the last MAP
    nents: int
    dmabuf_size: int


class P2pImporter(ModuleNode):
    """One open /dev/hil_p2p; closing it unmaps and detaches every attachment made through it."""

    def __init__(self, node: str = P2P_NODE) -> None:
        super().__init__(node)

    def attach(
        self, dmabuf_fd: int, dev: PciFunction, *, flags: int = 0, dma_mask_bits: int = 0
    ) -> Attachment:
        req = abi.hil_p2p_attach(version=abi.ABI_VERSION, dmabuf_fd=dmabuf_fd, flags=flags,
                                 dma_mask_bits=dma_mask_bits)  # fmt: skip
        req.dev.domain, req.dev.bus, req.dev.devfn = dev.domain, dev.bus, dev.devfn
        call(self.fd, abi.HIL_P2P_IOC_ATTACH, req, f"HIL_P2P_IOC_ATTACH({dev.bdf}, flags={flags:#x})")
        return Attachment(int(req.handle), int(req.dma_mask))

    def map(
        self, handle: int, direction: int = abi.DMA_BIDIRECTIONAL, capacity: int = DEFAULT_CAPACITY
    ) -> DmaList:
        """Map; the whole DMA list even when it has more than `capacity` entries."""
        first = sg_request(self.fd, abi.HIL_P2P_IOC_MAP, handle, "HIL_P2P_IOC_MAP", direction=direction,
                           capacity=capacity)  # fmt: skip
        return full_list(first, lambda n: self._sg(handle, n))

    def sg(self, handle: int, capacity: int = DEFAULT_CAPACITY) -> DmaList:
        return full_list(self._sg(handle, capacity), lambda n: self._sg(handle, n))

    def _sg(self, handle: int, capacity: int) -> tuple[abi.hil_sg_request, DmaList]:
        return sg_request(self.fd, abi.HIL_P2P_IOC_SG, handle, "HIL_P2P_IOC_SG", capacity=capacity)

    def unmap(self, handle: int) -> None:
        call(self.fd, abi.HIL_P2P_IOC_UNMAP, abi.hil_handle(handle=handle), "HIL_P2P_IOC_UNMAP")

    def detach(self, handle: int) -> None:
        call(self.fd, abi.HIL_P2P_IOC_DETACH, abi.hil_handle(handle=handle), "HIL_P2P_IOC_DETACH")

    def status(self, handle: int) -> P2pStatus:
        st = abi.hil_p2p_status(handle=handle)
        call(self.fd, abi.HIL_P2P_IOC_STATUS, st, "HIL_P2P_IOC_STATUS")
        return P2pStatus(int(st.flags), bool(st.mapped), int(st.revocations), -int(st.last_map_errno),
                         int(st.nents), int(st.dmabuf_size))  # fmt: skip

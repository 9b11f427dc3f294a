"""QEMU's edu DMA engine driven through /dev/hil_p2p (HIL_P2P_IOC_EDU_DMA, modules/hil_edu.h).

edu (1234:11e8) copies between its internal 4 KiB buffer and any device address: with the addresses
of a mapping the importer module made *for the edu function*, real bytes move through the vIOMMU into
and out of the exporter's BAR. A transfer the IOMMU refuses still completes on edu's side (QEMU logs a
fault, the guest's DMAR driver may too): only the bytes tell, so callers check them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hil_fault.kmsg import Kmsg

from hil_importer import abi
from hil_importer.p2p import P2pImporter
from hil_importer.pci import PCI_DEVICES, PciFunction
from hil_importer.sg import DmaList, call

EDU_IDS = ("0x1234", "0x11e8")
BUFFER_SIZE = abi.EDU_BUFFER_SIZE
DIRECTION_NAMES = {abi.EDU_FROM_ADDR: "addr->edu", abi.EDU_TO_ADDR: "edu->addr"}


@dataclass(frozen=True, slots=True)
class Transfer:
    direction: int
    dma_addr: int
    length: int
    buf_offset: int
    elapsed_us: int  # start command to engine idle, measured by the module

    def describe(self) -> str:
        name = DIRECTION_NAMES.get(self.direction, str(self.direction))
        where = f"{self.dma_addr:#x}+{self.length:#x} (buffer +{self.buf_offset:#x})"
        return f"{name} {where} {self.elapsed_us} us"


def edu_dma(
    p2p: P2pImporter,
    dev: PciFunction,
    dma_addr: int,
    length: int,
    direction: int,
    *,
    buf_offset: int = 0,
    timeout_ms: int = 0,
) -> Transfer:
    """One transfer; OSError with the module's errno (EINVAL, ENODEV, EBUSY, ETIMEDOUT)."""
    req = abi.hil_edu_dma(direction=direction, buf_offset=buf_offset, dma_addr=dma_addr, len=length,
                          timeout_ms=timeout_ms)  # fmt: skip
    req.dev.domain, req.dev.bus, req.dev.devfn = dev.domain, dev.bus, dev.devfn
    name = DIRECTION_NAMES.get(direction, str(direction))
    call(p2p.fd, abi.HIL_P2P_IOC_EDU_DMA, req, f"HIL_P2P_IOC_EDU_DMA({dev.bdf}, {name}, {length} bytes)")
    return Transfer(direction, dma_addr, length, buf_offset, int(req.elapsed_us))


def dma_address(dma: DmaList, offset: int, length: int) -> int:
    """The device address of bytes [offset, offset + length) of the mapped buffer.

    The span must lie inside one entry of the DMA list (a device sees no continuity across entries).
    """
    start = 0
    for entry in dma.entries:
        if start <= offset and offset + length <= start + entry.length:
            return entry.dma_addr + (offset - start)
        start += entry.length
    raise ValueError(f"[{offset:#x}, {offset + length:#x}) is not inside one entry of {dma.describe()}")


def is_edu(bdf: str) -> bool:
    dev = PCI_DEVICES / bdf
    return ((dev / "vendor").read_text().strip(), (dev / "device").read_text().strip()) == EDU_IDS


# The guest's vIOMMU driver on a refused DMA: intel-iommu "DMAR: [DMA Write NO_PASID] Request device
# [..] fault addr ..", amd_iommu "AMD-Vi: Event logged [IO_PAGE_FAULT domain=..".
_IOMMU_FAULT = re.compile(r"DMAR.*fault|AMD-Vi.*Event logged", re.IGNORECASE)


def is_iommu_fault(line: str) -> bool:
    return _IOMMU_FAULT.search(line) is not None


@dataclass
class FaultLog:
    """The vIOMMU's DMA-fault lines logged since this was opened: its own /dev/kmsg position, so no
    `dmesg` process per look (50 ms each under TCG) and no line count that a wrapped ring would shift."""

    _kmsg: Kmsg = field(default_factory=Kmsg)
    _found: list[str] = field(default_factory=list)

    def faults(self) -> list[str]:
        for record in self._kmsg.drain():
            self._found += [line for line in record.text.splitlines() if is_iommu_fault(line)]
        return list(self._found)

    def close(self) -> None:
        self._kmsg.close()

    def __enter__(self) -> FaultLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

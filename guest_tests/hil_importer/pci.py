"""PCI functions as the importer ABI names them, and BAR addresses from sysfs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PCI_DEVICES = Path("/sys/bus/pci/devices")
IORESOURCE_MEM = 0x00000200
_BDF = re.compile(r"^(?P<domain>[0-9a-f]{4,8}):(?P<bus>[0-9a-f]{2}):(?P<slot>[0-9a-f]{2})\.(?P<func>[0-7])$")


@dataclass(frozen=True, slots=True)
class PciFunction:
    domain: int
    bus: int
    devfn: int

    @property
    def bdf(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7}"


def parse_bdf(bdf: str) -> PciFunction:
    match = _BDF.match(bdf.lower())
    if match is None:
        raise ValueError(f"not a PCI address: {bdf!r}")
    slot, func = int(match.group("slot"), 16), int(match.group("func"))
    if slot > 31:
        raise ValueError(f"slot {slot} > 31 in {bdf!r}")
    return PciFunction(int(match.group("domain"), 16), int(match.group("bus"), 16), slot << 3 | func)


@dataclass(frozen=True, slots=True)
class Bar:
    index: int
    start: int
    end: int  # inclusive, as the kernel prints it
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1 if self.end else 0


def parse_resource(text: str) -> list[Bar]:
    """sysfs `resource`: one "start end flags" line (hex) per resource; the first six are the BARs.

    The addresses are what pci_resource_to_user() gives: CPU physical addresses, which on x86 (q35
    has no host-bridge address offset) are also the bus addresses.
    """
    bars = []
    for index, line in enumerate(text.splitlines()[:6]):
        start, end, flags = (int(field, 16) for field in line.split())
        bars.append(Bar(index, start, end, flags))
    return bars


def bar(bdf: str, index: int) -> Bar:
    found = parse_resource((PCI_DEVICES / bdf / "resource").read_text())[index]
    if not found.flags & IORESOURCE_MEM or not found.size:
        raise ValueError(f"{bdf} BAR{index} is not an assigned memory BAR: {found}")
    return found


def driver(bdf: str) -> str | None:
    link = PCI_DEVICES / bdf / "driver"
    return link.resolve().name if link.is_symlink() else None

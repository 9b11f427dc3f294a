"""What the guest kernel makes of the IOMMU and ACS on a topology: pure, from the kernel source.

- drivers/iommu/intel/dmar.c: a DMAR table plus an enabled IOMMU calls pci_request_acs().
- drivers/pci/pci.c pci_enable_acs(): start from the firmware's ACS control (0 on QEMU,
  SeaBIOS leaves it alone); with ACS requested, set SV|RR|CR|UF where the port has them;
  then pci=disable_acs_redir= and pci=config_acs= each *replace* the control of the
  devices they match with (firmware value & ~mask) | (flags & mask).
- pci_dev_str_match(): a device is named by "pci:vvvv:dddd[:ssss:ssss]" or by a path
  "[seg:]bus:dev.fn[/dev.fn]*". Bus numbers are predicted as SeaBIOS assigns them:
  depth first, in slot order (observed: rp1=1, sw1=2, dp1=3, dp2=4, rp2=5 on switch-p2p).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from harness.topology.layout import Layout, Node, PortLayout, SwitchLayout

ACS_SV, ACS_TB, ACS_RR, ACS_CR, ACS_UF, ACS_EC, ACS_DT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
ACS_REDIRECT = ACS_RR | ACS_CR | ACS_EC
_ACS_VALID = ACS_SV | ACS_TB | ACS_RR | ACS_CR | ACS_UF | ACS_EC | ACS_DT
# A QEMU 10.0 pcie-root-port as a 7.2 guest's lspci shows it:
# ACSCap: SrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans+
QEMU_ROOT_PORT_ACS_CAP = ACS_SV | ACS_TB | ACS_RR | ACS_CR | ACS_UF | ACS_DT
FIRMWARE_ACS_CTRL = 0
# Subsystem ids the "pci:" form may name (bridges have none).
_SUBSYSTEM = {"ivshmem-plain": (0x1AF4, 0x1100), "edu": (0x1AF4, 0x1100)}

IommuMode = Literal["translated", "passthrough", "none"]


@dataclass(frozen=True)
class AcsState:
    port: str
    ctrl: int
    decided_by: str

    @property
    def redirects(self) -> bool:
        """pci_bridge_has_acs_redir(): RR, CR or EC set."""
        return bool(self.ctrl & ACS_REDIRECT)


@dataclass(frozen=True)
class GuestView:
    """The facts p2pdma.c and dma-buf-mapping.c decide on."""

    iommu: IommuMode
    acs_requested: bool
    acs: dict[str, AcsState]  # only ports that have an ACS capability


def iommu_mode(has_intel_iommu: bool, cmdline: list[str]) -> tuple[IommuMode, bool]:
    """(default DMA domain of PCI devices, whether the kernel requests ACS). Last option wins."""
    enabled, passthrough = has_intel_iommu, False
    for arg in cmdline:
        key, _, value = arg.partition("=")
        options = value.split(",")
        if key == "intel_iommu":
            for option in options:
                if option in ("on", "off"):
                    enabled = has_intel_iommu and option == "on"
        elif key == "iommu":
            if "off" in options:
                enabled = False
            passthrough = "pt" in options or (passthrough and "nopt" not in options)
        elif key == "iommu.passthrough":
            passthrough = value.lower() in ("1", "y", "yes", "on", "true")
    if not enabled:
        return "none", False
    return ("passthrough" if passthrough else "translated"), True


def guest_view(layout: Layout, cmdline: list[str]) -> GuestView:
    mode, requested = iommu_mode(layout.topology.iommu == "intel", cmdline)
    params = _acs_params(cmdline)
    buses = bus_numbers(layout)
    states = {}
    for port in layout.ports:
        if port.acs:
            states[port.id] = _acs_state(layout, port, requested, params, buses)
    return GuestView(iommu=mode, acs_requested=requested, acs=states)


def _acs_params(cmdline: list[str]) -> dict[str, str]:
    """The last pci=disable_acs_redir= and pci=config_acs= values (pci= options split at ',')."""
    found: dict[str, str] = {}
    for arg in cmdline:
        if arg.startswith("pci="):
            for option in arg.removeprefix("pci=").split(","):
                key, _, value = option.partition("=")
                if key in ("disable_acs_redir", "config_acs"):
                    found[key] = value
    return found


def _acs_state(
    layout: Layout, port: PortLayout, requested: bool, params: dict[str, str], buses: dict[str, int]
) -> AcsState:
    ctrl = FIRMWARE_ACS_CTRL
    decided_by = "firmware value (no IOMMU, so the kernel does not enable ACS)"
    if requested:
        ctrl |= QEMU_ROOT_PORT_ACS_CAP & (ACS_SV | ACS_RR | ACS_CR | ACS_UF)
        decided_by = "kernel default with an IOMMU (SV RR CR UF)"
    redirect = params.get("disable_acs_redir")
    if redirect is not None and _entry_for(layout, port, redirect, buses, with_flags=False) is not None:
        ctrl = FIRMWARE_ACS_CTRL & ~ACS_REDIRECT
        decided_by = f"pci=disable_acs_redir={redirect}"
    config = params.get("config_acs")
    if config is not None:
        entry = _entry_for(layout, port, config, buses, with_flags=True)
        if entry is not None:
            mask, flags = entry
            ctrl = (FIRMWARE_ACS_CTRL & ~mask) | (flags & mask)
            decided_by = f"pci=config_acs={config}"
    # QEMU's write mask is the capability: bits it lacks read back as 0.
    return AcsState(port=port.id, ctrl=ctrl & QEMU_ROOT_PORT_ACS_CAP, decided_by=decided_by)


def _entry_for(
    layout: Layout, node: Node, param: str, buses: dict[str, int], with_flags: bool
) -> tuple[int, int] | None:
    """(mask, flags) of the first entry of `param` naming `node`, as __pci_config_acs walks it."""
    for item in re.split(r"[;,]", param):
        mask, flags = ACS_REDIRECT, 0
        entry = item
        if with_flags:
            bits, at, entry = item.partition("@")
            if not at:
                return None  # "ACS Flags missing": the kernel gives up on the whole parameter
            parsed = _parse_flags(bits)
            if parsed is None:
                return None
            mask, flags = parsed
        if mask & ~_ACS_VALID:
            return None
        matched = _matches(layout, node, entry, buses)
        if matched is None:
            return None  # unparsable device: the kernel stops reading the parameter
        if matched:
            return mask, flags
    return None


def _parse_flags(bits: str) -> tuple[int, int] | None:
    """'x1x0' style: rightmost character is bit 0; x leaves the bit to the firmware value."""
    mask = flags = 0
    for shift, char in enumerate(reversed(bits)):
        if char in "01":
            mask |= 1 << shift
            flags |= int(char) << shift
        elif char not in "xX":
            return None
    return mask, flags


def _matches(layout: Layout, node: Node, spec: str, buses: dict[str, int]) -> bool | None:
    """pci_dev_str_match(): True/False, None when the kernel could not parse `spec`."""
    if spec.startswith("pci:"):
        try:
            ids = [int(x, 16) for x in spec.removeprefix("pci:").split(":")]
        except ValueError:
            return None
        if len(ids) not in (2, 4):
            return None
        sub = _SUBSYSTEM.get(node.qemu_driver, (0, 0))
        have = (*node.pci_id, *sub)
        return all(want in (0, got) for want, got in zip(ids, have, strict=False))
    head, *tail = spec.split("/")
    chain = _ancestry(layout, node)  # node first, then its bridges upward
    for part in reversed(tail):
        if not re.fullmatch(r"[0-9a-fA-F]+\.[0-7]", part):
            return None
        slot, func = (int(x, 16) for x in part.split("."))
        if (chain[0].addr, 0) != (slot, func):
            return False
        chain = chain[1:]
        if not chain:
            return False
    found = re.fullmatch(r"(?:([0-9a-fA-F]+):)?([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-7])", head)
    if not found:
        return None
    seg, bus, slot, func = (int(g, 16) if g else 0 for g in found.groups())
    return (seg, bus, slot, func) == (0, buses[chain[0].id], chain[0].addr, 0)


def _ancestry(layout: Layout, node: Node) -> list[Node]:
    chain = [node]
    while chain[-1].bus != "pcie.0":
        chain.append(layout.node(chain[-1].bus))
    return chain


def bus_numbers(layout: Layout) -> dict[str, int]:
    """The bus number each node sits on, as SeaBIOS numbers bridges: depth first, slot order."""
    secondary: dict[str, int] = {}
    on_bus: dict[str, int] = {}
    for node in layout.nodes:  # plug order is that depth-first order
        on_bus[node.id] = 0 if node.bus == "pcie.0" else secondary[node.bus]
        if isinstance(node, PortLayout | SwitchLayout):
            secondary[node.id] = len(secondary) + 1
    return on_bus

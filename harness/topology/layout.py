"""Every number of a topology, assigned by the harness: slots, chassis, QEMU buses, sysfs globs.

Pure. Bus numbers are the guest firmware's business, so nothing here depends on them:
a device is found in the guest by the chain of slot numbers from the root bus down
(`sysfs_glob`, `kernel_path`), which the harness fixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from harness.topology.model import FIRST_ROOT_SLOT, Device, Switch, Topology

ROOT_BUS = "pcie.0"

# QEMU's PCI ids for the devices a topology may contain (vendor, device).
PCI_IDS: dict[str, tuple[int, int]] = {
    "pcie-root-port": (0x1B36, 0x000C),
    "x3130-upstream": (0x104C, 0x8232),
    "xio3130-downstream": (0x104C, 0x8233),
    "ivshmem-plain": (0x1AF4, 0x1110),
    "edu": (0x1234, 0x11E8),
    "igb": (0x8086, 0x10C9),  # 82576, PCI_DEVICE_ID_INTEL_82576 of the vfio selftests' igb driver
}
IVSHMEM_REGS_SIZE = 256  # ivshmem BAR0 (registers); BAR2 is the shared memory
EDU_BAR0_SIZE = 1 << 20
SHARED_MEMORY_BAR = 2
# QEMU 10.0's igb as `info pci` shows it: BAR0 registers and BAR1 flash 128 KiB each, BAR2 32 bytes
# of I/O ports, BAR3 the 16 KiB MSI-X table. Only memory BARs are listed.
IGB_BARS = {0: 128 << 10, 1: 128 << 10, 3: 16 << 10}


@dataclass(frozen=True)
class Placed:
    """Where a node plugs in: QEMU bus id and slot, plus its slot chain from the root bus."""

    id: str
    qemu_driver: str
    bus: str
    addr: int
    devfn_path: tuple[int, ...]

    @property
    def sysfs_glob(self) -> str:
        """Glob for the node's sysfs directory that holds whatever the bus numbers are."""
        first, *rest = self.devfn_path
        return f"/sys/devices/pci0000:00/0000:00:{first:02x}.0" + "".join(f"/0000:*:{s:02x}.0" for s in rest)

    @property
    def kernel_path(self) -> str:
        """The bus-number-free path form of pci= kernel parameters, e.g. 0000:00:10.0/00.0/01.0."""
        first, *rest = self.devfn_path
        return f"0000:00:{first:02x}.0" + "".join(f"/{s:02x}.0" for s in rest)

    @property
    def pci_id(self) -> tuple[int, int]:
        return PCI_IDS[self.qemu_driver]


@dataclass(frozen=True)
class PortLayout(Placed):
    kind: Literal["root", "downstream"]
    chassis: int
    slot: int
    # Whether the port has an ACS capability: pcie-root-port unless disable-acs=on;
    # QEMU 10.0's xio3130-downstream has none.
    acs: bool


@dataclass(frozen=True)
class SwitchLayout(Placed):
    downstream: tuple[str, ...]


@dataclass(frozen=True)
class DeviceLayout(Placed):
    kind: Literal["ivshmem", "edu", "igb"]
    role: str
    size: int | None  # the ivshmem shared-memory BAR, None for edu
    bars: Mapping[int, int] = field(hash=False)  # BAR index -> size in bytes
    ports: tuple[str, ...]  # root port first, down to the port the device sits in
    upstream: tuple[str, ...]  # every bridge above the device, root port first (ports and switches)


Node = PortLayout | SwitchLayout | DeviceLayout


@dataclass(frozen=True)
class Layout:
    topology: Topology
    # Plug order: every node comes after the node whose bus it plugs into, as QEMU needs.
    nodes: tuple[Node, ...]

    @property
    def ports(self) -> tuple[PortLayout, ...]:
        return tuple(n for n in self.nodes if isinstance(n, PortLayout))

    @property
    def switches(self) -> tuple[SwitchLayout, ...]:
        return tuple(n for n in self.nodes if isinstance(n, SwitchLayout))

    @property
    def devices(self) -> tuple[DeviceLayout, ...]:
        return tuple(n for n in self.nodes if isinstance(n, DeviceLayout))

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def device(self, device_id: str) -> DeviceLayout:
        node = self.node(device_id)
        if not isinstance(node, DeviceLayout):
            raise KeyError(device_id)
        return node


def lay_out(topo: Topology) -> Layout:
    builder = _Builder(topo)
    for i, rp in enumerate(topo.root_ports):
        number = builder.next_number()
        port = PortLayout(
            id=rp.id,
            qemu_driver="pcie-root-port",
            bus=ROOT_BUS,
            addr=FIRST_ROOT_SLOT + i,
            devfn_path=(FIRST_ROOT_SLOT + i,),
            kind="root",
            chassis=number,
            slot=number,
            acs=rp.acs,
        )
        builder.add_port(port, ports=(), upstream=())
    return Layout(topology=topo, nodes=tuple(builder.nodes))


class _Builder:
    """Depth-first walk from the root ports, numbering ports as they are met."""

    def __init__(self, topo: Topology) -> None:
        self.nodes: list[Node] = []
        self._number = 0
        self._switch_in = {sw.parent: sw for sw in topo.switches}
        self._device_in = {dev.parent: dev for dev in topo.devices}

    def next_number(self) -> int:
        """Chassis and slot of the next port: QEMU wants each (chassis, slot) pair unique."""
        self._number += 1
        return self._number

    def add_port(self, port: PortLayout, ports: tuple[str, ...], upstream: tuple[str, ...]) -> None:
        self.nodes.append(port)
        ports = (*ports, port.id)
        upstream = (*upstream, port.id)
        if port.id in self._switch_in:
            self._add_switch(self._switch_in[port.id], port, ports, upstream)
        elif port.id in self._device_in:
            self.nodes.append(_device(self._device_in[port.id], port, ports, upstream))

    def _add_switch(
        self, sw: Switch, parent: PortLayout, ports: tuple[str, ...], upstream: tuple[str, ...]
    ) -> None:
        path = (*parent.devfn_path, 0)
        self.nodes.append(
            SwitchLayout(
                id=sw.id,
                qemu_driver="x3130-upstream",
                bus=parent.id,
                addr=0,
                devfn_path=path,
                downstream=tuple(dp.id for dp in sw.downstream),
            )
        )
        for addr, dp in enumerate(sw.downstream):
            number = self.next_number()
            port = PortLayout(
                id=dp.id,
                qemu_driver="xio3130-downstream",
                bus=sw.id,
                addr=addr,
                devfn_path=(*path, addr),
                kind="downstream",
                chassis=number,
                slot=number,
                acs=False,
            )
            self.add_port(port, ports, (*upstream, sw.id))


def _device(
    dev: Device, parent: PortLayout, ports: tuple[str, ...], upstream: tuple[str, ...]
) -> DeviceLayout:
    if dev.kind == "ivshmem":
        assert dev.size is not None  # the model guarantees it
        driver = "ivshmem-plain"
        bars = {0: IVSHMEM_REGS_SIZE, SHARED_MEMORY_BAR: dev.size}
    elif dev.kind == "igb":
        driver = "igb"
        bars = dict(IGB_BARS)
    else:
        driver = "edu"
        bars = {0: EDU_BAR0_SIZE}
    return DeviceLayout(
        id=dev.id,
        qemu_driver=driver,
        bus=parent.id,
        addr=0,
        devfn_path=(*parent.devfn_path, 0),
        kind=dev.kind,
        role=dev.role,
        size=dev.size,
        bars=bars,
        ports=ports,
        upstream=upstream,
    )

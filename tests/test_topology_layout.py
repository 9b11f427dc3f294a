"""Layout: the harness's numbers are unique and the sysfs globs follow the slot chain."""

from __future__ import annotations

import fnmatch

import pytest

from harness.topology import Topology, lay_out, list_topologies, load_topology
from harness.topology.layout import DeviceLayout, PortLayout, SwitchLayout


@pytest.mark.parametrize("topo", list_topologies(), ids=lambda t: t.name)
def test_numbers_are_unique_and_in_range(topo: Topology) -> None:
    layout = lay_out(topo)
    ports = layout.ports
    assert len({p.chassis for p in ports}) == len(ports)
    assert len({p.slot for p in ports}) == len(ports)
    assert all(1 <= p.chassis <= 255 for p in ports)
    roots = [p for p in ports if p.kind == "root"]
    assert [p.addr for p in roots] == list(range(0x10, 0x10 + len(roots)))
    assert len({n.id for n in layout.nodes}) == len(layout.nodes)
    assert len({n.sysfs_glob for n in layout.nodes}) == len(layout.nodes)


def test_plug_order_puts_every_bus_before_its_users() -> None:
    layout = lay_out(load_topology("switch-p2p"))
    order = [n.id for n in layout.nodes]
    assert order == ["rp1", "sw1", "dp1", "exporter", "dp2", "importer", "rp2", "dma"]
    for i, node in enumerate(layout.nodes):
        assert node.bus == "pcie.0" or node.bus in order[:i]


def test_switch_p2p_addresses_and_globs() -> None:
    layout = lay_out(load_topology("switch-p2p"))
    sw = layout.node("sw1")
    assert isinstance(sw, SwitchLayout) and (sw.bus, sw.addr, sw.downstream) == ("rp1", 0, ("dp1", "dp2"))
    dp2 = layout.node("dp2")
    assert isinstance(dp2, PortLayout) and (dp2.bus, dp2.addr, dp2.acs) == ("sw1", 1, False)
    exporter = layout.device("exporter")
    assert exporter.sysfs_glob == "/sys/devices/pci0000:00/0000:00:10.0/0000:*:00.0/0000:*:00.0/0000:*:00.0"
    assert exporter.kernel_path == "0000:00:10.0/00.0/00.0/00.0"
    assert exporter.ports == ("rp1", "dp1") and exporter.upstream == ("rp1", "sw1", "dp1")
    assert exporter.bars == {0: 256, 2: 64 << 20} and exporter.pci_id == (0x1AF4, 0x1110)
    importer = layout.device("importer")
    assert importer.sysfs_glob == "/sys/devices/pci0000:00/0000:00:10.0/0000:*:00.0/0000:*:01.0/0000:*:00.0"
    dma = layout.device("dma")
    assert dma.sysfs_glob == "/sys/devices/pci0000:00/0000:00:11.0/0000:*:00.0"
    assert (dma.size, dma.bars, dma.pci_id) == (None, {0: 1 << 20}, (0x1234, 0x11E8))


def test_globs_match_the_paths_the_guest_showed() -> None:
    # Paths read in a real guest (switch-p2p, kernel 7.2); the globs must match them
    # and only them among the devices of the topology.
    seen = {
        "exporter": "/sys/devices/pci0000:00/0000:00:10.0/0000:01:00.0/0000:02:00.0/0000:03:00.0",
        "importer": "/sys/devices/pci0000:00/0000:00:10.0/0000:01:00.0/0000:02:01.0/0000:04:00.0",
        "dma": "/sys/devices/pci0000:00/0000:00:11.0/0000:05:00.0",
    }
    layout = lay_out(load_topology("switch-p2p"))
    for dev in layout.devices:
        assert [k for k, path in seen.items() if fnmatch.fnmatchcase(path, dev.sysfs_glob)] == [dev.id]


def test_root_port_acs_follows_the_topology() -> None:
    topo = load_topology("switch-p2p").model_copy(
        update={
            "root_ports": [
                r.model_copy(update={"acs": False}) for r in load_topology("switch-p2p").root_ports
            ]
        }
    )
    assert [p.acs for p in lay_out(topo).ports if p.kind == "root"] == [False, False]


def test_layout_is_immutable() -> None:
    dev = lay_out(load_topology("switch-p2p")).device("exporter")
    assert isinstance(dev, DeviceLayout)
    with pytest.raises(AttributeError):
        dev.addr = 3  # type: ignore[misc]

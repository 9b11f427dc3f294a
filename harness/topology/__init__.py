"""Topologies: YAML files -> validated model -> numbered layout -> QEMU arguments.

Public API (see docs/DESIGN.md, "Topology"):
    load_topology, list_topologies, lay_out, qemu_topology_args, standalone_qemu_argv,
    kernel_cmdline, backing_files. `check.run_check` and `oracle` are imported from their
    modules: they are not needed to build a machine.
"""

from harness.topology.layout import DeviceLayout, Layout, PortLayout, SwitchLayout, lay_out
from harness.topology.load import list_topologies, load_topology
from harness.topology.model import Topology, topology_json, topology_sha256
from harness.topology.render import backing_files, kernel_cmdline, qemu_topology_args, standalone_qemu_argv

__all__ = [
    "DeviceLayout",
    "Layout",
    "PortLayout",
    "SwitchLayout",
    "Topology",
    "backing_files",
    "kernel_cmdline",
    "lay_out",
    "list_topologies",
    "load_topology",
    "qemu_topology_args",
    "standalone_qemu_argv",
    "topology_json",
    "topology_sha256",
]

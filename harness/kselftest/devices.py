"""The machine a cell boots when selftests need a device, more memory or boot-time settings: the topology
plus that device on a root port of its own, at least the memory and the kernel arguments they need. Pure.

Why add rather than edit every shipped topology: the device only exists for the selftests, so a run
without --kselftest boots exactly the machine it always did (same topology_sha256, comparable with
earlier runs); and a new root port is free on every topology (at most 15 root ports, the shipped ones
use 2-3). The device sits behind the topology's own vIOMMU and IOMMU mode, which is what varies
between topologies. The added device is in the cell's topology.json like any other.
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.kselftest.catalog import needed_devices, needed_kernel_args, needed_memory
from harness.topology.axes import variant_from_json
from harness.topology.model import MAX_ROOT_PORTS, Topology

# Ids of what is added: the guest finds the device by its id in the plan.
DEVICE_IDS = {"igb": "ks-igb"}
PORT_PREFIX = "ks-rp-"


def device_id(kind: str) -> str:
    return DEVICE_IDS.get(kind, f"ks-{kind}")


def with_selftest_devices(topo: Topology, kselftests: tuple[str, ...]) -> Topology:
    """`topo` with one device of each kind the selftests need, each on a new ACS root port, and the
    guest memory raised to what they need; `topo` itself when it has both already (a device of a
    needed kind there is the one used)."""
    kinds = [k for k in needed_devices(kselftests) if not any(d.kind == k for d in topo.devices)]
    memory = needed_memory(kselftests)
    args = [a for a in needed_kernel_args(kselftests) if a not in topo.kernel_args]
    if not kinds and not args and topo.machine.memory >= memory:
        return topo
    if len(topo.root_ports) + len(kinds) > MAX_ROOT_PORTS:
        raise ConfigError(
            f"topology {topo.name} has {len(topo.root_ports)} root ports: no free one for "
            f"{', '.join(kinds)} (at most {MAX_ROOT_PORTS}), which --kselftest {' '.join(kselftests)} needs"
        )
    data = topo.model_dump()
    data["machine"]["memory"] = max(topo.machine.memory, memory)
    data["kernel_args"] = [*topo.kernel_args, *args]
    for kind in kinds:
        port = f"{PORT_PREFIX}{kind}"
        data["root_ports"].append({"id": port, "acs": True})
        data["devices"].append(
            {"id": device_id(kind), "kind": kind, "parent": port, "size": None, "role": "none"}
        )
    # Validated like any topology (the model's cross-checks), an --axis variant's name kept.
    return variant_from_json(data)

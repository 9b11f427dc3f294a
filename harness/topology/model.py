"""The topology schema: what a qemu_configs/topologies/*.yaml file may say.

Field checks live on the fields; rules that span fields (ids, parents, one thing per
port) are collected by `cross_check` so that a file with several mistakes reports all
of them, each with the path of the field at fault.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from harness.sizes import format_size, parse_size
from harness.topology.cpus import CpuModel, cpu_model

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

MIN_BAR = 4 << 10
# Measured with QEMU 10.0 + SeaBIOS + guest 7.2: 8G, 32G and 64G BARs are all placed
# without pref64-reserve or pci-hole64-size (QEMU grows the 64-bit window to what the
# firmware assigned). 64G is the largest size measured, so the largest allowed.
MAX_BAR = 64 << 30
MIN_MEMORY = 128 << 20
# Root ports sit at slots 0x10..0x1e of pcie.0: vng auto-addresses its virtio devices at
# the low slots and 0x1f is q35's ICH9.
FIRST_ROOT_SLOT = 0x10
MAX_ROOT_PORTS = 0x1F - FIRST_ROOT_SLOT
MAX_DOWNSTREAM_PORTS = 32
# chassis is a u8 in QEMU and every port gets its own.
MAX_PORTS = 255

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def format_loc(loc: Loc) -> str:
    """('devices', 1, 'parent') -> 'devices[1].parent'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


class CrossFieldError(ValueError):
    """Cross-field problems, each with the location of the field at fault."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{format_loc(loc)}: {msg}" for loc, msg in problems))


def _check_id(value: str) -> str:
    # Ids become QEMU ids, bus names and backing file names: keep them plain.
    if not _ID.match(value):
        raise ValueError(
            f"{value!r} is not a valid id: 1-32 letters, digits, '-' or '_', starting with a letter"
        )
    return value


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name: lower-case letters, digits, '-' or '_'")
    return value


def _one_line(value: str) -> str:
    if "\n" in value.strip():
        raise ValueError("must be one line")
    return value.strip()


def _to_bytes(value: object) -> object:
    # Leave anything that is not int/str for the strict int check to reject with its own message.
    if isinstance(value, str | int):
        return parse_size(value)
    return value


def _check_bar(value: int) -> int:
    if value < MIN_BAR:
        raise ValueError(f"{format_size(value)} is too small for a BAR (at least {format_size(MIN_BAR)})")
    if value & (value - 1):
        raise ValueError(f"{format_size(value)} is not a power of two (a BAR size must be)")
    if value > MAX_BAR:
        raise ValueError(f"{format_size(value)} is too large (at most {format_size(MAX_BAR)})")
    return value


def _check_memory(value: int) -> int:
    if value < MIN_MEMORY or value % (1 << 20):
        raise ValueError(f"{value} bytes: memory must be a whole number of MiB, at least 128M")
    return value


def _check_cpu(value: str) -> str:
    cpu_model(value)
    return value


def _check_kernel_arg(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{value!r}: one kernel argument per list item, without spaces")
    return value


Id = Annotated[str, AfterValidator(_check_id)]
BarSize = Annotated[int, BeforeValidator(_to_bytes), AfterValidator(_check_bar)]
MemorySize = Annotated[int, BeforeValidator(_to_bytes), AfterValidator(_check_memory)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Machine(_Strict):
    cpu: Annotated[str, AfterValidator(_check_cpu)]
    memory: MemorySize = 1 << 30
    smp: Annotated[int, Field(ge=1, le=64)] = 2

    @property
    def cpu_model(self) -> CpuModel:
        return cpu_model(self.cpu)


class RootPort(_Strict):
    id: Id
    acs: bool = True


class DownstreamPort(_Strict):
    id: Id


class Switch(_Strict):
    id: Id
    parent: str
    downstream: Annotated[list[DownstreamPort], Field(min_length=1, max_length=MAX_DOWNSTREAM_PORTS)]


class Device(_Strict):
    id: Id
    # igb: QEMU's 82576 NIC, the device the kernel's vfio selftest library can drive
    # (tools/testing/selftests/vfio/lib/drivers/igb); added for `--kselftest vfio` (harness/kselftest).
    kind: Literal["ivshmem", "edu", "igb"]
    parent: str
    size: BarSize | None = None
    role: Literal["exporter", "importer", "dma", "none"] = "none"


class Topology(_Strict):
    name: Annotated[str, AfterValidator(_check_name)]
    description: Annotated[str, AfterValidator(_one_line)]
    machine: Machine
    iommu: Literal["intel", "none"]
    iommu_passthrough: bool = False
    kernel_args: list[Annotated[str, AfterValidator(_check_kernel_arg)]] = Field(default_factory=list)
    root_ports: Annotated[list[RootPort], Field(min_length=1, max_length=MAX_ROOT_PORTS)]
    switches: list[Switch] = Field(default_factory=list)
    devices: list[Device]

    @model_validator(mode="after")
    def _cross_check(self) -> Topology:
        problems = cross_check(self)
        if problems:
            raise CrossFieldError(problems)
        return self


def topology_json(topo: Topology) -> str:
    """The definition as it was booted (a variant's values applied), for the run directory."""
    return json.dumps(topo.model_dump(mode="json"), indent=1, sort_keys=True) + "\n"


def topology_sha256(topo: Topology) -> str:
    """Changes when the machine changes, not when the YAML file's comments or layout do."""
    return hashlib.sha256(topology_json(topo).encode()).hexdigest()


def cross_check(topo: Topology) -> list[Problem]:
    """Every rule that spans fields; empty when the topology is consistent."""
    problems = _duplicate_ids(topo)
    problems += _parents(topo)
    problems += _switch_nesting(topo)
    problems += _devices(topo)
    if not topo.devices:
        problems.append((("devices",), "a topology needs at least one device"))
    if topo.iommu_passthrough and topo.iommu != "intel":
        problems.append((("iommu_passthrough",), "needs iommu: intel (there is no IOMMU to pass through)"))
    n_ports = len(topo.root_ports) + sum(len(sw.downstream) for sw in topo.switches)
    if n_ports > MAX_PORTS:
        problems.append(
            (("switches",), f"{n_ports} ports in all; at most {MAX_PORTS} (QEMU chassis numbers)")
        )
    return problems


def _duplicate_ids(topo: Topology) -> list[Problem]:
    first: dict[str, Loc] = {}
    problems: list[Problem] = []
    for loc, ident in _all_ids(topo):
        if ident in first:
            problems.append(
                ((*loc, "id"), f"duplicate id {ident!r} (already used by {format_loc(first[ident])})")
            )
        else:
            first[ident] = loc
    return problems


def _all_ids(topo: Topology) -> list[tuple[Loc, str]]:
    ids: list[tuple[Loc, str]] = [(("root_ports", i), rp.id) for i, rp in enumerate(topo.root_ports)]
    for i, sw in enumerate(topo.switches):
        ids.append((("switches", i), sw.id))
        ids += [(("switches", i, "downstream", j), dp.id) for j, dp in enumerate(sw.downstream)]
    ids += [(("devices", i), dev.id) for i, dev in enumerate(topo.devices)]
    return ids


def _port_ids(topo: Topology) -> list[str]:
    ids = [rp.id for rp in topo.root_ports] + [dp.id for sw in topo.switches for dp in sw.downstream]
    return list(dict.fromkeys(ids))


def _parents(topo: Topology) -> list[Problem]:
    ports = _port_ids(topo)
    switches = {sw.id: sw for sw in topo.switches}
    devices = {dev.id for dev in topo.devices}
    holder: dict[str, str] = {}
    problems: list[Problem] = []
    children: list[tuple[Loc, str, str]] = [
        (("switches", i), sw.id, sw.parent) for i, sw in enumerate(topo.switches)
    ]
    children += [(("devices", i), dev.id, dev.parent) for i, dev in enumerate(topo.devices)]
    for loc, child, parent in children:
        where = (*loc, "parent")
        if parent in switches:
            names = ", ".join(dp.id for dp in switches[parent].downstream)
            problems.append(
                (where, f"{parent!r} is a switch, not a port: use one of its downstream ports ({names})")
            )
        elif parent in devices:
            problems.append((where, f"{parent!r} is a device, not a port"))
        elif parent not in ports:
            problems.append((where, f"no port named {parent!r} (ports: {', '.join(ports)})"))
        elif parent in holder:
            held = holder[parent]
            problems.append(
                (where, f"port {parent!r} already holds {held!r}: a port holds one switch or one device")
            )
        else:
            holder[parent] = child
    return problems


def _switch_nesting(topo: Topology) -> list[Problem]:
    """No switch may hang, through the ports of other switches, below itself.

    Unknown parents are _parents' business; following known ones up must end at a root port.
    """
    owner = {dp.id: sw for sw in topo.switches for dp in sw.downstream}
    problems: list[Problem] = []
    for i, sw in enumerate(topo.switches):
        seen = {sw.id}
        port = sw.parent
        while port in owner:
            up = owner[port]
            if up.id in seen:
                problems.append(
                    (
                        ("switches", i, "parent"),
                        f"switch {sw.id!r} is nested inside itself (through port {port!r})",
                    )
                )
                break
            seen.add(up.id)
            port = up.parent
    return problems


def _devices(topo: Topology) -> list[Problem]:
    problems: list[Problem] = []
    for i, dev in enumerate(topo.devices):
        if dev.kind == "ivshmem" and dev.size is None:
            problems.append((("devices", i, "size"), "an ivshmem device needs a size (its BAR2), e.g. 64M"))
        if dev.kind == "edu" and dev.size is not None:
            problems.append((("devices", i, "size"), "an edu device has a fixed 1M BAR0: remove size"))
        if dev.kind == "igb" and dev.size is not None:
            problems.append((("devices", i, "size"), "an igb device has QEMU's fixed BARs: remove size"))
        if dev.kind == "igb" and dev.role != "none":
            # The oracle and the dma-buf tests know ivshmem exporters/importers and edu engines only.
            problems.append((("devices", i, "role"), f"an igb device takes role none, not {dev.role}"))
        if dev.role == "dma" and dev.kind != "edu":
            problems.append(
                (("devices", i, "role"), f"role dma needs kind edu (a DMA engine), not {dev.kind}")
            )
    return problems

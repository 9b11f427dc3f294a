"""Topology validation: every class of mistake gives one ConfigError line naming file, field, problem."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import ConfigError
from harness.topology import list_topologies, load_topology
from harness.topology.cpus import CPU_MODELS, cpu_model
from harness.topology.model import Topology

BASE: dict[str, Any] = {
    "name": "t",
    "description": "test topology",
    "machine": {"cpu": "EPYC-Rome", "memory": "1G", "smp": 2},
    "iommu": "intel",
    "root_ports": [{"id": "rp1"}, {"id": "rp2", "acs": False}],
    "switches": [{"id": "sw1", "parent": "rp1", "downstream": [{"id": "dp1"}, {"id": "dp2"}]}],
    "devices": [
        {"id": "exporter", "kind": "ivshmem", "parent": "dp1", "size": "64M", "role": "exporter"},
        {"id": "importer", "kind": "ivshmem", "parent": "dp2", "size": "8G", "role": "importer"},
        {"id": "dma", "kind": "edu", "parent": "rp2", "role": "dma"},
    ],
}


def write(tmp_path: Path, data: Any, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


LINE = re.compile(r" \(line \d+(, column \d+)?\)$")


def errors_for(tmp_path: Path, data: Any) -> tuple[Path, list[str]]:
    """The problem lines of loading `data`, without the file prefix and the line suffix."""
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_topology(str(path))
    assert info.value.where == str(path)
    lines = str(info.value).splitlines()
    # One line per problem, every line starting with the file; no pydantic repr leaks through.
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    assert not any("pydantic" in line or "For further information" in line for line in lines)
    return path, [LINE.sub("", line.removeprefix(f"{path}: ")) for line in lines]


def mutated(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def test_base_is_valid_and_sizes_are_bytes(tmp_path: Path) -> None:
    topo = load_topology(str(write(tmp_path, BASE)))
    assert topo.machine.memory == 1 << 30
    assert [d.size for d in topo.devices] == [64 << 20, 8 << 30, None]
    assert topo.root_ports[0].acs is True and topo.root_ports[1].acs is False
    assert topo.machine.cpu_model.p2pdma_through_host_bridge


def test_shipped_topologies_load_and_are_named_after_their_file() -> None:
    topos = list_topologies()
    assert {t.name for t in topos} >= {
        "switch-p2p", "switch-p2p-amd", "switch-p2p-pt", "switch-p2p-noiommu", "rootports-acs", "bar-4g",
        "bar-4g-pt",
    }  # fmt: skip
    for topo in topos:
        assert load_topology(topo.name) == topo


def test_unknown_shipped_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown topology 'nope'; shipped: .*switch-p2p"):
        load_topology("nope")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone.yaml"
    with pytest.raises(ConfigError, match=rf"^{missing}: cannot read: No such file"):
        load_topology(str(missing))


def test_not_yaml(tmp_path: Path) -> None:
    _, lines = errors_for(tmp_path, "name: [unclosed\n")
    assert len(lines) == 1 and lines[0].startswith("not valid YAML: expected ',' or ']'")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    _, lines = errors_for(tmp_path, "name: a\nname: b\n")
    assert lines == ["not valid YAML: duplicate key 'name'"]


@pytest.mark.parametrize(("text", "got"), [("- a\n", "a list"), ("", "an empty file"), ("42\n", "a int")])
def test_not_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    _, lines = errors_for(tmp_path, text)
    assert lines == [f"(top level): expected a mapping of fields (name, machine, ...), got {got}"]


def test_unknown_keys_name_the_allowed_ones(tmp_path: Path) -> None:
    data = mutated(colour="red")
    data["devices"][0]["bar"] = 2
    _, lines = errors_for(tmp_path, data)
    assert len(lines) == 2
    assert any(
        line.startswith("colour: unknown field 'colour' (allowed: name, description, machine,")
        for line in lines
    )
    assert "devices[0].bar: unknown field 'bar' (allowed: id, kind, parent, size, role)" in lines


def test_wrong_types_are_not_coerced(tmp_path: Path) -> None:
    data = mutated(iommu_passthrough="yes please")
    data["machine"]["smp"] = "2"
    data["root_ports"][0]["acs"] = 1
    _, lines = errors_for(tmp_path, data)
    assert "machine.smp: input should be a valid integer, got '2'" in lines
    assert any(line.startswith("iommu_passthrough: input should be a valid boolean") for line in lines)
    assert any(line.startswith("root_ports[0].acs: input should be a valid boolean, got 1") for line in lines)


def test_missing_required_field(tmp_path: Path) -> None:
    data = mutated()
    del data["machine"]["cpu"]
    del data["iommu"]
    _, lines = errors_for(tmp_path, data)
    assert lines == ["machine.cpu: missing (required)", "iommu: missing (required)"]


def test_unknown_device_kind(tmp_path: Path) -> None:
    data = mutated()
    data["devices"][1]["kind"] = "nvme"
    _, lines = errors_for(tmp_path, data)
    assert lines == ["devices[1].kind: input should be 'ivshmem', 'edu' or 'igb', got 'nvme'"]


def test_unknown_cpu_model_names_the_valid_ones(tmp_path: Path) -> None:
    data = mutated()
    data["machine"]["cpu"] = "Pentium"
    _, lines = errors_for(tmp_path, data)
    assert lines[0].startswith("machine.cpu: unknown cpu model 'Pentium'; valid: Skylake-Server,")
    assert "EPYC-Rome" in lines[0] and "qemu64" in lines[0]


def test_cpu_table_vendor_and_family() -> None:
    # Figures the guest kernel reads (EPYC-Rome measured: AuthenticAMD family 23).
    assert cpu_model("EPYC-Rome").p2pdma_through_host_bridge
    assert cpu_model("EPYC-Genoa").family == 0x19
    assert not cpu_model("Skylake-Server").p2pdma_through_host_bridge
    # Measured under TCG: max and qemu64 are AuthenticAMD but families 6 and 15, so not Zen.
    assert not cpu_model("max").p2pdma_through_host_bridge
    assert not cpu_model("qemu64").p2pdma_through_host_bridge
    assert {m.vendor for m in CPU_MODELS.values()} == {"intel", "amd"}


def test_duplicate_ids_across_kinds(tmp_path: Path) -> None:
    data = mutated()
    data["switches"][0]["downstream"][1]["id"] = "rp2"
    data["devices"][2]["id"] = "exporter"
    _, lines = errors_for(tmp_path, data)
    assert "switches[0].downstream[1].id: duplicate id 'rp2' (already used by root_ports[1])" in lines
    assert "devices[2].id: duplicate id 'exporter' (already used by devices[0])" in lines


def test_parent_that_does_not_exist(tmp_path: Path) -> None:
    data = mutated()
    data["devices"][1]["parent"] = "dp9"
    _, lines = errors_for(tmp_path, data)
    assert lines == ["devices[1].parent: no port named 'dp9' (ports: rp1, rp2, dp1, dp2)"]


def test_parent_that_is_a_switch_or_a_device(tmp_path: Path) -> None:
    data = mutated()
    data["devices"][0]["parent"] = "sw1"
    data["devices"][1]["parent"] = "dma"
    _, lines = errors_for(tmp_path, data)
    assert lines == [
        "devices[0].parent: 'sw1' is a switch, not a port: use one of its downstream ports (dp1, dp2)",
        "devices[1].parent: 'dma' is a device, not a port",
    ]


def test_more_devices_than_ports(tmp_path: Path) -> None:
    data = mutated()
    data["devices"].append({"id": "extra", "kind": "edu", "parent": "rp2"})
    _, lines = errors_for(tmp_path, data)
    assert lines == [
        "devices[3].parent: port 'rp2' already holds 'dma': a port holds one switch or one device"
    ]


def test_switch_and_device_in_one_port(tmp_path: Path) -> None:
    data = mutated()
    data["devices"][2]["parent"] = "rp1"
    _, lines = errors_for(tmp_path, data)
    assert lines == [
        "devices[2].parent: port 'rp1' already holds 'sw1': a port holds one switch or one device"
    ]


def test_switch_nested_inside_itself(tmp_path: Path) -> None:
    data = mutated()
    data["switches"] = [
        {"id": "sw1", "parent": "dp3", "downstream": [{"id": "dp1"}, {"id": "dp2"}]},
        {"id": "sw2", "parent": "dp1", "downstream": [{"id": "dp3"}]},
    ]
    _, lines = errors_for(tmp_path, data)
    assert "switches[0].parent: switch 'sw1' is nested inside itself (through port 'dp1')" in lines
    assert "switches[1].parent: switch 'sw2' is nested inside itself (through port 'dp3')" in lines


def test_switch_in_its_own_port(tmp_path: Path) -> None:
    data = mutated()
    data["switches"][0]["parent"] = "dp2"
    data["devices"][1]["parent"] = "rp1"
    _, lines = errors_for(tmp_path, data)
    assert lines == ["switches[0].parent: switch 'sw1' is nested inside itself (through port 'dp2')"]


def test_nested_switches_are_legal(tmp_path: Path) -> None:
    data = mutated()
    data["switches"].append({"id": "sw2", "parent": "dp2", "downstream": [{"id": "dp3"}]})
    data["devices"][1]["parent"] = "dp3"
    assert [s.parent for s in load_topology(str(write(tmp_path, data))).switches] == ["rp1", "dp2"]


def test_edu_with_size_and_ivshmem_without(tmp_path: Path) -> None:
    data = mutated()
    data["devices"][2]["size"] = "1M"
    del data["devices"][0]["size"]
    _, lines = errors_for(tmp_path, data)
    assert lines == [
        "devices[0].size: an ivshmem device needs a size (its BAR2), e.g. 64M",
        "devices[2].size: an edu device has a fixed 1M BAR0: remove size",
    ]


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        ("3M", "3M is not a power of two (a BAR size must be)"),
        ("2K", "2K is too small for a BAR (at least 4K)"),
        ("128G", "128G is too large (at most 64G)"),
        ("lots", "'lots' is not a size (examples: 4096, 64M, 4G)"),
        (0, "0 is too small for a BAR (at least 4K)"),
    ],
)
def test_impossible_bar_sizes(tmp_path: Path, size: object, problem: str) -> None:
    data = mutated()
    data["devices"][0]["size"] = size
    _, lines = errors_for(tmp_path, data)
    assert lines == [f"devices[0].size: {problem}"]


def test_large_bar_sizes_are_allowed(tmp_path: Path) -> None:
    data = mutated()
    data["devices"][0]["size"] = "64G"
    data["devices"][1]["size"] = 4096
    topo = load_topology(str(write(tmp_path, data)))
    assert [d.size for d in topo.devices[:2]] == [64 << 30, 4096]


def test_role_dma_only_for_edu(tmp_path: Path) -> None:
    data = mutated()
    data["devices"][1]["role"] = "dma"
    _, lines = errors_for(tmp_path, data)
    assert lines == ["devices[1].role: role dma needs kind edu (a DMA engine), not ivshmem"]


def test_at_least_one_device(tmp_path: Path) -> None:
    _, lines = errors_for(tmp_path, mutated(devices=[]))
    assert lines == ["devices: a topology needs at least one device"]


def test_passthrough_needs_intel_iommu(tmp_path: Path) -> None:
    _, lines = errors_for(tmp_path, mutated(iommu="none", iommu_passthrough=True))
    assert lines == ["iommu_passthrough: needs iommu: intel (there is no IOMMU to pass through)"]


def test_bad_ids_and_kernel_args(tmp_path: Path) -> None:
    data = mutated(kernel_args=["pci=noaer", "a b"])
    data["root_ports"][0]["id"] = "rp 1"
    _, lines = errors_for(tmp_path, data)
    assert lines[0].startswith("kernel_args[1]: 'a b': one kernel argument per list item")
    assert lines[1].startswith("root_ports[0].id: 'rp 1' is not a valid id")


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    data = mutated(iommu="none", iommu_passthrough=True)
    data["devices"][0]["parent"] = "nowhere"
    data["devices"][2]["size"] = "4K"
    _, lines = errors_for(tmp_path, data)
    assert [line.split(":")[0] for line in lines] == [
        "devices[0].parent",
        "devices[2].size",
        "iommu_passthrough",
    ]


def test_model_is_strict_and_frozen() -> None:
    topo = Topology.model_validate(BASE)
    with pytest.raises(ValueError, match="frozen"):
        topo.name = "x"  # type: ignore[misc]


def test_messages_carry_the_yaml_line(tmp_path: Path) -> None:
    text = """name: t
description: lines
machine: {cpu: EPYC-Rome}
iommu: intel
root_ports:
  - {id: rp1}
devices:
  - id: exporter
    kind: ivshmem
    parent: rp9
    size: 64M
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_topology(str(path))
    assert str(info.value) == f"{path}: devices[0].parent: no port named 'rp9' (ports: rp1) (line 10)"

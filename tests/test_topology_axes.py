"""--axis: parsing, the product, names, and what each variant changes in the oracle and the QEMU argv.

The routing expectations follow FACTS.md's routing rules (drivers/pci/p2pdma.c): on switch-p2p the
exporter and importer share the switch sw1 (no ACS capability on xio3130 ports) -> bus address, whatever
the CPU or IOMMU; exporter -> dma has no common bridge -> through the host bridge, which only an AMD
family >= 0x17 vCPU allows (q35's host bridge is not whitelisted) -> refused on Skylake-Server; allowed,
it is an IOVA with a translating IOMMU and physical addresses with iommu=pt or no IOMMU. ACS on rp1 sits
above the common bridge sw1 and the dma pair has no common bridge at all, so acs.rp1 changes the
machine (disable-acs=on, the guest's ACS state) but no route.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.matrix.cells import cell_id
from harness.topology import Topology, kernel_cmdline, lay_out, load_topology, standalone_qemu_argv
from harness.topology.acs import guest_view
from harness.topology.axes import (
    MAX_VARIANTS,
    Variant,
    axes_argv,
    expand,
    parse_axes,
    parse_axis,
    variant_from_json,
    variant_name,
)
from harness.topology.oracle import predict_pairs


@pytest.fixture(scope="module")
def base() -> Topology:
    return load_topology("switch-p2p")


def _config_error(call: Any, *args: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(*args)
    assert info.value.where == "--axis"
    return info.value


def _routes(topo: Topology) -> dict[tuple[str, str], str]:
    return {(p.exporter, p.importer): p.route for p in predict_pairs(topo)}


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


# --- parse_axis -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu=Skylake-Server,EPYC-Rome", ("cpu", ("Skylake-Server", "EPYC-Rome"))),
        ("iommu=none,intel", ("iommu", ("none", "intel"))),
        ("iommu_passthrough=true,false", ("iommu_passthrough", ("true", "false"))),
        ("iommu_passthrough=on", ("iommu_passthrough", ("true",))),
        ("acs.rp1=on,off", ("acs.rp1", ("on", "off"))),
        ("acs.rp2=False,TRUE", ("acs.rp2", ("off", "on"))),
        ("smp=1,04", ("smp", ("1", "4"))),
        ("memory=1024M,2G,512MiB", ("memory", ("1G", "2G", "512M"))),
        (" cpu = EPYC , max ", ("cpu", ("EPYC", "max"))),
    ],
)
def test_parse_axis_canonical_values(text: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert parse_axis(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "cpu",
            ["expected KEY=V1,V2", "keys: cpu, iommu, iommu_passthrough, smp, memory, acs.<root port id>"],
        ),
        ("cpus=EPYC", ["unknown axis key 'cpus'", "did you mean cpu?"]),
        ("name=x", ["unknown axis key 'name'", "keys: cpu"]),
        ("cpu=", ["empty value"]),
        ("cpu=EPYC,,max", ["empty value"]),
        ("iommu=intel,", ["empty value"]),
        ("cpu=EPYC,max,EPYC", ["cpu lists EPYC more than once"]),
        ("memory=1G,1024M", ["memory lists 1G more than once"]),
        ("acs.rp1=on,true", ["acs.rp1 lists on more than once"]),
        ("iommu=amd", ["'amd' is not intel or none"]),
        ("iommu_passthrough=pt", ["'pt' is not true or false"]),
        ("acs.rp1=enabled", ["'enabled' is not on or off"]),
        (
            "cpu=EPYC-rome",
            ["unknown cpu model 'EPYC-rome'", "did you mean EPYC-Rome?", "valid: Skylake-Server"],
        ),
        ("smp=two", ["'two' is not a number of vCPUs"]),
        ("memory=lots", ["'lots' is not a size"]),
        ("acs.=on", ["'acs.' does not name a port"]),
        ("acs.rp 1=on", ["does not name a port"]),
    ],
)
def test_parse_axis_errors_name_the_problem(text: str, says: list[str]) -> None:
    err = _config_error(parse_axis, text)
    message = str(err)
    assert message.startswith(f"--axis: {text!r}")
    for part in says:
        assert part in message


def test_parse_axis_reports_every_bad_value_of_a_flag() -> None:
    message = str(_config_error(parse_axis, "iommu=amd,intel,arm"))
    assert "'amd' is not intel or none" in message
    assert "'arm' is not intel or none" in message


def test_parse_axes_keeps_order_and_refuses_a_key_twice() -> None:
    assert parse_axes(["iommu=none", "cpu=EPYC"]) == [("iommu", ("none",)), ("cpu", ("EPYC",))]
    message = str(_config_error(parse_axes, ["cpu=EPYC", "iommu=none", "cpu=max"]))
    assert "axis cpu given more than once" in message
    # Spellings that canonicalise alike are still one key given twice.
    assert "acs.rp1" in str(_config_error(parse_axes, ["acs.rp1=on", "acs.rp1=off"]))


# --- expand: product, names, descriptions ----------------------------------------------------------


def test_no_axes_is_the_base_itself(base: Topology) -> None:
    assert expand(base, []) == [(base, ())]


def test_product_order_names_and_axes(base: Topology) -> None:
    axes = parse_axes(["cpu=EPYC-Rome,Skylake-Server", "iommu=none,intel", "smp=1,2,4"])
    variants = expand(base, axes)
    expected = list(
        itertools.product(["EPYC-Rome", "Skylake-Server"], ["none", "intel"], ["1", "2", "4"])
    )  # first axis slowest, values in the order given
    assert [tuple(v for _, v in variant.axes) for variant in variants] == expected
    assert all(isinstance(v, Variant) for v in variants)
    assert variants[0].axes == (("cpu", "EPYC-Rome"), ("iommu", "none"), ("smp", "1"))
    assert variants[0].topology.name == "switch-p2p[cpu=EPYC-Rome,iommu=none,smp=1]"
    assert variants[-1].topology.name == "switch-p2p[cpu=Skylake-Server,iommu=intel,smp=4]"
    for variant in variants:
        topo, chosen = variant
        values = dict(chosen)
        assert topo.name == variant_name(base.name, chosen)
        assert (topo.machine.cpu, topo.iommu, str(topo.machine.smp)) == (
            values["cpu"],
            values["iommu"],
            values["smp"],
        )
        # Everything the axes do not name is the base's.
        assert topo.devices == base.devices
        assert topo.switches == base.switches
        assert topo.machine.memory == base.machine.memory
    # Deterministic: the same input gives the same variants.
    assert expand(base, axes) == variants


def test_names_give_distinct_readable_cell_ids(base: Topology) -> None:
    variants = expand(base, parse_axes(["cpu=EPYC-Rome,Skylake-Server", "acs.rp1=on,off", "memory=1G,2G"]))
    ids = [cell_id(v.topology.name, "src:debian-7.2") for v in variants]
    assert len(set(ids)) == len(variants)
    assert "switch-p2p-cpu-EPYC-Rome-acs.rp1-off-memory-2G__src-debian-7.2" in ids
    # No variant id is the base's own id: a base cell and its variants can share a matrix.
    assert cell_id(base.name, "src:debian-7.2") not in ids


def test_description_says_what_changed(base: Topology) -> None:
    (same, changed) = expand(base, parse_axes(["cpu=Skylake-Server,EPYC-Rome", "iommu=none"]))
    assert same.topology.description.startswith(
        "variant of switch-p2p: cpu Skylake-Server (as the base), iommu intel -> none."
    )
    assert changed.topology.description.startswith(
        "variant of switch-p2p: cpu Skylake-Server -> EPYC-Rome, iommu intel -> none."
    )
    assert base.description in changed.topology.description


def test_a_value_equal_for_every_variant_is_fine(base: Topology) -> None:
    variants = expand(base, parse_axes(["iommu=intel", "cpu=Skylake-Server,EPYC-Rome"]))
    assert [v.topology.iommu for v in variants] == ["intel", "intel"]
    assert [v.topology.name for v in variants] == [
        "switch-p2p[iommu=intel,cpu=Skylake-Server]",
        "switch-p2p[iommu=intel,cpu=EPYC-Rome]",
    ]


def test_axes_argv_reproduces_one_variant(base: Topology) -> None:
    for variant in expand(base, parse_axes(["cpu=Skylake-Server,EPYC-Rome", "acs.rp2=off,on"])):
        argv = axes_argv(variant.axes)
        assert argv[0::2] == ["--axis", "--axis"]
        again = expand(base, parse_axes(argv[1::2]))
        assert again == [variant]
    assert axes_argv((("cpu", "EPYC-Rome"), ("iommu", "none"))) == [
        "--axis",
        "cpu=EPYC-Rome",
        "--axis",
        "iommu=none",
    ]
    assert axes_argv(()) == []


def test_variant_round_trips_through_its_json_dump(base: Topology) -> None:
    variant = expand(base, parse_axes(["cpu=EPYC-Rome", "iommu_passthrough=true"]))[0].topology
    dump = variant.model_dump(mode="json")
    with pytest.raises(ValueError, match="name"):
        Topology.model_validate(dump)  # why variant_from_json exists
    assert variant_from_json(dump) == variant
    assert variant_from_json(base.model_dump(mode="json")) == base


# --- expand: errors -----------------------------------------------------------------------------------


def test_every_invalid_combination_is_reported_at_once(base: Topology) -> None:
    axes = parse_axes(["iommu=intel,none", "iommu_passthrough=false,true", "smp=2,0"])
    message = str(_config_error(expand, base, axes))
    lines = message.splitlines()
    assert lines[0] == "--axis: 5 of 8 variants of switch-p2p are invalid:"
    assert (
        "  switch-p2p[iommu=none,iommu_passthrough=true,smp=2]: iommu_passthrough: needs iommu: intel "
        "(there is no IOMMU to pass through)"
    ) in lines
    smp_lines = [line for line in lines if "machine.smp: input should be greater than or equal to 1" in line]
    assert len(smp_lines) == 4
    assert all("smp=0]" in line for line in smp_lines)
    # The model checks fields before the rules that span them: a variant with a bad field shows that.
    both = [line for line in lines if "iommu=none,iommu_passthrough=true,smp=0]" in line]
    assert len(both) == 1
    assert "machine.smp" in both[0]


def test_model_range_problems_name_the_value(base: Topology) -> None:
    message = str(_config_error(expand, base, parse_axes(["memory=64M,1G", "smp=65"])))
    assert "switch-p2p[memory=64M,smp=65]: machine.memory: 67108864 bytes: memory must be" in message
    assert (
        "switch-p2p[memory=1G,smp=65]: machine.smp: input should be less than or equal to 64, got 65"
        in message
    )


def test_a_base_setting_can_make_an_axis_value_invalid() -> None:
    pt = load_topology("switch-p2p-pt")  # iommu_passthrough: true
    message = str(_config_error(expand, pt, parse_axes(["iommu=intel,none"])))
    assert "1 of 2 variants" in message
    assert "switch-p2p-pt[iommu=none]: iommu_passthrough: needs iommu: intel" in message


def test_acs_on_an_unknown_or_downstream_port_names_the_root_ports(base: Topology) -> None:
    message = str(_config_error(expand, base, parse_axes(["acs.rp9=on", "acs.dp1=off", "acs.rp1=off"])))
    assert "acs.rp9: switch-p2p has no port 'rp9'; root ports of switch-p2p: rp1, rp2" in message
    assert "acs.dp1: 'dp1' is a switch downstream port" in message
    assert "acs.rp1:" not in message


def test_too_many_variants_are_refused_before_any_is_built(base: Topology) -> None:
    cpus = "cpu=Skylake-Server,Cascadelake-Server,Icelake-Server,SapphireRapids,EPYC,EPYC-Rome,EPYC-Milan"
    axes = parse_axes([cpus, "smp=1,2,3,4,5,6", "memory=1G,2G,3G,4G,5G,6G,7G"])
    assert MAX_VARIANTS < 7 * 6 * 7
    message = str(_config_error(expand, base, axes))
    assert "7 cpu x 6 smp x 7 memory make 294 variants of switch-p2p, more than 256" in message
    # At the limit it is allowed.
    at_limit = parse_axes(["smp=" + ",".join(str(n) for n in range(1, 65)), "memory=1G,2G,3G,4G"])
    assert len(expand(base, at_limit)) == MAX_VARIANTS


def test_expand_refuses_a_key_twice_when_called_directly(base: Topology) -> None:
    axes = [parse_axis("cpu=EPYC"), parse_axis("cpu=max")]
    assert "axis cpu given more than once" in str(_config_error(expand, base, axes))


# --- what the variants change: the oracle and the machine ---------------------------------------------


def _expected_dma_route(cpu: str, iommu: str, passthrough: bool) -> str:
    """FACTS.md: no common bridge -> host bridge, allowed only by AMD family >= 0x17 here."""
    if cpu != "EPYC-Rome":
        return "refused"
    return "host_bridge_iova" if iommu == "intel" and not passthrough else "host_bridge_direct"


def test_oracle_predicts_each_variant_as_the_routing_rules_say(base: Topology) -> None:
    axes = parse_axes(["cpu=Skylake-Server,EPYC-Rome", "iommu=intel,none", "acs.rp1=on,off"])
    variants = expand(base, axes)
    assert len(variants) == 8
    for topo, chosen in variants:
        values = dict(chosen)
        routes = _routes(topo)
        assert routes[("exporter", "importer")] == "bus_addr", topo.name
        assert routes[("exporter", "dma")] == _expected_dma_route(values["cpu"], values["iommu"], False), (
            topo.name
        )
    by_name = {v.topology.name: _routes(v.topology) for v in variants}
    dma = {name: routes[("exporter", "dma")] for name, routes in by_name.items()}
    # Three different routes come out of one base: the axes are real routing knobs.
    assert set(dma.values()) == {"refused", "host_bridge_iova", "host_bridge_direct"}
    # ACS on rp1 is above the common bridge: flipping it changes no route.
    for cpu, iommu in itertools.product(["Skylake-Server", "EPYC-Rome"], ["intel", "none"]):
        on = by_name[f"switch-p2p[cpu={cpu},iommu={iommu},acs.rp1=on]"]
        off = by_name[f"switch-p2p[cpu={cpu},iommu={iommu},acs.rp1=off]"]
        assert on == off


def test_passthrough_axis_gives_physical_addresses(base: Topology) -> None:
    variants = expand(base, parse_axes(["cpu=EPYC-Rome", "iommu_passthrough=false,true"]))
    assert [_routes(v.topology)[("exporter", "dma")] for v in variants] == [
        "host_bridge_iova",
        "host_bridge_direct",
    ]
    assert "iommu=pt" not in kernel_cmdline(variants[0].topology)
    assert "iommu=pt" in kernel_cmdline(variants[1].topology)


@pytest.mark.parametrize(
    ("axes", "shipped"),
    [
        (["cpu=EPYC-Rome"], "switch-p2p-amd"),
        (["iommu=none"], "switch-p2p-noiommu"),
        (["cpu=EPYC-Rome", "iommu_passthrough=true"], "switch-p2p-pt"),
    ],
)
def test_a_variant_equals_the_shipped_topology_it_describes(
    base: Topology, axes: list[str], shipped: str
) -> None:
    (variant,) = expand(base, parse_axes(axes))
    other = load_topology(shipped)
    ignore = {"name", "description"}
    assert variant.topology.model_dump(exclude=ignore) == other.model_dump(exclude=ignore)
    assert predict_pairs(variant.topology) == predict_pairs(other)
    assert standalone_qemu_argv(lay_out(variant.topology), "/RUN") == standalone_qemu_argv(
        lay_out(other), "/RUN"
    )


def test_qemu_argv_reflects_cpu_iommu_acs_and_machine(base: Topology) -> None:
    axes = parse_axes(
        ["cpu=Skylake-Server,EPYC-Rome", "iommu=intel,none", "acs.rp1=on,off", "smp=1", "memory=2G"]
    )
    for topo, chosen in expand(base, axes):
        values = dict(chosen)
        argv = standalone_qemu_argv(lay_out(topo), "/RUN")
        assert _option(argv, "-cpu") == [values["cpu"]]
        assert _option(argv, "-smp") == ["1"]
        assert _option(argv, "-m") == ["2048M"]
        devices = _option(argv, "-device")
        has_iommu = any(d.startswith("intel-iommu") for d in devices)
        assert has_iommu == (values["iommu"] == "intel"), topo.name
        assert (_option(argv, "-machine")[0] == "q35,kernel-irqchip=split") == has_iommu
        assert ("intel_iommu=on" in kernel_cmdline(topo)) == has_iommu
        rp1 = next(d for d in devices if d.startswith("pcie-root-port,id=rp1,"))
        rp2 = next(d for d in devices if d.startswith("pcie-root-port,id=rp2,"))
        assert rp1.endswith(",disable-acs=on") == (values["acs.rp1"] == "off"), topo.name
        assert not rp2.endswith(",disable-acs=on")


def test_acs_axis_changes_what_the_guest_enables(base: Topology) -> None:
    on, off = expand(base, parse_axes(["acs.rp1=on,off"]))
    view_on = guest_view(lay_out(on.topology), kernel_cmdline(on.topology))
    view_off = guest_view(lay_out(off.topology), kernel_cmdline(off.topology))
    # With the vIOMMU the kernel enables ACS redirect where a port has the capability.
    assert view_on.acs["rp1"].redirects
    assert "rp1" not in view_off.acs
    assert view_off.acs["rp2"].redirects

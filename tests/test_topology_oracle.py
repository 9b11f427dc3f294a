"""The p2p route oracle against answers worked out by hand from the 7.2 source.

How the expected answers are derived (drivers/pci/p2pdma.c, calc_map_type_and_dist):
the kernel walks up from the provider (the exporter) with pci_upstream_bridge(); for
each bridge `a` it first counts ACS redirect on `a`, then looks for `a` among the
client's (importer's) ancestors. Found: a common upstream bridge; redirect on the
client's side below it is counted too; no redirect at all -> BUS_ADDR. Not found, or
redirect: through the host bridge, which cpu_supports_p2pdma() (AMD, family >= 0x17)
or the host bridge whitelist allow; q35's first root-bus device is 00:00.0 = 8086:29c0,
not in pci_p2pdma_whitelist[], so only the CPU can allow it. Then dma-buf-mapping.c:
BUS_ADDR -> bus addresses; THRU_HOST_BRIDGE -> dma_iova_try_alloc() succeeds only with
a translating (DMA) domain -> one IOVA span, else dma_map_phys() per range; anything
else -> -EINVAL.

In every shipped topology the ACS capability sits only on root ports (QEMU 10.0's
xio3130 ports have none), and a root port never is the common bridge (it holds one
thing), so ACS never changes a shipped route; the decide() tests cover that branch.

FACTS.md 'Observed' (guest 7.2, exporter behind a switch): same-switch importer -> BAR
bus address; other-root-port importer with Intel vCPU -> -EINVAL; with EPYC-Rome -> IOVA;
with iommu=pt -> physical addresses. The shipped-topology table below agrees line by line.
"""

from __future__ import annotations

import pytest

from harness.topology import lay_out, load_topology
from harness.topology.acs import IommuMode, bus_numbers, guest_view, iommu_mode
from harness.topology.cpus import CpuModel, cpu_model
from harness.topology.oracle import (
    MAX_SG_ENT_SZ,
    KernelTraits,
    decide,
    explain_table,
    host_bridge_whitelisted,
    predict,
    predict_iommufd,
    predict_pairs,
    sg_entries,
)

G = 1 << 30
M = 1 << 20
K = 1 << 10

# (topology, exporter, importer) -> (route, distance, qemu_dma)
EXPECTED = {
    # exporter [exporter, dp1, sw1, rp1] vs importer [importer, dp2, sw1, rp1]: sw1 is common,
    # dist 2+2 = 4; dp1, dp2, sw1 have no ACS capability -> BUS_ADDR (FACTS: BAR bus address).
    # The vIOMMU translates that address for the importer and has no mapping: a real DMA faults.
    ("switch-p2p", "exporter", "importer"): ("bus_addr", 4, "iommu_fault"),
    # dma sits under rp2: [dma, rp2] shares nothing with the exporter's chain -> host bridge,
    # dist 4+2 = 6; Skylake-Server is Intel family 6, 8086:29c0 not whitelisted -> NOT_SUPPORTED
    # -> -EINVAL (FACTS: other root port with Intel vCPU -> -EINVAL).
    ("switch-p2p", "exporter", "dma"): ("refused", 6, "none"),
    # Same tree, EPYC-Rome = AMD family 0x17: the CPU allows the host bridge; intel_iommu=on
    # gives a translated default domain -> one IOVA span (FACTS: EPYC-Rome -> IOVA).
    ("switch-p2p-amd", "exporter", "importer"): ("bus_addr", 4, "iommu_fault"),
    ("switch-p2p-amd", "exporter", "dma"): ("host_bridge_iova", 6, "reaches_bar"),
    # iommu=pt: identity default domain, dma_iova_try_alloc() fails (no dma-iommu) ->
    # dma_map_phys() per range = physical addresses (FACTS: iommu=pt -> physical addresses).
    # The BUS_ADDR pair is unchanged; with identity mapping its DMA reaches the BAR.
    ("switch-p2p-pt", "exporter", "importer"): ("bus_addr", 4, "reaches_bar"),
    ("switch-p2p-pt", "exporter", "dma"): ("host_bridge_direct", 6, "reaches_bar"),
    # No IOMMU: the same-switch pair is BUS_ADDR and nothing translates; the other root port
    # needs the host bridge, which an Intel CPU and q35 do not allow.
    ("switch-p2p-noiommu", "exporter", "importer"): ("bus_addr", 4, "reaches_bar"),
    ("switch-p2p-noiommu", "exporter", "dma"): ("refused", 6, "none"),
    # [exporter, rp1] vs [importer, rp2]: no common bridge (dist 2+2); the redirect on rp1
    # is only collected for a warning. EPYC-Rome + translated domain -> IOVA.
    ("rootports-acs", "exporter", "importer"): ("host_bridge_iova", 4, "reaches_bar"),
    ("rootports-acs", "exporter", "dma"): ("host_bridge_iova", 4, "reaches_bar"),
    # Same tree as switch-p2p-amd; the BAR size does not enter the route.
    ("bar-4g", "exporter", "importer"): ("bus_addr", 4, "iommu_fault"),
    ("bar-4g", "exporter", "dma"): ("host_bridge_iova", 6, "reaches_bar"),
    # iommu=pt: the host-bridge pair maps the 8G BAR by physical address, and nothing translates the
    # same-switch pair's bus addresses either, so its DMA reaches the BAR (unlike bar-4g).
    ("bar-4g-pt", "exporter", "importer"): ("bus_addr", 4, "reaches_bar"),
    ("bar-4g-pt", "exporter", "dma"): ("host_bridge_direct", 6, "reaches_bar"),
}


@pytest.mark.parametrize(("key", "want"), EXPECTED.items(), ids=["/".join(k) for k in EXPECTED])
def test_shipped_topologies(key: tuple[str, str, str], want: tuple[str, int, str]) -> None:
    name, exporter, importer = key
    p = predict(lay_out(load_topology(name)), exporter, importer)
    assert (p.route, p.distance, p.qemu_dma) == want, p.why
    assert p.acs_redirect == ()


# iommufd (IOMMU_IOAS_MAP_FILE of the dma-buf, edu attached to the IOAS through its VFIO cdev): worked out
# from the 7.2.13 source. vfio_pci_dma_buf_iommufd_map() hands over the BAR's physical range and iommufd
# maps it at the IOVA; nothing calls calc_map_type_and_dist(), so the p2p route (and with it the CPU
# vendor, the whitelist and ACS) does not enter. Only the IOMMU does: without one, vfio-pci registers a
# no-IOMMU device, which gets no cdev (drivers/vfio/vfio.h:361-363).
IOMMUFD_EXPECTED = {
    "switch-p2p": "reaches_bar",  # p2p route refused (Intel vCPU), iommufd maps anyway
    "switch-p2p-amd": "reaches_bar",
    "switch-p2p-pt": "reaches_bar",  # the IOAS's paging domain replaces the identity default domain
    "switch-p2p-noiommu": "no_cdev",
    "rootports-acs": "reaches_bar",
    "bar-4g": "reaches_bar",
    "bar-4g-pt": "reaches_bar",
}


@pytest.mark.parametrize(("name", "want"), IOMMUFD_EXPECTED.items())
def test_iommufd_prediction_per_shipped_topology(name: str, want: str) -> None:
    predictions = predict_pairs(load_topology(name))
    assert predictions
    for p in predictions:
        assert p.iommufd_dma == want, (p.exporter, p.importer, p.iommufd_why)
        assert p.iommufd_why


def test_a_kernel_with_iommufd_noiommu_gives_the_no_iommu_device_a_cdev() -> None:
    """7.3's IOMMUFD_NOIOMMU (the 7.3 matrix found the noiommu-vfioN node where the 7.2 rule said none)."""
    config = "# comment\nCONFIG_VFIO_NOIOMMU=y\nCONFIG_IOMMUFD_NOIOMMU=y\n"
    traits = KernelTraits.from_config(config)
    assert traits.iommufd_noiommu
    assert not KernelTraits.from_config("# CONFIG_IOMMUFD_NOIOMMU is not set\n").iommufd_noiommu
    assert not KernelTraits.from_config("CONFIG_IOMMUFD_NOIOMMU_X=y\n").iommufd_noiommu
    topo = load_topology("switch-p2p-noiommu")
    assert {p.iommufd_dma for p in predict_pairs(topo, traits=traits)} == {"noiommu_cdev"}
    assert {p.iommufd_dma for p in predict_pairs(topo)} == {"no_cdev"}  # 7.2, or a kernel of unknown config
    # With an IOMMU the trait changes nothing.
    amd = load_topology("switch-p2p-amd")
    assert predict_pairs(amd, traits=traits) == predict_pairs(amd)


def test_iommufd_ignores_the_p2p_route() -> None:
    """Same machine, one pair refused by p2pdma (Intel) and one allowed (AMD): iommufd's answer is equal."""
    intel = predict(lay_out(load_topology("switch-p2p")), "exporter", "dma")
    amd = predict(lay_out(load_topology("switch-p2p-amd")), "exporter", "dma")
    assert (intel.route, amd.route) == ("refused", "host_bridge_iova")
    assert (intel.iommufd_dma, amd.iommufd_dma) == ("reaches_bar", "reaches_bar")
    assert intel.iommufd_why == amd.iommufd_why
    assert "no p2pdma routing decision" in intel.iommufd_why


@pytest.mark.parametrize(
    ("iommu", "want"), [("translated", "reaches_bar"), ("passthrough", "reaches_bar"), ("none", "no_cdev")]
)
def test_predict_iommufd_by_iommu_mode(iommu: IommuMode, want: str) -> None:
    dma, why = predict_iommufd(iommu)
    assert dma == want
    assert ("vfio.h:361-363" in why) == (want == "no_cdev")


def test_every_shipped_pair_is_covered() -> None:
    names = {k[0] for k in EXPECTED}
    pairs = {(n, p.exporter, p.importer) for n in names for p in predict_pairs(load_topology(n))}
    assert pairs == set(EXPECTED)


def test_why_names_the_deciding_rule() -> None:
    layout = lay_out(load_topology("switch-p2p"))
    assert predict(layout, "exporter", "importer").why.startswith(
        "common upstream bridge sw1, no ACS redirect -> BUS_ADDR"
    )
    refused = predict(layout, "exporter", "dma").why
    assert "Skylake-Server is intel family 0x6 (not AMD >= 0x17)" in refused
    assert "host bridge 8086:29c0 is not whitelisted -> NOT_SUPPORTED" in refused
    assert refused.endswith("-EINVAL")


def test_q35_host_bridge_is_not_whitelisted_but_skylake_e_is() -> None:
    assert not host_bridge_whitelisted()
    assert host_bridge_whitelisted((0x8086, 0x2030))
    assert host_bridge_whitelisted((0x1AE0, 0x1234))  # Google: any device


# Chains of a real switch whose downstream ports have ACS (QEMU's have none).
A = ["A", "dpA", "usp", "rp"]
B = ["B", "dpB", "usp", "rp"]
ROME, SKYLAKE = cpu_model("EPYC-Rome"), cpu_model("Skylake-Server")


@pytest.mark.parametrize(
    ("redirecting", "cpu", "route", "acs"),
    [
        # Nothing redirects below the common bridge: BUS_ADDR.
        (frozenset(), SKYLAKE, "bus_addr", ()),
        # Redirect above the common bridge is never looked at.
        (frozenset({"rp"}), SKYLAKE, "bus_addr", ()),
        # Provider-side port redirects: through the host bridge, which Intel + q35 refuse...
        (frozenset({"dpA"}), SKYLAKE, "refused", ("dpA",)),
        # ...and AMD Zen allows.
        (frozenset({"dpA"}), ROME, "host_bridge_iova", ("dpA",)),
        # Client side below the common bridge counts as well.
        (frozenset({"dpB"}), ROME, "host_bridge_iova", ("dpB",)),
        # The common bridge itself is counted (the first loop checks `a` before comparing).
        (frozenset({"usp"}), ROME, "host_bridge_iova", ("usp",)),
    ],
)
def test_acs_redirect_rules(
    redirecting: frozenset[str], cpu: CpuModel, route: str, acs: tuple[str, ...]
) -> None:
    p = decide(A, B, redirecting, cpu, "translated")
    assert (p.route, p.acs_redirect, p.distance, p.common_bridge) == (route, acs, 4, "usp")


def test_same_function_is_bus_addr_at_distance_zero() -> None:
    p = decide(A, A, frozenset({"dpA"}), SKYLAKE, "translated")
    assert (p.map_type, p.distance, p.why.split(",")[0]) == ("BUS_ADDR", 0, "same function")


def test_sg_entries_per_route() -> None:
    # MAX_SG_ENT_SZ = ALIGN_DOWN(UINT_MAX, PAGE_SIZE): 4 GiB - 4 KiB, not UINT_MAX itself.
    assert MAX_SG_ENT_SZ == 4 * G - 4 * K
    ranges = [4 * K, 4 * K, 64 * M]
    assert sg_entries("bus_addr", ranges) == 3  # one entry per range
    assert sg_entries("host_bridge_direct", ranges) == 3
    assert sg_entries("host_bridge_iova", ranges) == 1  # one span for all ranges
    # An 8G BAR in one range: 8G / (4G - 4K) = 2.000003 -> 3 entries on every route.
    assert sg_entries("bus_addr", [8 * G]) == 3
    assert sg_entries("host_bridge_iova", [8 * G]) == 3
    # 8G - 4K is where the page alignment shows: UINT_MAX-sized entries would need 2.
    assert sg_entries("bus_addr", [8 * G - 4 * K]) == 3
    assert sg_entries("bus_addr", [8 * G - 8 * K]) == 2
    # Two 4G ranges: per range 2 + 2; as one IOVA span of 8G, 3.
    assert sg_entries("host_bridge_direct", [4 * G, 4 * G]) == 4
    assert sg_entries("host_bridge_iova", [4 * G, 4 * G]) == 3
    assert sg_entries("refused", ranges) is None
    assert sg_entries("bus_addr", []) is None
    with pytest.raises(ValueError, match="positive"):
        sg_entries("bus_addr", [0])


def test_bus_numbers_follow_the_firmware() -> None:
    # Seen in a switch-p2p guest: rp1 -> bus 1, sw1 -> 2, dp1 -> 3, dp2 -> 4, rp2 -> 5.
    buses = bus_numbers(lay_out(load_topology("switch-p2p")))
    assert buses == {"rp1": 0, "sw1": 1, "dp1": 2, "exporter": 3, "dp2": 2, "importer": 4, "rp2": 0, "dma": 5}


def test_acs_state_with_and_without_iommu() -> None:
    # Measured with lspci in the guest: ACSCtl SrcValid+ ReqRedir+ CmpltRedir+ UpstreamFwd+
    # on both root ports with intel_iommu=on, everything off without an IOMMU.
    with_iommu = guest_view(lay_out(load_topology("switch-p2p")), ["intel_iommu=on"])
    assert {p: hex(s.ctrl) for p, s in with_iommu.acs.items()} == {"rp1": "0x1d", "rp2": "0x1d"}
    without = guest_view(lay_out(load_topology("switch-p2p-noiommu")), [])
    assert {p: s.redirects for p, s in without.acs.items()} == {"rp1": False, "rp2": False}


def test_acs_kernel_params_as_measured() -> None:
    # Booted rootports-acs with these args; the guest said "Configured ACS to 0x0000" for
    # 00:10.0 and "0x0044" for 00:12.0 (RR|DT: rightmost flag character is bit 0), and left
    # 00:11.0 at the IOMMU default 0x1d. Both parameters start again from the firmware value.
    layout = lay_out(load_topology("rootports-acs"))
    cmdline = ["intel_iommu=on", "pci=disable_acs_redir=0000:00:10.0", "pci=config_acs=1000100@00:12.0"]
    view = guest_view(layout, cmdline)
    assert {p: s.ctrl for p, s in view.acs.items()} == {"rp1": 0x00, "rp2": 0x1D, "rp3": 0x44}
    assert view.acs["rp1"].decided_by == "pci=disable_acs_redir=0000:00:10.0"


@pytest.mark.parametrize(
    ("param", "rp1", "rp2"),
    [
        ("pci=disable_acs_redir=pci:1b36:000c", 0x00, 0x00),  # ids name every root port
        ("pci=disable_acs_redir=pci:1af4:0", 0x1D, 0x1D),  # ivshmem has no ACS: ports untouched
        ("pci=disable_acs_redir=0000:00:11.0;0000:00:10.0", 0x00, 0x00),
        ("pci=noaer,disable_acs_redir=00:11.0", 0x1D, 0x00),
        ("pci=config_acs=xxx0xxx@0000:00:10.0", 0x00, 0x1D),  # x keeps the firmware bit (0)
        ("pci=config_acs=0000:00:10.0", 0x1D, 0x1D),  # flags missing: the kernel ignores it
        ("pci=config_acs=12@0000:00:10.0", 0x1D, 0x1D),  # invalid flag character
        ("pci=disable_acs_redir=00:10.0/00.0", 0x1D, 0x1D),  # names sw1, which has no ACS
    ],
)
def test_acs_parameter_forms(param: str, rp1: int, rp2: int) -> None:
    view = guest_view(lay_out(load_topology("switch-p2p")), ["intel_iommu=on", param])
    assert (view.acs["rp1"].ctrl, view.acs["rp2"].ctrl) == (rp1, rp2)


def test_acs_params_do_not_change_shipped_routes() -> None:
    layout = lay_out(load_topology("switch-p2p-amd"))
    plain = [predict(layout, "exporter", i).route for i in ("importer", "dma")]
    relaxed = ["intel_iommu=on", "pci=disable_acs_redir=pci:0:0"]
    assert [predict(layout, "exporter", i, relaxed).route for i in ("importer", "dma")] == plain


@pytest.mark.parametrize(
    ("has_iommu", "cmdline", "mode"),
    [
        (True, ["intel_iommu=on"], ("translated", True)),
        (True, ["intel_iommu=on", "iommu=pt"], ("passthrough", True)),
        (True, ["intel_iommu=on", "iommu.passthrough=1"], ("passthrough", True)),
        (True, ["intel_iommu=on", "iommu=pt", "iommu=nopt"], ("translated", True)),
        (True, ["intel_iommu=on,sm_on", "intel_iommu=off"], ("none", False)),
        (False, ["intel_iommu=on"], ("none", False)),
    ],
)
def test_iommu_mode(has_iommu: bool, cmdline: list[str], mode: tuple[str, bool]) -> None:
    assert iommu_mode(has_iommu, cmdline) == mode


def test_explain_table() -> None:
    text = explain_table(load_topology("bar-4g"))
    lines = text.splitlines()
    assert lines[0] == (
        "topology bar-4g: cpu EPYC-Rome (amd family 0x17), IOMMU translated, kernel args: intel_iommu=on"
    )
    assert lines[1] == "ports with ACS redirect: rp1, rp2"
    assert lines[2].split() == [
        "exporter", "importer", "route", "dist", "sg(BAR)", "qemu", "dma", "iommufd", "dma", "why"
    ]  # fmt: skip
    assert lines[3].split()[:8] == [
        "exporter", "importer", "bus_addr", "4", "3", "(8G)", "iommu_fault", "reaches_bar"
    ]  # fmt: skip
    assert lines[4].split()[:8] == [
        "exporter", "dma", "host_bridge_iova", "6", "3", "(8G)", "reaches_bar", "reaches_bar"
    ]  # fmt: skip

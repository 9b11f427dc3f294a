"""What the kernel did with each exporter/importer pair, against the oracle's prediction (plan expectations).

(a) By the DMA list hil_p2p_importer gets back, for every export shape (hil_importer.expect): bus_addr ->
the BAR's bus addresses per range; host_bridge_direct -> its physical addresses per range (the same on
x86); host_bridge_iova -> one contiguous span outside the BAR; refused -> the map fails EINVAL. Spans over
MAX_SG_ENT_SZ (4 GiB - 4 KiB) must be split exactly as fill_sg_entry() does: any other list FAILS, showing
its entries.
(b) By the kernel's own decision, seen with kprobes on pci_p2pdma_map_type and dma_iova_try_alloc
(hil_importer.kprobes says why those).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import pytest
from hil_importer.case import BAR, ImportCase, collection_plan, require_feature
from hil_importer.expect import (
    ROUTES,
    Expected,
    MissingExpectationError,
    expected_list,
    mismatches,
    predicted_route,
    topology_pairs,
)
from hil_importer.kprobes import ROUTE_MAP_TYPE, KprobeUnavailableError, RoutingProbe, decision
from hil_importer.loader import Manifest
from hil_importer.p2p import P2pImporter
from hil_importer.pci import bar
from hil_vfio import errname

from harness.guest.plan import GuestPlan
from harness.guest.shapes import export_shapes

pytest_plugins = ["hil_importer.fixtures"]

MASK_BITS = 64  # as an importing driver sets it (edu's DMA engine is 64-bit)
GIB = 1 << 30


def _pairs(plan: GuestPlan | None) -> list[tuple[str, str]]:
    # The topology's pairs, predicted or not; outside a guest run (no plan) one placeholder pair.
    return topology_pairs(plan) or [("exporter", "importer")]


def _bar_size(plan: GuestPlan | None, exporter_id: str) -> int:
    # A pair named only by an expectation may name a device the plan lacks: its tests still get collected.
    for dev in plan.devices if plan else ():
        if dev.id == exporter_id:
            return dev.bars.get(BAR, 0)
    return 0


def _cases(plan: GuestPlan | None) -> list[Any]:
    cases = []
    for exporter_id, importer_id in _pairs(plan):
        size = _bar_size(plan, exporter_id)
        for shape in export_shapes(size) if size else ["whole"]:
            label = f"{exporter_id}-{importer_id}-{shape}"
            cases.append(pytest.param((exporter_id, importer_id), shape, id=label))
    return cases


PLAN = collection_plan()
CASES = _cases(PLAN)
PAIRS = [pytest.param((e, i), id=f"{e}-{i}") for e, i in _pairs(PLAN)]


@pytest.fixture(scope="module")
def routing_probe() -> Iterator[RoutingProbe]:
    try:
        probe = RoutingProbe()
    except KprobeUnavailableError as exc:
        pytest.skip(f"the kernel's routing decision is not observable: {exc}")
    try:
        yield probe
    finally:
        probe.close()


def _predicted(plan: GuestPlan, pair: tuple[str, str]) -> str:
    """The oracle's route for the pair; a pair of the topology without one FAILS (never skips)."""
    try:
        route = predicted_route(plan, *pair)
    except MissingExpectationError as exc:
        pytest.fail(str(exc))
    assert route in ROUTES, f"the oracle predicts an unknown route {route!r} for {pair[0]} -> {pair[1]}"
    return route


def _route(case: ImportCase, pair: tuple[str, str]) -> str:
    exporter_id, _ = pair
    if case.exporter_spec.id != exporter_id:
        pytest.skip(f"the exporter fixture serves {case.exporter_spec.id}, not {exporter_id}")
    return _predicted(case.plan, pair)


@pytest.mark.parametrize("pair", PAIRS)
def test_oracle_predicts_pair(plan: GuestPlan, hil_details: dict[str, Any], pair: tuple[str, str]) -> None:
    """Needs no device, module or kernel feature: on a kernel where the rest of the suite skips, an oracle
    that predicts nothing for a pair still fails the run."""
    hil_details["route"] = _predicted(plan, pair)


@pytest.mark.parametrize(("pair", "shape"), CASES)
def test_dma_list_matches_route(
    case: ImportCase, p2p: P2pImporter, p2p_module: Manifest, pair: tuple[str, str], shape: str
) -> None:
    route = _route(case, pair)
    require_feature(p2p_module, "revoke_callback")
    importer_id = pair[1]
    ranges = export_shapes(case.bar_size)[shape]
    bar2 = bar(case.exporter.bdf, BAR)
    want = expected_list(route, ranges, bar2.start)
    dev = case.function(importer_id)
    case.details.update(route=route, importer=dev.bdf, bar=f"{bar2.start:#x}+{bar2.size:#x}",
                        ranges=[f"{o:#x}+{n:#x}" for o, n in ranges],
                        expected=[str(e) for e in want.entries])  # fmt: skip
    _check_oracle_count(case, importer_id, shape, want)
    handle = p2p.attach(case.export(ranges), dev, dma_mask_bits=MASK_BITS).handle
    if route == "refused":
        with pytest.raises(OSError) as info:
            p2p.map(handle)
        case.details["map_errno"] = errname(info.value.errno)
        assert info.value.errno == errno.EINVAL
        return
    try:
        got = p2p.map(handle)
    except OSError as exc:
        case.details["map_errno"] = errname(exc.errno)
        due = [str(e) for e in want.entries]
        pytest.fail(f"{route} {shape}: map failed ({exc}); due: {len(due)} entries {due}")
    case.details["got"] = got.describe()
    problems = mismatches(want, got, bar2.start, bar2.size)
    assert not problems, f"{route} {shape}: got {got.describe()}: " + "; ".join(problems)


def _check_oracle_count(case: ImportCase, importer_id: str, shape: str, want: Expected) -> None:
    """The host oracle's entry count for this shape, when the plan carries it, must agree with ours."""
    counts = case.expectation(importer_id).sg_entries_for
    if shape not in counts:
        return
    oracle = counts[shape]
    case.details["oracle_entries"] = oracle
    ours = None if want.route == "refused" else len(want.entries)
    assert oracle == ours, f"the oracle predicts {oracle} entries for {shape}, the mapping code gives {ours}"


@pytest.mark.parametrize("pair", PAIRS)
def test_kernel_decision_matches_route(
    case: ImportCase,
    p2p: P2pImporter,
    p2p_module: Manifest,
    routing_probe: RoutingProbe,
    pair: tuple[str, str],
) -> None:
    route = _route(case, pair)
    require_feature(p2p_module, "revoke_callback")
    dev = case.function(pair[1])
    handle = p2p.attach(case.export(), dev, dma_mask_bits=MASK_BITS).handle
    with routing_probe.watch() as events:
        try:
            p2p.map(handle)
        except OSError as exc:
            case.details["map_errno"] = errname(exc.errno)
    seen = decision(events)
    case.details.update(route=route, kernel=seen.as_details(), events=len(events),
                        calc_symbol=routing_probe.calc_symbol)  # fmt: skip
    assert (seen.provider, seen.client) == (case.exporter.bdf, dev.bdf), "the probe saw another pair"
    assert seen.map_type == ROUTE_MAP_TYPE[route]
    if route == "host_bridge_iova":
        assert seen.iova is True, "dma_iova_try_alloc must succeed behind a translating IOMMU"
    elif route == "host_bridge_direct":
        assert seen.iova is False, "identity domain or no IOMMU: no IOVA, dma_map_phys per range"
    else:
        assert seen.iova is None, "no IOVA is tried on this route"


@pytest.mark.parametrize("pair", PAIRS)
def test_iova_over_4g_needs_dma_mask(
    case: ImportCase, p2p: P2pImporter, p2p_module: Manifest, pair: tuple[str, str]
) -> None:
    """With the 32-bit default mask of a driverless PCI function, a buffer over 4 GiB gets no IOVA.

    dma_iova_try_alloc() fails, the per-range dma_map_phys() fallback cannot allocate either, and
    dma_mapping_error() turns DMA_MAPPING_ERROR into -ENOMEM.
    """
    route = _route(case, pair)
    require_feature(p2p_module, "revoke_callback")
    if route != "host_bridge_iova" or case.bar_size <= 4 * GIB:
        pytest.skip(
            f"needs route host_bridge_iova and a BAR over 4 GiB (route {route}, BAR {case.bar_size:#x})"
        )
    dev = case.function(pair[1])
    att = p2p.attach(case.export(), dev)
    case.details.update(importer=dev.bdf, dma_mask=hex(att.dma_mask))
    if att.dma_mask != (1 << 32) - 1:
        pytest.skip(f"{dev.bdf} has DMA mask {att.dma_mask:#x}, not the 32-bit default")
    with pytest.raises(OSError) as info:
        p2p.map(att.handle)
    case.details["map_errno"] = errname(info.value.errno)
    assert info.value.errno == errno.ENOMEM


@pytest.mark.parametrize("pair", PAIRS)
def test_iova_ranges_linked_at_their_offsets(
    case: ImportCase,
    p2p: P2pImporter,
    p2p_module: Manifest,
    routing_probe: RoutingProbe,
    pair: tuple[str, str],
) -> None:
    """A multi-range buffer through an IOVA: dma_iova_link() must place range i at the sum of the lengths
    before it, or the ranges overlap in the one span (and the list cannot describe the buffer)."""
    route = _route(case, pair)
    require_feature(p2p_module, "revoke_callback")
    if route != "host_bridge_iova":
        pytest.skip(f"needs route host_bridge_iova (route {route})")
    if not routing_probe.iova_link:
        pytest.skip("dma_iova_link is not in /proc/kallsyms")
    ranges = export_shapes(case.bar_size)["multi"]
    handle = p2p.attach(case.export(ranges), case.function(pair[1]), dma_mask_bits=MASK_BITS).handle
    with routing_probe.watch() as events:
        try:
            p2p.map(handle)
        except OSError as exc:
            case.details["map_errno"] = errname(exc.errno)
    links = decision(events).links
    due = [sum(n for _, n in ranges[:i]) for i in range(len(ranges))]
    case.details.update(iova_links=[str(link) for link in links], due_offsets=[hex(o) for o in due])
    assert [link.offset for link in links] == due, f"dma_iova_link calls: {[str(link) for link in links]}"
    assert all(link.ret == 0 for link in links)

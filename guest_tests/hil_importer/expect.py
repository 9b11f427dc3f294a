"""What dma_buf_phys_vec_to_sgt() (drivers/dma-buf/dma-buf-mapping.c, v7.2) must produce per route (pure).

The mapping code, restated:
- MAX_SG_ENT_SZ = ALIGN_DOWN(UINT_MAX, PAGE_SIZE) = 0xFFFFF000: fill_sg_entry() cuts any span into
  pieces of at most that, the last piece holding the rest (so 4 GiB -> 0xFFFFF000 + 0x1000).
- BUS_ADDR: one span per range at pci_p2pdma_bus_addr_map(paddr) = paddr + the provider's bus offset
  (0 on x86), each split as above.
- THRU_HOST_BRIDGE with an IOVA (translating IOMMU): every range linked into one IOVA allocation, then
  ONE span of the total size from the IOVA base, split as above.
- THRU_HOST_BRIDGE without IOVA (identity domain, no IOMMU): dma_map_phys() per range = the physical
  address with dma-direct, one span per range, split as above.
- anything else: -EINVAL, and no list.

And which route each pair must take: the host oracle's prediction, read from the plan (topology_pairs,
predicted_route).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

from harness.guest.plan import ROUTES, GuestPlan, MissingExpectationError, PairExpectation
from harness.guest.shapes import MAX_SG_ENT_SZ, PAGE
from hil_importer.sg import DmaList, SgEntry

# ROUTES and MissingExpectationError live with the plan now; the test modules still take them from here.
__all__ = [
    "MAX_SG_ENT_SZ",
    "REFUSED_ERRNO",
    "ROUTES",
    "Expected",
    "MissingExpectationError",
    "expected_list",
    "mismatches",
    "pair_expectation",
    "predicted_route",
    "split_span",
    "topology_pairs",
    "trim",
]

REFUSED_ERRNO = errno.EINVAL


def topology_pairs(plan: GuestPlan | None) -> list[tuple[str, str]]:
    """Every (exporter, importer) pair of the plan (GuestPlan.pairs); none outside a guest run."""
    return [] if plan is None else plan.pairs()


def pair_expectation(plan: GuestPlan, exporter_id: str, importer_id: str) -> PairExpectation:
    """The oracle's prediction for the pair; MissingExpectationError, naming the pair, when the plan has
    none (a skip there would let an oracle that predicts nothing turn the routing suite green)."""
    return plan.expectation(exporter_id, importer_id)


def predicted_route(plan: GuestPlan, exporter_id: str, importer_id: str) -> str:
    return pair_expectation(plan, exporter_id, importer_id).route


def split_span(addr: int, length: int) -> list[SgEntry]:
    """fill_sg_entry(): `length` bytes from `addr` in pieces of at most MAX_SG_ENT_SZ."""
    pieces = []
    while length:
        piece = min(length, MAX_SG_ENT_SZ)
        pieces.append(SgEntry(addr, piece))
        addr += piece
        length -= piece
    return pieces


@dataclass(frozen=True, slots=True)
class Expected:
    """The DMA list a route must give. For IOVA the base is unknown: `entries` then start at 0."""

    route: str
    entries: tuple[SgEntry, ...]
    iova: bool = False

    @property
    def lengths(self) -> list[int]:
        return [e.length for e in self.entries]


def expected_list(route: str, ranges: Sequence[tuple[int, int]], bar_start: int) -> Expected:
    """`ranges` are (offset, length) in the BAR; `bar_start` its bus (= CPU, on x86) address."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; known: {', '.join(ROUTES)}")
    if route == "refused":
        return Expected(route, ())
    if route == "host_bridge_iova":
        return Expected(route, tuple(split_span(0, sum(length for _, length in ranges))), iova=True)
    entries: list[SgEntry] = []
    for offset, length in ranges:
        entries += split_span(bar_start + offset, length)
    return Expected(route, tuple(entries))


def trim(expected: Expected, offset: int, length: int) -> Expected:
    """The list an ib_umem of [offset, offset + length) of the buffer sees (pure).

    ib_umem_dmabuf_map_pages() (drivers/infiniband/core/umem_dmabuf.c) keeps the entries that
    overlap the page-aligned window and cuts the first and last one in place.
    """
    start, end = offset - offset % PAGE, -(-(offset + length) // PAGE) * PAGE
    kept: list[SgEntry] = []
    cur = 0
    for e in expected.entries:
        lo, hi = max(start, cur), min(end, cur + e.length)
        if lo < hi:
            kept.append(SgEntry(e.dma_addr + lo - cur, hi - lo))
        cur += e.length
    return Expected(expected.route, tuple(kept), expected.iova)


def mismatches(expected: Expected, got: DmaList, bar_start: int, bar_size: int) -> list[str]:
    """Every way `got` differs from `expected` (empty: it matches)."""
    problems = []
    lengths = [e.length for e in got.entries]
    if lengths != expected.lengths:
        problems.append(
            f"lengths {[hex(n) for n in lengths]} != expected {[hex(n) for n in expected.lengths]}"
        )
    if got.orig_nents != 0:
        problems.append(f"orig_nents {got.orig_nents} != 0 (the exporter builds no CPU list)")
    if not expected.iova:
        addrs = [e.dma_addr for e in got.entries]
        want = [e.dma_addr for e in expected.entries]
        if addrs != want:
            problems.append(f"addresses {[hex(a) for a in addrs]} != expected {[hex(a) for a in want]}")
        return problems
    if not got.entries:
        return problems
    base = got.entries[0].dma_addr
    offsets = [e.dma_addr - base for e in got.entries]
    want_offsets = (
        [e.dma_addr - expected.entries[0].dma_addr for e in expected.entries] if expected.entries else []
    )
    if offsets != want_offsets:
        problems.append(f"IOVA pieces not contiguous from {base:#x}: offsets {[hex(o) for o in offsets]}")
    if bar_start <= base < bar_start + bar_size:
        problems.append(
            f"IOVA base {base:#x} lies in the BAR [{bar_start:#x}, +{bar_size:#x}): not translated"
        )
    if base % PAGE:
        problems.append(f"IOVA base {base:#x} not page aligned")
    return problems

"""Results -> the route-by-topology table: per exporter/importer pair, what the oracle predicted, what
the kernel decided (its own routing decision, seen by a kprobe in the guest), the DMA list a whole-BAR
export produced, and how the pair's routing tests came out. Pure.

The facts come from the `details` of the in-guest routing tests (guest_tests/test_routing.py): the
decision test records {"route": <oracle>, "kernel": {"map_type", "iova"}}, the list test records
{"got": ["addr+len", ...]} or {"map_errno": ...}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.results.model import OUTCOMES, RunMeta, TestRecord, count_outcomes

ROUTING_FILE = "test_routing.py::"
DECISION_TEST = "test_kernel_decision_matches_route"
LIST_TEST = "test_dma_list_matches_route"
WHOLE_SHAPE = "whole"
NOT_OBSERVED = "not observed"
_SG_SHOWN = 3


@dataclass(frozen=True)
class RouteRow:
    topology: str
    kernel: str
    pair: str  # "exporter-importer", the parametrization id of the pair
    predicted: str  # the oracle's route; "-" when no test of the pair recorded it
    decided: str  # the kernel's route, from the kprobe; NOT_OBSERVED when the decision test saw none
    whole_bar: str  # the DMA list of a whole-BAR export ("EINVAL" when refused)
    tests: str  # outcome counts of this pair's routing tests


def kernel_route(kernel: Mapping[str, Any]) -> str:
    """The kernel's decision (pci_p2pdma_map_type and whether an IOVA was allocated) as a route name."""
    map_type = kernel.get("map_type")
    if map_type == "BUS_ADDR":
        return "bus_addr"
    if map_type == "THRU_HOST_BRIDGE":
        iova = kernel.get("iova")
        return "host_bridge_iova" if iova else "host_bridge_direct" if iova is False else "host_bridge_?"
    if map_type == "NOT_SUPPORTED":
        return "refused"
    return str(map_type) if map_type else "-"


def _param(name: str) -> str:
    return name[name.index("[") + 1 : -1] if "[" in name and name.endswith("]") else ""


def _pair_of(name: str) -> str | None:
    """The pair a routing test is about: its parameter, minus an export shape after the pair."""
    if not name.startswith(ROUTING_FILE):
        return None
    param = _param(name)
    parts = param.split("-")
    return "-".join(parts[:2]) if len(parts) >= 2 else None


def _sg_text(details: Mapping[str, Any]) -> str:
    if details.get("map_errno"):
        return str(details["map_errno"])
    got = details.get("got")
    if not isinstance(got, list) or not got:
        return "-"
    shown = ", ".join(str(g) for g in got[:_SG_SHOWN])
    return shown if len(got) <= _SG_SHOWN else f"{shown}, ... ({len(got)} entries)"


def _counts(records: Sequence[TestRecord]) -> str:
    counts = count_outcomes(records)
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])


def route_rows(meta: RunMeta, records: Sequence[TestRecord]) -> list[RouteRow]:
    """One row per pair that has a routing decision record, in record order."""
    by_pair: dict[str, list[TestRecord]] = {}
    for record in records:
        pair = _pair_of(record.name)
        if pair is not None:
            by_pair.setdefault(pair, []).append(record)
    rows = []
    for pair, pair_records in by_pair.items():
        decision = next((r for r in pair_records if DECISION_TEST in r.name), None)
        if decision is None:
            continue
        kernel = decision.details.get("kernel")
        decided = kernel_route(kernel) if isinstance(kernel, dict) else "-"
        # Any test of the pair that got as far as reading the plan recorded the oracle's route.
        predicted = next((r.details["route"] for r in [decision, *pair_records] if "route" in r.details), "-")
        whole = next(
            (r for r in pair_records if LIST_TEST in r.name and _param(r.name).endswith(WHOLE_SHAPE)), None
        )
        rows.append(
            RouteRow(
                topology=meta.topology,
                kernel=meta.kernel,
                pair=pair,
                predicted=str(predicted),
                decided=NOT_OBSERVED if decided == "-" else decided,
                whole_bar=_sg_text(whole.details) if whole else "-",
                tests=_counts(pair_records),
            )
        )
    return rows


def _mark(row: RouteRow) -> str:
    """`==`/`!=` compare two known routes; with either side unknown there is nothing to compare."""
    if row.decided == NOT_OBSERVED or row.predicted == "-":
        return ""
    return "==" if row.decided == row.predicted else "!="


def routes_table(rows: Sequence[RouteRow]) -> str:
    """The rows as fixed columns; a kernel decision that differs from the oracle is marked `!=`, one
    that was not observed (the decision test skipped or failed before the kprobe saw it) is said so."""
    if not rows:
        return ""
    several_kernels = len({r.kernel for r in rows}) > 1
    head = ["TOPOLOGY", *(["KERNEL"] if several_kernels else []), "PAIR", "ORACLE", "", "KERNEL DECIDED"]
    table = [[*head, "WHOLE-BAR DMA LIST", "ROUTING TESTS"]]
    for r in rows:
        kernel = [r.kernel] if several_kernels else []
        pair = r.pair.replace("-", "->")
        table.append([r.topology, *kernel, pair, r.predicted, _mark(r), r.decided, r.whole_bar, r.tests])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "routes (oracle == the kernel's decision, seen by a kprobe):\n" + "\n".join(lines) + "\n"

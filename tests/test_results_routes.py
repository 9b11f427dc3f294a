"""harness.results.routes: the route-by-topology table from the routing tests' recorded details."""

from __future__ import annotations

from typing import Any

from harness.results.model import Outcome, RunMeta, TestRecord
from harness.results.routes import kernel_route, route_rows, routes_table

META = RunMeta("switch-p2p-amd", "src:debian-7.2", "7.2.13-hil", None, "tcg", "now")


def _decision(pair: str, route: str, kernel: dict[str, Any], outcome: Outcome = "passed") -> TestRecord:
    name = f"test_routing.py::test_kernel_decision_matches_route[{pair}]"
    return TestRecord(name, outcome, 0.1, "", {"route": route, "kernel": kernel})


def _dma_list(param: str, outcome: Outcome, **details: Any) -> TestRecord:
    return TestRecord(f"test_routing.py::test_dma_list_matches_route[{param}]", outcome, 0.1, "", details)


# As recorded on 7.2.13-hil (runs of 2026-11-24), plus one invented mismatch.
RECORDS = [
    TestRecord("test_export.py::test_export_whole_bar", "passed"),
    _dma_list("exporter-importer-whole", "passed", got=["0xf4000000+0x4000000"]),
    _dma_list("exporter-importer-multi", "passed", got=["0xf4000000+0x1000", "0xf6000000+0x10000"]),
    _dma_list(
        "exporter-dma-whole",
        "passed",
        got=[f"0x{0xFFFE00000000 + i * 0xFFFFF000:x}+0xfffff000" for i in range(4)],
    ),
    _dma_list("exporter-dma-multi", "xfailed"),
    _dma_list("exporter-edu-whole", "failed", map_errno="EINVAL"),
    _decision("exporter-importer", "bus_addr", {"map_type": "BUS_ADDR", "iova": None}),
    _decision("exporter-dma", "host_bridge_iova", {"map_type": "THRU_HOST_BRIDGE", "iova": True}),
    _decision("exporter-edu", "host_bridge_direct", {"map_type": "NOT_SUPPORTED", "iova": None}, "failed"),
    TestRecord("test_routing.py::test_iova_over_4g_needs_dma_mask[exporter-dma]", "skipped"),
]


def test_kernel_decisions_name_the_route() -> None:
    assert kernel_route({"map_type": "BUS_ADDR"}) == "bus_addr"
    assert kernel_route({"map_type": "THRU_HOST_BRIDGE", "iova": True}) == "host_bridge_iova"
    assert kernel_route({"map_type": "THRU_HOST_BRIDGE", "iova": False}) == "host_bridge_direct"
    assert kernel_route({"map_type": "NOT_SUPPORTED"}) == "refused"
    assert kernel_route({}) == "-"


def test_one_row_per_pair_with_prediction_decision_list_and_tests() -> None:
    rows = route_rows(META, RECORDS)
    assert [(r.pair, r.predicted, r.decided, r.tests) for r in rows] == [
        ("exporter-importer", "bus_addr", "bus_addr", "3 passed"),
        ("exporter-dma", "host_bridge_iova", "host_bridge_iova", "2 passed, 1 skipped, 1 xfailed"),
        ("exporter-edu", "host_bridge_direct", "refused", "2 failed"),
    ]
    assert rows[1].whole_bar == (
        "0xfffe00000000+0xfffff000, 0xfffefffff000+0xfffff000, 0xffffffffe000+0xfffff000, ... (4 entries)"
    )
    assert rows[2].whole_bar == "EINVAL"


def test_table_marks_where_the_kernel_disagrees_with_the_oracle() -> None:
    text = routes_table(route_rows(META, RECORDS))
    lines = text.splitlines()
    assert lines[0] == "routes (oracle == the kernel's decision, seen by a kprobe):"
    assert lines[1].split() == ["TOPOLOGY", "PAIR", "ORACLE", "KERNEL", "DECIDED", "WHOLE-BAR", "DMA", "LIST",
                                "ROUTING", "TESTS"]  # fmt: skip
    assert lines[2].split()[:5] == ["switch-p2p-amd", "exporter->importer", "bus_addr", "==", "bus_addr"]
    assert lines[4].split()[:6] == [
        "switch-p2p-amd",
        "exporter->edu",
        "host_bridge_direct",
        "!=",
        "refused",
        "EINVAL",
    ]


def test_no_routing_records_no_table() -> None:
    assert route_rows(META, RECORDS[:1]) == []
    assert routes_table([]) == ""


def test_a_pair_nothing_was_observed_on_says_so_and_compares_nothing() -> None:
    """Stock kernel: the decision test skips before the kprobe sees anything; the oracle test still ran."""
    skipped = "hil_p2p_importer: kernel debian:7.2 has no build tree"
    records = [
        TestRecord(
            "test_routing.py::test_oracle_predicts_pair[exporter-importer]",
            "passed",
            0.0,
            "",
            {"route": "bus_addr"},
        ),
        TestRecord(
            "test_routing.py::test_kernel_decision_matches_route[exporter-importer]", "skipped", 0.0, skipped
        ),
        TestRecord(
            "test_routing.py::test_kernel_decision_matches_route[exporter-dma]", "skipped", 0.0, skipped
        ),
        _decision("exporter-edu", "refused", {}, "failed"),  # recorded, but the probe saw no decision
    ]
    rows = route_rows(META, records)
    assert [(r.pair, r.predicted, r.decided) for r in rows] == [
        ("exporter-importer", "bus_addr", "not observed"),
        ("exporter-dma", "-", "not observed"),
        ("exporter-edu", "refused", "not observed"),
    ]
    lines = routes_table(rows).splitlines()[2:]
    assert [line.split()[:4] for line in lines] == [
        ["switch-p2p-amd", "exporter->importer", "bus_addr", "not"],
        ["switch-p2p-amd", "exporter->dma", "-", "not"],
        ["switch-p2p-amd", "exporter->edu", "refused", "not"],
    ]
    for line in lines:
        assert " not observed " in line
        assert "==" not in line and "!=" not in line, line

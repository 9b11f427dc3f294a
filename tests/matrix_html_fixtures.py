"""A small matrix with something of everything index.html shows, for its tests (fast and in-browser):
a passed cell, a failed cell with a kernel report and a mismatching route, a cell with a flaky test and a
hostile test name, a missing cell, and a comparison document in the lead's comparison.json schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matrix_fixtures import FakeCell, record, write_matrix

from harness.console.events import KernelProblem
from harness.matrix.document import Matrix
from harness.results.model import Outcome, TestRecord, Verdict

OLD_KERNEL = "src:debian-7.2"
NEW_KERNEL = "src:debian-7.3"
HOSTILE = "test_data.py::test_x[<script>window.pwned=1</script>&\"'<img src=x onerror=alert(1)>]"
WARNING_LINE = "WARNING: CPU: 1 PID: 242 at drivers/dma-buf/dma-buf-mapping.c:118 dma_buf_phys_vec_to_sgt"
WARNING_EXCERPT = (
    "[   12.345678] ------------[ cut here ]------------\n"
    f"[   12.345679] {WARNING_LINE}\n"
    "[   12.345680] Call Trace:\n[   12.345681]  <TASK>\n[   12.345690] ---[ end trace 0000000000000000 ]---"
)
NOTE = "console tail: the guest printed <nothing> after the last test"
FAILING_TEST = "test_data_dma.py::test_edu_copies_through_mapping[window]"
DECISION = "test_routing.py::test_kernel_decision_matches_route"


def decision(pair: str, oracle: str, map_type: str | None, iova: bool | None = None) -> TestRecord:
    """The routing decision test of one pair: the oracle's route and, when the kprobe saw one, the
    kernel's map type."""
    details: dict[str, Any] = {"route": oracle}
    if map_type is not None:
        details["kernel"] = {"map_type": map_type, **({} if iova is None else {"iova": iova})}
    outcome: Outcome = "passed" if map_type is not None else "skipped"
    return record(f"{DECISION}[{pair}]", outcome, "" if map_type else "no kprobe", **details)


def cells() -> tuple[list[FakeCell], list[FakeCell]]:
    """(cells that ran, cells planned that did not)."""
    passed = FakeCell(
        "switch-p2p",
        OLD_KERNEL,
        records=[
            decision("exporter-importer", "bus_addr", "BUS_ADDR"),
            decision("exporter-dma", "refused", "NOT_SUPPORTED"),
            record("test_export.py::test_export_whole_bar", "passed"),
            record("test_export.py::test_export_zero_length", "skipped", "needs a kernel with the fix"),
        ],
    )
    failed = FakeCell(
        "rootports-acs",
        OLD_KERNEL,
        verdict=Verdict.FAILED,
        records=[
            decision("exporter-importer", "host_bridge_iova", "BUS_ADDR"),  # the kernel disagrees
            decision("exporter-dma", "host_bridge_iova", None),  # nothing observed
            record(FAILING_TEST, "failed", "edu copied 0 bytes <expected 4096>"),
            record("test_export.py::test_export_whole_bar", "passed"),
        ],
        evidence=[KernelProblem("warning", WARNING_LINE, WARNING_EXCERPT, complete=True), NOTE],
    )
    flaky = FakeCell(
        "switch-p2p",
        NEW_KERNEL,
        kernel_version="7.3.4-hil",
        records=[
            decision("exporter-importer", "bus_addr", "BUS_ADDR"),
            decision("exporter-dma", "refused", "NOT_SUPPORTED"),
            record("test_revoke.py::test_revoke_while_mapped", "flaky", "failed once: EBUSY"),
            record(HOSTILE, "failed", "<b>not bold</b> & <i>not italic</i>"),
        ],
        verdict=Verdict.FAILED,
    )
    missing = FakeCell("rootports-acs", NEW_KERNEL)
    return [passed, failed, flaky], [missing]


def build(matrix_dir: Path) -> Matrix:
    ran, not_run = cells()
    return write_matrix(matrix_dir, ran, planned_extra=not_run)


def comparison(matrix: Matrix) -> dict[str, Any]:
    """What `hil compare` would say against an older night where everything passed."""
    ran, _ = cells()
    return {
        "schema": 1,
        "old": "nightly/2026-11-29",
        "new": str(matrix.dir),
        "summary": {"regressions": 1, "fixes": 0, "new": 1, "vanished": 1, "flaky": 1, "changed_cells": 1},
        "changes": [
            {"cell": ran[1].id, "test": FAILING_TEST, "kind": "regression", "old": "passed", "new": "failed"},
            {"cell": ran[2].id, "test": HOSTILE, "kind": "new", "old": None, "new": "failed"},
            {
                "cell": ran[0].id,
                "test": "test_export.py::test_gone",
                "kind": "vanished",
                "old": "passed",
                "new": None,
            },
            {
                "cell": ran[2].id,
                "test": "test_revoke.py::test_revoke_while_mapped",
                "kind": "flaky",
                "old": "passed",
                "new": "flaky",
            },
        ],
        "cells": [
            {
                "cell": ran[0].id,
                "old_verdict": "passed",
                "new_verdict": "passed",
                "kernel_version_changed": False,
                "topology_changed": False,
            },
            {
                "cell": ran[1].id,
                "old_verdict": "passed",
                "new_verdict": "failed",
                "kernel_version_changed": True,
                "topology_changed": False,
            },
        ],
    }

"""Text summaries: one run, and the topology x kernel matrix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.results.model import RunMeta, TestRecord, Verdict, count_outcomes
from harness.results.report import MatrixCell, matrix_cell, matrix_table, summary_table

GOLDEN = Path(__file__).parent / "golden" / "results"

META = RunMeta(
    topology="switch-p2p",
    kernel="debian:7.2",
    kernel_version="7.2.13+deb14-amd64",
    qemu_version="10.1.2",
    accelerator="kvm",
    started_at="2026-11-24T07:31:00+00:00",
    durations={"tests": 3.75},
)
RECORDS = [
    TestRecord("test_p2p.py::test_probe", "passed", 0.41),
    TestRecord("test_p2p.py::test_map_dmabuf[exporter-importer]", "failed", 0.87, "assert 0 == 4096\nmore"),
    TestRecord("test_p2p.py::test_rdma", "skipped", 0.0, "no rdma device"),
    TestRecord("test_iommu.py::test_pt", "xfailed", 1.2, "known issue: p2pdma rejects iommu=pt [https://x]"),
    TestRecord("test_p2p.py::test_fixed", "xpassed", 0.3, "UNEXPECTED PASS: known issue did not reproduce"),
    TestRecord("test_p2p.py::test_" + "long_" * 20 + "name", "error", 0.02, "x" * 200),
]


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HIL_REGEN_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with HIL_REGEN_GOLDEN=1 to create it"
    assert actual == path.read_text(encoding="utf-8"), f"{path} differs (HIL_REGEN_GOLDEN=1 to update)"


def test_summary_golden() -> None:
    check_golden("summary.txt", summary_table(META, RECORDS, Verdict.FAILED))


def test_summary_rows_are_aligned_and_clipped() -> None:
    lines = summary_table(META, RECORDS, Verdict.FAILED).splitlines()
    header = lines[1]
    column = header.index("OUTCOME")
    rows = lines[2 : 2 + len(RECORDS)]
    assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows)
    assert all(len(row) <= 70 + 2 + 8 + 2 + 9 + 2 + 60 for row in rows)
    assert rows[-1].startswith("...") and "long_long_name  ERROR" in rows[-1]
    assert "more" not in rows[1]  # only the first line of a message


def test_summary_totals_unexpected_pass_and_verdict() -> None:
    text = summary_table(META, RECORDS, Verdict.FAILED)
    assert "6 tests: 1 passed, 1 failed, 1 skipped, 1 error, 1 xfailed, 1 xpassed in 3.75s" in text
    assert "XPASSED!" in text
    assert "!! 1 UNEXPECTED PASS(ES)" in text
    assert "!!   test_p2p.py::test_fixed: UNEXPECTED PASS" in text
    assert text.endswith("verdict: FAILED (exit 1)\n")


def test_summary_without_records() -> None:
    meta = RunMeta("rp-p2p", "tree:/src/linux", None, None, "tcg", "now")
    text = summary_table(meta, [], Verdict.INFRA_ERROR)
    assert text == (
        "p2p-hil: rp-p2p x tree:/src/linux [tcg]\n(no test results)\n0 tests in 0.00s\n"
        "verdict: INFRA-ERROR (exit 3)\n"
    )


def cell(topology: str, kernel: str, verdict: Verdict, *outcomes: str) -> MatrixCell:
    records = [TestRecord(f"t::{i}", o) for i, o in enumerate(outcomes)]  # type: ignore[arg-type]
    return MatrixCell(topology, kernel, verdict, count_outcomes(records))


CELLS = [
    cell("rp-p2p", "debian:7.2", Verdict.PASSED, "passed", "passed", "skipped"),
    cell("rp-p2p", "src:linux-7.3-rc2", Verdict.FAILED, "passed", "failed", "xpassed"),
    cell("switch-p2p", "debian:7.2", Verdict.CRASHED, "passed"),
    cell("switch-p2p-acs-off", "src:linux-7.3-rc2", Verdict.INFRA_ERROR),
]


def test_matrix_golden() -> None:
    check_golden("matrix.txt", matrix_table(CELLS))


def test_matrix_layout() -> None:
    lines = matrix_table(CELLS).splitlines()
    assert lines[0].split() == ["topology", "\\", "kernel", "debian:7.2", "src:linux-7.3-rc2"]
    assert lines[1].split() == ["rp-p2p", "passed", "3/3", "FAILED", "1/3"]
    assert lines[2].split() == ["switch-p2p", "CRASHED", "1/1", "-"]
    assert lines[3].split() == ["switch-p2p-acs-off", "-", "INFRA-ERROR", "0/0"]
    assert lines[4] == "4 runs: 1 passed, 1 failed, 1 crashed, 1 infra-error"
    assert lines[-1] == "overall: INFRA-ERROR (exit 3)"


def test_matrix_all_passed() -> None:
    assert matrix_table(CELLS[:1]).splitlines()[-1] == "overall: passed (exit 0)"


def test_matrix_accepts_run_triples() -> None:
    other = RunMeta("rp-p2p", "debian:7.2", None, None, "tcg", "now")
    runs = [(META, RECORDS, Verdict.FAILED), (other, RECORDS[:1], Verdict.PASSED)]
    assert matrix_table(runs) == matrix_table([matrix_cell(*run) for run in runs])
    assert "FAILED 3/6" in matrix_table(runs)


def test_matrix_rejects_duplicate_cells() -> None:
    with pytest.raises(ValueError, match="two runs"):
        matrix_table([CELLS[0], CELLS[0]])


def test_matrix_cell_from_a_run() -> None:
    c = matrix_cell(META, RECORDS, Verdict.FAILED)
    assert (c.topology, c.kernel, c.total, c.ok, c.failing) == ("switch-p2p", "debian:7.2", 6, 3, 3)


def test_a_matrix_cell_shows_only_what_did_not_simply_pass() -> None:
    from harness.results.model import RunMeta, TestRecord, Verdict
    from harness.results.report import summary_table

    meta = RunMeta("switch-p2p", "src:debian-7.2", "7.2.13-hil", "10.0.2", "tcg", "2026-11-30T00:00:00+00:00")
    records = [
        TestRecord("t.py::green", "passed", 0.1),
        TestRecord("t.py::why_not", "skipped", 0.0, "needs route host_bridge_iova"),
        TestRecord("t.py::known", "xfailed", 0.1, "known issue: multi-range"),
    ]
    full = summary_table(meta, records, Verdict.PASSED)
    compact = summary_table(meta, records, Verdict.PASSED, passed_rows=False)
    assert "t.py::green" in full and "t.py::green" not in compact
    assert "t.py::why_not" in compact and "t.py::known" in compact
    assert "3 tests: 1 passed, 1 skipped, 1 xfailed" in compact

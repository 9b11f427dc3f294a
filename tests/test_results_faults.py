"""harness/results/faults.py: the per-operation/per-route fault summary and the race lines."""

from __future__ import annotations

from typing import Any

from harness.results.faults import fault_lines, race_lines, summary_lines
from harness.results.model import TestRecord


def _sweep(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "operation": "map",
        "route": "host_bridge_iova",
        "label": "exporter -> dma",
        "sites": 9,
        "capped": False,
        "steps": 9,
        "steps_clean": 9,
        "absorbed": [3],
        "outside": [],
        "broken_steps": [],
        "broken": [],
        "duration_s": 12.5,
    }
    base.update(over)
    return base


BROKEN = {
    "operation": "map",
    "route": "host_bridge_iova",
    "label": "exporter -> dma",
    "fault": 5,
    "stack": [
        "dump_stack_lvl",
        "should_fail_ex",
        "should_failslab",
        "__kmalloc_noprof",
        "sg_kmalloc",
        "__sg_alloc_table",
        "sg_alloc_table",
        "dma_buf_phys_vec_to_sgt",
        "vfio_pci_dma_buf_map [vfio_pci_core]",
    ],
    "invariant": "the retry without a fault: IOVA space lost or mapping changed: ...",
}


def test_clean_sweep_line() -> None:
    record = TestRecord(
        "test_fault_injection.py::test_fault_injection_map[dma]",
        "passed",
        details={"fault_sweeps": [_sweep()]},
    )
    assert fault_lines([record]) == [
        "fault injection (per operation and route):",
        "  map [host_bridge_iova] exporter -> dma: 9 fault sites, all clean (9 steps, 1 absorbed)  "
        "[test_fault_injection.py::test_fault_injection_map[dma]: passed, 12.5 s]",
    ]


def test_a_restarted_sweep_says_after_which_fault() -> None:
    sweep = {**_sweep(), "restarted": "after fault 2: the map: moved from [...] to [...]",
             "first_pass_log": [{"n": 1}, {"n": 2}]}  # fmt: skip
    record = TestRecord("test_fault_injection.py::test_fault_injection_map[dma]", "passed",
                        details={"fault_sweeps": [sweep]})  # fmt: skip
    assert (
        "all clean (9 steps, 1 absorbed; started over after fault 2, 2 steps before)"
        in fault_lines([record])[1]
    )


def test_broken_sweep_lists_fault_site_and_invariant() -> None:
    sweep = _sweep(
        broken=[BROKEN, {**BROKEN, "fault": None, "stack": [], "invariant": "kmemleak: x"}], absorbed=[]
    )
    record = TestRecord("t::test_fault_injection_map[dma]", "failed", details={"fault_sweeps": [sweep]})
    lines = fault_lines([record])
    assert lines[1].startswith(
        "  map [host_bridge_iova] exporter -> dma: 9 fault sites, 2 broken (1 of 9 steps)"
    )
    assert lines[2] == (
        "    - fault 5 at sg_kmalloc < __sg_alloc_table < sg_alloc_table < dma_buf_phys_vec_to_sgt: "
        "the retry without a fault: IOVA space lost or mapping changed: ..."
    )
    assert lines[3] == "    - no fault at no stack: kmemleak: x"


def test_capped_and_failed_reference() -> None:
    records = [
        TestRecord("a", "failed", details={"fault_sweeps": [_sweep(capped=True, sites=None, steps=200)]}),
        TestRecord("b", "failed", details={"fault_sweeps": [_sweep(sites=None, steps=0, route=None)]}),
    ]
    lines = fault_lines(records)
    assert "cap of 200 faults hit" in lines[1]
    assert lines[2].startswith("  map exporter -> dma: no sweep (the fault-free run failed)")


def test_many_broken_are_cut() -> None:
    sweep = _sweep(broken=[{**BROKEN, "fault": n} for n in range(1, 9)])
    lines = fault_lines([TestRecord("t", "failed", details={"fault_sweeps": [sweep]})])
    assert [line.startswith("    - fault ") for line in lines[2:]] == [True, True, False]
    assert lines[-1] == "    - ... and 6 more (results.json: details.fault_sweeps)"


def test_no_sweeps_no_lines() -> None:
    records = [TestRecord("t", "skipped"), TestRecord("u", "passed", details={"fault_sweeps": "bad"})]
    assert fault_lines(records) == [] and race_lines(records) == [] and summary_lines(records) == []


def test_race_lines() -> None:
    race = {
        "seed": 20261130,
        "seconds": 10.0,
        "outcomes": {"map": {"ok": 40, "ENODEV": 3}, "reset": {"ok": 5}},
        "broken": ["an errno no revocation explains: attach: ENOMEM x1"],
    }
    lines = race_lines([TestRecord("t::test_race_importers_vs_revocation", "failed", details={"race": race})])
    assert lines == [
        "races:",
        "  t::test_race_importers_vs_revocation: seed 20261130, 10.0 s, 1 broken; ok: map 40, reset 5",
        "    - an errno no revocation explains: attach: ENOMEM x1",
    ]

"""The KTAP / kselftest TAP parser and the records made from a binary's output (pure)."""

from __future__ import annotations

from harness.kselftest.ktap import failure_lines, parse_ktap
from harness.kselftest.manifest import BinaryStatus
from harness.kselftest.records import binary_records

# What vfio_dma_mapping_test (kselftest_harness.h) prints, shortened: a pass, an assertion failure with
# its diagnostics, a skip with its reason, and kselftest.h's unnamed XFAIL.
HARNESS = """TAP version 13
1..4
# Starting 4 tests from 2 test cases.
#  RUN           vfio_dma_mapping_test.iommufd_anonymous.dma_map_unmap ...
#            OK  vfio_dma_mapping_test.iommufd_anonymous.dma_map_unmap
ok 1 vfio_dma_mapping_test.iommufd_anonymous.dma_map_unmap
#  RUN           vfio_dma_mapping_test.iommufd_anonymous.reset ...
# vfio_dma_mapping_test.c:201:reset:Expected 0 (0) == rc (-22)
# reset: Test terminated by assertion
#          FAIL  vfio_dma_mapping_test.iommufd_anonymous.reset
not ok 2 vfio_dma_mapping_test.iommufd_anonymous.reset
#      SKIP      mmap() failed: Cannot allocate memory (12)
ok 3 vfio_dma_mapping_test.iommufd_anon_hugetlb_1gb.dma_map_unmap # SKIP mmap() failed: ENOMEM (12)
ok 4 # XFAIL no second device
# FAILED: 1 / 4 tests passed.
# Totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:0
"""

KTAP_NESTED = """KTAP version 1
1..2
    KTAP version 1
    # Subtest: suite_a
    1..3
    ok 1 t1
    # t2.c:10: expected 1, got 2
    not ok 2 t2
    not ok 3 t3 # TODO not written yet
not ok 1 suite_a
    KTAP version 1
    # Subtest: suite_b
    1..1
    ok 1 u1 # SKIP no hardware
ok 2 suite_b
"""


def _done(code: int = 0, duration: float = 4.0) -> BinaryStatus:
    return BinaryStatus(exit_code=code, duration=duration, timeout_s=300.0, argv=("bin", "0000:05:00.0"))


def test_harness_output_results_directives_and_diagnostics() -> None:
    doc = parse_ktap(HARNESS)
    assert doc.version == "TAP 13" and doc.plan == 4 and not doc.unfinished and doc.bail_out is None
    names = [r.name for r in doc.results]
    assert names == [
        "vfio_dma_mapping_test.iommufd_anonymous.dma_map_unmap",
        "vfio_dma_mapping_test.iommufd_anonymous.reset",
        "vfio_dma_mapping_test.iommufd_anon_hugetlb_1gb.dma_map_unmap",
        "no second device",  # kselftest.h:253 puts the message where the name would be
    ]
    assert [(r.ok, r.directive) for r in doc.results] == [
        (True, None),
        (False, None),
        (True, "SKIP"),
        (True, "XFAIL"),
    ]
    assert doc.results[2].reason == "mmap() failed: ENOMEM (12)"
    assert failure_lines(doc.results[1].diagnostics) == [
        "# vfio_dma_mapping_test.c:201:reset:Expected 0 (0) == rc (-22)",
        "# reset: Test terminated by assertion",
    ]


def test_harness_output_becomes_named_records_with_reasons() -> None:
    records = binary_records("vfio", "vfio_dma_mapping_test", HARNESS, _done(code=1), "/run/x.out")
    by_name = {r.name: r for r in records}
    prefix = "kselftest/vfio/vfio_dma_mapping_test/"
    assert [r.outcome for r in records] == ["passed", "failed", "skipped", "xfailed"]
    failed = by_name[prefix + "vfio_dma_mapping_test.iommufd_anonymous.reset"]
    assert "vfio_dma_mapping_test.c:201:reset:Expected 0 (0) == rc (-22)" in failed.message
    assert "RUN" not in failed.message
    skipped = by_name[prefix + "vfio_dma_mapping_test.iommufd_anon_hugetlb_1gb.dma_map_unmap"]
    assert skipped.message == "mmap() failed: ENOMEM (12)"
    assert failed.details["output"] == "/run/x.out" and failed.details["ktap_number"] == 2
    # exit status 1 is explained by the failed result: no extra binary record
    assert prefix.rstrip("/") not in by_name
    assert sum(r.duration for r in records) == 4.0


def test_ktap_v1_nested_subtests_are_paths() -> None:
    doc = parse_ktap(KTAP_NESTED)
    assert doc.version == "KTAP 1" and not doc.unfinished
    got = [(r.name, r.ok, r.directive, r.children) for r in doc.results]
    assert got == [
        ("suite_a/t1", True, None, 0),
        ("suite_a/t2", False, None, 0),
        ("suite_a/t3", False, "TODO", 0),
        ("suite_a", False, None, 3),
        ("suite_b/u1", True, "SKIP", 0),
        ("suite_b", True, None, 1),
    ]
    records = binary_records("kunit", "demo", KTAP_NESTED, _done(code=1))
    outcomes = {r.name.removeprefix("kselftest/kunit/demo/"): r.outcome for r in records}
    # Parents are not records of their own when a subtest says why they failed or when they passed.
    assert outcomes == {
        "suite_a/t1": "passed",
        "suite_a/t2": "failed",
        "suite_a/t3": "xfailed",
        "suite_b/u1": "skipped",
    }
    t2 = next(r for r in records if r.name.endswith("suite_a/t2"))
    assert "t2.c:10: expected 1, got 2" in t2.message


def test_failed_parent_without_failed_child_is_a_record() -> None:
    text = (
        "KTAP version 1\n1..1\n    KTAP version 1\n    1..1\n    ok 1 a\nnot ok 1 suite # teardown failed\n"
    )
    records = binary_records("x", "b", text, _done(code=1))
    assert [(r.name, r.outcome) for r in records] == [
        ("kselftest/x/b/suite/a", "passed"),
        ("kselftest/x/b/suite", "failed"),
    ]


def test_whole_binary_skip_keeps_its_reason() -> None:
    text = "TAP version 13\n1..0 # SKIP SR-IOV may not be supported by the PF: 0000:05:00.0\n"
    (record,) = binary_records("vfio", "vfio_pci_sriov_uapi_test", text, _done(code=4))
    assert record.name == "kselftest/vfio/vfio_pci_sriov_uapi_test"
    assert (record.outcome, record.message) == (
        "skipped",
        "SR-IOV may not be supported by the PF: 0000:05:00.0",
    )


def test_timeout_is_an_error_with_the_tail_and_the_results_so_far() -> None:
    text = "TAP version 13\n1..3\nok 1 a\n# still going in b\n"
    status = BinaryStatus(exit_code=None, timed_out=True, duration=600.0, timeout_s=600.0)
    records = binary_records("iommu", "iommufd", text, status)
    assert [(r.name, r.outcome) for r in records] == [
        ("kselftest/iommu/iommufd/a", "passed"),
        ("kselftest/iommu/iommufd", "error"),
    ]
    assert "timed out after 600 s with 1 result(s) of 3 planned" in records[1].message
    assert "# still going in b" in records[1].message


def test_crash_is_an_error_naming_the_signal() -> None:
    status = BinaryStatus(exit_code=None, signal="SIGSEGV", duration=1.0)
    records = binary_records("vfio", "t", "TAP version 13\n1..2\nok 1 a\n", status)
    assert records[-1].outcome == "error" and records[-1].message.startswith("killed by SIGSEGV")


def test_plan_not_fulfilled_without_a_crash_is_an_error() -> None:
    records = binary_records("vfio", "t", "TAP version 13\n1..3\nok 1 a\n", _done(code=0))
    assert records[-1].name == "kselftest/vfio/t" and records[-1].outcome == "error"
    assert "planned 3, got 1" in records[-1].message


def test_bail_out_is_an_error() -> None:
    records = binary_records(
        "vfio", "t", "TAP version 13\n1..3\nok 1 a\nBail out! no /dev/iommu\n", _done(code=1)
    )
    assert records[-1].outcome == "error" and "Bail out! no /dev/iommu" in records[-1].message


def test_nonzero_exit_without_a_failed_result_fails_the_binary() -> None:
    records = binary_records("vfio", "t", "TAP version 13\n1..1\nok 1 a\n", _done(code=1))
    assert (
        records[-1].outcome == "failed" and "exit status 1 although no result failed" in records[-1].message
    )


def test_no_ktap_at_all_is_judged_by_exit_status() -> None:
    assert binary_records("x", "t", "hello\n", _done(code=0))[0].outcome == "passed"
    failed = binary_records("x", "t", "usage: t BDF\n", _done(code=2))
    assert failed[0].outcome == "failed" and "usage: t BDF" in failed[0].message


def test_xpass_and_error_directives() -> None:
    text = "TAP version 13\n1..2\nok 1 # XPASS fixed now\nnot ok 2 # error could not open\n"
    records = binary_records("x", "t", text, _done(code=1))
    assert [r.outcome for r in records] == ["xpassed", "error"]


def test_not_run_binary_is_a_skip_with_the_guests_reason() -> None:
    status = BinaryStatus(not_run="ks-igb has no IOMMU group", not_run_outcome="skipped", setup=("x",))
    (record,) = binary_records("vfio", "vfio_pci_device_test", "", status)
    assert (record.outcome, record.message) == ("skipped", "ks-igb has no IOMMU group")


def test_duplicate_names_are_told_apart() -> None:
    text = "TAP version 13\n1..2\nok 1 same\nnot ok 2 same\n"
    names = [r.name for r in binary_records("x", "t", text, _done(code=1))]
    assert names == ["kselftest/x/t/same", "kselftest/x/t/same#2"]


def test_carriage_returns_and_garbage_never_raise() -> None:
    doc = parse_ktap("ok\r\n\x00\x01 not a line\r\nnot ok 1 a\r\n1..1\r\n")
    assert [r.name for r in doc.results] == ["a"]

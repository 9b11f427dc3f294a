"""kernels/known-issues.yaml: strict loading, version specs, and applying entries to records."""

from __future__ import annotations

import re
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.console.events import KernelProblem
from harness.errors import ConfigError
from harness.guest.plugin import FRAME_INVARIANTS_MAX, judged_details
from harness.guest.protocol import broken_invariants
from harness.paths import GUEST_TESTS_DIR
from harness.results.known_issues import (
    KNOWN_ISSUES_FILE,
    KnownIssue,
    apply_known_issues,
    judge_test_frame,
    load_known_issues,
    parse_known_issues,
    version_key,
    version_matches,
)
from harness.results.model import GuestEnd, RunMeta, TestRecord, Verdict, exit_code, verdict
from harness.results.report import summary_table

ENTRY_YAML = """
- test: test_p2p.py::test_map_dmabuf[exporter-importer]
  kernels: [">=7.2,<7.3"]
  topologies: [switch-p2p]
  reason: p2pdma refuses the switch path when ACS is on
  reference: https://lore.kernel.org/linux-pci/20261101.p2pdma-acs@example.org/
  analysis: |
    pci_p2pdma_distance() treats the ACS redirect as host-bridge routing.
    Fixed by "PCI/P2PDMA: honour ACS P2P egress control" in 7.3-rc1.
  expected_failure: {errno: EINVAL, message: 'assert 0 == [0-9]+'}
- test: "test_iommu.py::*"
  kernels: ["7.2.13"]
  reason: iommu=pt makes dma-buf import fall back to bounce buffers
  reference: 0123456789abcdef0123456789abcdef01234567
  analysis: Seen only with the Debian build; under investigation upstream.
  expected_failure: {message: bounce}
"""


def entries() -> list[KnownIssue]:
    return parse_known_issues(ENTRY_YAML, "known-issues.yaml")


def test_shipped_entries_are_analysed_and_name_real_tests() -> None:
    """Every shipped entry carries its analysis and points at a test that exists in guest_tests."""
    assert KNOWN_ISSUES_FILE.name == "known-issues.yaml"
    entries = load_known_issues()
    for entry in entries:
        assert len(entry.analysis.split()) >= 30, entry.test
        assert entry.reason and entry.reference and entry.kernels
        if entry.test.startswith("kselftest/"):  # an upstream selftest's record (harness/kselftest)
            assert entry.test.count("/") >= 2, entry.test
            continue
        module, _, function = entry.test.partition("::")
        source = (GUEST_TESTS_DIR / module).read_text()
        defined = re.findall(r"^def (test_\w+)\(", source, re.MULTILINE)
        # An exact node id names a test function; a glob must match at least one.
        assert any(fnmatchcase(name, function.split("[")[0]) for name in defined), entry.test


def test_parse_valid_entries() -> None:
    first, second = entries()
    assert first.topologies == ["switch-p2p"]
    assert second.topologies is None
    assert second.kernels == ["7.2.13"]


_VALID = {
    "test": "a",
    "kernels": ["7.2"],
    "reason": "r",
    "reference": "x",
    "analysis": "y",
    "expected_failure": {"errno": "EIO"},
}


def _entry(**fields: Any) -> str:
    """A one-entry file: a valid entry with `fields` replaced (None drops the field)."""
    entry = {k: v for k, v in {**_VALID, **fields}.items() if v is not None}
    return yaml.safe_dump([entry], default_flow_style=True, sort_keys=False)


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (_entry(owner="me"), "f.yaml: [0].owner", "Extra inputs are not permitted"),
        (_entry(reason=None), "f.yaml: [0].reason", "Field required"),
        (_entry(kernels=[7.2]), "f.yaml: [0].kernels[0]", "valid string"),
        (_entry(kernels=["7.2", "~7.2"]), "f.yaml: [0].kernels", "'~7.2' is not a kernel version spec"),
        (_entry(kernels=[]), "f.yaml: [0].kernels", "at least 1"),
        (_entry(topologies=[]), "f.yaml: [0].topologies", "at least 1"),
        (_entry(test=""), "f.yaml: [0].test", "at least 1"),
        # An entry must name the failure it analysed, or it would excuse any failure of its test.
        (_entry(expected_failure=None), "f.yaml: [0].expected_failure", "Field required"),
        (_entry(expected_failure={}), "f.yaml: [0].expected_failure", "name the analysed failure"),
        (
            _entry(expected_failure={"errno": None, "message": None}),
            "f.yaml: [0].expected_failure",
            "name the analysed failure",
        ),
        (
            _entry(expected_failure={"errno": "EWHATEVER"}),
            "f.yaml: [0].expected_failure.errno",
            "'EWHATEVER' is not an errno symbol",
        ),
        (
            _entry(expected_failure={"errno": "98"}),
            "f.yaml: [0].expected_failure.errno",
            "'98' is not an errno symbol",
        ),
        (
            _entry(expected_failure={"message": "map failed ("}),
            "f.yaml: [0].expected_failure.message",
            "is not a regular expression",
        ),
        (
            _entry(expected_failure={"errno": "EINVAL", "why": "x"}),
            "f.yaml: [0].expected_failure.why",
            "Extra inputs are not permitted",
        ),
        ("test: a", "f.yaml", "must be a list of entries"),
        ("- ok\n- [unclosed", "f.yaml:2", "not valid YAML"),
    ],
)
def test_strict_validation(text: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_known_issues(text, "f.yaml")
    assert info.value.where == where
    assert what in str(info.value)


def test_comment_only_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert load_known_issues(path) == []


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_known_issues(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("spec", "version", "expected"),
    [
        ("7.2", "7.2.13+deb14-amd64", True),
        ("7.2", "7.2-rc3", True),
        ("7.2", "7.20.1", False),
        ("7.2.13", "7.2.13+deb14-amd64", True),
        ("7.2.1", "7.2.13", False),
        ("7.3-rc2", "7.3.0-rc2", True),
        ("7.3-rc2", "7.3", False),
        (">=7.2,<7.3", "7.2.13+deb14-amd64", True),
        (">=7.2,<7.3", "7.3-rc1", False),  # "<7.3" stops before the 7.3 cycle
        (">=7.2,<7.3", "7.1.9", False),
        ("<7.3-rc2", "7.3-rc1", True),
        ("==7.2", "7.2.0", True),
        ("==7.2", "7.2.1", False),
        (">7.2.13", "7.2.14", True),
        ("<=7.2.13", "7.2.13-cloud", True),
        ("!=7.2.5", "7.2.5+x", False),
        (">=7.2, !=7.2.5", "7.2.6", True),
        ("7.2", "not-a-version", False),
    ],
)
def test_version_specs(spec: str, version: str, expected: bool) -> None:
    assert version_matches(spec, version) is expected


def test_version_key_orders_rcs_before_the_release() -> None:
    rc, final, stable = version_key("7.3-rc7"), version_key("7.3"), version_key("7.3.1")
    assert rc is not None and final is not None and stable is not None
    assert rc < final < stable


# -- applying ------------------------------------------------------------------------------------

FAILED = TestRecord(
    "test_p2p.py::test_map_dmabuf[exporter-importer]",
    "failed",
    0.9,
    "assert 0 == 4096",
    {"mapped": 0, "map_errno": "EINVAL"},
)


def test_failure_matching_an_entry_becomes_xfailed() -> None:
    (record,) = apply_known_issues([FAILED], entries(), "7.2.13+deb14-amd64", "switch-p2p")
    assert record.outcome == "xfailed"
    assert record.message.startswith(
        "known issue: p2pdma refuses the switch path when ACS is on [https://lore"
    )
    assert record.message.endswith("; failure: assert 0 == 4096")
    assert record.details["mapped"] == 0  # what the test recorded stays
    entry = record.details["known_issue"]
    assert entry == entries()[0].model_dump()
    assert entry["reference"].startswith("https://lore.kernel.org/")
    assert entry["analysis"].startswith("pci_p2pdma_distance() treats the ACS redirect")
    assert (record.name, record.duration) == (FAILED.name, FAILED.duration)


def _routing_failure(test: str, map_errno: str, message: str) -> TestRecord:
    """A failed multi-range routing record on switch-p2p-amd, as guest_tests/test_routing.py writes it."""
    return TestRecord(f"test_routing.py::{test}", "failed", 0.3, message, {"route": "host_bridge_iova",
                      "map_errno": map_errno})  # fmt: skip


MAP_FAILED = "Failed: host_bridge_iova multi: map failed ([Errno {}] HIL_P2P_IOC_MAP: {}); due: 1 entries"
EADDRINUSE_MAP = MAP_FAILED.format(98, "Address already in use (EADDRINUSE)")
EINVAL_MAP = MAP_FAILED.format(22, "Invalid argument (EINVAL)")
LINKED_AT_0 = "AssertionError: dma_iova_link calls: ['+0x0 len 0x1000 -> 0', '+0x0 len 0x10000 -> -98']"


def test_shipped_entries_excuse_only_the_analysed_eaddrinuse() -> None:
    """A host bridge that refuses the route (EINVAL) is not the multi-range IOVA bug (EADDRINUSE)."""
    analysed = [
        _routing_failure("test_dma_list_matches_route[exporter-dma-multi]", "EADDRINUSE", EADDRINUSE_MAP),
        _routing_failure("test_iova_ranges_linked_at_their_offsets[exporter-dma]", "EADDRINUSE", LINKED_AT_0),
    ]
    refused = [
        _routing_failure("test_dma_list_matches_route[exporter-dma-multi]", "EINVAL", EINVAL_MAP),
        _routing_failure("test_iova_ranges_linked_at_their_offsets[exporter-dma]", "EINVAL",
                         "AssertionError: dma_iova_link calls: []"),
    ]  # fmt: skip
    shipped = load_known_issues()
    kernel, topology = "7.2.13-hil", "switch-p2p-amd"
    assert [r.outcome for r in apply_known_issues(analysed, shipped, kernel, topology)] == ["xfailed"] * 2
    judged = apply_known_issues(refused, shipped, kernel, topology)
    assert [r.outcome for r in judged] == ["failed", "failed"]
    assert verdict(judged, GuestEnd.DONE) is Verdict.FAILED
    for before, after in zip(refused, judged, strict=True):
        assert after.message.startswith(
            "not the known issue's failure: expected errno EADDRINUSE, but it recorded map_errno=EINVAL; "
            f"failure: {before.message}; known issue: multi-range export through the host bridge"
        ), after.message
        assert "known_issue" not in after.details  # the key says an entry applied; this one did not
        unmatched = after.details["known_issue_not_matched"]
        assert unmatched["mismatch"] == "it recorded map_errno=EINVAL"
        assert unmatched["expected_failure"] == {
            "errno": "EADDRINUSE",
            "message": None,
            "broken_invariants": None,
            "kernel_report": None,
        }
        assert after.details["map_errno"] == "EINVAL"  # what the test recorded stays


@pytest.mark.parametrize(
    ("expected", "details", "message", "mismatch"),
    [
        ({"errno": "EADDRINUSE"}, {"map_errno": "EADDRINUSE"}, "", None),
        ({"errno": "EADDRINUSE"}, {"map_errno": "EINVAL"}, "", "it recorded map_errno=EINVAL"),
        ({"errno": "EADDRINUSE"}, {"mapped": 0}, "assert 0", "the test recorded no errno"),
        # Every errno the test recorded must be the analysed one: a second, different one is another failure.
        (
            {"errno": "EIO"},
            {"errno": "EIO", "reset_errno": "ENODEV"},
            "",
            "it recorded errno=EIO, reset_errno=ENODEV",
        ),
        ({"errno": "EWOULDBLOCK"}, {"errno": "EAGAIN"}, "", None),  # one errno, two names
        ({"errno": "EINVAL"}, {"errno": "22"}, "", None),  # a number errname() had no symbol for
        ({"message": "map failed .*EADDRINUSE"}, {}, EADDRINUSE_MAP, None),
        ({"message": "map failed .*EADDRINUSE"}, {}, EINVAL_MAP, "its message does not match"),
        ({"errno": "EINVAL", "message": "^Failed: "}, {"map_errno": "EINVAL"}, EINVAL_MAP, None),
        (
            {"errno": "EINVAL", "message": "EADDRINUSE"},
            {"map_errno": "EBUSY"},
            EINVAL_MAP,
            "it recorded map_errno=EBUSY; its message does not match",
        ),
    ],
)
def test_expected_failure_must_match_the_record(
    expected: dict[str, str], details: dict[str, Any], message: str, mismatch: str | None
) -> None:
    entry = parse_known_issues(_entry(test="t.py::x", expected_failure=expected), "f.yaml")[0]
    record = TestRecord("t.py::x", "failed", 0.1, message, details)
    assert entry.expected_failure.mismatch(record) == mismatch
    (judged,) = apply_known_issues([record], [entry], "7.2.1", "any")
    assert judged.outcome == ("xfailed" if mismatch is None else "failed")


def test_pass_matching_an_entry_is_an_unexpected_pass_that_fails_the_run() -> None:
    passed = TestRecord("test_iommu.py::test_pt", "passed", 0.2)
    records = apply_known_issues([passed], entries(), "7.2.13+deb14-amd64", "rp-p2p")
    (record,) = records
    assert record.outcome == "xpassed"
    assert record.message.startswith("UNEXPECTED PASS: known issue did not reproduce: iommu=pt")
    assert record.details["known_issue"]["test"] == "test_iommu.py::*"
    run = verdict(records, GuestEnd.DONE)
    assert run is Verdict.FAILED
    assert exit_code(run) == 1
    meta = RunMeta("rp-p2p", "debian:7.2", "7.2.13+deb14-amd64", None, "kvm", "now")
    assert "!! 1 UNEXPECTED PASS(ES)" in summary_table(meta, records, run)


@pytest.mark.parametrize(
    ("record", "kernel", "topology"),
    [
        (FAILED, "7.3.1", "switch-p2p"),  # kernel outside the range
        (FAILED, "7.2.13", "rp-p2p"),  # topology not listed
        (TestRecord("test_p2p.py::test_map_dmabuf[exporter-only]", "failed"), "7.2.13", "switch-p2p"),
        (TestRecord("test_iommu.py::test_pt", "error", message="setup failed"), "7.2.13", "rp-p2p"),
        (TestRecord("test_iommu.py::test_pt", "skipped"), "7.2.13", "rp-p2p"),
        (TestRecord("test_iommu.py::test_pt", "failed"), "7.2.12", "rp-p2p"),
        (TestRecord("test_iommu.py::test_pt", "failed"), "", "rp-p2p"),  # version unknown
    ],
)
def test_records_left_alone(record: TestRecord, kernel: str, topology: str) -> None:
    assert apply_known_issues([record], entries(), kernel, topology) == [record]


def test_glob_entry_and_first_match_wins() -> None:
    wide = parse_known_issues(
        "- {test: 'test_p2p.py::*', kernels: ['7.2'], reason: wide, reference: r, analysis: a,"
        " expected_failure: {errno: EINVAL}}",
        "w.yaml",
    )
    (record,) = apply_known_issues([FAILED], [*wide, *entries()], "7.2.13", "switch-p2p")
    assert record.message.startswith("known issue: wide [r]")


def test_live_view_judges_a_test_frame_as_the_report_judges_its_record() -> None:
    shipped = load_known_issues()
    name = "test_routing.py::test_dma_list_matches_route[exporter-dma-multi]"
    for map_errno, message in (("EADDRINUSE", EADDRINUSE_MAP), ("EINVAL", EINVAL_MAP)):
        record = _routing_failure("test_dma_list_matches_route[exporter-dma-multi]", map_errno, message)
        (reported,) = apply_known_issues([record], shipped, "7.2.13-hil", "switch-p2p-amd")
        frame = {"name": name, "outcome": "failed", "duration": 0.3, "message": message,
                 "details": {"map_errno": map_errno}}  # fmt: skip
        assert judge_test_frame(frame, shipped, "7.2.13-hil", "switch-p2p-amd") == reported.outcome
    passed = {"name": name, "outcome": "passed"}
    assert judge_test_frame(passed, shipped, "7.2.13-hil", "switch-p2p-amd") == "xpassed"
    assert judge_test_frame({"name": name, "outcome": "?"}, shipped, "7.2.13-hil", "switch-p2p-amd") == "?"
    # A frame with name and outcome only cannot show that the failure is the known one.
    bare = {"name": name, "outcome": "failed"}
    assert judge_test_frame(bare, shipped, "7.2.13-hil", "switch-p2p-amd") == "failed"


INVARIANT_ENTRIES = """
- test: test_fault_injection.py::test_fault_injection_map[dma]
  kernels: ["7.2"]
  reason: a failed map leaks its IOVA span
  reference: kernels/series/fix-dma-buf-leaks.mbox
  analysis: the error paths of dma_buf_phys_vec_to_sgt() never free the span dma_iova_try_alloc() took.
  expected_failure:
    broken_invariants: ['IOVA space lost.*\\| stack: .*sg_alloc_table < dma_buf_phys_vec_to_sgt']
- test: "test_fault_injection.py::*"
  kernels: ["7.2"]
  reason: every unmap leaks the scatterlist
  reference: kernels/series/fix-dma-buf-leaks.mbox
  analysis: sg_free_table() frees orig_nents entries and dma_buf_phys_vec_to_sgt() cleared orig_nents.
  expected_failure:
    broken_invariants: ['kmemleak.*__sg_alloc_table < sg_alloc_table < dma_buf_phys_vec_to_sgt']
"""

IOVA_LOST: dict[str, Any] = {
    "operation": "map", "route": "host_bridge_iova", "label": "exporter -> dma", "fault": 9,
    "stack": ["should_failslab", "__kmalloc_noprof", "__sg_alloc_table", "sg_alloc_table",
              "dma_buf_phys_vec_to_sgt", "vfio_pci_dma_buf_map"],
    "invariant": "the retry without a fault: IOVA space lost or mapping changed: the map gives ...",
}  # fmt: skip
SG_LEAK: dict[str, Any] = {
    "operation": "map",
    "route": "host_bridge_iova",
    "label": "exporter -> dma",
    "fault": None,
    "stack": [],
    "invariant": "kmemleak, not attributed to a step: 32 bytes at 0xffff888006903b40 (python): "
    "__kmalloc_noprof < __sg_alloc_table < sg_alloc_table < dma_buf_phys_vec_to_sgt < vfio_pci_dma_buf_map",
}
OTHER = {**IOVA_LOST, "fault": 3, "invariant": "a dma-buf attachment left behind", "stack": ["x"]}


def _sweep_failure(*broken: dict[str, Any], name: str = "test_fault_injection_map[dma]") -> TestRecord:
    details = {"fault_sweeps": [{"operation": "map", "broken": list(broken)}]}
    return TestRecord(
        f"test_fault_injection.py::{name}", "failed", 9.0, "Failed: broken invariant(s)", details
    )


@pytest.mark.parametrize(
    ("broken", "outcome"),
    [
        ((IOVA_LOST,), "xfailed"),
        ((IOVA_LOST, SG_LEAK), "xfailed"),  # two analysed bugs in one test: both entries explain it
        ((SG_LEAK,), "xfailed"),
        ((IOVA_LOST, SG_LEAK, OTHER), "failed"),  # a third, unanalysed breakage is never hidden
        ((), "failed"),  # failed without recording what it broke: not the analysed failure
    ],
)
def test_broken_invariants_are_excused_only_when_every_one_is_analysed(
    broken: tuple[dict[str, Any], ...], outcome: str
) -> None:
    known = parse_known_issues(INVARIANT_ENTRIES, "known-issues.yaml")
    (record,) = apply_known_issues([_sweep_failure(*broken)], known, "7.2.13-hil", "switch-p2p-amd")
    assert record.outcome == outcome, record.message
    if outcome == "failed" and broken:
        assert (
            "1 broken invariant(s) no entry explains, first: map [host_bridge_iova] fault 3: a dma-buf"
            in (record.message)
        )


@pytest.mark.parametrize(
    "broken",
    [(IOVA_LOST,), (IOVA_LOST, SG_LEAK), (SG_LEAK,), (IOVA_LOST, SG_LEAK, OTHER)],
    ids=["iova-lost", "both-analysed", "sg-leak", "one-unanalysed"],
)
def test_live_view_judges_broken_invariants_as_the_report_does(broken: tuple[dict[str, Any], ...]) -> None:
    """The failed test's frame carries its broken-invariant lines (harness.guest.plugin), so a sweep
    failure an entry explains shows as xfailed live, not failed and then xfailed in the report."""
    known = parse_known_issues(INVARIANT_ENTRIES, "known-issues.yaml")
    record = _sweep_failure(*broken)
    (reported,) = apply_known_issues([record], known, "7.2.13-hil", "switch-p2p-amd")
    frame = {"name": record.name, "outcome": "failed", "message": record.message,
             "details": judged_details(record.details)}  # fmt: skip
    assert judge_test_frame(frame, known, "7.2.13-hil", "switch-p2p-amd") == reported.outcome


def test_a_frame_leaves_out_invariants_past_its_limit() -> None:
    many = {"fault_sweeps": [{"broken": [{**OTHER, "fault": n} for n in range(FRAME_INVARIANTS_MAX + 1)]}]}
    assert judged_details({**many, "map_errno": "EINVAL", "size": 1}) == {"map_errno": "EINVAL"}
    few = {"fault_sweeps": [{"broken": [OTHER]}], "size": 1}
    assert judged_details(few) == {"broken_invariants": broken_invariants(few)}


def test_broken_invariant_lines_name_operation_route_fault_and_stack() -> None:
    assert broken_invariants(
        {"fault_sweeps": [{"broken": [IOVA_LOST]}], "broken_invariants": ["race: x"]}
    ) == [
        "map [host_bridge_iova] fault 9: the retry without a fault: IOVA space lost or mapping changed: "
        "the map gives ... | stack: should_failslab < __kmalloc_noprof < __sg_alloc_table < sg_alloc_table < "
        "dma_buf_phys_vec_to_sgt < vfio_pci_dma_buf_map",
        "race: x",
    ]


def test_an_entry_for_a_kernel_variant_applies_only_to_that_variant() -> None:
    """A leak only kmemleak shows is a failure on the debug kernel and a pass on the plain one."""
    text = INVARIANT_ENTRIES.replace(
        "  reason: every unmap leaks", "  variants: [debug]\n  reason: every unmap leaks"
    ).replace('"test_fault_injection.py::*"', "test_fault_injection.py::test_fault_injection_unmap[dma]")
    known = parse_known_issues(text, "known-issues.yaml")
    leaked = _sweep_failure(SG_LEAK, name="test_fault_injection_unmap[dma]")
    passed = replace(leaked, outcome="passed", details={})
    debug = apply_known_issues([leaked, passed], known, "7.2.13-hil", "switch-p2p-amd", ("debug",))
    assert [r.outcome for r in debug] == ["xfailed", "xpassed"]
    plain = apply_known_issues([leaked, passed], known, "7.2.13-hil", "switch-p2p-amd")
    assert [r.outcome for r in plain] == ["failed", "passed"]


def test_a_glob_entry_of_broken_invariants_excuses_where_they_show_and_leaves_passes_alone() -> None:
    text = INVARIANT_ENTRIES.replace(
        "  reason: every unmap leaks", "  variants: [debug]\n  reason: every unmap leaks"
    )
    known = parse_known_issues(text, "known-issues.yaml")
    leaked = _sweep_failure(SG_LEAK, name="test_fault_injection_export")
    passed = replace(leaked, outcome="passed", details={})
    judged = apply_known_issues([leaked, passed], known, "7.2.13-hil", "switch-p2p-amd", ("debug",))
    assert [r.outcome for r in judged] == ["xfailed", "passed"]


REPORT_ENTRY = """
- test: test_data_dma.py::test_edu_copies_through_mapping[whole-bar]
  kernels: [">=7.2"]
  reason: unmapped in pieces of another size
  reference: docs/bugs/dma-buf-direct-unmap-size.md
  analysis: constructed
  expected_failure: {kernel_report: 'WARNING: kernel/dma/debug\\.c:\\d+ at check_unmap'}
- test: "test_races.py::*"
  kernels: [">=7.2"]
  reason: the same, in a race
  reference: docs/bugs/dma-buf-direct-unmap-size.md
  analysis: constructed
  expected_failure: {kernel_report: 'check_unmap'}
"""
WHOLE = "test_data_dma.py::test_edu_copies_through_mapping[whole-bar]"


def _warning(during: str | None) -> KernelProblem:
    line = "WARNING: kernel/dma/debug.c:1014 at check_unmap+0xdf7/0x2ea0, CPU#0: python/68"
    return KernelProblem("warning", line, f"[ 1.0] {line}", during=during)


def test_a_kernel_report_entry_names_only_the_report() -> None:
    with pytest.raises(ConfigError, match="kernel_report names what the console shows"):
        parse_known_issues(REPORT_ENTRY.replace("{kernel_report:", "{errno: EINVAL, kernel_report:", 1))
    with pytest.raises(ConfigError, match="is not a regular expression"):
        parse_known_issues(REPORT_ENTRY.replace("check_unmap'}", "check_unmap('}", 1))
    entry = parse_known_issues(REPORT_ENTRY)[0]
    assert entry.expected_failure.describe().startswith("a kernel report matching")


def test_reports_are_explained_only_during_their_test_in_a_finished_guest() -> None:
    from harness.results.known_issues import explain_reports

    entries = parse_known_issues(REPORT_ENTRY)
    problems = [
        _warning(WHOLE),
        _warning("test_export.py::test_a"),
        _warning(None),
        _warning("test_races.py::x"),
    ]
    explained = explain_reports(problems, entries, "7.2.13-hil", "bar-4g-pt", finished=True)
    assert [p.known_issue is not None for p in explained] == [True, False, False, True]
    assert (
        explained[0].known_issue
        == "unmapped in pieces of another size [docs/bugs/dma-buf-direct-unmap-size.md]"
    )
    assert explain_reports(problems, entries, "7.2.13-hil", "bar-4g-pt", finished=False) == problems
    assert all(p.known_issue is None for p in explain_reports(problems, entries, "7.1.2", "x", finished=True))


def test_known_reports_judge_the_tests_that_printed_them() -> None:
    from harness.results.known_issues import apply_known_reports

    entries = parse_known_issues(REPORT_ENTRY)
    records = [
        TestRecord(WHOLE, "passed", 0.1, "", {}),
        TestRecord("test_races.py::test_race", "passed", 0.1, "", {}),
        TestRecord("test_races.py::test_other", "failed", 0.1, "boom", {}),
    ]
    judged = apply_known_reports(records, [_warning(WHOLE)], entries, "7.2.13-hil", "bar-4g-pt")
    assert [r.outcome for r in judged] == ["xfailed", "passed", "failed"]  # a glob entry does not xpass
    assert judged[0].details["known_issue"]["reference"] == "docs/bugs/dma-buf-direct-unmap-size.md"
    quiet = apply_known_reports(records, [], entries, "7.2.13-hil", "bar-4g-pt")
    assert [r.outcome for r in quiet] == ["xpassed", "passed", "failed"]
    # A kernel_report entry never judges a record by its own failure.
    assert apply_known_issues(records, entries, "7.2.13-hil", "bar-4g-pt") == records


def test_a_report_another_matching_entry_explains_is_not_an_unexpected_pass() -> None:
    from harness.results.known_issues import apply_known_reports

    both = (
        REPORT_ENTRY
        + """
- test: "test_data_dma.py::*"
  kernels: [">=7.2"]
  reason: DMA-API debug sees overlapping entries
  reference: docs/bugs/x.md
  analysis: constructed
  expected_failure: {kernel_report: 'add_dma_entry'}
"""
    )
    entries = parse_known_issues(both)
    line = "WARNING: kernel/dma/debug.c:465 at add_dma_entry+0x3a6/0x490, CPU#1: python/101"
    other = KernelProblem("warning", line, line, during=WHOLE)
    (judged,) = apply_known_reports(
        [TestRecord(WHOLE, "passed", 0.1, "", {})], [other], entries, "7.2.13-hil", "bar-4g-pt"
    )
    assert judged.outcome == "xfailed"
    assert judged.details["known_issue"]["reference"] == "docs/bugs/x.md"

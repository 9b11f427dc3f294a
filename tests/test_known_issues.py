"""kernels/known-issues.yaml: strict loading, version specs, and applying entries to records."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.paths import GUEST_TESTS_DIR
from harness.results.known_issues import (
    KNOWN_ISSUES_FILE,
    KnownIssue,
    apply_known_issues,
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
- test: "test_iommu.py::*"
  kernels: ["7.2.13"]
  reason: iommu=pt makes dma-buf import fall back to bounce buffers
  reference: 0123456789abcdef0123456789abcdef01234567
  analysis: Seen only with the Debian build; under investigation upstream.
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
        module, _, function = entry.test.partition("::")
        source = (GUEST_TESTS_DIR / module).read_text()
        assert f"def {function.split('[')[0]}(" in source, entry.test


def test_parse_valid_entries() -> None:
    first, second = entries()
    assert first.topologies == ["switch-p2p"]
    assert second.topologies is None
    assert second.kernels == ["7.2.13"]


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (
            "- {test: a, kernels: ['7.2'], reason: r, reference: x, analysis: y, owner: me}",
            "f.yaml: [0].owner",
            "Extra inputs are not permitted",
        ),
        ("- {test: a, kernels: ['7.2'], reference: x, analysis: y}", "f.yaml: [0].reason", "Field required"),
        (
            "- {test: a, kernels: [7.2], reason: r, reference: x, analysis: y}",
            "f.yaml: [0].kernels[0]",
            "valid string",
        ),
        (
            "- {test: a, kernels: ['7.2', '~7.2'], reason: r, reference: x, analysis: y}",
            "f.yaml: [0].kernels",
            "'~7.2' is not a kernel version spec",
        ),
        (
            "- {test: a, kernels: [], reason: r, reference: x, analysis: y}",
            "f.yaml: [0].kernels",
            "at least 1",
        ),
        (
            "- {test: a, kernels: ['7.2'], topologies: [], reason: r, reference: x, analysis: y}",
            "f.yaml: [0].topologies",
            "at least 1",
        ),
        (
            "- {test: '', kernels: ['7.2'], reason: r, reference: x, analysis: y}",
            "f.yaml: [0].test",
            "at least 1",
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
    "test_p2p.py::test_map_dmabuf[exporter-importer]", "failed", 0.9, "assert 0 == 4096", {"mapped": 0}
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
        "- {test: 'test_p2p.py::*', kernels: ['7.2'], reason: wide, reference: r, analysis: a}", "w.yaml"
    )
    (record,) = apply_known_issues([FAILED], [*wide, *entries()], "7.2.13", "switch-p2p")
    assert record.message.startswith("known issue: wide [r]")

"""harness.matrix.kcidb: a matrix as KCIDB I/O data, checked with kcidb-io's own validator."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from kcidb_io.schema import LATEST  # type: ignore[import-untyped]
from matrix_fixtures import FakeCell, record, write_matrix

from harness.console.events import KernelProblem
from harness.matrix.kcidb import CELL_TEST_PATH, kcidb_json, kcidb_path, kcidb_text
from harness.results.model import OUTCOMES, Outcome, RunMeta, TestRecord, Verdict

KERNEL_B = "src:debian-7.3"
PANIC = KernelProblem(
    "panic",
    "Kernel panic - not syncing: Fatal exception",
    "[   9.100000] Kernel panic - not syncing: Fatal exception\n[   9.100100] Kernel Offset: disabled",
)
KNOWN_TEST = "test_routing.py::test_dma_list_matches_route[exporter-dma-multi]"
KNOWN: dict[str, Any] = {
    "test": KNOWN_TEST,
    "kernels": [">=7.2,<7.3"],
    "topologies": None,
    "reason": "multi-range IOVA maps every range at the first range's address",
    "reference": "https://lore.kernel.org/all/20261101-iova-multirange@example.org/",
    "analysis": "dma_iova_link(..., phys_vec[i].paddr, 0, ...) links each range at offset 0.",
    "expected_failure": {"errno": None, "message": "range 1 .*"},
}


@dataclass
class TimedCell(FakeCell):
    """A FakeCell whose run started at a time of the test's choosing (another night's run)."""

    started_at: str = "2026-11-30T01:00:00+00:00"
    timeline: tuple[dict[str, object], ...] = ()

    def meta(self) -> RunMeta:
        return replace(super().meta(), started_at=self.started_at, timeline=list(self.timeline))


def _validate(document: dict[str, Any]) -> dict[str, Any]:
    # The document must name the newest version this kcidb-io ships and be valid for exactly that one.
    assert LATEST.get_exactly_compatible(document) is LATEST
    LATEST.validate_exactly(document)  # raises jsonschema's ValidationError, naming the field
    return document


def _kcidb(tmp_path: Path, cells: Sequence[FakeCell], **kwargs: Any) -> dict[str, Any]:
    return _validate(kcidb_json(write_matrix(tmp_path, cells), **kwargs))


def _tests(document: dict[str, Any], path: str) -> list[dict[str, Any]]:
    return [t for t in document["tests"] if t["path"] == path]


def _one_test(document: dict[str, Any], node_id: str) -> dict[str, Any]:
    (test,) = [t for t in document["tests"] if t["misc"].get("node_id") == node_id]
    assert isinstance(test, dict)
    return test


def _every_outcome() -> list[TestRecord]:
    return [
        record(f"test_outcomes.py::test_one[{outcome}]", outcome, f"{outcome} here") for outcome in OUTCOMES
    ]


def _nightly() -> list[FakeCell]:
    """Two kernels, three topologies, every outcome, a crash, an infra-error and a flaky test."""
    return [
        FakeCell("switch-p2p", records=_every_outcome(), verdict=Verdict.FAILED),
        FakeCell(
            "switch-p2p-amd", axes={"cpu": "EPYC-Rome"}, records=[record("test_a.py::test_ok", "passed")]
        ),
        FakeCell(
            "switch-p2p",
            kernel=KERNEL_B,
            kernel_version="7.3.4-hil",
            records=[record("test_a.py::test_ok", "passed")],
            verdict=Verdict.CRASHED,
            evidence=[PANIC],
        ),
        FakeCell(
            "switch-p2p-amd",
            kernel=KERNEL_B,
            kernel_version="7.3.4-hil",
            verdict=Verdict.INFRA_ERROR,
            evidence=["infrastructure error in the cell (InfraError): vng exited 1"],
        ),
    ]


def test_a_nightly_matrix_is_valid_kcidb_of_the_newest_schema(tmp_path: Path) -> None:
    document = _kcidb(tmp_path, _nightly())

    assert document["version"] == {"major": LATEST.major, "minor": LATEST.minor}
    # One test per record plus one per cell, every one attached to a build of the document.
    assert len(document["tests"]) == len(OUTCOMES) + 1 + 1 + 0 + 4
    build_ids = {b["id"] for b in document["builds"]}
    assert {t["build_id"] for t in document["tests"]} == build_ids
    assert {b["checkout_id"] for b in document["builds"]} == {c["id"] for c in document["checkouts"]}
    ids = [o["id"] for kind in ("checkouts", "builds", "tests") for o in document[kind]]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("p2phil:") for i in ids)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        ("passed", "PASS"),
        ("failed", "FAIL"),
        ("error", "ERROR"),
        ("skipped", "SKIP"),
        ("xfailed", "FAIL"),
        ("xpassed", "FAIL"),
        ("flaky", "DONE"),
    ],
)
def test_each_outcome_has_its_kcidb_status(tmp_path: Path, outcome: Outcome, status: str) -> None:
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=_every_outcome(), verdict=Verdict.FAILED)])

    test = _one_test(document, f"test_outcomes.py::test_one[{outcome}]")
    assert test["status"] == status
    assert test["misc"]["outcome"] == outcome
    assert test["path"] == f"p2phil.test_outcomes.test_one.{outcome}"
    assert test["log_excerpt"] == f"{outcome} here"
    assert test["duration"] == 0.25


def test_every_outcome_of_the_model_is_mapped(tmp_path: Path) -> None:
    # A new outcome added to the model must get a status here, not a KeyError on the night it appears.
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=_every_outcome(), verdict=Verdict.FAILED)])
    assert {t["misc"]["outcome"] for t in document["tests"] if "outcome" in t["misc"]} == set(OUTCOMES)


def test_a_flaky_test_is_never_reported_as_passed(tmp_path: Path) -> None:
    flaky = record("test_a.py::test_race", "flaky", attempts=[{"outcome": "failed"}, {"outcome": "passed"}])
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=[flaky])])

    test = _one_test(document, "test_a.py::test_race")
    assert test["status"] == "DONE"
    assert test["misc"]["flaky"] is True
    assert test["misc"]["attempts"] == [{"outcome": "failed"}, {"outcome": "passed"}]
    assert "flaky" in test["comment"]


def test_an_xfailed_known_issue_is_a_failure_linked_to_its_issue(tmp_path: Path) -> None:
    xfailed = record(KNOWN_TEST, "xfailed", "range 1 at the wrong address", known_issue=KNOWN)
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=[xfailed])])

    test = _one_test(document, KNOWN_TEST)
    assert test["status"] == "FAIL"
    (issue,) = document["issues"]
    assert issue["id"].startswith("p2phil:")
    assert issue["report_url"] == KNOWN["reference"]
    assert issue["culprit"]["code"] is True
    assert issue["misc"]["analysis"] == KNOWN["analysis"]
    assert test["misc"]["known_issue"] == {"id": issue["id"], "reference": KNOWN["reference"]}
    (incident,) = document["incidents"]
    assert incident["test_id"] == test["id"]
    assert (incident["issue_id"], incident["issue_version"]) == (issue["id"], issue["version"])
    assert incident["present"] is True


def test_an_xpassed_known_issue_fails_and_says_the_issue_is_absent(tmp_path: Path) -> None:
    xpassed = record(KNOWN_TEST, "xpassed", "UNEXPECTED PASS", known_issue=KNOWN)
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=[xpassed], verdict=Verdict.FAILED)])

    assert _one_test(document, KNOWN_TEST)["status"] == "FAIL"
    (incident,) = document["incidents"]
    assert incident["present"] is False


def test_one_known_issue_hit_in_two_cells_is_one_issue_with_two_incidents(tmp_path: Path) -> None:
    xfailed = record(KNOWN_TEST, "xfailed", known_issue=KNOWN)
    cells = [FakeCell("switch-p2p", records=[xfailed]), FakeCell("switch-p2p-amd", records=[xfailed])]
    document = _kcidb(tmp_path, cells)

    assert len(document["issues"]) == 1
    assert len(document["incidents"]) == 2
    assert len({i["test_id"] for i in document["incidents"]}) == 2


def test_a_known_issue_with_a_reference_that_is_no_url_has_no_report_url(tmp_path: Path) -> None:
    known = {**KNOWN, "reference": "commit 1234abcd (not yet upstream)"}
    document = _kcidb(
        tmp_path, [FakeCell("switch-p2p", records=[record(KNOWN_TEST, "xfailed", known_issue=known)])]
    )
    (issue,) = document["issues"]
    assert "report_url" not in issue
    assert issue["misc"]["reference"] == known["reference"]


def test_no_known_issue_no_issues_or_incidents(tmp_path: Path) -> None:
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=_every_outcome(), verdict=Verdict.FAILED)])
    assert "issues" not in document
    assert "incidents" not in document


def test_ids_are_the_same_for_the_same_cells_in_another_directory(tmp_path: Path) -> None:
    first = _kcidb(tmp_path / "a", _nightly())
    second = _kcidb(tmp_path / "b", _nightly())

    assert first == second


def test_another_nights_run_keeps_checkouts_and_builds_and_gets_new_test_ids(tmp_path: Path) -> None:
    cells = [TimedCell("switch-p2p", records=[record("test_a.py::test_ok", "passed")])]
    tonight = _kcidb(tmp_path / "a", cells)
    tomorrow = _kcidb(tmp_path / "b", [replace(cells[0], started_at="2026-12-01T01:00:00+00:00")])

    for kind in ("checkouts", "builds"):
        assert [o["id"] for o in tonight[kind]] == [o["id"] for o in tomorrow[kind]]
    assert not {t["id"] for t in tonight["tests"]} & {t["id"] for t in tomorrow["tests"]}
    assert [t["path"] for t in tonight["tests"]] == [t["path"] for t in tomorrow["tests"]]


def test_two_kernels_are_two_checkouts_and_two_builds(tmp_path: Path) -> None:
    document = _kcidb(tmp_path, _nightly())

    assert [c["misc"]["kernel"] for c in document["checkouts"]] == ["src:debian-7.2", KERNEL_B]
    assert [c["misc"]["kernel_version"] for c in document["checkouts"]] == ["7.2.13-hil", "7.3.4-hil"]
    assert len({c["id"] for c in document["checkouts"]}) == 2
    by_kernel = {b["misc"]["kernel"]: b for b in document["builds"]}
    assert set(by_kernel) == {"src:debian-7.2", KERNEL_B}
    for build in document["builds"]:
        assert build["architecture"] == "x86_64"
        assert build["status"] == "PASS"
        assert build["config_name"] == build["misc"]["kernel"]
    for test in document["tests"]:
        assert test["build_id"] == by_kernel[test["misc"]["kernel"]]["id"]


def test_the_same_label_with_two_versions_is_two_checkouts(tmp_path: Path) -> None:
    cells = [FakeCell("switch-p2p"), FakeCell("switch-p2p-amd", kernel_version="7.2.14-hil")]
    document = _kcidb(tmp_path, cells)
    assert sorted(c["misc"]["kernel_version"] for c in document["checkouts"]) == ["7.2.13-hil", "7.2.14-hil"]


def test_a_kernel_that_never_booted_still_has_a_checkout_and_a_build(tmp_path: Path) -> None:
    never = FakeCell("switch-p2p", kernel=KERNEL_B, verdict=Verdict.INFRA_ERROR, evidence=["no modules"])
    never.kernel_version = None  # type: ignore[assignment]
    document = _kcidb(tmp_path, [FakeCell("switch-p2p"), never])

    (checkout,) = [c for c in document["checkouts"] if c["misc"]["kernel"] == KERNEL_B]
    assert checkout["misc"]["kernel_version"] is None
    assert "never booted" in checkout["comment"]
    (build,) = [b for b in document["builds"] if b["checkout_id"] == checkout["id"]]
    (cell_test,) = [t for t in document["tests"] if t["build_id"] == build["id"]]
    assert (cell_test["path"], cell_test["status"]) == (CELL_TEST_PATH, "ERROR")


def test_a_cell_without_a_version_joins_the_version_its_kernel_booted_elsewhere(tmp_path: Path) -> None:
    never = FakeCell("switch-p2p-amd", verdict=Verdict.INFRA_ERROR, evidence=["QEMU did not start"])
    never.kernel_version = None  # type: ignore[assignment]
    document = _kcidb(tmp_path, [FakeCell("switch-p2p"), never])

    assert len(document["checkouts"]) == 1
    assert len(document["builds"]) == 1


def test_a_crashed_cell_has_a_failing_cell_test_with_its_evidence(tmp_path: Path) -> None:
    document = _kcidb(tmp_path, _nightly())

    (crashed,) = [t for t in _tests(document, CELL_TEST_PATH) if t["misc"]["cell_verdict"] == "crashed"]
    assert crashed["status"] == "FAIL"
    assert crashed["misc"]["evidence"] == [PANIC.first_line]
    assert PANIC.first_line in crashed["comment"]
    assert crashed["log_excerpt"] == PANIC.excerpt
    assert crashed["misc"]["console_log"] == f"{crashed['misc']['cell_dir']}/console.log"
    assert crashed["environment"]["misc"]["topology"] == "switch-p2p"


@pytest.mark.parametrize(
    ("verdict", "records", "status"),
    [
        (Verdict.PASSED, [record("test_a.py::test_ok", "passed")], "PASS"),
        # The records say what failed; the machine itself lived through the run.
        (Verdict.FAILED, [record("test_a.py::test_bad", "failed")], "PASS"),
        # No record says so (e.g. a selection that matched nothing): the cell test must.
        (Verdict.FAILED, [], "FAIL"),
        (Verdict.CRASHED, [record("test_a.py::test_ok", "passed")], "FAIL"),
        (Verdict.HUNG, [record("test_a.py::test_ok", "error")], "FAIL"),
        (Verdict.INFRA_ERROR, [], "ERROR"),
    ],
)
def test_the_cell_test_status_follows_the_verdict(
    tmp_path: Path, verdict: Verdict, records: list[TestRecord], status: str
) -> None:
    evidence = [] if verdict in (Verdict.PASSED, Verdict.FAILED) else [f"{verdict.value}: first\nsecond line"]
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=records, verdict=verdict, evidence=evidence)])

    (cell_test,) = _tests(document, CELL_TEST_PATH)
    assert cell_test["status"] == status
    assert cell_test["duration"] == 30.0
    assert cell_test["start_time"] == "2026-11-30T01:00:00+00:00"
    if evidence:
        assert cell_test["misc"]["evidence"] == [f"{verdict.value}: first"]
        assert cell_test["comment"].endswith(f"{verdict.value}: first")


def test_a_build_holding_a_crash_summarises_to_fail(tmp_path: Path) -> None:
    # KCIDB summarises a build by the highest-priority status of its tests (FAIL > ERROR > MISS > PASS ...).
    priority = ["FAIL", "ERROR", "MISS", "PASS", "DONE", "SKIP"]
    cell = FakeCell("switch-p2p", records=[record("test_a.py::test_ok", "passed")], verdict=Verdict.CRASHED)
    document = _kcidb(tmp_path, [cell])
    assert min((t["status"] for t in document["tests"]), key=priority.index) == "FAIL"


@pytest.mark.parametrize(
    ("node_id", "path"),
    [
        ("test_export.py::test_export_whole_bar", "p2phil.test_export.test_export_whole_bar"),
        (
            "test_routing.py::test_dma_list_matches_route[exporter-dma-whole]",
            "p2phil.test_routing.test_dma_list_matches_route.exporter-dma-whole",
        ),
        ("sub/test_x.py::TestY::test_z[a.b/c d]", "p2phil.sub.test_x.TestY.test_z.a_b_c_d"),
        ("test_x.py::test_z[]", "p2phil.test_x.test_z"),
        ("test_ünï.py::test_é", "p2phil.test__n_.test__"),
    ],
)
def test_node_ids_become_dotted_kcidb_paths(node_id: str, path: str) -> None:
    assert kcidb_path(node_id) == path
    assert LATEST.path_re.fullmatch(path)


def test_odd_node_ids_and_messages_still_validate(tmp_path: Path) -> None:
    records = [
        record("test_x.py::test_z[a.b/c d]", "failed", "bad byte \0 here" + "x" * 20000),
        record("test_x.py::test_z[a.b/c d]", "failed", "the same node id twice"),
    ]
    document = _kcidb(tmp_path, [FakeCell("switch-p2p", records=records, verdict=Verdict.FAILED)])

    tests = [t for t in document["tests"] if t["path"] != CELL_TEST_PATH]
    assert len({t["id"] for t in tests}) == 2
    assert all(t["misc"]["node_id"] == "test_x.py::test_z[a.b/c d]" for t in tests)
    assert "\0" not in tests[0]["log_excerpt"]
    assert len(tests[0]["log_excerpt"]) == 16384


def test_a_test_starts_when_the_cell_timeline_says_it_began(tmp_path: Path) -> None:
    timeline = (
        {"mark": "host_start", "t": 0.0},
        {"mark": "test_begin", "t": 12.5, "detail": "test_a.py::test_ok"},
    )
    cell = TimedCell(
        "switch-p2p", records=[record("test_a.py::test_ok", "passed"), record("test_a.py::test_b", "passed")]
    )
    document = _kcidb(tmp_path, [replace(cell, timeline=timeline)])

    assert _one_test(document, "test_a.py::test_ok")["start_time"] == "2026-11-30T01:00:12.500000+00:00"
    # No begin mark: the cell's start.
    assert _one_test(document, "test_a.py::test_b")["start_time"] == "2026-11-30T01:00:00+00:00"


def test_a_start_time_without_an_offset_is_left_out(tmp_path: Path) -> None:
    cell = TimedCell(
        "switch-p2p", records=[record("test_a.py::test_ok", "passed")], started_at="2026-11-30 01:00"
    )
    document = _kcidb(tmp_path, [cell])
    assert all("start_time" not in o for kind in ("checkouts", "tests") for o in document[kind])


def test_environment_carries_topology_axes_and_accelerator(tmp_path: Path) -> None:
    document = _kcidb(tmp_path, _nightly())

    (amd,) = [
        t
        for t in _tests(document, CELL_TEST_PATH)
        if t["misc"]["cell"].startswith("switch-p2p-amd__src-debian-7.2")
    ]
    environment = amd["environment"]
    assert environment["misc"]["axes"] == {"cpu": "EPYC-Rome"}
    assert environment["misc"]["accelerator"] == "tcg"
    assert environment["misc"]["topology"] == "switch-p2p-amd"
    assert "cpu=EPYC-Rome" in environment["comment"]


def test_a_base_url_gives_log_urls_and_output_files(tmp_path: Path) -> None:
    base = "https://ci.example.org/jobs/42/artifacts/raw/nightly/"
    document = _kcidb(tmp_path, _nightly(), base_url=base)

    for test in document["tests"]:
        cell_dir = test["misc"]["cell_dir"]
        assert (
            test["log_url"] == f"https://ci.example.org/jobs/42/artifacts/raw/nightly/{cell_dir}/console.log"
        )
        assert [f["name"] for f in test["output_files"]] == ["results.json", "junit.xml"]


def test_no_base_url_no_urls(tmp_path: Path) -> None:
    document = _kcidb(tmp_path, _nightly())
    assert not any("log_url" in t or "output_files" in t for t in document["tests"])


def test_a_cell_without_a_console_log_gets_no_log_url(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, [FakeCell("switch-p2p", verdict=Verdict.INFRA_ERROR)])
    (tmp_path / FakeCell("switch-p2p").id / "console.log").unlink()
    (test,) = _validate(kcidb_json(matrix, base_url="https://ci.example.org/a"))["tests"]
    assert "log_url" not in test
    assert test["output_files"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": "P2P-HIL"}, "origin"),
        ({"base_url": "nightly/2026-11-30"}, "base URL"),
        ({"base_url": "https://example.org/a b"}, "base URL"),
    ],
)
def test_arguments_that_would_make_invalid_kcidb_are_refused(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    matrix = write_matrix(tmp_path, [FakeCell("switch-p2p")])
    with pytest.raises(ValueError, match=message):
        kcidb_json(matrix, **kwargs)


def test_another_origin_prefixes_every_id(tmp_path: Path) -> None:
    document = _kcidb(tmp_path, _nightly(), origin="mylab")
    objects = [o for kind in ("checkouts", "builds", "tests") for o in document[kind]]
    assert all(o["origin"] == "mylab" and o["id"].startswith("mylab:") for o in objects)
    assert all(t["build_id"].startswith("mylab:") for t in document["tests"])


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["tests"][0].update(status="XFAIL"),
        lambda d: d["tests"][0].update(path="p2phil.test_x.test_z[a]"),
        lambda d: d["tests"][0].update(id="no-origin-prefix"),
        lambda d: d["tests"][0].update(log_url="switch-p2p__src-debian-7.2/console.log"),
        lambda d: d["tests"][0].update(start_time="last night"),
        lambda d: d["builds"][0].update(valid=True),  # v4's field, gone in v5
    ],
)
def test_the_validator_rejects_a_broken_document(tmp_path: Path, breakage: Any) -> None:
    # Proves the validation in these tests can fail: the same document, broken in one field, is refused.
    document = _kcidb(tmp_path, _nightly())
    broken = copy.deepcopy(document)
    breakage(broken)
    assert LATEST.is_valid_exactly(document)
    assert not LATEST.is_valid_exactly(broken)


def test_kcidb_text_is_the_document_as_json(tmp_path: Path) -> None:
    import json

    matrix = write_matrix(tmp_path, _nightly())
    assert json.loads(kcidb_text(matrix)) == kcidb_json(matrix)

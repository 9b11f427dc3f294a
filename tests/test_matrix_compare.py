"""harness.matrix.compare: two matrix directories written as `hil run` writes them, compared."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from matrix_fixtures import FakeCell, record, write_matrix

from harness.matrix.compare import (
    Change,
    Comparison,
    compare,
    comparison_json,
    comparison_text,
    has_regressions,
)
from harness.matrix.document import Matrix
from harness.results.model import GuestEnd, Outcome, TestRecord, Verdict, verdict

T1 = "tests/test_routing.py::test_pair[ep0-ep1]"
T2 = "tests/test_export.py::test_export_bar2"
T3 = "tests/test_revoke.py::test_revoke_on_reset"


def cell(
    topology: str,
    records: Sequence[TestRecord],
    v: Verdict | None = None,
    *,
    kernel_version: str = "7.2.13-hil",
    topology_sha256: str = "0" * 64,
) -> FakeCell:
    """A cell whose verdict follows from its records unless given (crashed, hung, ...)."""
    return FakeCell(
        topology=topology,
        records=list(records),
        verdict=v if v is not None else verdict(records, GuestEnd.DONE),
        kernel_version=kernel_version,
        topology_sha256=topology_sha256,
    )


def pair(
    tmp_path: Path,
    old: Sequence[FakeCell],
    new: Sequence[FakeCell],
    *,
    planned_extra: Sequence[FakeCell] = (),
) -> tuple[Matrix, Matrix]:
    """Last night's matrix in tmp_path/old, tonight's in tmp_path/new."""
    return write_matrix(tmp_path / "old", old), write_matrix(
        tmp_path / "new", new, planned_extra=planned_extra
    )


def changes_of(c: Comparison) -> list[tuple[str | None, str, str | None, str | None]]:
    return [(ch.test, ch.kind, ch.old, ch.new) for ch in c.changes]


def test_identical_matrices_have_no_changes(tmp_path: Path) -> None:
    cells = [
        cell("switch-p2p", [record(T1, "passed"), record(T2, "xfailed"), record(T3, "skipped")]),
        cell("bar-4g", [record(T1, "failed", "boom")]),
        cell("rootports-acs", [record(T1, "passed")], Verdict.CRASHED),
    ]
    old, new = pair(tmp_path, cells, cells)
    result = compare(old, new)
    assert result.changes == ()
    assert not has_regressions(result)
    assert result.summary() == dict.fromkeys(
        ["regressions", "fixes", "new", "vanished", "flaky", "changed_cells"], 0
    )
    assert [c.cell for c in result.cells] == [c.id for c in cells]
    assert comparison_text(result).splitlines()[-1] == (
        "0 regressions, 0 fixes, 0 flaky, 0 new, 0 vanished, 0 changed cells"
    )


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        ("passed", "failed", "regression"),
        ("passed", "error", "regression"),
        ("xfailed", "xpassed", "regression"),
        ("skipped", "failed", "regression"),
        ("flaky", "failed", "regression"),
        ("failed", "passed", "fix"),
        ("error", "xfailed", "fix"),
        ("xpassed", "xfailed", "fix"),
        ("passed", "flaky", "flaky"),
        ("failed", "flaky", "flaky"),
        ("flaky", "flaky", "flaky"),
        ("skipped", "passed", "new"),
        ("passed", "skipped", "vanished"),
        ("failed", "skipped", "vanished"),
        ("failed", "error", None),
        ("passed", "xfailed", None),
        ("xfailed", "passed", None),
        ("skipped", "skipped", None),
        ("flaky", "passed", None),
    ],
)
def test_one_tests_outcome_change_has_one_kind(
    tmp_path: Path, before: Outcome, after: Outcome, kind: str | None
) -> None:
    steady = record(T2, "passed")
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, before), steady])],
        [cell("switch-p2p", [record(T1, after), steady])],
    )
    result = compare(old, new)
    expected = [] if kind is None else [(T1, kind, before, after)]
    # The cell's verdict changes only with its tests here, so there is no cell-level entry.
    assert changes_of(result) == expected
    assert has_regressions(result) == (kind == "regression")


def test_added_and_removed_tests_of_a_finished_cell_are_new_and_vanished(tmp_path: Path) -> None:
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, "passed"), record(T2, "passed")])],
        [cell("switch-p2p", [record(T1, "passed"), record(T3, "failed")])],
    )
    result = compare(old, new)
    assert changes_of(result) == [(T3, "new", None, "failed"), (T2, "vanished", "passed", None)]
    assert not has_regressions(result)  # a new test that fails never passed: nothing regressed
    assert result.summary()["new"] == 1 and result.summary()["vanished"] == 1


def test_a_cell_that_now_crashes_is_one_regression_not_a_list_of_vanished_tests(tmp_path: Path) -> None:
    before = [record(T1, "passed"), record(T2, "passed"), record(T3, "passed")]
    # As the harness records a crash: the test that was running gets "error", later ones are absent.
    after = [record(T1, "passed"), record(T2, "error", "the guest crashed while this test ran")]
    old, new = pair(tmp_path, [cell("switch-p2p", before)], [cell("switch-p2p", after, Verdict.CRASHED)])
    result = compare(old, new)
    assert changes_of(result) == [
        (None, "regression", "passed", "crashed"),
        (T2, "regression", "passed", "error"),
    ]
    assert has_regressions(result)
    (summary,) = result.cells
    assert (summary.old_verdict, summary.new_verdict, summary.not_run, summary.changed) == (
        "passed",
        "crashed",
        1,
        True,
    )


@pytest.mark.parametrize("unfinished", [Verdict.HUNG, Verdict.INFRA_ERROR])
def test_a_failed_cell_that_stops_finishing_is_a_cell_regression(tmp_path: Path, unfinished: Verdict) -> None:
    old, new = pair(
        tmp_path,
        [cell("bar-4g", [record(T1, "failed")])],
        [cell("bar-4g", [record(T1, "failed")], unfinished)],
    )
    assert changes_of(compare(old, new)) == [(None, "regression", "failed", unfinished.value)]


def test_a_crash_that_is_gone_is_a_fix_and_hides_no_failure(tmp_path: Path) -> None:
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, "error")], Verdict.CRASHED)],
        [cell("switch-p2p", [record(T1, "passed"), record(T2, "passed"), record(T3, "failed")])],
    )
    result = compare(old, new)
    # T2 was never reached last night: not "new". T3 fails now: listed, whatever it was before.
    assert changes_of(result) == [
        (None, "fix", "crashed", "failed"),
        (T1, "fix", "error", "passed"),
        (T3, "new", None, "failed"),
    ]


def test_passed_to_failed_with_no_test_to_blame_is_a_cell_regression(tmp_path: Path) -> None:
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, "passed")])],
        [cell("switch-p2p", [], Verdict.FAILED)],  # e.g. a selection that now matches nothing
    )
    result = compare(old, new)
    assert changes_of(result) == [(None, "regression", "passed", "failed"), (T1, "vanished", "passed", None)]


def test_a_changed_kernel_version_and_topology_mark_the_cell(tmp_path: Path) -> None:
    old, new = pair(
        tmp_path,
        [
            cell("switch-p2p", [record(T1, "passed")], kernel_version="7.2.13-hil"),
            cell("bar-4g", [record(T1, "passed")], kernel_version="7.2.13-hil"),
        ],
        [
            cell("switch-p2p", [record(T1, "failed")], kernel_version="7.2.14-hil"),
            cell("bar-4g", [record(T1, "passed")], kernel_version="7.2.13-hil", topology_sha256="f" * 64),
        ],
    )
    result = compare(old, new)
    by_id = {c.cell: c for c in result.cells}
    switch, bar = by_id["switch-p2p__src-debian-7.2"], by_id["bar-4g__src-debian-7.2"]
    assert (switch.kernel_version_changed, switch.topology_changed) == (True, False)
    assert (switch.old_kernel_version, switch.new_kernel_version) == ("7.2.13-hil", "7.2.14-hil")
    assert (bar.kernel_version_changed, bar.topology_changed) == (False, True)
    assert result.summary()["changed_cells"] == 2
    text = comparison_text(result)
    regression_line = next(line for line in text.splitlines() if T1 in line)
    assert "[kernel 7.2.13-hil -> 7.2.14-hil]" in regression_line
    assert "  bar-4g__src-debian-7.2: topology file changed" in text.splitlines()


def test_cells_planned_on_one_side_only_are_new_or_vanished_cells(tmp_path: Path) -> None:
    both = cell("switch-p2p", [record(T1, "passed")])
    old, new = pair(
        tmp_path,
        [both, cell("bar-4g", [record(T1, "passed")])],
        [both, cell("rootports-acs", [record(T1, "passed"), record(T2, "passed")])],
    )
    result = compare(old, new)
    assert [(ch.cell, ch.test, ch.kind, ch.old, ch.new) for ch in result.changes] == [
        ("rootports-acs__src-debian-7.2", None, "new", None, "passed"),
        ("bar-4g__src-debian-7.2", None, "vanished", "passed", None),
    ]
    assert not has_regressions(result)
    assert [(c.cell, c.old_verdict, c.new_verdict) for c in result.cells] == [
        ("switch-p2p__src-debian-7.2", "passed", "passed"),
        ("rootports-acs__src-debian-7.2", None, "passed"),
        ("bar-4g__src-debian-7.2", "passed", None),
    ]
    assert result.summary()["changed_cells"] == 2


def test_a_planned_cell_that_never_ran_tonight_is_a_regression(tmp_path: Path) -> None:
    bar = cell("bar-4g", [record(T1, "passed")])
    old, new = pair(tmp_path, [bar], [cell("switch-p2p", [])], planned_extra=[bar])
    result = compare(old, new)
    assert (Change("bar-4g__src-debian-7.2", None, "regression", "passed", "missing")) in result.changes
    assert has_regressions(result)


def test_flaky_is_listed_but_is_not_a_regression(tmp_path: Path) -> None:
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, "passed")])],
        [cell("switch-p2p", [record(T1, "flaky")])],
    )
    result = compare(old, new)
    assert result.summary()["flaky"] == 1
    assert not has_regressions(result)
    assert "FLAKY (1):" in comparison_text(result)


def test_json_has_exactly_the_agreed_keys_and_the_changes(tmp_path: Path) -> None:
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, "passed"), record(T2, "failed")]), cell("bar-4g", [])],
        [cell("switch-p2p", [record(T1, "failed"), record(T2, "passed"), record(T3, "flaky")])],
    )
    data = json.loads(comparison_json(compare(old, new)))
    assert set(data) == {"schema", "old", "new", "summary", "changes", "cells"}
    assert data["schema"] == 1
    assert (data["old"], data["new"]) == (str(tmp_path / "old"), str(tmp_path / "new"))
    assert data["summary"] == {
        "regressions": 1,
        "fixes": 1,
        "new": 0,
        "vanished": 1,
        "flaky": 1,
        "changed_cells": 1,  # switch-p2p failed on both nights; bar-4g is only in the old
    }
    assert all(set(ch) == {"cell", "test", "kind", "old", "new"} for ch in data["changes"])
    assert [(ch["test"], ch["kind"], ch["old"], ch["new"]) for ch in data["changes"]] == [
        (T1, "regression", "passed", "failed"),
        (T2, "fix", "failed", "passed"),
        (T3, "flaky", None, "flaky"),
        (None, "vanished", "infra-error", None),
    ]
    required = {"cell", "old_verdict", "new_verdict", "kernel_version_changed", "topology_changed"}
    assert all(required <= set(c) for c in data["cells"])
    assert [(c["cell"], c["old_verdict"], c["new_verdict"]) for c in data["cells"]] == [
        ("switch-p2p__src-debian-7.2", "failed", "failed"),
        ("bar-4g__src-debian-7.2", "infra-error", None),
    ]
    assert all(isinstance(c["kernel_version_changed"], bool) for c in data["cells"])


def test_text_shows_the_regression_line_first_and_the_count_last(tmp_path: Path) -> None:
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, "passed"), record(T2, "failed")])],
        [cell("switch-p2p", [record(T1, "failed"), record(T2, "passed")])],
    )
    lines = comparison_text(compare(old, new)).splitlines()
    assert lines[0] == f"p2p-hil compare: {tmp_path / 'old'} -> {tmp_path / 'new'}"
    assert lines[1] == "REGRESSIONS (1):"
    row = lines[3].split()
    assert row == ["switch-p2p__src-debian-7.2", T1, "passed", "->", "FAILED"]
    assert lines.index("fixes (1):") > 3
    assert lines[-1] == "1 regression, 1 fix, 0 flaky, 0 new, 0 vanished, 0 changed cells"


def test_text_lists_few_new_tests_and_counts_many(tmp_path: Path) -> None:
    names = [f"tests/test_many.py::test_case[{i}]" for i in range(12)]
    old, new = pair(
        tmp_path,
        [cell("switch-p2p", [record(T1, "passed")]), cell("bar-4g", [record(T1, "passed")])],
        [
            cell("switch-p2p", [record(T1, "passed"), *(record(n, "passed") for n in names)]),
            cell("bar-4g", [record(T1, "passed"), record(T2, "passed")]),
        ],
    )
    many = comparison_text(compare(old, new)).splitlines()
    assert "new (13):" in many
    assert "  switch-p2p__src-debian-7.2: 12 tests" in many
    assert "  bar-4g__src-debian-7.2: 1 test" in many
    assert not any(names[0] in line for line in many)

    old, new = pair(
        tmp_path / "few",
        [cell("bar-4g", [record(T1, "passed")])],
        [cell("bar-4g", [record(T1, "passed"), record(T2, "passed")])],
    )
    few = comparison_text(compare(old, new)).splitlines()
    assert "new (1):" in few
    assert few[few.index("new (1):") + 2].split() == ["bar-4g__src-debian-7.2", T2, "-", "->", "passed"]

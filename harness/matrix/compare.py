"""Two matrix directories compared (last night vs tonight): what got worse, what got better (pure).

Every change is one of five kinds, keyed by cell id and test node id (test None: the cell itself).
A test is compared only with itself in the cell of the same id; outcomes fall in three groups:
ok (passed, xfailed), failing (failed, error, xpassed) and skipped; flaky stands apart.

- **flaky**: every test that is flaky in the new matrix, whatever it was before (also when it was
  flaky last night too: each night's flaky tests are that night's news). It takes precedence over
  the other kinds, so a test appears once. Not a regression: the retry showed it can pass.
- **regression**: a test that now fails (failed, error, xpassed) and before was ok, skipped or
  flaky. skipped -> failed counts: the test now runs and what it checks is broken. A failing test
  that fails differently (failed -> error) is no change. A cell regresses (test None) when it
  finished before (passed, failed) and now did not (crashed, hung, infra-error, or planned and never
  ran, "missing"), and when it went passed -> failed with no failing test to show why (e.g. no
  records at all: a selection that matches nothing).
  The tests such a cell no longer reached are not listed one by one (the crash is the regression,
  not 40 vanished tests); the cell entry counts them in `not_run`. The test the guest was running
  when it died is recorded as "error" by the harness, so it shows as a test regression of its own.
- **fix**: a failing test that is now ok (failed/error/xpassed -> passed/xfailed), and a cell that
  did not finish before and now does (crashed -> passed, and crashed -> failed too: the crash is
  gone; the tests that still fail are listed as what they are).
- **new**: a test that now gives a result it did not give before: absent -> any outcome, and
  skipped -> ok (a test that only skipped checked nothing; now it checks and holds). A new test
  that fails is new, not a regression: it never passed, and tonight's verdict fails anyway. A cell only in
  the new matrix (planned differently) is new with test None. Tests the old cell never reached
  because it crashed are not listed, unless they fail now: a failure is never hidden.
- **vanished**: a test that gave a result and now does not: present -> absent (when the new cell
  finished), and ok/failing -> skipped. Why passed -> skipped is "vanished" rather than a sixth kind
  ("now skipped") or nothing: what it checked is no longer checked, exactly as if the test had been
  removed, and a skip is how a test disappears quietly (a lost device, a changed precondition), so
  it must be visible; but it is not a regression, as nothing is known to be broken. failed -> skipped
  is vanished too, not a fix: the failure is hidden, not gone. A cell only in the old matrix is
  vanished with test None.

Deliberately no change: passed <-> xfailed (both are the expected result; a known issue whose
version range now matches is the known-issues file's business, and it names the kernel), and
between two unfinished verdicts (hung -> crashed): the `cells` list still shows both verdicts.

Each cell present on both sides is marked `kernel_version_changed` (uname -r differs) and
`topology_changed` (the expanded topology's sha256 differs), each only when both sides know the
value: a regression on a new kernel version may be the kernel's, one on the same kernel the
harness's or a flake's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.matrix.document import Matrix
from harness.results.model import Outcome, Verdict
from harness.results.read import CellDocument

COMPARISON_SCHEMA = 1
COMPARISON_FILE = "comparison.json"

Kind = Literal["regression", "fix", "new", "vanished", "flaky"]
KINDS: tuple[Kind, ...] = ("regression", "fix", "flaky", "new", "vanished")
# A planned cell without results.json: it did not run, so it did not finish.
MISSING = "missing"

_OK: frozenset[str] = frozenset({"passed", "xfailed"})
_FAILING: frozenset[str] = frozenset({"failed", "error", "xpassed"})
_FINISHED: frozenset[str] = frozenset({Verdict.PASSED.value, Verdict.FAILED.value})


@dataclass(frozen=True)
class Change:
    """One change. `old`/`new` are outcomes for a test, verdicts (or "missing") for a cell; None on
    the side where it does not exist."""

    cell: str
    test: str | None
    kind: Kind
    old: str | None
    new: str | None


@dataclass(frozen=True)
class CellComparison:
    """One cell of either matrix. A verdict is None when the cell was not planned on that side."""

    cell: str
    old_verdict: str | None
    new_verdict: str | None
    old_kernel_version: str | None = None
    new_kernel_version: str | None = None
    kernel_version_changed: bool = False
    topology_changed: bool = False
    # Tests the old cell had that the new one, not finished, never reached.
    not_run: int = 0

    @property
    def changed(self) -> bool:
        return self.old_verdict != self.new_verdict or self.kernel_version_changed or self.topology_changed


@dataclass(frozen=True)
class Comparison:
    old_dir: Path
    new_dir: Path
    changes: tuple[Change, ...]
    cells: tuple[CellComparison, ...]

    def of_kind(self, kind: Kind) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    def summary(self) -> dict[str, int]:
        return {
            "regressions": len(self.of_kind("regression")),
            "fixes": len(self.of_kind("fix")),
            "new": len(self.of_kind("new")),
            "vanished": len(self.of_kind("vanished")),
            "flaky": len(self.of_kind("flaky")),
            "changed_cells": sum(c.changed for c in self.cells),
        }


def has_regressions(c: Comparison) -> bool:
    return any(change.kind == "regression" for change in c.changes)


# -- comparing -----------------------------------------------------------------------------------


def _test_kind(old: Outcome | None, new: Outcome | None) -> Kind | None:
    """Both cells finished (or the test is on both sides): the kind of one test's change, if any."""
    if new == "flaky":
        return "flaky"
    if old is None:
        return None if new is None else "new"
    if new is None:
        return "vanished"
    if new in _FAILING:
        return None if old in _FAILING else "regression"
    if new in _OK:
        if old in _FAILING:
            return "fix"
        return "new" if old == "skipped" else None
    # new == "skipped"
    return None if old == "skipped" else "vanished"


def _verdict_of(matrix: Matrix, cell_id: str) -> str | None:
    doc = matrix.cells.get(cell_id)
    if doc is not None:
        return doc.verdict.value
    return MISSING if any(p["id"] == cell_id for p in matrix.planned) else None


def _outcomes(doc: CellDocument | None) -> dict[str, Outcome]:
    return {} if doc is None else {r.name: r.outcome for r in doc.records}


def _known_and_differ(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and a != b


def _compare_cell(
    cell_id: str,
    old_verdict: str,
    new_verdict: str,
    old_doc: CellDocument | None,
    new_doc: CellDocument | None,
) -> tuple[list[Change], CellComparison]:
    old_tests, new_tests = _outcomes(old_doc), _outcomes(new_doc)
    old_finished, new_finished = old_verdict in _FINISHED, new_verdict in _FINISHED
    tests: list[Change] = []
    not_run = 0
    for name in dict.fromkeys([*new_tests, *old_tests]):
        old, new = old_tests.get(name), new_tests.get(name)
        if new is None and not new_finished:
            not_run += 1
            continue
        if old is None and not old_finished and new not in _FAILING and new != "flaky":
            continue
        kind = _test_kind(old, new)
        if kind is not None:
            tests.append(Change(cell_id, name, kind, old, new))

    cell_kind: Kind | None = None
    if old_finished and not new_finished:
        cell_kind = "regression"
    elif new_finished and not old_finished:
        cell_kind = "fix"
    elif (old_verdict, new_verdict) == ("passed", "failed") and not any(
        o in _FAILING for o in new_tests.values()
    ):
        cell_kind = "regression"
    changes = [Change(cell_id, None, cell_kind, old_verdict, new_verdict)] if cell_kind else []

    old_meta = old_doc.meta if old_doc else None
    new_meta = new_doc.meta if new_doc else None
    old_kv = old_meta.kernel_version if old_meta else None
    new_kv = new_meta.kernel_version if new_meta else None
    cell = CellComparison(
        cell=cell_id,
        old_verdict=old_verdict,
        new_verdict=new_verdict,
        old_kernel_version=old_kv,
        new_kernel_version=new_kv,
        kernel_version_changed=_known_and_differ(old_kv, new_kv),
        topology_changed=_known_and_differ(
            old_meta.topology_sha256 if old_meta else None, new_meta.topology_sha256 if new_meta else None
        ),
        not_run=not_run,
    )
    return changes + tests, cell


def _cell_ids(matrix: Matrix) -> list[str]:
    return list(dict.fromkeys([*(str(p["id"]) for p in matrix.planned), *matrix.cells]))


def compare(old: Matrix, new: Matrix) -> Comparison:
    """Every change from `old` to `new`, grouped by kind (KINDS order), then in the new matrix's cell
    order (cells only in the old one last), the cell's own change before its tests'."""
    new_ids, old_ids = _cell_ids(new), _cell_ids(old)
    changes: list[Change] = []
    cells: list[CellComparison] = []
    for cell_id in dict.fromkeys([*new_ids, *old_ids]):
        old_verdict, new_verdict = _verdict_of(old, cell_id), _verdict_of(new, cell_id)
        if old_verdict is None or new_verdict is None:
            kind: Kind = "new" if old_verdict is None else "vanished"
            changes.append(Change(cell_id, None, kind, old_verdict, new_verdict))
            doc = new.cells.get(cell_id) or old.cells.get(cell_id)
            version = doc.meta.kernel_version if doc else None
            cells.append(
                CellComparison(
                    cell_id,
                    old_verdict,
                    new_verdict,
                    old_kernel_version=version if new_verdict is None else None,
                    new_kernel_version=version if old_verdict is None else None,
                )
            )
            continue
        cell_changes, cell = _compare_cell(
            cell_id, old_verdict, new_verdict, old.cells.get(cell_id), new.cells.get(cell_id)
        )
        changes.extend(cell_changes)
        cells.append(cell)
    ordered = sorted(changes, key=lambda c: KINDS.index(c.kind))  # stable: cell and test order kept
    return Comparison(old.dir, new.dir, tuple(ordered), tuple(cells))


# -- JSON ----------------------------------------------------------------------------------------


def comparison_json(c: Comparison) -> str:
    """comparison.json (schema 1); index.html renders it. The keys of `cells` past `topology_changed`
    are additions the schema allows."""
    document: dict[str, Any] = {
        "schema": COMPARISON_SCHEMA,
        "old": str(c.old_dir),
        "new": str(c.new_dir),
        "summary": c.summary(),
        "changes": [
            {"cell": ch.cell, "test": ch.test, "kind": ch.kind, "old": ch.old, "new": ch.new}
            for ch in c.changes
        ],
        "cells": [
            {
                "cell": cell.cell,
                "old_verdict": cell.old_verdict,
                "new_verdict": cell.new_verdict,
                "kernel_version_changed": cell.kernel_version_changed,
                "topology_changed": cell.topology_changed,
                "changed": cell.changed,
                "old_kernel_version": cell.old_kernel_version,
                "new_kernel_version": cell.new_kernel_version,
                "not_run": cell.not_run,
            }
            for cell in c.cells
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# -- text ----------------------------------------------------------------------------------------

TEST_WIDTH = 70
CELL_WIDTH = 40
# New and vanished tests are listed one by one up to this many; beyond, a count per cell.
LIST_LIMIT = 10

_UNFINISHED_OR_FAILING = _FAILING | {"crashed", "hung", "infra-error", MISSING, "flaky"}


def _label(value: str | None) -> str:
    # As in harness.results.report: what needs attention is upper case.
    if value is None:
        return "-"
    return value.upper() if value in _UNFINISHED_OR_FAILING else value


def _clip_left(text: str, width: int) -> str:
    # The end of a node id (test function and parameters) is what tells tests apart.
    return text if len(text) <= width else "..." + text[len(text) - width + 3 :]


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _kernel_note(cell: CellComparison) -> str:
    notes = []
    if cell.kernel_version_changed:
        notes.append(f"kernel {cell.old_kernel_version} -> {cell.new_kernel_version}")
    if cell.topology_changed:
        notes.append("topology file changed")
    return "; ".join(notes)


@dataclass(frozen=True)
class _Columns:
    cell: int
    test: int
    old: int


def _columns(changes: Sequence[Change]) -> _Columns:
    # One set of widths for every section, so the arrows line up down the whole report.
    return _Columns(
        cell=min(CELL_WIDTH, max([len("CELL"), *(len(ch.cell) for ch in changes)])),
        test=min(TEST_WIDTH, max([len("TEST"), *(len(ch.test or "(cell)") for ch in changes)])),
        old=max([len("OLD"), *(len(_label(ch.old)) for ch in changes)]),
    )


def _row(ch: Change, w: _Columns, note: str) -> str:
    row = (
        f"  {_clip_left(ch.cell, w.cell):<{w.cell}}  {_clip_left(ch.test or '(cell)', w.test):<{w.test}}"
        f"  {_label(ch.old):<{w.old}} -> {_label(ch.new)}" + (f"  [{note}]" if note else "")
    )
    return row.rstrip()


def _by_cell(changes: Iterable[Change]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in changes:
        counts[ch.cell] = counts.get(ch.cell, 0) + 1
    return counts


def comparison_text(c: Comparison) -> str:
    """For the terminal: regressions, fixes and flaky tests one per line; new and vanished tests
    listed when few (LIST_LIMIT), else counted per cell (new and vanished cells always listed);
    cells whose kernel or topology changed; tests a cell did not reach; the totals last."""
    notes = {cell.cell: _kernel_note(cell) for cell in c.cells}
    sections: list[tuple[str, list[Change], list[str]]] = []
    titled: tuple[tuple[Kind, str], ...] = (
        ("regression", "REGRESSIONS"),
        ("fix", "fixes"),
        ("flaky", "FLAKY"),
        ("new", "new"),
        ("vanished", "vanished"),
    )
    for kind, title in titled:
        found = c.of_kind(kind)
        if not found:
            continue
        tests = [ch for ch in found if ch.test is not None]
        if kind in ("new", "vanished") and len(tests) > LIST_LIMIT:
            rows = [ch for ch in found if ch.test is None]
            counted = [f"  {cell}: {_plural(n, 'test')}" for cell, n in _by_cell(tests).items()]
        else:
            rows, counted = found, []
        sections.append((f"{title} ({len(found)}):", rows, counted))

    lines = [f"p2p-hil compare: {c.old_dir} -> {c.new_dir}"]
    widths = _columns([ch for _, rows, _ in sections for ch in rows])
    header = f"  {'CELL':<{widths.cell}}  {'TEST':<{widths.test}}  {'OLD':<{widths.old}}    NEW"
    for title, rows, counted in sections:
        lines.append(title)
        lines.extend([header] if rows else [])
        lines.extend(_row(ch, widths, notes[ch.cell]) for ch in rows)
        lines.extend(counted)
    changed = [cell for cell in c.cells if cell.kernel_version_changed or cell.topology_changed]
    if changed:
        lines.append(f"cells with a changed kernel or topology ({len(changed)}):")
        lines.extend(f"  {cell.cell}: {_kernel_note(cell)}" for cell in changed)
    not_run = [cell for cell in c.cells if cell.not_run]
    if not_run:
        lines.append("tests not reached (the cell did not finish):")
        lines.extend(
            f"  {cell.cell}: {_plural(cell.not_run, 'test')} ({cell.new_verdict})" for cell in not_run
        )
    s = c.summary()
    lines.append(
        f"{_plural(s['regressions'], 'regression')}, {_plural(s['fixes'], 'fix', 'fixes')}, "
        f"{s['flaky']} flaky, {s['new']} new, {s['vanished']} vanished, "
        f"{_plural(s['changed_cells'], 'changed cell')}"
    )
    return "\n".join(lines) + "\n"

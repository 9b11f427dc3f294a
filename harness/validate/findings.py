"""The base matrix against the base+series matrix, in the terms of a series review (pure).

compare() (harness/matrix/compare.py) keys cells by id, and an id carries the kernel label, which
differs between the two matrices (src:debian-7.2 vs src:debian-7.2+mine.mbox): `align` renames the
base's cells to the series' ids by topology (and --axis values), so each topology is compared with
itself. compare() counts xfailed -> xpassed as a regression, as it must for a nightly run; for a series
it is the point: the known issue stops reproducing because the series fixes it. Here such a test is a
fix, and its known-issues entry is named as the one to update. Every other regression stays one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.matrix.compare import Change, Comparison, compare
from harness.matrix.document import Matrix
from harness.results.read import CellDocument

EXCERPT_LINES = 6


def _variant(planned: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    axes = planned.get("axes") or {}
    return str(planned.get("topology")), tuple(sorted((str(k), str(v)) for k, v in dict(axes).items()))


def align(base: Matrix, series: Matrix) -> Matrix:
    """`base` with its cells renamed to the ids the same topology has in `series`."""
    ids = {_variant(p): str(p["id"]) for p in series.planned}
    rename = {str(p["id"]): ids.get(_variant(p), str(p["id"])) for p in base.planned}
    planned = [{**p, "id": rename[str(p["id"])]} for p in base.planned]
    cells = {rename.get(cid, cid): doc for cid, doc in base.cells.items()}
    return replace(base, planned=planned, cells=cells)


@dataclass(frozen=True)
class KnownIssueUpdate:
    """An entry of kernels/known-issues.yaml that did not reproduce with the series applied."""

    test: str
    reference: str
    reason: str
    cells: tuple[str, ...]
    also_on_base: bool  # it did not reproduce without the series either: stale regardless


@dataclass(frozen=True)
class Regression:
    change: Change
    evidence: tuple[str, ...]  # lines from the series' cell: the test's message, or the cell's evidence


@dataclass(frozen=True)
class Findings:
    comparison: Comparison
    fixes: tuple[Change, ...]
    regressions: tuple[Regression, ...]
    updates: tuple[KnownIssueUpdate, ...]
    unmeasured: tuple[str, ...] = field(default=())  # cells that finished on neither side

    @property
    def clean(self) -> bool:
        return not self.regressions and not self.unmeasured


def _record(doc: CellDocument | None, test: str | None) -> Any:
    if doc is None or test is None:
        return None
    return next((r for r in doc.records if r.name == test), None)


def _evidence(doc: CellDocument | None, change: Change) -> tuple[str, ...]:
    if doc is None:
        return ("no results.json (the cell did not run)",)
    record = _record(doc, change.test)
    lines: list[str] = []
    if record is not None and record.message:
        lines += record.message.strip().splitlines()[:EXCERPT_LINES]
    if change.test is None or not lines:
        for item in doc.evidence:
            text = str(item.get("excerpt") or item.get("text") or "")
            kind = str(item.get("kind", "evidence"))
            lines += [f"{kind}:", *text.strip().splitlines()[:EXCERPT_LINES]]
            if len(lines) >= 2 * EXCERPT_LINES:
                break
    lines.append(f"cell: {doc.path.parent}")
    return tuple(lines)


def _known_issue(doc: CellDocument | None, test: str | None) -> dict[str, Any] | None:
    record = _record(doc, test)
    if record is None or record.outcome != "xpassed":
        return None
    entry = record.details.get("known_issue")
    return entry if isinstance(entry, dict) else None


def findings(base: Matrix, series: Matrix) -> Findings:
    old = align(base, series)
    comparison = compare(old, series)
    fixes: list[Change] = list(comparison.of_kind("fix"))
    regressions: list[Regression] = []
    for change in comparison.of_kind("regression"):
        doc = series.cells.get(change.cell)
        if change.old == "xfailed" and _known_issue(doc, change.test) is not None:
            fixes.append(change)
            continue
        regressions.append(Regression(change, _evidence(doc, change)))
    updates: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for cell_id, doc in series.cells.items():
        for record in doc.records:
            entry = _known_issue(doc, record.name)
            if entry is None:
                continue
            key = (str(entry.get("test")), str(entry.get("reference")))
            entries[key] = entry
            on_base = _known_issue(old.cells.get(cell_id), record.name) is not None
            updates.setdefault(key, []).append((cell_id, on_base))
    finished = {"passed", "failed"}
    unmeasured = tuple(
        c.cell
        for c in comparison.cells
        if c.new_verdict is not None and c.new_verdict not in finished and c.old_verdict not in finished
    )
    return Findings(
        comparison,
        tuple(fixes),
        tuple(regressions),
        tuple(
            KnownIssueUpdate(
                test=key[0],
                reference=key[1],
                reason=str(entries[key].get("reason", "")),
                cells=tuple(cell for cell, _ in where),
                also_on_base=all(b for _, b in where),
            )
            for key, where in updates.items()
        ),
        unmeasured,
    )


def entry_line(known_issues_text: str, test: str) -> int | None:
    """The line of `- test: <test>` in known-issues.yaml (1-based), to name the entry to update."""
    for number, line in enumerate(known_issues_text.splitlines(), start=1):
        stripped = line.strip().removeprefix("- ").strip()
        if stripped.startswith("test:") and stripped.removeprefix("test:").strip().strip("'\"") == test:
            return number
    return None


def summary_rows(matrix: Matrix) -> list[tuple[str, str, str]]:
    """(topology, verdict, ok/total) per planned cell; 'missing' for a cell that did not run."""
    rows = []
    for planned in matrix.planned:
        doc = matrix.cells.get(str(planned["id"]))
        name = str(planned.get("topology"))
        if doc is None:
            rows.append((name, "missing", "-"))
            continue
        ok = sum(r.outcome in ("passed", "skipped", "xfailed") for r in doc.records)
        # An unexpected pass fails a run; for a fix series it is the expected news, so it is counted apart.
        xpassed = sum(r.outcome == "xpassed" for r in doc.records)
        extra = f" +{xpassed}xp" if xpassed else ""
        rows.append((name, doc.verdict.value, f"{ok}/{len(doc.records)}{extra}"))
    return rows


def by_topology(matrix: Matrix) -> dict[str, str]:
    return {str(p["id"]): str(p.get("topology")) for p in matrix.planned}


def cells_named(changes: Sequence[Change], matrix: Matrix) -> list[tuple[str, Change]]:
    names = by_topology(matrix)
    return [(names.get(c.cell, c.cell), c) for c in changes]

"""report.txt (for a reply on the mailing list: plain text, no line over 72 columns) and report.json
(pure builders)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.matrix.document import Matrix
from harness.validate.findings import Findings, by_topology, summary_rows
from harness.validate.perpatch import PatchResult

WIDTH = 72
REPORT_SCHEMA = 1


@dataclass(frozen=True)
class Validation:
    """Everything the report says: the inputs, the per-patch results, the matrices and what changed."""

    series: Path
    base_spec: str
    base_version: str
    patches: tuple[PatchResult, ...]
    base_matrix: Matrix | None
    series_matrix: Matrix | None
    findings: Findings | None
    ignored_checks: tuple[str, ...] = ()
    # Why the matrices did not run (the series did not build), when they did not.
    matrix_skipped: str = ""
    known_issues_lines: dict[str, int | None] | None = None

    @property
    def patch_failures(self) -> list[PatchResult]:
        return [p for p in self.patches if p.failures]

    @property
    def clean(self) -> bool:
        return (
            not self.patch_failures
            and not self.matrix_skipped
            and self.findings is not None
            and self.findings.clean
        )

    def exit_code(self) -> int:
        return 0 if self.clean else 1


def _wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=True,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 2] + ".."


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _test_lines(cell: str, test: str | None, outcome: str, indent: str = "  ") -> list[str]:
    """A cell's test, then its outcome change; a node id too long for one line breaks after '::'."""
    lines = [f"{indent}{cell}:"]
    name = test or "(the cell itself)"
    inner = indent + "  "
    if len(inner) + len(name) > WIDTH and "::" in name:
        head, tail = name.split("::", 1)
        lines.append(f"{inner}{head}::")
        name = tail
    lines += _wrap(name, inner + "  ", first=inner) if len(inner) + len(name) > WIDTH else [inner + name]
    lines.append(f"{inner}  {outcome}")
    return lines


def _patch_table(v: Validation) -> list[str]:
    header = f"{'#':>3}  {'SUBJECT':<34} {'APPLIES':<7} {'E/W/C':<8} {'BUILDS':<6} NEW-W"
    lines = [header]
    for r in v.patches:
        style = r.checkpatch.counts if r.checkpatch is not None else "-"
        builds = "-" if r.build is None else _yes(r.build.ok)
        warn = "-" if r.build is None or not r.build.ok else str(len(r.new_warnings))
        lines.append(
            f"{r.patch.index:>3}  {_clip(r.patch.subject, 34):<34} {_yes(r.applies):<7} "
            f"{style:<8} {builds:<6} {warn}"
        )
    return lines


def _patch_details(v: Validation) -> list[str]:
    lines: list[str] = []
    for r in v.patches:
        if not r.failures and not (r.checkpatch and r.checkpatch.checks):
            continue
        lines.append("")
        lines += _wrap(
            f"patch {r.patch.index}/{r.patch.total} {r.patch.subject}: "
            + "; ".join(r.failures or ["checkpatch CHECKs only"])
        )
        if r.apply_error:
            lines += [_clip("  > " + line, WIDTH) for line in r.apply_error.strip().splitlines()[:6]]
        if r.checkpatch is not None:
            lines += [_clip("  " + m, WIDTH) for m in r.checkpatch.messages[:10]]
        if r.build is not None and not r.build.ok:
            lines += [_clip("  > " + line, WIDTH) for line in r.build.error.strip().splitlines()[:8]]
            if r.build.log:
                lines += _wrap(f"build log: {r.build.log}", "    ", first="  ")
        for w in r.new_warnings[:10]:
            lines += _wrap(str(w), "    ", first="  new warning: ")
    return lines


def _matrix_summary(v: Validation) -> list[str]:
    if v.base_matrix is None or v.series_matrix is None:
        return _wrap(f"The tests did not run: {v.matrix_skipped}")
    base = {t: f"{verdict} {ok}" for t, verdict, ok in summary_rows(v.base_matrix)}
    series = {t: f"{verdict} {ok}" for t, verdict, ok in summary_rows(v.series_matrix)}
    topologies = list(dict.fromkeys([*series, *base]))
    width = min(28, max([len("TOPOLOGY"), *(len(t) for t in topologies)]))
    lines = [f"  {'TOPOLOGY':<{width}}  {'BASE':<18}  BASE+SERIES"]
    for name in topologies:
        lines.append(
            _clip(
                f"  {_clip(name, width):<{width}}  {base.get(name, '-'):<18}  {series.get(name, '-')}", WIDTH
            )
        )
    lines.append("  (ok/total: ok = passed, skipped or xfailed; +Nxp: N unexpected")
    lines.append("  passes of known issues)")
    return lines


def _changes(v: Validation) -> list[str]:
    f = v.findings
    if f is None or v.series_matrix is None:
        return []
    names = by_topology(v.series_matrix)
    lines = ["", f"Fixed by the series ({len(f.fixes)}):"]
    if not f.fixes:
        lines.append("  none")
    for change in f.fixes:
        lines += _test_lines(
            names.get(change.cell, change.cell), change.test, f"{change.old} -> {change.new}"
        )
    lines += ["", f"Regressions ({len(f.regressions)}):"]
    if not f.regressions:
        lines.append("  none")
    for reg in f.regressions:
        c = reg.change
        lines += _test_lines(names.get(c.cell, c.cell), c.test, f"{c.old} -> {c.new}")
        for line in reg.evidence:
            lines += _wrap(line, "      >   ", first="      > ")
    if f.unmeasured:
        lines += ["", "Not measured (the cell finished on neither side):"]
        lines += [f"  {names.get(c, c)}" for c in f.unmeasured]
    if f.updates:
        lines += ["", "Known issues that no longer reproduce (update"]
        lines += ["kernels/known-issues.yaml: the kernel versions still affected):"]
        for u in f.updates:
            where = (v.known_issues_lines or {}).get(u.test)
            at = f"line {where}" if where else "the entry"
            lines += _test_lines(f"{at}", u.test, f"({u.reason})" if u.reason else "")[:-1]
            cells = ", ".join(names.get(c, c) for c in u.cells)
            lines += _wrap(f"not reproduced on: {cells}", "      ", first="    ")
            if u.also_on_base:
                lines += _wrap("(not on the base either: stale without the series)", "      ", first="    ")
    return lines


def report_text(v: Validation, tested_by: str | None) -> str:
    """The reply. The Tested-by: line only when nothing failed (caller passes who tests)."""
    lines = _wrap(f"p2p-hil validate: {v.series.name} on {v.base_spec} ({v.base_version})")
    lines += ["", f"Per patch ({len(v.patches)}; checkpatch --strict counts errors/warnings/checks):"]
    lines += _patch_table(v)
    if v.ignored_checks:
        lines.append("")
        lines += _wrap(
            f"checkpatch ran with --ignore {','.join(v.ignored_checks)}: the base tree has no upstream "
            "git history to look commit ids up in."
        )
    lines += _patch_details(v)
    lines += ["", "Tests, base vs base+series (p2p-hil, QEMU):"]
    lines += _matrix_summary(v)
    lines += _changes(v)
    lines.append("")
    if v.clean and tested_by:
        lines.append(f"Tested-by: {tested_by}")
    elif v.clean:
        lines += _wrap("No regression and no per-patch problem (no Tested-by: give --tested-by).")
    else:
        why = []
        if v.patch_failures:
            why.append(f"{len(v.patch_failures)} patch(es) with problems")
        if v.findings is not None and v.findings.regressions:
            why.append(f"{len(v.findings.regressions)} regression(s)")
        if v.findings is not None and v.findings.unmeasured:
            why.append(f"{len(v.findings.unmeasured)} cell(s) not measured")
        if v.matrix_skipped:
            why.append("the tests did not run")
        lines += _wrap("Not clean: " + ", ".join(why) + " (no Tested-by offered).")
    # Every builder above keeps to WIDTH; a path or a checkpatch line longer than a line is broken, not cut.
    fitted = [part for line in lines for part in (_wrap(line, "    ") if len(line) > WIDTH else [line])]
    return "\n".join(line.rstrip() for line in fitted) + "\n"


def _patch_json(r: PatchResult) -> dict[str, Any]:
    c = r.checkpatch
    return {
        "index": r.patch.index,
        "subject": r.patch.subject,
        "files": list(r.patch.touched),
        "applies": r.applies,
        "apply_error": r.apply_error,
        "checkpatch": None
        if c is None
        else {
            "errors": c.errors,
            "warnings": c.warnings,
            "checks": c.checks,
            "messages": list(c.messages),
            "ignored": list(c.ignored),
            "problem": c.problem,
        },
        "builds": None if r.build is None else r.build.ok,
        "build_error": "" if r.build is None else r.build.error,
        "build_log": str(r.build.log) if r.build is not None and r.build.log else None,
        "new_warnings": [str(w) for w in r.new_warnings],
        "failures": r.failures,
    }


def report_json(v: Validation, tested_by: str | None, out: Path) -> str:
    f = v.findings
    document: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "series": str(v.series),
        "base": v.base_spec,
        "base_version": v.base_version,
        "clean": v.clean,
        "exit_code": v.exit_code(),
        "tested_by": tested_by if v.clean else None,
        "patches": [_patch_json(r) for r in v.patches],
        "matrices": {"base": str(out / "base"), "series": str(out / "series")},
        "matrix_skipped": v.matrix_skipped or None,
        "summary": None
        if v.base_matrix is None or v.series_matrix is None
        else {
            "base": [list(row) for row in summary_rows(v.base_matrix)],
            "series": [list(row) for row in summary_rows(v.series_matrix)],
        },
        "fixes": [] if f is None else [_change(c) for c in f.fixes],
        "regressions": []
        if f is None
        else [{**_change(r.change), "evidence": list(r.evidence)} for r in f.regressions],
        "unmeasured": [] if f is None else list(f.unmeasured),
        "known_issues_to_update": []
        if f is None
        else [
            {
                "test": u.test,
                "reference": u.reference,
                "reason": u.reason,
                "cells": list(u.cells),
                "also_on_base": u.also_on_base,
                "line": (v.known_issues_lines or {}).get(u.test),
            }
            for u in f.updates
        ],
        "comparison_summary": None if f is None else f.comparison.summary(),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _change(c: Any) -> dict[str, Any]:
    return {"cell": c.cell, "test": c.test, "kind": c.kind, "old": c.old, "new": c.new}


def all_within(text: str, width: int = WIDTH) -> bool:
    return all(len(line) <= width for line in text.splitlines())

"""Human-readable summaries: one run as a table, many runs as a topology x kernel matrix.

Plain ASCII with fixed columns, so the output survives CI logs, `tee` and e-mail unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.results.model import (
    FAILING,
    OUTCOMES,
    Outcome,
    RunMeta,
    TestRecord,
    Verdict,
    combine_verdicts,
    count_outcomes,
    exit_code,
)

NAME_WIDTH = 70
MESSAGE_WIDTH = 60

# Outcomes that need attention are upper case so they stand out in a long table.
_LABEL: dict[Outcome, str] = {
    "passed": "passed",
    "failed": "FAILED",
    "error": "ERROR",
    "skipped": "skipped",
    "xfailed": "xfailed",
    "xpassed": "XPASSED!",
    "flaky": "FLAKY",
}
_OK_OUTCOMES: frozenset[Outcome] = frozenset({"passed", "skipped", "xfailed"})


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _clip_left(text: str, width: int) -> str:
    # The end of a node id (test function and parameters) is what tells tests apart.
    return text if len(text) <= width else "..." + text[len(text) - width + 3 :]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _verdict_label(v: Verdict) -> str:
    return v.value if v is Verdict.PASSED else v.value.upper()


def totals_line(records: Sequence[TestRecord], duration: float | None = None) -> str:
    counts = count_outcomes(records)
    parts = [f"{counts[o]} {o}" for o in OUTCOMES if counts[o]]
    total = sum(r.duration for r in records) if duration is None else duration
    noun = "test" if len(records) == 1 else "tests"
    return f"{len(records)} {noun}" + (": " + ", ".join(parts) if parts else "") + f" in {total:.2f}s"


def summary_table(
    meta: RunMeta, records: Sequence[TestRecord], verdict: Verdict, *, passed_rows: bool = True
) -> str:
    """One run: a row per test, a totals line, unexpected passes called out, the verdict.

    Without `passed_rows` (a cell of a matrix, where hundreds of green rows would bury the rest), only
    the tests that did not simply pass get a row; the totals line still counts them all."""
    kernel = meta.kernel + (f" ({meta.kernel_version})" if meta.kernel_version else "")
    lines = [f"p2p-hil: {meta.topology} x {kernel} [{meta.accelerator}]"]
    shown = [r for r in records if passed_rows or r.outcome != "passed"]
    if shown:
        width = min(NAME_WIDTH, max(len("TEST"), *(len(r.name) for r in shown)))
        lines.append(f"{'TEST':<{width}}  {'OUTCOME':<8}  {'TIME':>8}  MESSAGE")
        for r in shown:
            name = _clip_left(r.name, width)
            message = _clip(_first_line(r.message), MESSAGE_WIDTH)
            row = f"{name:<{width}}  {_LABEL[r.outcome]:<8}  {r.duration:>7.2f}s  {message}"
            lines.append(row.rstrip())
    elif not records:
        lines.append("(no test results)")
    lines.append(totals_line(records, meta.durations.get("tests")))
    unexpected = [r for r in records if r.outcome == "xpassed"]
    if unexpected:
        lines.append(f"!! {len(unexpected)} UNEXPECTED PASS(ES): a known issue did not reproduce;")
        lines.append("!! check the entry in kernels/known-issues.yaml (fixed? wrong version range?)")
        lines.extend(f"!!   {r.name}: {_clip(_first_line(r.message), MESSAGE_WIDTH)}" for r in unexpected)
    lines.append(f"verdict: {_verdict_label(verdict)} (exit {exit_code(verdict)})")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MatrixCell:
    """One run of a multi-run invocation, reduced to what the matrix shows."""

    topology: str
    kernel: str
    verdict: Verdict
    counts: Mapping[Outcome, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> int:
        return sum(n for o, n in self.counts.items() if o in _OK_OUTCOMES)

    @property
    def failing(self) -> int:
        return sum(n for o, n in self.counts.items() if o in FAILING)


def matrix_cell(meta: RunMeta, records: Sequence[TestRecord], verdict: Verdict) -> MatrixCell:
    return MatrixCell(meta.topology, meta.kernel, verdict, count_outcomes(records))


RunSummary = tuple[RunMeta, Sequence[TestRecord], Verdict]


def matrix_table(runs: Sequence[MatrixCell | RunSummary]) -> str:
    """Rows are topologies, columns kernels (both in first-seen order); each cell shows the
    verdict and ok/total, where ok means passed, skipped or xfailed. Takes cells or
    (meta, records, verdict) triples."""
    cells = [r if isinstance(r, MatrixCell) else matrix_cell(*r) for r in runs]
    topologies = list(dict.fromkeys(c.topology for c in cells))
    kernels = list(dict.fromkeys(c.kernel for c in cells))
    by_key: dict[tuple[str, str], MatrixCell] = {}
    for cell in cells:
        key = (cell.topology, cell.kernel)
        if key in by_key:
            raise ValueError(f"two runs for topology {cell.topology!r} x kernel {cell.kernel!r}")
        by_key[key] = cell

    def text(topology: str, kernel: str) -> str:
        cell = by_key.get((topology, kernel))
        if cell is None:
            return "-"
        return f"{_verdict_label(cell.verdict)} {cell.ok}/{cell.total}"

    corner = "topology \\ kernel"
    rows = [[corner, *kernels]] + [[t, *(text(t, k) for k in kernels)] for t in topologies]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]

    overall = combine_verdicts(c.verdict for c in cells)
    by_verdict = [f"{sum(c.verdict is v for c in cells)} {v.value}" for v in Verdict]
    tally = ", ".join(part for part in by_verdict if not part.startswith("0 "))
    noun = "run" if len(cells) == 1 else "runs"
    lines.append(f"{len(cells)} {noun}" + (f": {tally}" if tally else ""))
    lines.append("cells: verdict ok/total (ok = passed, skipped or xfailed)")
    lines.append(f"overall: {_verdict_label(overall)} (exit {exit_code(overall)})")
    return "\n".join(lines) + "\n"

"""Test records, run metadata and the run verdict.

The guest appends one JSON object per test to a JSONL file (flushed and fsync'd per test), so
after a crash the file holds every finished test plus, at worst, one half-written last line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, cast

from harness.errors import InfraError

Outcome = Literal["passed", "failed", "skipped", "error", "xfailed", "xpassed", "flaky"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "skipped", "error", "xfailed", "xpassed", "flaky")
# xpassed fails the run: a known issue that no longer reproduces means the known-issues file
# (or the kernel version range in it) is wrong and must be looked at.
FAILING: frozenset[Outcome] = frozenset({"failed", "error", "xpassed"})
# "flaky": failed, then passed when `hil run --retries` ran it again in a fresh VM. Never counted as
# passed (every report names it), but not failing either: the second run shows the test can pass.


@dataclass(frozen=True)
class TestRecord:
    """One test's result. `details` is the structured data the test recorded (the guest plugin's
    `hil_details` dict); a known-issues match adds its entry there under "known_issue"."""

    __test__: ClassVar[bool] = False  # not a pytest test class despite the name

    name: str
    outcome: Outcome
    duration: float = 0.0
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    CRASHED = "crashed"
    HUNG = "hung"
    INFRA_ERROR = "infra-error"


class GuestEnd(StrEnum):
    """How the guest's life ended, as observed by the host."""

    DONE = "done"  # the guest entry reported completion
    CRASHED = "crashed"  # panic/Oops/BUG took the kernel down
    HUNG = "hung"  # no progress before the deadline
    BOOT_FAILURE = "boot-failure"  # never reached the test script, without a kernel crash
    INFRA_ERROR = "infra-error"  # QEMU/vng/harness failed


_EXIT_CODES = {
    Verdict.PASSED: 0,
    Verdict.FAILED: 1,
    Verdict.CRASHED: 3,
    Verdict.HUNG: 3,
    Verdict.INFRA_ERROR: 3,
}


def verdict(records: Sequence[TestRecord], guest_end: GuestEnd, *, selected: bool = False) -> Verdict:
    """The run's verdict. A guest that died outranks the records it left behind.

    Zero records after a normal end is never a pass. Without a selection it is infra-error (the
    default suite always has tests, so collection or the plugin broke); with one (`selected`) it
    is a failure: `-k hang_dmeo` matching nothing must not turn CI green.
    """
    if guest_end is GuestEnd.CRASHED:
        return Verdict.CRASHED
    if guest_end is GuestEnd.HUNG:
        return Verdict.HUNG
    if guest_end is not GuestEnd.DONE:
        return Verdict.INFRA_ERROR
    if not records:
        return Verdict.FAILED if selected else Verdict.INFRA_ERROR
    if any(r.outcome in FAILING for r in records):
        return Verdict.FAILED
    return Verdict.PASSED


def interrupted_record(
    running: str | None,
    records: Sequence[TestRecord],
    guest_end: GuestEnd,
    cause: str,
    *,
    duration: float = 0.0,
) -> TestRecord | None:
    """The record of the test the guest was running when it died, which the guest never wrote.

    `running` is the last test the console announced (a `begin` frame), `cause` the first line of the
    evidence (the panic, the hang) and `duration` the time from its start to the guest's end. Outcome
    "error": the test did not fail an assertion, the machine under it went away, and the run's verdict
    (crashed, hung) already says which.
    """
    if guest_end is GuestEnd.DONE or running is None or any(r.name == running for r in records):
        return None
    return TestRecord(
        name=running,
        outcome="error",
        duration=round(max(0.0, duration), 2),
        message=f"the guest {guest_end.value} while this test ran: {cause}"[:2000],
        details={"interrupted_by": guest_end.value},
    )


def exit_code(v: Verdict) -> int:
    return _EXIT_CODES[v]


def count_outcomes(records: Iterable[TestRecord]) -> dict[Outcome, int]:
    """Every outcome with its count (zeros included, in OUTCOMES order)."""
    counts: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
    for record in records:
        counts[record.outcome] += 1
    return counts


@dataclass(frozen=True)
class RunMeta:
    """Facts about one run (one topology x kernel cell), measured by the caller."""

    topology: str
    kernel: str  # the spec as given: debian:7.2, src:debian-7.2, tree:PATH, a path
    kernel_version: str | None  # uname -r of the booted kernel
    qemu_version: str | None
    accelerator: str
    started_at: str  # ISO 8601, supplied by the caller (this package reads no clock)
    durations: dict[str, float] = field(default_factory=dict)  # e.g. setup, boot, tests, total
    host: str = ""
    harness_version: str = ""
    command: list[str] = field(default_factory=list)  # the hil invocation, argv
    # Where the cell's time went: [{"mark", "t", "detail"?}] (harness/results/timeline.py).
    timeline: list[dict[str, object]] = field(default_factory=list)
    # A variant of a shipped topology made by `--axis` (harness/topology/axes.py): the values set.
    axes: dict[str, str] = field(default_factory=dict)
    # sha256 of the expanded topology definition: a matrix comparison says when it changed.
    topology_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- JSONL ---------------------------------------------------------------------------------------


class LoadedRecords(NamedTuple):
    """Records from the guest's JSONL file. `truncated_tail` is the half-written last line a
    crash can leave behind (None when the file ended cleanly). Unpacks as (records, tail)."""

    records: list[TestRecord]
    truncated_tail: str | None = None


def parse_records(text: str, source: str = "guest results") -> LoadedRecords:
    """Parse JSONL text. Only the last line may be broken (the guest died while writing it);
    a broken line anywhere else is a plugin bug and raises InfraError naming file and line."""
    lines = text.split("\n")
    # A file that ends with "\n" has an empty last element: every record was completed.
    last_complete = text.endswith("\n")
    records: list[TestRecord] = []
    truncated: str | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_unterminated_tail = number == len(lines) and not last_complete
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if is_unterminated_tail:
                truncated = line
                break
            raise InfraError(f"{source}:{number}: not JSON ({exc}): {line[:200]!r}") from exc
        records.append(record_from_json(data, f"{source}:{number}"))
    return LoadedRecords(records, truncated)


def load_records(path: Path) -> LoadedRecords:
    """Read the guest's JSONL file; a missing file (the guest died before the first test
    finished) is an empty result, not an error."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return LoadedRecords([])
    return parse_records(text, str(path))


def record_from_json(data: object, where: str) -> TestRecord:
    if not isinstance(data, dict):
        raise InfraError(f"{where}: a record must be a JSON object, got {type(data).__name__}")
    name = data.get("name")
    outcome = data.get("outcome")
    duration = data.get("duration", 0.0)
    message = data.get("message") or ""
    details = data.get("details") or {}
    if not isinstance(name, str) or not name:
        raise InfraError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    if outcome not in OUTCOMES:
        raise InfraError(f"{where}: 'outcome' must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise InfraError(f"{where}: 'duration' must be a number, got {duration!r}")
    if not isinstance(message, str):
        raise InfraError(f"{where}: 'message' must be a string, got {type(message).__name__}")
    if not isinstance(details, dict):
        # Another producer's free text (a traceback) is still evidence: keep it, don't reject the run.
        details = {"text": details if isinstance(details, str) else json.dumps(details)}
    return TestRecord(
        name=name,
        outcome=cast(Outcome, outcome),
        duration=float(duration),
        message=message,
        details=details,
    )


# Severity for combining many runs (--topology all): any run that did not finish cleanly
# outranks plain test failures, and a machinery failure outranks what the kernel did.
_SEVERITY = (Verdict.PASSED, Verdict.FAILED, Verdict.HUNG, Verdict.CRASHED, Verdict.INFRA_ERROR)


def combine_verdicts(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst of several runs' verdicts; no runs at all is an infra-error."""
    found = list(verdicts)
    if not found:
        return Verdict.INFRA_ERROR
    return max(found, key=_SEVERITY.index)

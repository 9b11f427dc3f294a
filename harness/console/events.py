"""Console text -> events, incrementally and without I/O.

The host feeds whatever chunks pexpect hands it; the scanner only ever acts on complete
physical lines, so the events do not depend on where the chunks were cut.

On a serial console the kernel writes whole printk records, but it can start one in the middle
of a line that user space has not finished (both share ttyS0). A physical line is therefore
split at the first printk timestamp: the text before it is the unfinished user line, which
continues on the next physical line that is not purely kernel output. This is what keeps
`@@HIL:...@@` markers intact when a kernel message lands inside one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.console.patterns import (
    CUT_HERE,
    END_PANIC,
    END_TRACE,
    SEPARATOR,
    SINGLE_LINE,
    TASK_CLOSE,
    TIMESTAMP,
    MilestoneKind,
    ProblemKind,
    header_kind,
    milestone_kind,
)

MarkerKind = Literal["start", "collected", "begin", "test", "done"]
MARKER_KINDS: tuple[MarkerKind, ...] = ("start", "collected", "begin", "test", "done")
_MARKER_OPEN = "@@HIL:"
_MARKER_CLOSE = "@@"

# Long enough for a lockdep chain or an Oops with a deep trace; bounded so that a report with
# no end marker (hung task on a tail-less console, rcu stall without backtraces) cannot
# swallow the rest of the log.
DEFAULT_MAX_EXCERPT_LINES = 200
_MAX_QUOTED = 500


@dataclass(frozen=True)
class Marker:
    """A framed line from the guest entry carrying our token."""

    kind: MarkerKind
    payload: dict[str, Any]


@dataclass(frozen=True)
class MalformedMarker:
    """A line that claims to be one of our markers but cannot be parsed."""

    line: str
    reason: str


@dataclass(frozen=True)
class KernelProblem:
    """A kernel report. `first_line` is the header without its timestamp; `excerpt` holds the
    console lines (with timestamps) from the start of the report to its end marker. `complete`
    is False when the report was cut short (no end marker before EOF, another report, or the
    line bound)."""

    kind: ProblemKind
    first_line: str
    excerpt: str
    complete: bool = True
    during: str | None = None  # the test the guest was running (set by the watch, not the parser)
    known_issue: str | None = None  # "reason [reference]" of the known-issues entry that explains it


@dataclass(frozen=True)
class BootMilestone:
    """How far the boot got; each kind is reported once, at its first occurrence."""

    kind: MilestoneKind
    line: str


Event = Marker | MalformedMarker | KernelProblem | BootMilestone


@dataclass
class _Report:
    kind: ProblemKind
    first_line: str
    lines: list[str]
    saw_oops: bool = False

    def snapshot(self, complete: bool) -> KernelProblem:
        return KernelProblem(self.kind, self.first_line, "\n".join(self.lines), complete)


@dataclass
class _Previous:
    raw: str = ""
    message: str = ""


@dataclass
class _State:
    partial: list[str] = field(default_factory=list)
    user_pending: str = ""
    # Once a timestamped line has been seen the kernel is known to stamp its records, and
    # untimed lines are user output (a test printing "BUG:" must not count as a kernel bug).
    timed: bool = False
    report: _Report | None = None
    previous: _Previous = field(default_factory=_Previous)
    milestones: list[MilestoneKind] = field(default_factory=list)
    # A replayed record (boot console and real console both printing, or dmesg copied to the
    # console by a test) has the same timestamp and text and must not count twice.
    reported: set[str] = field(default_factory=set)


class ConsoleScanner:
    """Incremental console parser for one run; `token` selects this run's markers."""

    def __init__(self, token: str, *, max_excerpt_lines: int = DEFAULT_MAX_EXCERPT_LINES) -> None:
        if not token or ":" in token or "@" in token:
            raise ValueError(f"marker token must be non-empty without ':' or '@': {token!r}")
        self.token = token
        self.max_excerpt_lines = max(2, max_excerpt_lines)
        self._s = _State()

    @property
    def milestones(self) -> tuple[MilestoneKind, ...]:
        """Milestones reached so far, in order."""
        return tuple(self._s.milestones)

    @property
    def open_problem(self) -> KernelProblem | None:
        """The report being collected, if any: a host that gives up waiting still has evidence."""
        report = self._s.report
        return report.snapshot(complete=False) if report else None

    def feed(self, text: str) -> list[Event]:
        events: list[Event] = []
        self._s.partial.append(text)
        if "\n" not in text:
            return events  # nothing is decided on part of a line
        lines = "".join(self._s.partial).split("\n")
        self._s.partial = [lines.pop()]
        for line in lines:
            self._line(line.rstrip("\r"), events)
        return events

    def finish(self) -> list[Event]:
        """End of console: flush the unterminated line, the unfinished user line and any report."""
        events: list[Event] = []
        rest = "".join(self._s.partial)
        self._s.partial = []
        if rest:
            self._line(rest.rstrip("\r"), events)
        if self._s.user_pending:
            pending, self._s.user_pending = self._s.user_pending, ""
            self._user(pending, events)
        self._close(events, complete=False)
        return events

    # -- lines ---------------------------------------------------------------------------------

    def _line(self, line: str, events: list[Event]) -> None:
        stamp = TIMESTAMP.search(line)
        if stamp:
            self._s.timed = True
            self._s.user_pending += line[: stamp.start()]
            kernel = line[stamp.start() :]
            self._kernel(kernel, kernel[stamp.end() - stamp.start() :], events, timed=True)
            return
        user, self._s.user_pending = self._s.user_pending + line, ""
        self._user(user, events)
        if not self._s.timed:
            self._kernel(line, line, events, timed=False)

    def _user(self, line: str, events: list[Event]) -> None:
        if _MARKER_OPEN in line:
            events.extend(self._markers(line))

    def _kernel(self, raw: str, message: str, events: list[Event], *, timed: bool) -> None:
        milestone = milestone_kind(message)
        if milestone and milestone not in self._s.milestones:
            self._s.milestones.append(milestone)
            events.append(BootMilestone(milestone, message))

        kind = header_kind(message)
        report = self._s.report
        if kind == "blocked_tasks" and report is not None:
            kind = None  # a task's stack inside another report (hung task) is part of that report
        if kind is not None:
            if report and report.kind == "bug" and kind == "oops" and not report.saw_oops:
                # "kernel BUG at" and "BUG: kernel NULL pointer dereference" go on to die(): the
                # Oops belongs to the same report. A BUG() stays a bug; a bad access is an oops.
                report.saw_oops = True
                if not report.first_line.startswith("kernel BUG at"):
                    report.kind = "oops"
                self._append(report, raw, message, events)
            elif not (timed and raw in self._s.reported):
                self._close(events, complete=False)
                self._open(kind, raw, message, timed)
                if kind in SINGLE_LINE:
                    self._close(events, complete=True)
        elif report:
            self._append(report, raw, message, events)
        self._s.previous = _Previous(raw, message)

    # -- reports -------------------------------------------------------------------------------

    def _open(self, kind: ProblemKind, raw: str, message: str, timed: bool) -> None:
        if timed:
            self._s.reported.add(raw)
        lines = [raw]
        previous = self._s.previous
        if previous.message == CUT_HERE or SEPARATOR.match(previous.message):
            lines.insert(0, previous.raw)
        self._s.report = _Report(kind, message, lines)

    def _append(self, report: _Report, raw: str, message: str, events: list[Event]) -> None:
        report.lines.append(raw)
        if _ends(report, message):
            self._close(events, complete=True)
        elif len(report.lines) >= self.max_excerpt_lines:
            self._close(events, complete=False)

    def _close(self, events: list[Event], *, complete: bool) -> None:
        if self._s.report:
            events.append(self._s.report.snapshot(complete))
            self._s.report = None

    # -- markers -------------------------------------------------------------------------------

    def _markers(self, line: str) -> list[Event]:
        events: list[Event] = []
        for chunk in line.split(_MARKER_OPEN)[1:]:
            event = self._marker(chunk, line)
            if event is not None:
                events.append(event)
        return events

    def _marker(self, chunk: str, line: str) -> Event | None:
        parts = chunk.split(":", 2)
        if parts[0] != self.token:
            return None  # another run's marker (or unrelated text): not ours to judge
        quoted = line[:_MAX_QUOTED]
        if len(parts) < 3:
            return MalformedMarker(quoted, "marker has no kind or payload")
        kind, tail = parts[1], parts[2]
        end = tail.rfind(_MARKER_CLOSE)
        if end < 0:
            return MalformedMarker(quoted, "marker is not closed with '@@' (truncated?)")
        if kind not in MARKER_KINDS:
            return MalformedMarker(quoted, f"unknown marker kind {kind!r}")
        try:
            payload = json.loads(tail[:end])
        except json.JSONDecodeError as exc:
            return MalformedMarker(quoted, f"payload is not JSON: {exc}")
        if not isinstance(payload, dict):
            return MalformedMarker(quoted, f"payload is a {type(payload).__name__}, not an object")
        return Marker(kind, payload)


def _ends(report: _Report, message: str) -> bool:
    """Whether `message`, a line after the header, is the last line of the report."""
    if report.kind == "panic":
        # With vng's panic=-1 the guest resets before this line: such panics end at EOF.
        return message.startswith(END_PANIC)
    if report.kind == "kasan":
        return SEPARATOR.match(message) is not None
    if message.startswith(END_TRACE):
        return True
    if message.strip() == TASK_CLOSE:
        # These reports are a header plus one dump_stack()/sched_show_task() and print no
        # end-trace marker; an Oops has its own "end trace" after the trace closes.
        return report.kind in ("hung_task", "rcu_stall", "lockdep", "blocked_tasks") or (
            report.kind == "bug" and not report.saw_oops
        )
    return False


def scan(text: str, token: str) -> list[Event]:
    """All events of a complete console log."""
    scanner = ConsoleScanner(token)
    return scanner.feed(text) + scanner.finish()


_NEWLINES = re.compile(r"\r*\n")


def tail(text: str, n: int = 50) -> str:
    """The last `n` lines of console text, with CRLF normalised, for error messages."""
    if n <= 0:
        return ""
    lines = _NEWLINES.split(text.rstrip("\r\n"))
    return "\n".join(lines[-n:])

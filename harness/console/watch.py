"""What the console told the host while one guest ran, and how the guest ended (pure).

`observe()` folds console events (harness.console.events) into a ConsoleWatch, marking the cell's
timeline as it goes; `guest_end_of()` and `first_cause()` judge the finished watch. No clock is read
here: the caller passes the time of each event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import get_args

from harness.console.events import BootMilestone, Event, KernelProblem, Marker
from harness.console.patterns import ProblemKind
from harness.results.model import GuestEnd
from harness.results.timeline import Timeline

Progress = Callable[[str], None]
# What the live progress line shows for a finished test (from its `test` frame): the outcome as the
# report will judge it.
Judge = Callable[[Mapping[str, object]], str]

# Kernel reports that are evidence, not a crash: the guest watchdog's sysrq-w dump of blocked tasks, and
# kmemleak's count after a scan. Only the guest's tests ask kmemleak to scan; they read the leaked
# objects' backtraces from /sys/kernel/debug/kmemleak and fail with them (an analysed leak can then be
# excused precisely by a known issue's broken_invariants), which the console's count cannot do.
EVIDENCE_ONLY: frozenset[ProblemKind] = frozenset({"blocked_tasks", "kmemleak"})
# Every other report the console parser knows makes the run `crashed`. Derived from ProblemKind rather
# than listed, so a report kind added to the parser cannot be silently ignored by the verdict.
CRASH_KINDS: frozenset[ProblemKind] = frozenset(get_args(ProblemKind)) - EVIDENCE_ONLY

_MILESTONE_MARKS = {"kernel_started": "kernel_banner", "script_started": "guest_command"}


@dataclass
class ConsoleWatch:
    """What the console showed while the guest ran."""

    started: bool = False
    done: dict[str, object] | None = None
    problems: list[KernelProblem] = field(default_factory=list)
    milestones: list[str] = field(default_factory=list)
    hang: str | None = None  # the host gave up waiting (deadline or silence): why
    boot_s: float | None = None
    running: str | None = None  # announced by a begin frame, not yet finished
    running_since: float = 0.0  # host time of that begin frame
    collected: int | None = None
    timeline: Timeline = field(default_factory=Timeline)
    last_progress: float = 0.0  # host time of the last frame or boot milestone (kernel reports are not)
    stopped: str | None = None  # the host stopped a wedged guest (see wedged()): why


def as_reported(payload: Mapping[str, object]) -> str:
    return str(payload.get("outcome", "?"))


def observe(
    event: Event, seen: ConsoleWatch, now: float, progress: Progress, judge: Judge = as_reported
) -> None:
    """Fold one event into `seen`; `now` is the host time of the event in seconds since the cell started."""
    if isinstance(event, Marker):
        seen.last_progress = now
        _marker(event, seen, now, progress, judge)
    elif isinstance(event, KernelProblem):
        seen.problems.append(replace(event, during=seen.running))
        during = f" (during {seen.running})" if seen.running else ""
        progress(f"kernel {event.kind}: {event.first_line.strip()}{during}")
    elif isinstance(event, BootMilestone):
        seen.last_progress = now
        seen.milestones.append(event.kind)
        if event.kind in _MILESTONE_MARKS:
            seen.timeline.mark(_MILESTONE_MARKS[event.kind], now)


def _marker(event: Marker, seen: ConsoleWatch, now: float, progress: Progress, judge: Judge) -> None:
    p = event.payload
    if event.kind == "start":
        seen.started = True
        seen.boot_s = now - (seen.timeline.at("qemu_start") or 0.0)
        seen.timeline.mark("python_up", now)
        progress(f"guest up after {seen.boot_s:.1f} s (kernel {p.get('kernel', '?')})")
    elif event.kind == "collected":
        seen.collected = int(str(p.get("count", 0)))
        seen.timeline.mark("tests_collected", now)
    elif event.kind == "begin":
        seen.running = str(p.get("name", "?"))
        seen.running_since = now
        seen.timeline.mark("test_begin", now, seen.running)
    elif event.kind == "test":
        name = str(p.get("name", "?"))
        if name == seen.running:
            seen.running = None
        seen.timeline.mark("test_end", now, name)
        shown = judge(p)
        progress(f"  {shown:8} {name} ({float(str(p.get('duration', 0))):.2f} s)")
    elif event.kind == "done":
        seen.done = dict(p)
        seen.timeline.mark("tests_done", now)


def wedged(seen: ConsoleWatch, now: float, idle_timeout_s: float) -> str | None:
    """Why the host should stop waiting for a guest that is still talking: after a crash-kind report,
    a guest whose only output for `idle_timeout_s` is more kernel reports (a soft lockup repeats every
    ~26 s, an RCU stall every minute) makes no progress, and the silence detector never fires on it.
    The verdict is `crashed` already; waiting for the cell's deadline only costs time."""
    crashes = [p for p in seen.problems if p.kind in CRASH_KINDS]
    if not crashes or seen.done is not None or now - seen.last_progress <= idle_timeout_s:
        return None
    last = crashes[-1]
    return (
        f"no progress for {now - seen.last_progress:.0f} s after kernel {last.kind} "
        f"({last.first_line.strip()}); only kernel reports on the console"
    )


# pytest's own exit statuses that mean it broke, not that tests failed (1) or that none was selected (5):
# the records it left are not the suite's answer.
PYTEST_BROKEN = {3: "an internal error: see the console", 4: "a usage error: see the console"}


def guest_end_of(seen: ConsoleWatch) -> GuestEnd:
    """How the guest ended, from what the console showed."""
    if seen.hang is not None or (seen.done is not None and seen.done.get("status") == "hung"):
        return GuestEnd.HUNG
    if unexplained_crashes(seen):
        return GuestEnd.CRASHED
    if not seen.started:
        return GuestEnd.BOOT_FAILURE
    if seen.done is None or seen.done.get("status") != "finished":
        return GuestEnd.INFRA_ERROR
    if seen.done.get("exit_code") in PYTEST_BROKEN:
        return GuestEnd.INFRA_ERROR
    return GuestEnd.DONE


def unexplained_crashes(seen: ConsoleWatch) -> list[KernelProblem]:
    """The crash-kind reports no known issue explains (one explained is known only in a guest that
    finished: see harness.results.known_issues.explain_reports)."""
    return [p for p in seen.problems if p.kind in CRASH_KINDS and p.known_issue is None]


def finished(seen: ConsoleWatch) -> bool:
    """The guest entry reported the end of the suite: the kernel survived every report it printed."""
    return seen.done is not None and seen.done.get("status") == "finished"


def first_cause(seen: ConsoleWatch, end: GuestEnd) -> str:
    """One line saying why the guest went away, for the interrupted test's message."""
    crashes = unexplained_crashes(seen)
    if end is GuestEnd.CRASHED and crashes:
        return f"kernel {crashes[0].kind}: {crashes[0].first_line.strip()}"
    done = seen.done or {}
    if done.get("status") == "hung":
        test = done.get("test")
        if test:
            cause = (
                f"in-guest watchdog: test {test} ran {done.get('test_elapsed', '?')} s, over its "
                f"{done.get('test_timeout_s', done.get('deadline_s', '?'))} s limit"
            )
        else:
            limit = done.get("deadline_s", "?")
            cause = f"in-guest watchdog: the tests were not done within their {limit} s deadline"
    elif done.get("status") == "timeout":
        cause = (
            f"in-guest deadline of {done.get('deadline_s', '?')} s passed during {done.get('phase', '?')} "
            "(slow, not a kernel hang)"
        )
    elif seen.hang is not None:
        cause = seen.hang.splitlines()[0] if seen.hang else "no progress before the deadline"
    else:
        cause = end.value
    blocked = [p for p in seen.problems if p.kind == "blocked_tasks"]
    if blocked:  # the watchdog's sysrq-w: the first blocked task, its stack is in the evidence
        cause += f"; blocked: {' '.join(blocked[0].first_line.split()[:2])}"
    return cause


# QEMU's own assert()/abort() message, e.g. "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section:
# Assertion `section_index < d->map.sections_nb' failed." (TCG, seen during a VFIO bus reset).
_QEMU_ABORT = re.compile(r"^qemu-system-\S+: .*(?:Assertion .* failed|Aborted)", re.MULTILINE)


def qemu_abort_line(console: str) -> str | None:
    """QEMU's own abort message on the console, if QEMU (not the guest) died."""
    match = _QEMU_ABORT.search(console)
    return match.group(0).strip() if match else None


def phase_of(seen: ConsoleWatch, now: float) -> str:
    """Where the guest was when the host gave up on it, so a hang names what hung."""
    if seen.running is not None:
        return f"test {seen.running} had been running for {now - seen.running_since:.1f} s"
    if seen.done is not None:
        return "after the tests were done (power-off)"
    if seen.collected is not None:
        return "between tests"
    if seen.started:
        return "during pytest start-up and collection (no test had started)"
    if "guest_command" in seen.timeline.names():
        return "while the guest entry was starting (Python start-up)"
    if "kernel_banner" in seen.timeline.names():
        return "during the kernel boot"
    return "before the kernel printed anything"

"""Turning kbuild's output into a few progress lines (pure: the caller passes the clock and the total).

A first build takes 6-18 minutes on the machines this runs on, so the lines say how far it is
(objects compiled of the expected total) and how long is left at the rate so far. The total comes
from `expected_total`: the previous full build of the same config when there was one, else a figure
shipped for the project's config; anything but a previous build of the same source is an estimate
and is printed with "about".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# kbuild's quiet lines: "  CC      drivers/pci/p2pdma.o", "  CC [M]  fs/foo.o", "  LD      vmlinux.o"
_STEP = re.compile(r"^\s{1,4}(?P<tool>[A-Z][A-Z0-9_]{1,12}(?: \[M\])?)\s+(?P<target>\S+)\s*$")
_COMPILES = frozenset({"CC", "CC [M]", "AS", "AS [M]"})


def count_compiles(lines: Iterable[str]) -> int:
    """Objects compiled in make output: what MakeProgress counts, for measuring a finished build's log."""
    total = 0
    for line in lines:
        match = _STEP.match(line)
        if match is not None and match.group("tool") in _COMPILES:
            total += 1
    return total


@dataclass(frozen=True)
class ObjectTotal:
    """How many objects this make run is expected to compile."""

    count: int
    exact: bool  # a previous full build of the same config and source counted them
    why: str  # where the figure comes from, for the line that announces the build

    @property
    def text(self) -> str:
        return f"{self.count}" if self.exact else f"about {self.count}"


@dataclass(frozen=True)
class PreviousCount:
    """A finished full build's real count (from its record)."""

    source: str
    objects: int
    finished: float


def expected_total(
    *, source: str, previous: Sequence[PreviousCount], shipped: int | None, present: int = 0
) -> ObjectTotal | None:
    """The total for a build of `source`, or None when nothing sensible can be said.

    `previous`: real counts of full builds with the same config (any source); `shipped`: the figure
    for the project's config; `present`: object files already in the build directory when make
    resumes an interrupted build (kbuild will not compile them again).
    """
    same = [p for p in previous if p.source == source]
    if same:
        best = max(same, key=lambda p: p.finished)
        total = ObjectTotal(best.objects, True, "counted in the previous build of this config and source")
    elif previous:
        best = max(previous, key=lambda p: p.finished)
        why = f"counted in a previous build of this config ({best.source})"
        total = ObjectTotal(best.objects, False, why)
    elif shipped is not None:
        total = ObjectTotal(shipped, False, "the figure shipped for the project's config")
    else:
        return None
    if present <= 0:
        return total
    left = total.count - present
    if left <= 0:
        return None
    return ObjectTotal(left, False, f"{total.why}, less {present} objects left by an interrupted build")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    return f"{round(seconds / 60):.0f} min"


class MakeProgress:
    """Feed it make's output lines; it returns a line to print now and then.

    With a total: a line at every 5% step (never closer than `min_gap` seconds) and at least every
    `interval` seconds while make prints. Without one (a seeded build only recompiles what changed):
    a line every `interval` seconds with the count so far.
    """

    STEP_PERCENT = 5
    # The rate is not worth quoting before this many objects (or 1% of the total) and seconds.
    MIN_OBJECTS_FOR_RATE = 20
    MIN_SECONDS_FOR_RATE = 10.0

    def __init__(
        self, start: float, interval: float = 30.0, *, total: ObjectTotal | None = None, min_gap: float = 10.0
    ) -> None:
        self.start = start
        self.interval = interval
        self.min_gap = min_gap
        self.total = total
        self.compiled = 0
        self.last_step = ""
        self._first_compile: float | None = None
        self._last_report = start
        self._reported_step = 0

    def feed(self, line: str, now: float) -> str | None:
        match = _STEP.match(line)
        if match is not None:
            tool = match.group("tool")
            if tool in _COMPILES:
                self.compiled += 1
                if self._first_compile is None:
                    self._first_compile = now
            self.last_step = f"{tool} {match.group('target')}"
        if not self.last_step:
            return None
        since = now - self._last_report
        step = self._step()
        if since >= self.interval or (step > self._reported_step and since >= self.min_gap):
            self._last_report = now
            self._reported_step = step
            return self.status(now)
        return None

    def _step(self) -> int:
        if self.total is None or self.total.count <= 0:
            return 0
        return min(self.compiled, self.total.count) * 100 // self.total.count // self.STEP_PERCENT

    def seconds_left(self, now: float) -> float | None:
        """Time to compile the rest at the rate so far; None until the rate means something."""
        if self.total is None or self._first_compile is None or self.compiled >= self.total.count:
            return None
        elapsed = now - self._first_compile
        enough = max(self.MIN_OBJECTS_FOR_RATE, self.total.count // 100)
        if self.compiled < enough or elapsed < self.MIN_SECONDS_FOR_RATE:
            return None
        rate = self.compiled / elapsed
        return (self.total.count - self.compiled) / rate

    def status(self, now: float) -> str:
        head = f"[{now - self.start:4.0f}s]"
        step = self.last_step or "make"
        if self.total is None:
            return f"{head} {step} ({self.compiled} objects)"
        if self.compiled > self.total.count:
            expected = (
                f"{self.total.count} counted last time"
                if self.total.exact
                else f"estimated {self.total.count}"
            )
            return f"{head} {self.compiled} objects, more than the {expected}: {step}"
        percent = self.compiled * 100 // max(1, self.total.count)
        done = f"{head} {self.compiled} of {self.total.text} objects ({percent}%)"
        left = self.seconds_left(now)
        if left is not None:
            done += f", about {_duration(left)} left"
        return f"{done}: {step}"

"""Where a cell's time goes: named instants on the host's clock, and the phases between them (pure).

The harness marks what it sees happen (QEMU started, the kernel's banner on the console, the guest
entry's frames, the VM gone, host checks done, results written), in seconds since the cell started.
The marks are kept in results.json as they are; `phases()` turns them into the spans a person asks
about ("how long did the boot take, how long did Python take to start"), and `breakdown_line()` is the
one line `hil run` prints per cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The instants a cell can have, in the order they happen. A cell that dies early has a prefix of them
# (plus `vm_stopped` and what follows); a test's begin/end are not listed here (one per test).
MARKS: tuple[str, ...] = (
    "host_start",  # run_cell entered
    "host_prepared",  # the guest's byte-code is prepared on the host (harness.guest.prepare)
    "qemu_start",  # the VM process was started
    "kernel_banner",  # "Linux version" on the console
    "guest_command",  # virtme-ng-init starts the script (the guest command)
    "python_up",  # the guest entry's start frame: the interpreter and the harness are loaded
    "tests_collected",  # pytest collected the tests (collected frame)
    "tests_done",  # the done frame: pytest has exited
    "vm_stopped",  # the VM process is gone (power-off or kill)
    "host_checks",  # the host read back the exporters' bytes
    "results_written",  # results.json, junit.xml written
)

# (phase name, from mark, to mark): what the one-line breakdown shows.
PHASES: tuple[tuple[str, str, str], ...] = (
    ("launch", "host_start", "qemu_start"),
    ("firmware+kernel", "qemu_start", "guest_command"),
    ("python", "guest_command", "python_up"),
    ("collect", "python_up", "tests_collected"),
    ("tests", "tests_collected", "tests_done"),
    ("power-off", "tests_done", "vm_stopped"),
    ("host", "vm_stopped", "results_written"),
)


@dataclass(frozen=True)
class Mark:
    name: str
    t: float  # seconds since host_start
    detail: str = ""  # e.g. the test a begin/end mark belongs to


class Timeline:
    """Marks in the order they were made; the first mark of a name wins (a replayed frame is ignored)."""

    def __init__(self) -> None:
        self._marks: list[Mark] = []

    def mark(self, name: str, t: float, detail: str = "") -> None:
        if detail or name not in self.names():
            self._marks.append(Mark(name, round(t, 3), detail))

    def names(self) -> set[str]:
        return {m.name for m in self._marks if not m.detail}

    def at(self, name: str) -> float | None:
        return next((m.t for m in self._marks if m.name == name and not m.detail), None)

    def marks(self) -> tuple[Mark, ...]:
        return tuple(self._marks)

    def to_json(self) -> list[dict[str, object]]:
        return [{"mark": m.name, "t": m.t, **({"detail": m.detail} if m.detail else {})} for m in self._marks]


def marks_from_json(raw: Sequence[Mapping[str, object]]) -> list[Mark]:
    """The marks as results.json keeps them (RunMeta.timeline)."""
    return [Mark(str(m["mark"]), float(str(m["t"])), str(m.get("detail", ""))) for m in raw]


def phases(marks: Sequence[Mark]) -> list[tuple[str, float]]:
    """Pure: the duration of each phase whose two ends were both seen."""
    at: dict[str, float] = {}
    for m in marks:
        if not m.detail:
            at.setdefault(m.name, m.t)
    return [(name, round(at[b] - at[a], 2)) for name, a, b in PHASES if a in at and b in at]


def breakdown_line(marks: Sequence[Mark]) -> str:
    """Pure: `launch 0.1 s | firmware+kernel 5.9 s | python 1.2 s | ... = 24.0 s`, or a note when a
    phase is missing (a cell that crashed never collects its tests)."""
    parts = phases(marks)
    total = max((m.t for m in marks), default=0.0)
    shown = " | ".join(f"{name} {seconds:.1f} s" for name, seconds in parts)
    seen = {name for name, _ in parts}
    missing = [name for name, _a, _b in PHASES if name not in seen]
    tail = f" (not reached: {', '.join(missing)})" if missing else ""
    return f"{shown or 'no phase completed'} = {total:.1f} s{tail}"

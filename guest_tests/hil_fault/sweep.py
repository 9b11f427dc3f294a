"""The fail-nth sweep of one operation, in the syzkaller style, with the leak invariants after each step.

For N = 1, 2, ...: bring the system to the operation's starting state, note its facts, arm fail-nth
with N, run the operation (one call built in advance), read fail-nth back and clear it.
- fail-nth not consumed: the operation reached fewer than N fault sites; it must have completed as
  it does without faults, and the sweep is over (`sites` = N minus what was left).
- consumed, and the operation failed: it must have failed cleanly - an errno, no kernel report, the
  facts exactly as before, the operation's own checks (an IOMMU mapping left behind, ...) - and the
  same operation, run again without a fault, must succeed and give what it gave before the sweep.
- consumed, but the operation completed anyway (the failure was absorbed, e.g. a fallback path): its
  result must still be right, and undoing it must leave nothing behind.
A fault whose stack shows none of the operation's entry frames landed outside it (a page fault of the
interpreter, say); that step is run again, and recorded as such if it keeps happening.
When `restart` names a reason after a step (the device's DMA addresses moved for good, so that the
step's own loss could hide behind the move), the sweep starts again from fault 1, once: the first
pass's steps are kept, with their broken invariants, and the second pass is the sweep.

Pure apart from what the operation, the injector and the log do: tests/test_guest_fault_sweep.py runs it
against a fake operation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hil_fault.armed import Outcome
from hil_fault.kmsg import FaultStack, KernelReport, Record, fault_stacks, kernel_reports
from hil_fault.snapshot import Facts, changes

DEFAULT_CAP = 200
OUTSIDE_RETRIES = 2
NOWARN_SITE = "no stack printed (a __GFP_NOWARN allocation: fail_dump is skipped)"


class Operation(Protocol):
    @property
    def name(self) -> str:
        """ "map", "attach", ..."""

    @property
    def route(self) -> str | None:
        """The oracle's route where one applies."""

    @property
    def entry_frames(self) -> tuple[str, ...]:
        """A fault whose stack contains none of these frames was not injected inside the operation."""

    @property
    def expected_errno(self) -> int:
        """What the operation gives without a fault (0, or EINVAL on a refused route)."""

    def prepare(self) -> None:
        """Bring the system to the starting state and build the call (nothing may be built later)."""

    def call(self) -> Outcome:
        """The armed part: one system call (or a short sequence built in advance)."""

    def facts(self) -> Facts:
        """The state that a failed operation must leave exactly as it found it."""

    def settle(self, outcome: Outcome) -> list[str]:
        """After the operation completed normally: check its result (the first time this defines the
        reference, e.g. the DMA address) and undo it back to the starting state; broken invariants."""

    def after_failure(self, outcome: Outcome) -> list[str]:
        """Checks of the operation's own after an injected failure (e.g. no IOMMU mapping left behind)."""


class Injector(Protocol):
    def arm(self, n: int) -> None: ...

    def left(self) -> int: ...

    def disarm(self) -> None: ...


class LogSource(Protocol):
    def drain(self) -> list[Record]: ...


@dataclass
class Step:
    n: int
    errno: int
    absorbed: bool  # the fault was injected but the operation completed as without one
    stack: FaultStack | None
    broken: list[str] = field(default_factory=list)
    outside: bool = False  # the fault kept landing outside the operation
    # CLOCK_BOOTTIME around the armed call, so that a kmemleak report (allocation time in jiffies) can be
    # placed in the step whose failure left it, or outside every armed call.
    armed_at: tuple[float, float] = (0.0, 0.0)

    @property
    def site(self) -> str:
        return self.stack.site() if self.stack is not None else NOWARN_SITE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "errno": self.errno, "site": self.site}
        if self.stack is not None:
            out["attr"] = self.stack.attr
        if self.absorbed:
            out["absorbed"] = True
        if self.outside:
            out["outside"] = True
        if self.broken:
            out["broken"] = list(self.broken)
        return out


@dataclass
class SweepResult:
    operation: str
    route: str | None
    label: str  # what the operation was run on ("exporter -> dma", "memory-enable", ...)
    steps: list[Step] = field(default_factory=list)
    first_pass: list[Step] = field(default_factory=list)  # before a restart, if there was one
    restarted: str | None = None  # why the sweep started again from fault 1
    sites: int | None = None  # fault sites the operation reached (None: the cap was hit first)
    capped: bool = False
    baseline_broken: list[str] = field(default_factory=list)
    final_broken: list[str] = field(default_factory=list)  # from the fault-free run that ended the sweep
    leak_broken: list[dict[str, Any]] = field(default_factory=list)  # kmemleak, added after the scan
    duration_s: float = 0.0
    kmemleak: dict[str, Any] | None = None
    window: tuple[float, float] = (0.0, 0.0)  # CLOCK_BOOTTIME at the sweep's start and end

    @property
    def all_steps(self) -> list[Step]:
        return self.first_pass + self.steps

    def broken(self) -> list[dict[str, Any]]:
        """Every broken invariant as a record entry: operation, route, fault number, stack, invariant."""
        entries: list[dict[str, Any]] = []

        def add(fault: int | None, stack: FaultStack | None, invariant: str) -> None:
            entries.append({"operation": self.operation, "route": self.route, "label": self.label,
                            "fault": fault, "stack": list(stack.frames) if stack else [],
                            "invariant": invariant})  # fmt: skip

        for text in self.baseline_broken:
            add(None, None, f"before the sweep: {text}")
        for step in self.first_pass:
            for text in step.broken:
                add(step.n, step.stack, f"first pass (before the restart): {text}")
        for step in self.steps:
            for text in step.broken:
                add(step.n, step.stack, text)
        for text in self.final_broken:
            add(None, None, f"without a fault (the sweep's last run): {text}")
        if self.capped:
            add(None, None, f"the sweep hit its cap of {len(self.steps)} faults without the operation "
                            "running out of fault sites")  # fmt: skip
        return entries + self.leak_broken

    def summary(self) -> dict[str, Any]:
        broken = self.broken()
        broken_steps = sorted({e["fault"] for e in broken if e["fault"] is not None})
        return {
            "operation": self.operation,
            "route": self.route,
            "label": self.label,
            "sites": self.sites,
            "capped": self.capped,
            "steps": len(self.steps),
            "steps_clean": sum(1 for s in self.steps if not s.broken),
            "absorbed": [s.n for s in self.steps if s.absorbed],
            "outside": [s.n for s in self.steps if s.outside],
            "broken_steps": broken_steps,
            "broken": broken,
            "duration_s": round(self.duration_s, 2),
            "kmemleak": self.kmemleak,
            "step_log": [s.to_json() for s in self.steps],
            **({"restarted": self.restarted, "first_pass_log": [s.to_json() for s in self.first_pass]}
               if self.restarted else {}),
        }  # fmt: skip


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _report_lines(reports: list[KernelReport]) -> list[str]:
    return [f"kernel report ({r.kind}): {r.heading} | " + " | ".join(r.lines[:12]) for r in reports]


def _inside(stack: FaultStack | None, entry_frames: tuple[str, ...]) -> bool:
    if stack is None or not entry_frames or not stack.frames:
        return True  # nothing printed to say otherwise
    functions = stack.functions()
    return any(any(entry in f for f in functions) for entry in entry_frames)


def _completed_as_usual(op: Operation, outcome: Outcome) -> bool:
    return outcome.errno == op.expected_errno


def _armed_run(
    op: Operation, injector: Injector, log: LogSource, n: int, clock: Callable[[], float]
) -> tuple[Outcome, int, list[Record], tuple[float, float]]:
    """Arm fault `n`, run, read back and clear fail-nth: (outcome, what was left, kernel log of the run,
    boot-time window of the armed call)."""
    log.drain()
    started = clock()
    injector.arm(n)
    outcome = op.call()
    left = injector.left()
    injector.disarm()
    return outcome, left, log.drain(), (started, clock())


def _after_failure(op: Operation, log: LogSource, step: Step, before: Facts, outcome: Outcome) -> None:
    """A failed step: no errno-less failure, the facts as before, the operation's own checks, and the
    same operation, without a fault, working as before the sweep."""
    if outcome.errno < 0:
        step.broken.append(f"the operation failed without an errno (returned {outcome.ret})")
    step.broken += [f"state not restored: {c}" for c in changes(before, op.facts())]
    step.broken += op.after_failure(outcome)
    op.prepare()
    log.drain()
    again = op.call()
    step.broken += [f"the retry without a fault: {r}" for r in _report_lines(kernel_reports(log.drain()))]
    if not _completed_as_usual(op, again):
        step.broken.append(
            f"the same operation without a fault then gave errno {again.errno}, expected {op.expected_errno}"
        )
    step.broken += [f"the retry without a fault: {b}" for b in op.settle(again)]


def _reference_run(op: Operation, log: LogSource) -> list[str]:
    """The operation as it behaves without faults: what is wrong with it already."""
    op.prepare()
    log.drain()
    first = op.call()
    broken = _report_lines(kernel_reports(log.drain()))
    if not _completed_as_usual(op, first):
        broken.append(f"errno {first.errno}, expected {op.expected_errno}")
    return broken + op.settle(first)


def sweep(
    op: Operation,
    injector: Injector,
    log: LogSource,
    *,
    label: str,
    cap: int = DEFAULT_CAP,
    clock: Callable[[], float] = time.monotonic,
    boottime: Callable[[], float] | None = None,
    restart: Callable[[], str | None] | None = None,
) -> SweepResult:
    boottime = boottime or _boottime
    result = SweepResult(op.name, op.route, label)
    started = clock()
    result.window = (boottime(), 0.0)

    result.baseline_broken = _reference_run(op, log)
    if result.baseline_broken:
        result.duration_s = clock() - started
        result.window = (result.window[0], boottime())
        return result

    n, outside_tries = 1, 0
    while n <= cap:
        op.prepare()
        before = op.facts()
        outcome, left, records, armed_at = _armed_run(op, injector, log, n, boottime)
        reports = _report_lines(kernel_reports(records))
        if left != 0:  # fewer than n sites: this run had no fault
            result.sites = n - left
            result.final_broken += reports
            if not _completed_as_usual(op, outcome):
                result.final_broken.append(f"errno {outcome.errno}, expected {op.expected_errno}")
            result.final_broken += op.settle(outcome)
            break
        stacks = fault_stacks(records)
        stack = stacks[-1] if stacks else None
        inside = _inside(stack, op.entry_frames)
        if not inside and outside_tries < OUTSIDE_RETRIES:
            outside_tries += 1
            if _completed_as_usual(op, outcome):
                op.settle(outcome)
            continue
        outside_tries = 0
        absorbed = _completed_as_usual(op, outcome)
        step = Step(n, outcome.errno, absorbed, stack, list(reports), outside=not inside, armed_at=armed_at)
        if step.absorbed:
            step.broken += op.settle(outcome)
        else:
            _after_failure(op, log, step, before, outcome)
        result.steps.append(step)
        reason = restart() if restart is not None and result.restarted is None else None
        if reason:
            result.restarted = f"after fault {n}: {reason}"
            result.first_pass, result.steps = result.steps, []
            n = 1
            continue
        n += 1
    else:
        result.capped = True
    result.duration_s = clock() - started
    result.window = (result.window[0], boottime())
    return result

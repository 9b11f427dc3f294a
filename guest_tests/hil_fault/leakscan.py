"""kmemleak after a test's sweeps: one (double) scan; each leak placed by its allocation time in the
step whose armed call made it, in a fault-free run of the sweep, or before the test - or, without a
time, by the frames it shares with a failed step's stack."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hil_fault import kmemleak
from hil_fault.sweep import Step, SweepResult


@dataclass(frozen=True, slots=True)
class Placement:
    result: SweepResult | None  # None: before (or after) every sweep of this test
    step: Step | None  # the step whose armed call was running when the object was allocated


def place(uptime: float, results: Sequence[SweepResult], tolerance: float) -> Placement:
    """Where an object allocated at `uptime` (seconds since boot) came from: inside a step's armed call,
    elsewhere in a sweep (a fault-free run: the reference, a retry, the last), or neither (pure)."""
    for res in results:
        for step in res.all_steps:
            if step.armed_at[0] - tolerance <= uptime <= step.armed_at[1] + tolerance:
                return Placement(res, step)
    for res in results:
        if res.window[0] - tolerance <= uptime <= res.window[1] + tolerance:
            return Placement(res, None)
    return Placement(None, None)


def _entry(res: SweepResult, step: Step | None, invariant: str) -> dict[str, Any]:
    return {"operation": res.operation, "route": res.route, "label": res.label,
            "fault": None if step is None else step.n,
            "stack": list(step.stack.frames) if step is not None and step.stack else [],
            "invariant": invariant}  # fmt: skip


def _by_time(
    leak: kmemleak.Leak, at: float, results: Sequence[SweepResult], tolerance: float
) -> tuple[SweepResult, Step | None, str]:
    where = place(at, results, tolerance)
    what = leak.describe()
    if where.result is None:
        first = results[0]
        text = (
            f"kmemleak: allocated at uptime {at:.3f} s, outside this test's sweeps (from "
            f"{first.window[0]:.3f} s): left by earlier activity, reported now: {what}"
        )
        return first, None, text
    if where.step is None:
        run = "a fault-free run of the operation during the sweep"
        text = f"kmemleak: allocated at uptime {at:.3f} s by {run}: {what}"
        return where.result, None, text
    stack = where.step.stack
    shares = stack is not None and bool(
        kmemleak.specific_frames(leak.backtrace) & kmemleak.specific_frames(stack.functions())
    )
    how = "on the path of its failed allocation" if shares else "off its failed allocation's path"
    text = f"kmemleak: allocated at uptime {at:.3f} s inside this step's armed call, {how}: {what}"
    return where.result, where.step, text


def _by_stack(leak: kmemleak.Leak, results: Sequence[SweepResult]) -> tuple[SweepResult, Step | None, str]:
    """Without an allocation time: the step whose failure stack shares the most frames, if any."""
    # Labelled by position: after a restart the same fault number names two steps.
    steps = [(f"{i}:{j}", s.stack) for i, r in enumerate(results) for j, s in enumerate(r.all_steps)]
    labels = kmemleak.attribute(leak, steps)
    if not labels:
        return results[0], None, f"kmemleak, not attributed to a step: {leak.describe()}"

    def step_of(label: str) -> tuple[SweepResult, Step]:
        i, j = (int(x) for x in label.split(":"))
        return results[i], results[i].all_steps[j]

    res, step = step_of(labels[0])
    others = f" (as do faults {', '.join(str(step_of(lb)[1].n) for lb in labels[1:])})" if labels[1:] else ""
    text = (
        "kmemleak (no allocation time: attributed by the frames its backtrace shares with this step's "
        f"stack{others}): {leak.describe()}"
    )
    return res, step, text


def scan_after(results: Sequence[SweepResult], last_step_at: float, hz: int | None) -> dict[str, Any]:
    """Scan for all of `results` (run since the last forget_earlier) and add each leak to the broken
    list of the sweep it came from: by its allocation time (kmemleak's jiffies against the steps' boot
    times) when the kernel's HZ is known, else by the frames its backtrace shares with a failed step's
    stack. Returns the scan's summary, timings measured."""
    done = kmemleak.scan(last_step_at)
    summary: dict[str, Any] = {"leaks": len(done.leaks), "waited_s": done.waited_s, "scan_s": done.scan_s}
    for res in results:
        res.kmemleak = summary
    if not results:
        return summary
    tolerance = 2.0 / hz + 0.01 if hz else 0.0
    for leak in done.leaks:
        if hz and leak.jiffies is not None:
            res, step, text = _by_time(leak, kmemleak.uptime_at(leak.jiffies, hz), results, tolerance)
        else:
            res, step, text = _by_stack(leak, results)
        res.leak_broken.append(_entry(res, step, text))
    return summary


_FORGOTTEN: list[bool] = []  # once per session: what boot and earlier tests left


def forget_earlier() -> dict[str, Any]:
    """Before the first sweep of the session: scan and forget what is reported (boot, earlier tests),
    so that the scans after the sweeps report what they left. Later tests only forget what the
    previous scans reported (cheap: a scan takes seconds under TCG); a leak of an earlier test too
    young for its own scan then surfaces in a later one, unattributed. What the first scan found is
    returned for the record: it is no step's."""
    started = time.monotonic()
    if _FORGOTTEN:
        kmemleak.clear()
        return {"clear_s": round(time.monotonic() - started, 2)}
    took = kmemleak.scan_twice()
    earlier = kmemleak.parse_leaks(kmemleak.KMEMLEAK.read_text())
    kmemleak.clear()
    _FORGOTTEN.append(True)
    return {"scan_s": took, "reported_before": [leak.describe() for leak in earlier]}

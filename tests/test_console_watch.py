"""The host's reading of a guest that still talks but no longer progresses (harness.console.watch.wedged)."""

from __future__ import annotations

from harness.console.events import KernelProblem, Marker
from harness.console.watch import ConsoleWatch, guest_end_of, observe, wedged
from harness.results.model import GuestEnd

LOCKUP = KernelProblem("bug", "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [kworker/1:0:24]", "")
WARNING = KernelProblem("warning", "WARNING: CPU: 0 PID: 1 at mm/slub.c:1 x+0x1/0x2", "")


def quiet(_text: str) -> None:
    return None


def running(now: float) -> ConsoleWatch:
    seen = ConsoleWatch()
    observe(Marker("start", {"kernel": "7.2.13-hil"}), seen, now, quiet)
    observe(Marker("begin", {"name": "test_export.py::test_a"}), seen, now, quiet)
    return seen


def test_repeated_lockup_reports_with_no_frame_for_the_idle_timeout_stop_the_guest_as_crashed() -> None:
    seen = running(10.0)
    for t in (36.0, 62.0, 88.0, 114.0):  # the report repeats every 26 s: the console is never silent
        observe(LOCKUP, seen, t, quiet)
        assert wedged(seen, t, 120.0) is None
    observe(LOCKUP, seen, 140.0, quiet)
    why = wedged(seen, 140.0, 120.0)
    assert why is not None and "soft lockup" in why and "130 s" in why
    assert guest_end_of(seen) is GuestEnd.CRASHED, "the kernel's report decides the verdict, not the host"


def test_a_guest_that_goes_on_testing_after_a_warning_is_not_stopped() -> None:
    seen = running(10.0)
    observe(WARNING, seen, 20.0, quiet)
    observe(Marker("test", {"name": "test_export.py::test_a", "outcome": "passed"}), seen, 100.0, quiet)
    observe(Marker("begin", {"name": "test_export.py::test_b"}), seen, 101.0, quiet)
    assert wedged(seen, 200.0, 120.0) is None, "frames keep coming: the tests still run"
    assert wedged(seen, 222.0, 120.0) is not None


def test_silence_without_any_kernel_report_is_left_to_the_idle_detector() -> None:
    seen = running(10.0)
    assert wedged(seen, 10_000.0, 120.0) is None

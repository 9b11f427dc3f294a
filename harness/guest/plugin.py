"""pytest plugin run inside the guest (`-p harness.guest.plugin`): one durable record per test.

Each record is appended to plan.results_path as one JSON line, flushed and fsync'd before the next test
starts, so a guest that crashes or is powered off later loses nothing that finished:

    {"name", "outcome" (passed|failed|skipped|error|xfailed|xpassed), "duration", "message", "details"}

`duration` is setup + call + teardown in seconds; `message` is the short failure/skip/xfail reason;
`details` is the dict the test filled through the `hil_details` fixture. A module that fails to import
gets an "error" record named after the module. Progress also goes to the console as a framed
`begin` line when a test starts and a `test` line per record (protocol.py).

The plan comes from $HIL_PLAN. Frames go to the inherited fd $HIL_CONSOLE_FD (set by entry.py), else to
a copy of fd 1 taken at import, before pytest's fd capture replaces fd 1.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.guest.clock import since_start
from harness.guest.phases import PHASE_FD_ENV, encode_step
from harness.guest.plan import PLAN_ENV, load_plan
from harness.guest.protocol import CONSOLE_FD_ENV, broken_invariants, encode_frame, is_errno_field

MESSAGE_MAX = 2000

# -p plugins are imported before capture starts, so this is still the real stdout.
_STDOUT_COPY = os.dup(1) if CONSOLE_FD_ENV not in os.environ else -1


@dataclass
class _Pending:
    """What is known about one test so far; written out after its teardown."""

    outcome: str = "error"
    message: str = ""
    duration: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def summarize(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The short reason: the exception line for failures, the reason for skips and xfails."""
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail and report.outcome != "failed":
        return str(wasxfail)[:MESSAGE_MAX]
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # skip: (path, lineno, "Skipped: reason")
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = str(crash.message) if crash is not None else str(longrepr).strip().splitlines()[-1]
    return text[:MESSAGE_MAX]


def _phase_outcome(report: pytest.TestReport) -> str:
    xfail = hasattr(report, "wasxfail")
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "xfailed" if xfail else "skipped"
    return "xpassed" if xfail else "passed"


# A sweep can break an invariant at every step: past this many lines the frame carries none, and the
# live view shows the failure as failed (the report, which reads the record, judges it in full).
FRAME_INVARIANTS_MAX = 40


def judged_details(details: dict[str, Any]) -> dict[str, Any]:
    """What of a failed test's details the known issues match on: errno fields, broken invariants."""
    judged: dict[str, Any] = {k: v for k, v in details.items() if is_errno_field(k)}
    lines = broken_invariants(details)
    if 0 < len(lines) <= FRAME_INVARIANTS_MAX:
        judged["broken_invariants"] = lines
    return judged


class ResultsWriter:
    """Accumulates phases per test and writes one record per test."""

    def __init__(self, results_path: Path, token: str, console_fd: int) -> None:
        self.results_path = results_path
        self.token = token
        self.console_fd = console_fd
        self._pending: dict[str, _Pending] = {}
        self._out = -1  # opened at the first record, kept open: reopening over 9p cost 3 ms a test (TCG)

    def details_for(self, nodeid: str) -> dict[str, Any]:
        return self._pending.setdefault(nodeid, _Pending()).details

    # --- hooks --------------------------------------------------------------------------------

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        # The only trace of a test that takes the kernel down with it: its record is never written.
        self._console("begin", {"name": nodeid})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self._pending.setdefault(report.nodeid, _Pending())
        state.duration += report.duration
        outcome = _phase_outcome(report)
        if report.when == "setup":
            state.outcome = "pending" if outcome == "passed" else outcome
            state.message = summarize(report)
        elif report.when == "call":
            state.outcome = outcome
            state.message = summarize(report)
        else:  # teardown: always reported, even after a failed or skipped setup
            if report.failed:
                reason = f"teardown: {summarize(report)}"
                if state.outcome in ("failed", "error"):
                    # The test's own failure stays the outcome; keep the teardown's reason too.
                    state.message = f"{state.message}; {reason}"[:MESSAGE_MAX]
                else:
                    state.outcome, state.message = "error", reason[:MESSAGE_MAX]
            elif state.outcome == "pending":
                state.outcome, state.message = "error", "setup passed but the test body never ran"
            self._finish(report.nodeid, state)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._finish(report.nodeid or ".", _Pending("error", summarize(report)))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # For the host's timeline: start-up (Python, pytest, imports over 9p) ends here. The guest
        # entry is this process's parent, so "t" counts from its start.
        self._console("collected", {"count": len(session.items), **since_start(os.getppid())})

    # --- output -------------------------------------------------------------------------------

    def _finish(self, nodeid: str, state: _Pending) -> None:
        self._pending.pop(nodeid, None)
        record = {
            "name": nodeid,
            "outcome": state.outcome,
            "duration": round(state.duration, 6),
            "message": state.message,
            "details": state.details,
        }
        # default=repr: a detail that is not JSON must not cost the whole record.
        line = json.dumps(record, default=repr, ensure_ascii=True) + "\n"
        if self._out < 0:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._out = os.open(self.results_path, flags, 0o644)
        data = line.encode("ascii")
        while data:  # a short write (9p splits at its msize) leaves the rest to write
            data = data[os.write(self._out, data) :]
        os.fsync(self._out)
        # The message, errnos and broken invariants let the host's live view judge a failure against
        # the known issues as the final report will (harness.results.known_issues.judge_test_frame).
        frame = {"name": nodeid, "outcome": state.outcome, "duration": record["duration"]}
        if state.outcome in ("failed", "error"):
            frame.update(message=state.message, details=judged_details(state.details))
        self._console("test", frame)

    def close(self) -> None:
        if self._out >= 0:
            out, self._out = self._out, -1
            os.close(out)

    def _console(self, kind: str, payload: dict[str, object]) -> None:
        # One write() per frame keeps it whole on the console.
        os.write(self.console_fd, encode_frame(self.token, kind, payload).encode())


class PhaseReporter:
    """Tells the guest entry's watchdog the phase over $HIL_PHASE_FD (harness.guest.phases): only a
    test past its own limit is hung, however long Python took to start before it."""

    def __init__(self, fd: int, default_timeout_s: float | None) -> None:
        self.fd = fd
        self.default_timeout_s = default_timeout_s

    def test_timeout_s(self, item: pytest.Item) -> float | None:
        marker = item.get_closest_marker("hil_timeout")
        if marker is None:
            return self.default_timeout_s
        value = marker.kwargs.get("seconds", marker.args[0] if marker.args else None)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise pytest.UsageError(f"{item.nodeid}: hil_timeout(seconds) must be positive, got {value!r}")
        return float(value)

    @pytest.hookimpl(trylast=True)  # after the suite's own deselection: only tests that will run
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.test_timeout_s(item)  # a bad marker stops the run here, not in the middle of it

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._send(encode_step("collected", count=len(session.items)))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, None, None]:
        # Around setup, call and teardown: a hang closing a device in a fixture's teardown is this test's.
        self._send(encode_step("begin", name=item.nodeid, timeout_s=self.test_timeout_s(item)))
        yield
        self._send(encode_step("end", name=item.nodeid))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self._send(encode_step("finish"))

    def _send(self, line: bytes) -> None:
        # The watchdog gone (it gave up on us and is powering off) leaves nothing to tell.
        with contextlib.suppress(OSError):
            os.write(self.fd, line)


_WRITER_KEY = pytest.StashKey[ResultsWriter]()


def pytest_configure(config: pytest.Config) -> None:
    plan_path = os.environ.get(PLAN_ENV)
    if not plan_path:
        raise pytest.UsageError(f"harness.guest.plugin needs ${PLAN_ENV} (the guest plan's path)")
    plan = load_plan(plan_path)
    fd_text = os.environ.get(CONSOLE_FD_ENV)
    console_fd = int(fd_text) if fd_text else _STDOUT_COPY
    writer = ResultsWriter(plan.results_path, plan.token, console_fd)
    config.stash[_WRITER_KEY] = writer
    config.pluginmanager.register(writer, "hil-results-writer")
    config.addinivalue_line(
        "markers", "hil_timeout(seconds): the test is hung after so long (default: the plan's test_timeout_s)"
    )
    phase_fd = os.environ.get(PHASE_FD_ENV)
    if phase_fd:
        config.pluginmanager.register(PhaseReporter(int(phase_fd), plan.test_limit_s()), "hil-phase-reporter")


def pytest_unconfigure(config: pytest.Config) -> None:
    writer = config.stash.get(_WRITER_KEY, None)
    if writer is not None:
        writer.close()


@pytest.fixture
def hil_details(request: pytest.FixtureRequest) -> Generator[dict[str, Any], None, None]:
    """A dict the test fills with facts worth keeping (sizes, errnos); stored in its record."""
    writer = request.config.stash[_WRITER_KEY]
    yield writer.details_for(request.node.nodeid)

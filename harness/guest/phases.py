"""What the in-guest pytest is doing, told to the guest entry's watchdog, and the watchdog's judgement.

The plugin writes one JSON line per step to the inherited pipe fd $HIL_PHASE_FD (set by entry.py):

    {"step": "collected", "count": n}                      collection is over: start-up is done
    {"step": "begin", "name": nodeid, "timeout_s": s|null} a test starts (setup, call, teardown follow)
    {"step": "end", "name": nodeid}                         that test's teardown is over
    {"step": "finish"}                                      every test ran; pytest is winding down

so the watchdog knows the phase: "startup" (Python and pytest starting, collecting: slow over 9p, never
a hang by itself), "test" (one named test, under its own limit counted from its begin), "between"
(after collection, between two tests) or "finish". Only a test past its own limit is `hung`; the
overall deadline passing in any phase is a `timeout` that says the phase (and the test, if one runs).

Pure and stdlib-only (the guest imports it from the read-only host tree): the caller passes the times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal

PHASE_FD_ENV: Final = "HIL_PHASE_FD"
"""Set by entry.py for the in-guest pytest: the write end of the pipe the plugin reports its steps on."""

Phase = Literal["startup", "between", "test", "finish"]


def encode_step(step: str, **fields: object) -> bytes:
    """One line, written with a single write(): below PIPE_BUF it reaches the reader whole."""
    return (json.dumps({"step": step, **fields}, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


@dataclass
class PhaseState:
    """What the plugin said so far; times are the watchdog's clock (time.monotonic)."""

    started: float  # the entry started (its `elapsed` counts from here)
    phase: Phase = "startup"
    collected: int | None = None
    collected_at: float | None = None
    test: str | None = None  # running (phase "test") or last finished
    test_since: float = 0.0
    test_timeout_s: float | None = None

    def feed(self, line: bytes | str, now: float) -> None:
        """Take one line from the pipe; a line that is not a step is ignored (the plugin writes them all)."""
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        step = msg.get("step")
        if step == "collected":
            self.phase, self.collected_at = "between", now
            count = msg.get("count")
            self.collected = count if isinstance(count, int) else None
        elif step == "begin":
            self.phase, self.test, self.test_since = "test", str(msg.get("name", "?")), now
            self.test_timeout_s = _seconds(msg.get("timeout_s"))
        elif step == "end":
            self.phase = "between"
        elif step == "finish":
            self.phase = "finish"

    def next_expiry(self, deadline_s: float | None) -> float | None:
        """The earliest time at which `expired` could say something (None: never)."""
        times = []
        if deadline_s is not None:
            times.append(self.started + deadline_s)
        if self.phase == "test" and self.test_timeout_s is not None:
            times.append(self.test_since + self.test_timeout_s)
        return min(times) if times else None

    def expired(self, now: float, deadline_s: float | None) -> dict[str, object] | None:
        """The `done` payload if a limit has passed at `now`, else None. A test past its own limit is
        hung, even when the overall deadline passed too: it is the more precise statement."""
        elapsed = round(now - self.started, 3)
        limit = self.test_timeout_s
        if self.phase == "test" and limit is not None and now >= self.test_since + limit:
            return {"status": "hung", **self._where(now), "deadline_s": deadline_s, "elapsed": elapsed}
        if deadline_s is not None and now >= self.started + deadline_s:
            return {"status": "timeout", **self._where(now), "deadline_s": deadline_s, "elapsed": elapsed}
        return None

    def _where(self, now: float) -> dict[str, object]:
        where: dict[str, object] = {"phase": self.phase}
        if self.collected_at is not None:
            where["startup_s"] = round(self.collected_at - self.started, 3)
            where["collected"] = self.collected
        if self.phase == "test":
            where["test"] = self.test
            where["test_started"] = round(self.test_since - self.started, 3)
            where["test_elapsed"] = round(now - self.test_since, 3)
            where["test_timeout_s"] = self.test_timeout_s
        elif self.test is not None:
            where["last_test"] = self.test
        return where


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)

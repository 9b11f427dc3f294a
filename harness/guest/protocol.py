"""Console protocol: framed lines the guest prints on its serial console for live progress.

    @@HIL:<token>:<kind>:<json object>@@

kind is one of KINDS (harness.console.events parses them on the host):
    start  {"kernel", "python", "machine"}       the guest entry is running
    collected {"count", ...}                      pytest collected the tests
    begin  {"name"}                               a test starts (names it if the guest dies in it)
    test   {"name", "outcome", "duration"}        a test finished; its record is already on disk
           + {"message", "details"} if it failed: details has the record's errno fields and, if it
             broke any, its broken_invariants lines (what the known issues match on)
    done   {"status": "finished", "exit_code", "elapsed"}
           {"status": "hung", "phase": "test", "test", "test_started", "test_elapsed", "test_timeout_s",
            "startup_s", "collected", "deadline_s", "elapsed"}
               a test ran past its own limit (plan.test_timeout_s or @pytest.mark.hil_timeout);
               test_started: seconds from the entry's start to the test's begin
           {"status": "timeout", "phase", "deadline_s", "elapsed", ...}
               plan.guest_deadline_s passed with no test past its limit: slow, not hung. phase is
               "startup" (Python/pytest not done collecting), "between" (after a test, or before the
               first: with "last_test"), "finish" (after the last test) or "test" (with the test's
               fields as for hung); startup_s and collected once collection is over
               (after hung or timeout the blocked tasks are on the console and the guest powers itself off)
           {"status": "error", "message"}

A frame may start mid-line (after pytest's progress dots). Its JSON never contains '@' (escaped as
\\u0040, which any JSON decoder undoes) nor a newline, so '@@' closes it unambiguously; the token is
alphanumeric, so it holds no ':'. Each frame is one write(). Frames are progress hints only: the
results file is the source of truth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

KINDS: Final = ("start", "collected", "begin", "test", "done")
CONSOLE_FD_ENV: Final = "HIL_CONSOLE_FD"
"""Set by entry.py for the in-guest pytest: an inherited fd on the console, for the plugin's frames."""


def encode_frame(token: str, kind: str, payload: Mapping[str, object]) -> str:
    """One console line (with its newline) carrying `payload`."""
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    body = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=True, default=str)
    # '@' only occurs inside JSON strings, where \u0040 is an equivalent spelling.
    body = body.replace("@", "\\u0040")
    return f"@@HIL:{token}:{kind}:{body}@@\n"


def is_errno_field(key: str) -> bool:
    """Whether a record's detail field holds an errno the test saw (`errno`, `map_errno`, ...): the
    known issues match on these, and a `test` frame carries them so the live view can too."""
    return key == "errno" or key.endswith("_errno")


def broken_invariants(details: Mapping[str, Any]) -> list[str]:
    """What an error-path test broke, one line each: `<operation> [<route>] fault <n>: <invariant> |
    stack: <frames>` from each of its `fault_sweeps[].broken[]`, then its `broken_invariants` strings
    (race tests)."""
    lines: list[str] = []
    sweeps = details.get("fault_sweeps")
    for sweep in sweeps if isinstance(sweeps, list) else ():
        broken = sweep.get("broken") if isinstance(sweep, Mapping) else None
        for item in broken if isinstance(broken, list) else ():
            if not isinstance(item, Mapping):
                continue
            stack = item.get("stack")
            frames = " < ".join(str(f) for f in stack) if isinstance(stack, list) else ""
            fault = item.get("fault")
            lines.append(
                f"{item.get('operation')} [{item.get('route')}] fault {fault if fault is not None else '-'}: "
                f"{item.get('invariant')} | stack: {frames or '-'}"
            )
    extra = details.get("broken_invariants")
    lines += [str(line) for line in extra] if isinstance(extra, list) else []
    return lines

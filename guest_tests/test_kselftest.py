"""The kernel's own selftests (`hil run --kselftest NAME`): one test per binary, which prepares the guest
as the selftest's scripts do, runs the binary with its limit and leaves the raw output in the run
directory. The host turns that output into one record per KTAP result (harness/kselftest) in place of
this wrapper's record; the wrapper fails only when the binary could not be run as asked.

Defined only when the host's manifest lists selftests, so a cell without --kselftest has no such test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import pytest
from hil_kselftest import NotRunnable, Selftest, load_manifest, prepare_selftest, run_binary

from harness.guest.plan import PLAN_ENV, GuestPlan, load_plan
from harness.guest.protocol import CONSOLE_FD_ENV

# The guest watchdog's limit of a wrapper: the binary's own limit plus time to prepare and write.
WRAPPER_MARGIN_S = 60.0


def _manifest() -> list[Selftest]:
    path = os.environ.get(PLAN_ENV)
    return load_manifest(Path(load_plan(path).run_dir)) if path else []


def _cases() -> list[object]:
    return [
        pytest.param(st, binary, id=f"{st.name}/{binary}",
                     marks=pytest.mark.hil_timeout(st.timeouts.get(binary, 300.0) + WRAPPER_MARGIN_S))
        for st in _manifest() if st.built
        for binary in st.binaries
    ]  # fmt: skip


def _console() -> IO[str] | None:
    fd = os.environ.get(CONSOLE_FD_ENV)
    return os.fdopen(os.dup(int(fd)), "w", buffering=1) if fd else None


def _write_status(path: Path, status: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status, indent=1) + "\n")


_CASES = _cases()
if _CASES:

    @pytest.mark.parametrize(("selftest", "binary"), _CASES)
    def test_kselftest(plan: GuestPlan, selftest: Selftest, binary: str) -> None:
        run_dir = Path(plan.run_dir)
        output, status_file = selftest.outputs(run_dir, binary)
        timeout_s = selftest.timeouts.get(binary, 300.0)
        try:
            args, done = prepare_selftest(selftest, plan)
        except NotRunnable as exc:
            _write_status(status_file, {"not_run": str(exc), "not_run_outcome": exc.outcome})
            if exc.outcome == "error":
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        argv = [str(selftest.out_dir / binary), *args]
        echo = _console()
        try:
            ended = run_binary(argv, selftest.out_dir, timeout_s, output, echo, f"{selftest.name}/{binary}")
        finally:
            if echo is not None:
                echo.close()
        _write_status(
            status_file,
            {"exit_code": ended.exit_code, "signal": ended.signal, "timed_out": ended.timed_out,
             "duration": ended.duration, "timeout_s": timeout_s, "argv": argv, "setup": done},
        )  # fmt: skip
        # The host judges the results from the output; this record only says whether it could run.
        assert not ended.timed_out, f"{binary} timed out after {timeout_s} s"
        assert ended.signal is None, f"{binary} was killed by {ended.signal}"

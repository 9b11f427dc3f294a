"""Run one selftest binary with a limit, its output (stdout and stderr, in order) to a file; its result
lines echoed to the console so the host sees progress (a silent console reads as a hang)."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HEARTBEAT_S = 20.0


@dataclass(frozen=True)
class Ended:
    exit_code: int | None
    signal: str | None
    timed_out: bool
    duration: float


def _line_buffered(argv: list[str]) -> list[str]:
    """Through stdbuf when there is one: a pipe makes libc buffer stdout fully, and the harness's
    diagnostics on stderr would come out before the results they belong to."""
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL", "-eL", *argv] if stdbuf else argv


def run_binary(
    argv: list[str],
    cwd: Path,
    timeout_s: float,
    output: Path,
    echo: IO[str] | None,
    label: str,
) -> Ended:
    """Run `argv` in its own process group; kill the group at `timeout_s`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    last_echo = t0
    timed_out = False
    with output.open("wb") as out:
        proc = subprocess.Popen(
            _line_buffered(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = b""
        while True:
            left = timeout_s - (time.monotonic() - t0)
            if left <= 0:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([fd], [], [], min(left, HEARTBEAT_S))
            if not ready:
                if echo is not None:
                    echo.write(f"[kselftest {label}] running {time.monotonic() - t0:.0f} s\n")
                    echo.flush()
                    last_echo = time.monotonic()
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out.write(chunk)
            out.flush()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if echo is not None:
                for raw in lines:
                    text = raw.decode(errors="replace").strip()
                    if (
                        text.startswith(("ok ", "not ok ", "Bail out!"))
                        or time.monotonic() - last_echo > HEARTBEAT_S
                    ):
                        echo.write(f"[kselftest {label}] {text[:200]}\n")
                        last_echo = time.monotonic()
                echo.flush()
        code = proc.wait()
    duration = round(time.monotonic() - t0, 2)
    if timed_out:
        return Ended(None, None, True, duration)
    if code < 0:
        return Ended(None, signal.Signals(-code).name, False, duration)
    return Ended(code, None, False, duration)

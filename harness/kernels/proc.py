"""Running build commands: output appended to one log file, streamed to a line callback."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from harness.errors import BuildError

TAIL_LINES = 40


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    try:
        with log.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip("\n")
    except OSError:
        return ""


def run_logged(
    argv: Sequence[str],
    *,
    log: Path,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> float:
    """Run `argv`, appending stdout+stderr to `log`; BuildError with the log tail if it fails.

    Returns the wall time in seconds.
    """
    t0 = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered: someone following the log (tail -f) during a 10-minute make sees it as it goes.
    with log.open("a", buffering=1) as out:
        out.write(f"\n### {what}: {shlex.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Own process group: on interruption we stop make *and* its compilers.
                start_new_session=True,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            raise BuildError(f"{what}: cannot run {argv[0]}: {exc}", log) from exc
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        except BaseException:
            # Interrupted (Ctrl-C, deadline): do not leave make running behind us.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        out.write(f"### {what}: exit {code} after {time.monotonic() - t0:.1f} s\n")
    if code != 0:
        raise BuildError(f"{what} failed (exit {code}); full log: {log}", log, log_tail(log))
    return time.monotonic() - t0


def capture(argv: Sequence[str]) -> str:
    """stdout of a quick query command ('' if it cannot run): for version strings and the like."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return proc.stdout if proc.returncode == 0 else ""

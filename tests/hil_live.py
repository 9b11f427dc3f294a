"""Running the harness from tests with its progress on the terminal as it happens.

A VM test runs `python -m harness run ...` for minutes; with the output only captured, the suite
sat silent for that long. `hil` forwards every line the harness prints on stderr (its `[hil]`
progress: kernel, boot, each guest test's outcome) to the terminal live, past pytest's capture, and
still returns the whole output for the test's assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from harness.paths import REPO_ROOT

# The running session's config, set by conftest.py (one session per process).
_session: dict[str, pytest.Config] = {}


def bind(config: pytest.Config) -> None:
    """Called by conftest.py: lines then go through pytest's terminal reporter."""
    _session["config"] = config


def show(line: str) -> None:
    """Print one line on the terminal now, even from inside a test whose output pytest captures."""
    config = _session.get("config")
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter") if config else None
    if config is None or reporter is None:
        print(line, file=sys.__stderr__, flush=True)
        return
    capman: Any = config.pluginmanager.get_plugin("capturemanager")
    # The same switch pytest's live logging uses to reach the terminal during a test.
    suspended: AbstractContextManager[Any] = (
        capman.global_and_fixture_disabled() if capman is not None else nullcontext()
    )
    with suspended:
        # -q leaves its progress dots on an open line, which write_line does not end (it ends only
        # a line that starts with a file name).
        open_line = getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0)
        if open_line and not getattr(reporter, "currentfspath", None):
            reporter.write("\n")
        reporter.write_line(line)
        reporter.flush()


def run_live(
    argv: Sequence[str],
    *,
    timeout: float,
    show_line: Callable[[str], None] = show,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """subprocess.run(argv, capture_output=True, text=True, timeout=...), with stderr shown live.

    On timeout the process is killed and subprocess.TimeoutExpired raised, as subprocess.run does.
    """
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout_parts: list[str] = []
    reader = threading.Thread(target=lambda: stdout_parts.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    stderr_lines: list[str] = []
    try:
        for line in proc.stderr:
            stderr_lines.append(line)
            show_line("    " + line.rstrip("\n"))
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(list(argv), timeout, "".join(stdout_parts), "".join(stderr_lines))
    return subprocess.CompletedProcess(list(argv), code, "".join(stdout_parts), "".join(stderr_lines))


def hil(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`./hil ARGS` as a user runs it (without the launcher's set-up), its progress shown live."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    # pytest -q prints no test names: say which test the lines below belong to.
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    show(f"  {test + ': ' if test else ''}hil {' '.join(args)}")
    return run_live([sys.executable, "-m", "harness", *args], timeout=timeout, cwd=REPO_ROOT, env=env)

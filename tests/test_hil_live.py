"""The harness's progress reaches the terminal while a VM test runs, not after it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hil_live import run_live


def test_stderr_lines_are_shown_while_the_process_still_runs(tmp_path: Path) -> None:
    # The child waits until the line it printed has been shown: if lines were only shown at the
    # end, it would wait forever (and the timeout would fail the test).
    flag = tmp_path / "seen"
    script = (
        f"echo '[hil] booting' >&2; while [ ! -e {flag} ]; do sleep 0.05; done; "
        "echo table; echo '[hil] done' >&2; exit 3"
    )
    shown: list[str] = []

    def show_line(line: str) -> None:
        shown.append(line)
        if "booting" in line:
            flag.touch()

    proc = run_live(["sh", "-c", script], timeout=30, show_line=show_line)
    assert shown == ["    [hil] booting", "    [hil] done"]
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "table\n", "[hil] booting\n[hil] done\n")


def test_timeout_kills_the_process_and_raises_like_subprocess_run() -> None:
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_live(["sh", "-c", "echo started >&2; exec sleep 60"], timeout=0.5, show_line=lambda _line: None)
    stderr: object = info.value.stderr  # typeshed says bytes; run_live keeps text, as run(text=True) does
    assert stderr == "started\n"

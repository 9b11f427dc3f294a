"""harness.guest.clock: guest times for the console frames, read from /proc (a fake one here)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.guest import clock

TICK = os.sysconf("SC_CLK_TCK")


def _proc(tmp_path: Path, uptime: str, pid: int, comm: str, start_ticks: int) -> Path:
    (tmp_path / "uptime").write_text(uptime)
    (tmp_path / str(pid)).mkdir()
    rest = ["S", "1", "1", "0", "-1", "4194560"] + ["0"] * 14
    rest[19] = str(start_ticks)  # field 22 of the whole line
    (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)} 0 0\n")
    return tmp_path


def test_since_start_counts_from_the_process_start(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "12.50 20.00\n", 77, "python", 3 * TICK)
    assert clock.uptime(proc) == 12.5
    assert clock.started_at(77, proc) == 3.0
    assert clock.since_start(77, proc) == {"uptime": 12.5, "t": 9.5}


def test_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "5.0 1.0\n", 9, "a) b (c", 2 * TICK)
    assert clock.started_at(9, proc) == 2.0


def test_missing_figures_are_left_out_not_raised(tmp_path: Path) -> None:
    assert clock.uptime(tmp_path) is None
    assert clock.since_start(1, tmp_path) == {}
    (tmp_path / "uptime").write_text("3.25 1.0\n")
    assert clock.since_start(1, tmp_path) == {"uptime": 3.25}  # no such process: no "t"


def test_the_real_proc_agrees_with_itself() -> None:
    figures = clock.since_start(os.getpid())
    assert 0 <= figures["t"] < figures["uptime"]

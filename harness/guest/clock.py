"""Guest-side times for the host's timeline: seconds since the guest booted, from /proc.

The console frames' payloads carry `uptime` (this kernel's clock, the same one its console timestamps
`[  12.345678]` count) so the host can place guest events between kernel messages, and `t` (seconds
since the guest entry process was started) so Python's own start-up shows. Stdlib only, and
nothing raises: a timeline without a figure is better than a guest entry that dies for it.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def uptime(proc: Path = PROC) -> float | None:
    """Seconds since boot (/proc/uptime), or None where there is no such file."""
    try:
        return round(float((proc / "uptime").read_text().split()[0]), 3)
    except (OSError, ValueError, IndexError):
        return None


def started_at(pid: int, proc: Path = PROC) -> float | None:
    """When process `pid` was started, in seconds since boot (field 22 of /proc/PID/stat, in clock
    ticks), or None when it cannot be read."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[19])  # field 22 overall: fields 3.. start at index 0 here
        return round(ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


def since_start(pid: int, proc: Path = PROC) -> dict[str, float]:
    """{"uptime": now, "t": seconds since `pid` was started}: the keys that can be read, for a frame."""
    now = uptime(proc)
    start = started_at(pid, proc)
    out: dict[str, float] = {}
    if now is not None:
        out["uptime"] = now
        if start is not None:
            out["t"] = round(now - start, 3)
    return out

"""Turning kbuild's output into a few progress lines (pure: the caller passes the clock)."""

from __future__ import annotations

import re

# kbuild's quiet lines: "  CC      drivers/pci/p2pdma.o", "  CC [M]  fs/foo.o", "  LD      vmlinux.o"
_STEP = re.compile(r"^\s{1,4}(?P<tool>[A-Z][A-Z0-9_]{1,12}(?: \[M\])?)\s+(?P<target>\S+)\s*$")
_COMPILES = frozenset({"CC", "CC [M]", "AS", "AS [M]"})


class MakeProgress:
    """Feed it make's output lines; it returns a line to print at most every `interval` seconds."""

    def __init__(self, start: float, interval: float = 15.0) -> None:
        self.start = start
        self.interval = interval
        self.compiled = 0
        self.last_step = ""
        self._last_report = start

    def feed(self, line: str, now: float) -> str | None:
        match = _STEP.match(line)
        if match is not None:
            tool = match.group("tool")
            if tool in _COMPILES:
                self.compiled += 1
            self.last_step = f"{tool} {match.group('target')}"
        if now - self._last_report < self.interval or not self.last_step:
            return None
        self._last_report = now
        return self.status(now)

    def status(self, now: float) -> str:
        return f"[{now - self.start:4.0f}s] {self.last_step or 'make'} ({self.compiled} objects)"

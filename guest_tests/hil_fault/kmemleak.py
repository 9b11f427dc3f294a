"""kmemleak on demand (CONFIG_DEBUG_KMEMLEAK without auto scan): clear, scan, read, attribute.

mm/kmemleak.c: an object younger than MSECS_MIN_AGE (5000 ms) is never reported, so a scan must wait
at least that long after the last step it should judge. Writing "clear" marks every object currently
reported as not to be reported again (boot-time noise); writing "scan" runs one scan in the writer's
context; reading lists the objects the scans found unreferenced, each as print_unreferenced() writes it:

    unreferenced object 0xffff888004e4c780 (size 64):
      comm "python3", pid 215, jiffies 4294893960
      hex dump (first 32 bytes):
        ...
      backtrace (crc 4f3a1c2b):
        __kmalloc_cache_noprof+0x2b0/0x380
        dma_buf_phys_vec_to_sgt+0x69/0x4b0
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hil_fault.kmsg import FaultStack

KMEMLEAK = Path("/sys/kernel/debug/kmemleak")
MIN_AGE_S = 5.0  # mm/kmemleak.c MSECS_MIN_AGE
_OBJECT = re.compile(r"^unreferenced object 0x(?P<addr>[0-9a-f]+) \(size (?P<size>\d+)\):")
_COMM = re.compile(r'^\s+comm "(?P<comm>[^"]*)", pid (?P<pid>\d+)(?:, jiffies (?P<jiffies>\d+))?')
_FRAME = re.compile(r"^\s+(?:\[<[0-9a-f]+>\] )?(?P<func>[A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
# Frames every allocation shares (allocator and system-call entry): they say nothing about where.
_GENERIC = re.compile(
    r"^(?:kmemleak_\w+|__kmalloc\w*|kmalloc\w*|kmem_cache_alloc\w*|__kmem_cache\w*|slab_\w+|kzalloc\w*"
    r"|kvmalloc\w*|__kvmalloc\w*|__alloc_\w+|alloc_pages\w*|__do_kmalloc_node|dump_stack\w*"
    r"|should_fail\w*|should_failslab|fail_dump|do_syscall_64|x64_sys_call|entry_SYSCALL\w*|__x64_sys_\w+"
    r"|__se_sys_\w+|__do_sys_\w+|ksys_\w+)$"
)


@dataclass(frozen=True, slots=True)
class Leak:
    address: str
    size: int
    comm: str
    backtrace: tuple[str, ...]
    jiffies: int | None = None  # when it was allocated (mm/kmemleak.c create_object: object->jiffies)

    def describe(self) -> str:
        return f"{self.size} bytes at 0x{self.address} ({self.comm}): " + " < ".join(self.backtrace[:8])


def parse_leaks(text: str) -> list[Leak]:
    """The objects of a kmemleak read (pure)."""
    leaks: list[Leak] = []
    current: dict[str, object] | None = None
    frames: list[str] = []
    in_trace = False

    def close() -> None:
        if current is not None:
            jiffies = current.get("jiffies")
            leaks.append(Leak(str(current["addr"]), int(str(current["size"])), str(current.get("comm", "?")),
                              tuple(frames), None if jiffies is None else int(str(jiffies))))  # fmt: skip

    for line in text.splitlines():
        start = _OBJECT.match(line)
        if start:
            close()
            current, frames, in_trace = {"addr": start["addr"], "size": start["size"]}, [], False
            continue
        if current is None:
            continue
        comm = _COMM.match(line)
        if comm:
            current["comm"] = comm["comm"]
            if comm["jiffies"] is not None:
                current["jiffies"] = comm["jiffies"]
        elif line.strip().startswith("backtrace"):
            in_trace = True
        elif in_trace:
            frame = _FRAME.match(line)
            if frame:
                frames.append(frame["func"])
    close()
    return leaks


def uptime_at(jiffies: int, hz: int) -> float:
    """Seconds since boot at `jiffies` (include/linux/jiffies.h: INITIAL_JIFFIES is -300*HZ as an
    unsigned 32-bit value, so jiffies wrap 5 minutes after boot on 32-bit counters; 64-bit here) (pure)."""
    initial = (-300 * hz) & 0xFFFFFFFF
    return ((jiffies - initial) % (1 << 64)) / hz


def specific_frames(functions: Sequence[str]) -> set[str]:
    return {f for f in functions if not _GENERIC.match(f)}


def attribute(leak: Leak, steps: Sequence[tuple[str, FaultStack | None]]) -> list[str]:
    """The labels of the steps whose failure stack shares the most specific frames with the leak's
    allocation backtrace (the leaked object was allocated on the way to the failed allocation, so
    the two stacks share their callers); [] when no step shares any (pure)."""
    wanted = specific_frames(leak.backtrace)
    scored: list[tuple[int, str]] = []
    for label, stack in steps:
        if stack is None:
            continue
        shared = len(wanted & specific_frames(stack.functions()))
        if shared:
            scored.append((shared, label))
    if not scored:
        return []
    best = max(score for score, _ in scored)
    return [label for score, label in scored if score == best]


def available() -> bool:
    return KMEMLEAK.exists()


def clear() -> None:
    KMEMLEAK.write_text("clear")


@dataclass(frozen=True, slots=True)
class Scan:
    leaks: list[Leak]
    waited_s: float  # slept first so the newest object under test was old enough
    scan_s: list[float]  # each "scan" write: measured, they are slow under TCG


def scan_twice() -> list[float]:
    """Two scans: mm/kmemleak.c:1940-1957 greys an unreferenced object whose checksum changed since the
    previous scan - every object at its first scan - so a leak is reported by the second scan it is
    unreferenced in, not the first."""
    took = []
    for _ in range(2):
        started = time.monotonic()
        KMEMLEAK.write_text("scan")
        took.append(round(time.monotonic() - started, 2))
    return took


def scan(last_step_at: float) -> Scan:
    """Wait until the objects made at monotonic time `last_step_at` are reportable, scan, read."""
    waited = max(0.0, last_step_at + MIN_AGE_S + 0.5 - time.monotonic())
    time.sleep(waited)
    took = scan_twice()
    return Scan(parse_leaks(KMEMLEAK.read_text()), round(waited, 2), took)

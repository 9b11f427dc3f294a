"""What kernel reports and virtme-ng boot steps look like on the console.

Formats come from the Linux 7.2 sources (kernel/panic.c __warn/vpanic, lib/bug.c,
arch/x86/kernel/dumpstack.c, arch/x86/mm/fault.c, kernel/hung_task.c, kernel/rcu/tree_stall.h,
mm/kasan/report.c, lib/ubsan.c, kernel/locking/lockdep.c, kernel/sched/core.c) and from a
recorded virtme-ng boot (tests/data/consoles/debian-7.2-boot.log). The patterns match the
message text *after* the printk timestamp.
"""

from __future__ import annotations

import re
from typing import Literal

ProblemKind = Literal[
    "panic",
    "oops",
    "bug",
    "warning",
    "hung_task",
    "rcu_stall",
    "kasan",
    "ubsan",
    "lockdep",
    "kmemleak",
    "blocked_tasks",
]
MilestoneKind = Literal["kernel_started", "init_started", "script_started", "power_down"]

# "[%5lu.%06lu] " optionally followed by CONFIG_PRINTK_CALLER's "[%6s] " (T123 / C1).
# Exactly six decimals keeps user text such as "[1.5]" from looking like a kernel record.
TIMESTAMP = re.compile(r"\[\s*\d+\.\d{6}\](?:\[\s*[TC]\d+\])? ?")

# Lockdep prints its own "WARNING:" headings; they must win over the generic __warn format.
_LOCKDEP = (
    r"WARNING: (?:possible circular locking dependency detected"
    r"|possible recursive locking detected"
    r"|inconsistent lock state"
    r"|possible irq lock inversion dependency detected"
    r"|.+-safe -> .+-unsafe lock order detected"
    r"|bad unlock balance detected!"
    r"|held lock freed!"
    r"|Nested lock was not taken"
    r"|chain_key collision"
    r"|bad contention detected!"
    r"|suspicious RCU usage"
    r"|lock held when returning to user space!"
    r"|.+/\d+ still has locks held!)"
    r"|\[ BUG: Invalid wait context \]"
)

# Ordered: the first match names the report, so specific forms come before generic ones
# ("BUG: KASAN:" before "BUG:", lockdep's "WARNING:" before __warn's).
HEADERS: tuple[tuple[ProblemKind, re.Pattern[str]], ...] = (
    ("kasan", re.compile(r"^BUG: KASAN: ")),
    ("ubsan", re.compile(r"^UBSAN: ")),
    ("lockdep", re.compile(r"^(?:" + _LOCKDEP + r")")),
    # 7.2: "WARNING: <file>:<line> at <func>, CPU#<n>: <comm>/<pid>" or "WARNING: at <func>, CPU#..";
    # kernels before 6.17 print "WARNING: CPU: <n> PID: <pid> at <file>:<line> <func>".
    ("warning", re.compile(r"^WARNING: (?:CPU: \d+ PID: \d+ at |\S+:\d+ at |at \S+, CPU#\d+)")),
    ("panic", re.compile(r"^Kernel panic - not syncing: ")),
    ("oops", re.compile(r"^(?:Oops: |Internal error: Oops)")),
    ("bug", re.compile(r"^(?:kernel BUG at |(?:[\w-]+: )?BUG: )")),
    # mm/kmemleak.c kmemleak_scan(): printed after a scan (the guest asks for one after the suite and
    # after each fault-injection sweep) that found unreferenced objects; the objects themselves are only
    # in /sys/kernel/debug/kmemleak, which the guest test copies into its record.
    ("kmemleak", re.compile(r"^kmemleak: \d+ new suspected memory leaks")),
    ("hung_task", re.compile(r"^INFO: task .+:\d+ blocked.* for more than \d+ seconds")),
    ("rcu_stall", re.compile(r"^rcu: INFO: \S+ (?:detected (?:expedited )?stalls|self-detected stall)")),
    # One task in D state as sched_show_task() prints it ("task:%-15.15s state:%c ..."): sysrq-w
    # (the guest watchdog's dump) shows each blocked task so. Evidence, not a crash; inside another
    # report (a hung task's stack) the line belongs to that report.
    ("blocked_tasks", re.compile(r"^task:.{1,15}? +state:D(?: |$)")),
)

MILESTONES: tuple[tuple[MilestoneKind, re.Pattern[str]], ...] = (
    ("kernel_started", re.compile(r"^Linux version ")),
    ("init_started", re.compile(r"^Run \S+ as init process")),
    ("script_started", re.compile(r"^virtme-ng-init: starting script")),
    ("power_down", re.compile(r"^reboot: Power down")),
)

CUT_HERE = "------------[ cut here ]------------"
END_TRACE = "---[ end trace"
END_PANIC = "---[ end Kernel panic - not syncing"
TASK_CLOSE = "</TASK>"
# Reports that are one line: closed as soon as they open.
SINGLE_LINE: frozenset[ProblemKind] = frozenset({"kmemleak"})
# KASAN and lockdep frame their reports with a line of '=' (at least 20 in every report).
SEPARATOR = re.compile(r"^={20,}$")


def header_kind(message: str) -> ProblemKind | None:
    for kind, pattern in HEADERS:
        if pattern.match(message):
            return kind
    return None


def milestone_kind(message: str) -> MilestoneKind | None:
    for kind, pattern in MILESTONES:
        if pattern.match(message):
            return kind
    return None

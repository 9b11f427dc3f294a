"""/dev/kmsg: what the kernel said during one step (the stack of an injected failure, any report).

Record format (Documentation/ABI/testing/dev-kmsg): "<prio>,<seq>,<usec>,<flags>[,...];<text>",
then continuation lines " KEY=value"; bytes that are not printable, a newline inside one printk
included, are written as \\xNN. Each reader has its own position; a reader that fell behind the ring
buffer gets EPIPE once and continues from the oldest record still there.

lib/fault-inject.c fail_dump() prints "FAULT_INJECTION: forcing a failure.\\nname <attr>, ..." and,
with verbose=2, dump_stack(): "CPU: ...", "Hardware name: ...", "Call Trace:", " <TASK>", one frame
per record (" func+0xoff/0xsize [module]", unreliable ones with "? "), " </TASK>". An allocation made
with __GFP_NOWARN is failed without any of that (FAULT_NOWARN), so a step may have no stack.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field

from harness.console.patterns import header_kind

DEV_KMSG = "/dev/kmsg"
FAULT_HEADER = "FAULT_INJECTION: forcing a failure."
_FRAME = re.compile(
    r"^\s*(?P<unreliable>\? )?(?P<func>[A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<mod>[\w-]+)\])?"
)
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
# dump_stack_print_info() before "Call Trace:": "CPU: ...", "Tainted: [O]=OOT_MODULE" once a module
# taints the kernel, "Hardware name: ...", sometimes "Workqueue: ..." (lib/dump_stack.c).
_PRELUDE_MAX = 6
REPORT_LINES = 40  # what a broken-invariant entry quotes of a kernel report


@dataclass(frozen=True, slots=True)
class Record:
    level: int
    seq: int
    usec: int
    text: str


@dataclass(frozen=True, slots=True)
class FaultStack:
    """One injected failure: which attribute failed it and the reliable frames, innermost first."""

    attr: str  # failslab | fail_page_alloc
    frames: tuple[str, ...]  # "func" or "func [module]"

    def functions(self) -> list[str]:
        return [f.split(" ", 1)[0] for f in self.frames]

    def site(self) -> str:
        """The frames from the allocation's caller outwards, skipping the fault-injection machinery."""
        return " < ".join(self.functions()[_first_caller(self.functions()) :][:6])


@dataclass(frozen=True, slots=True)
class KernelReport:
    kind: str
    heading: str
    lines: tuple[str, ...] = field(default_factory=tuple)


# Frames of the injection and allocator machinery: the interesting caller comes after them.
_MACHINERY = re.compile(
    r"^(?:dump_stack\w*|show_stack|fail_dump|should_fail\w*|should_failslab|__should_failslab"
    r"|should_fail_alloc_page|prepare_alloc_pages|__alloc_\w+|alloc_pages\w*|alloc_\w*pages\w*"
    r"|__kmalloc\w*|kmalloc\w*|kmem_cache_alloc\w*|__kmem_cache_alloc\w*|slab_alloc\w*|__slab_alloc\w*"
    r"|slab_pre_alloc_hook\w*|___slab_alloc|new_slab|allocate_slab|kzalloc\w*|kvmalloc\w*|__kvmalloc\w*"
    r"|kmalloc_trace\w*|__kmalloc_cache\w*|krealloc\w*|__do_kmalloc_node|folio_alloc\w*|__folio_alloc\w*"
    r"|get_page_from_freelist|__get_free_pages|get_zeroed_page\w*|iommu_alloc_pages\w*)$"
)


def _first_caller(functions: list[str]) -> int:
    for i, name in enumerate(functions):
        if not _MACHINERY.match(name):
            return i
    return len(functions)


def parse_record(raw: str) -> Record | None:
    """One read() of /dev/kmsg -> Record; None for anything that is not a record (pure)."""
    header, sep, rest = raw.partition(";")
    if not sep:
        return None
    fields = header.split(",")
    if len(fields) < 4:
        return None
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    text = rest.split("\n", 1)[0]  # continuation lines (" SUBSYSTEM=...") are dropped
    return Record(prio & 7, seq, usec, _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text))


def fault_stacks(records: list[Record]) -> list[FaultStack]:
    """Every fail_dump() in `records`, in order, with the frames of the dump_stack() after it (pure)."""
    stacks: list[FaultStack] = []
    i = 0
    while i < len(records):
        text = records[i].text
        if not text.startswith(FAULT_HEADER):
            i += 1
            continue
        attr_match = re.search(r"name (\S+?),", text)
        attr = attr_match.group(1) if attr_match else "?"
        frames: list[str] = []
        j = i + 1
        in_trace = False
        while j < len(records):
            line = records[j].text
            stripped = line.strip()
            if stripped.startswith(FAULT_HEADER) or stripped == "</TASK>":
                break
            if stripped in ("Call Trace:", "<TASK>"):
                in_trace = True
            elif in_trace:
                frame = _FRAME.match(line)
                if frame and not frame.group("unreliable"):
                    mod = frame.group("mod")
                    frames.append(frame.group("func") + (f" [{mod}]" if mod else ""))
            elif j - i > _PRELUDE_MAX:
                break  # verbose=1: no stack follows
            j += 1
        stacks.append(FaultStack(attr, tuple(frames)))
        i = j if j > i + 1 else i + 1
    return stacks


def kernel_reports(records: list[Record], max_lines: int = REPORT_LINES) -> list[KernelReport]:
    """Reports the console scanner would fail a cell for (harness.console.patterns), with the records
    after each heading up to the next heading or `max_lines` (pure)."""
    reports: list[KernelReport] = []
    for i, record in enumerate(records):
        kind = header_kind(record.text)
        if kind is None:
            continue
        following: list[str] = []
        for nxt in records[i + 1 : i + max_lines]:
            if header_kind(nxt.text) is not None:
                break
            following.append(nxt.text)
        reports.append(KernelReport(kind, record.text, tuple(following)))
    return reports


class Kmsg:
    """A reader positioned at the end of the log when opened: `drain()` returns what came since."""

    def __init__(self, path: str = DEV_KMSG) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.lost = 0  # times the reader fell behind the ring buffer

    def drain(self) -> list[Record]:
        out: list[Record] = []
        while True:
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    self.lost += 1
                    continue
                raise
            if not raw:
                return out
            record = parse_record(raw.decode("utf-8", "replace"))
            if record is not None:
                out.append(record)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

"""Console scanner on recorded and constructed logs (tests/data/consoles/README.md)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import get_args

import pytest

from harness.console.events import (
    BootMilestone,
    ConsoleScanner,
    Event,
    KernelProblem,
    MalformedMarker,
    Marker,
    scan,
    tail,
)
from harness.console.patterns import ProblemKind

CONSOLES = Path(__file__).parent / "data" / "consoles"
TOKEN = "5e1f0c2a9b7d4e36"


def read(name: str) -> str:
    # newline="" keeps the console's CRLF exactly as recorded.
    with open(CONSOLES / name, encoding="utf-8", newline="") as f:
        return f.read()


def problems(events: list[Event]) -> list[KernelProblem]:
    return [e for e in events if isinstance(e, KernelProblem)]


def span(text: str, first: str, last: str) -> str:
    """The log text from `first` through `last` with CRLF normalised: what an excerpt must be."""
    start = text.index(first)
    end = text.index(last, start) + len(last)
    return re.sub(r"\r*\n", "\n", text[start:end])  # a real serial console ends lines with \r\r\n


# (file, kind, first_line, first excerpt line, last excerpt line, complete)
EXPECTED_PROBLEMS = [
    (
        "warning.log",
        "warning",
        "WARNING: drivers/pci/p2pdma.c:1021 at pci_p2pdma_map_type+0x1b5/0x1d0, CPU#1: python3/412",
        "[   12.418306] ------------[ cut here ]------------",
        "[   12.422896] ---[ end trace 0000000000000000 ]---",
        True,
    ),
    (
        "oops.log",
        "oops",
        "BUG: kernel NULL pointer dereference, address: 0000000000000010",
        "[    9.774102] BUG: kernel NULL pointer dereference",
        "[    9.777566] ---[ end trace 0000000000000000 ]---",
        True,
    ),
    (
        "oops.log",
        "panic",
        "Kernel panic - not syncing: Fatal exception in interrupt",
        "[    9.778653] Kernel panic - not syncing: Fatal exception in interrupt",
        "(relocation range: 0xffffffff80000000-0xffffffffbfffffff)",
        False,  # panic=-1: the guest resets before the end-of-panic line
    ),
    (
        "panic.log",
        "panic",
        "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
        "[    3.151874] Kernel panic - not syncing",
        "---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100 ]---",
        True,
    ),
    (
        "hung-task.log",
        "hung_task",
        "INFO: task python3:398 blocked for more than 122 seconds.",
        "[  129.603328] INFO: task python3:398",
        "[  129.605367]  </TASK>",
        True,
    ),
    (
        "blocked-tasks.log",
        "blocked_tasks",
        "task:python          state:D stack:13112 pid:65    tgid:65    ppid:64     task_flags:0x400100 "
        "flags:0x00080000",
        "[   64.149054] task:python",
        "[   64.153290]  </TASK>",
        True,
    ),
    (
        "kasan.log",
        "kasan",
        "BUG: KASAN: slab-use-after-free in pci_p2pdma_map_segment+0x3c/0x90",
        "[   15.203114] =====",
        "[   15.207477] ==================================================================",
        True,
    ),
    (
        "kmemleak.log",
        "kmemleak",
        "kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        "[   31.552107] kmemleak",
        "[   31.552107] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        True,
    ),
    (
        "lockdep.log",
        "lockdep",
        "WARNING: possible circular locking dependency detected",
        "[   20.113236] =====",
        "[   20.117589]  </TASK>",
        True,
    ),
    (
        "ubsan.log",
        "ubsan",
        "UBSAN: array-index-out-of-bounds in drivers/pci/p2pdma.c:640:28",
        "[   11.480117] ------------[ cut here ]------------",
        "[   11.481664] ---[ end trace ]---",
        True,
    ),
    (
        "rcu-stall.log",
        "rcu_stall",
        "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
        "[   47.912003] rcu: INFO",
        "[   47.914690]  </TASK>",
        True,
    ),
    (
        "bug.log",
        "bug",
        "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580",
        "[    8.301442] BUG: sleeping function",
        "[    8.302728]  </TASK>",
        True,
    ),
    (
        "bug.log",
        "bug",
        "kernel BUG at drivers/pci/p2pdma.c:455!",
        "[    9.117351] ------------[ cut here ]------------",
        "[    9.119740] ---[ end trace 0000000000000000 ]---",
        True,
    ),
]
FIXTURES = sorted(p.name for p in CONSOLES.glob("*.log"))


@pytest.mark.parametrize("name", sorted({e[0] for e in EXPECTED_PROBLEMS}))
def test_problems_and_excerpts(name: str) -> None:
    text = read(name)
    expected = [e[1:] for e in EXPECTED_PROBLEMS if e[0] == name]
    found = problems(scan(text, TOKEN))
    assert len(found) == len(expected)
    for problem, (kind, first_line, first, last, complete) in zip(found, expected, strict=True):
        assert problem.kind == kind
        assert problem.first_line == first_line
        assert problem.excerpt == span(text, first, last)
        assert problem.complete is complete


def test_every_problem_kind_has_a_fixture() -> None:
    assert {e[1] for e in EXPECTED_PROBLEMS} == set(get_args(ProblemKind))


def test_real_boot_has_all_milestones_and_no_problems() -> None:
    events = scan(read("debian-7.2-boot.log"), TOKEN)
    assert [e.kind for e in events if isinstance(e, BootMilestone)] == [
        "kernel_started",
        "init_started",
        "script_started",
        "power_down",
    ]
    assert events[0] == BootMilestone(
        "kernel_started",
        "Linux version 7.2.13+deb14-amd64 (debian-kernel@lists.debian.org) (x86_64-linux-gnu-gcc-16 "
        "(Debian 16.2.0-4) 16.2.0, GNU ld (GNU Binutils for Debian) 2.47.50.20261021) #1 SMP "
        "PREEMPT_DYNAMIC Debian 7.2.13-1 (2026-10-28)",
    )
    assert not problems(events)
    assert not [e for e in events if isinstance(e, Marker | MalformedMarker)]


@pytest.mark.parametrize(
    ("name", "reached"),
    [
        ("debian-7.2-boot-cut.log", ("kernel_started", "init_started")),
        ("panic.log", ("kernel_started", "init_started")),
        ("hung-task.log", ("kernel_started", "init_started", "script_started")),
        ("bug.log", ("kernel_started", "init_started", "script_started", "power_down")),
    ],
)
def test_how_far_the_boot_got(name: str, reached: tuple[str, ...]) -> None:
    scanner = ConsoleScanner(TOKEN)
    scanner.feed(read(name))
    scanner.finish()
    assert scanner.milestones == reached


def test_warning_log_event_sequence_with_interleaving() -> None:
    events = scan(read("warning.log"), TOKEN)
    markers = [e for e in events if isinstance(e, Marker)]
    assert [m.kind for m in markers] == ["start", "test", "test", "test", "done"]
    # This marker had a kernel record printed into its middle; it must come out whole.
    assert markers[1].payload == {"name": "test_p2p.py::test_probe", "outcome": "passed", "duration": 0.41}
    assert markers[-1].payload == {"exit_status": 0}
    kinds = [type(e).__name__ + ":" + str(getattr(e, "kind", "")) for e in events]
    assert kinds == [
        "BootMilestone:kernel_started",
        "BootMilestone:init_started",
        "BootMilestone:script_started",
        "Marker:start",
        "Marker:test",
        "KernelProblem:warning",
        "Marker:test",
        "Marker:test",
        "Marker:done",
        "BootMilestone:power_down",
    ]


def chunked(text: str, cuts: list[int]) -> list[Event]:
    scanner = ConsoleScanner(TOKEN)
    events: list[Event] = []
    start = 0
    for cut in [*cuts, len(text)]:
        events += scanner.feed(text[start:cut])
        start = cut
    return events + scanner.finish()


def test_split_at_every_offset_gives_the_same_events() -> None:
    text = read("warning.log")
    reference = scan(text, TOKEN)
    for offset in range(len(text) + 1):
        assert chunked(text, [offset]) == reference, f"split at {offset}: {text[offset - 20 : offset]!r}"


@pytest.mark.parametrize("name", FIXTURES)
def test_random_chunking_gives_the_same_events(name: str) -> None:
    text = read(name)
    reference = scan(text, TOKEN)
    rng = random.Random(name)
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text)), k=min(len(text), rng.randint(1, 200))))
        assert chunked(text, cuts) == reference


def test_one_character_at_a_time() -> None:
    text = read("debian-7.2-boot.log")
    assert chunked(text, list(range(1, len(text)))) == scan(text, TOKEN)


def test_lf_only_console_gives_the_same_events() -> None:
    text = read("oops.log")
    assert scan(text.replace("\r\n", "\n"), TOKEN) == scan(text, TOKEN)


# -- markers -------------------------------------------------------------------------------------


def marker_events(text: str) -> list[Event]:
    return [e for e in scan(text, TOKEN) if isinstance(e, Marker | MalformedMarker)]


def test_marker_payload_and_surrounding_text() -> None:
    line = f'progress @@HIL:{TOKEN}:test:{{"name": "a@@b", "n": 1}}@@ trailing\r\n'
    assert marker_events(line) == [Marker("test", {"name": "a@@b", "n": 1})]


def test_foreign_token_is_ignored() -> None:
    assert marker_events('@@HIL:0123:done:{"exit_status": 0}@@\n') == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"@@HIL:{TOKEN}:test:{{not json}}@@", "payload is not JSON"),
        (f"@@HIL:{TOKEN}:test:[1, 2]@@", "payload is a list"),
        (f"@@HIL:{TOKEN}:finish:{{}}@@", "unknown marker kind 'finish'"),
        (f'@@HIL:{TOKEN}:test:{{"name": "cut off by the cra', "not closed"),
        (f"@@HIL:{TOKEN}", "no kind or payload"),
    ],
)
def test_malformed_markers_are_events(line: str, reason: str) -> None:
    (event,) = marker_events(line + "\r\n")
    assert isinstance(event, MalformedMarker)
    assert reason in event.reason
    assert event.line == line


def test_unterminated_last_line_is_scanned_at_finish() -> None:
    scanner = ConsoleScanner(TOKEN)
    assert scanner.feed(f'@@HIL:{TOKEN}:done:{{"exit_status": 0}}@@') == []
    assert scanner.finish() == [Marker("done", {"exit_status": 0})]


def test_marker_split_by_several_kernel_records() -> None:
    text = (
        f'@@HIL:{TOKEN}:test:{{"na[    5.000001] first kernel line\r\n'
        "[    5.000002] second kernel line\r\n"
        'me": "t"}@@\r\n'
    )
    assert marker_events(text) == [Marker("test", {"name": "t"})]


@pytest.mark.parametrize("token", ["", "a:b", "x@y"])
def test_unusable_token_is_rejected(token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        ConsoleScanner(token)


# -- kernel reports ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("WARNING: CPU: 0 PID: 1 at drivers/pci/p2pdma.c:10 f+0x1/0x2", "warning"),  # before 6.17
        ("WARNING: at pci_p2pdma_add_resource+0x1/0x2, CPU#0: swapper/0/1", "warning"),
        ("Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP", "oops"),
        ("watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [python3:400]", "bug"),
        ("BUG: unable to handle page fault for address: ffffc90000a00000", "bug"),
        ("WARNING: suspicious RCU usage", "lockdep"),
        ("[ BUG: Invalid wait context ]", "lockdep"),
        ("INFO: task kworker/0:1:12 blocked in I/O wait for more than 245 seconds.", "hung_task"),
        ("rcu: INFO: rcu_preempt self-detected stall on CPU", "rcu_stall"),
        ("rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... } 21 jiffies", "rcu_stall"),
        ("UBSAN: shift-out-of-bounds in drivers/pci/p2pdma.c:10:5", "ubsan"),
    ],
)
def test_header_forms(message: str, kind: str) -> None:
    (problem,) = problems(scan(f"[   30.000000] {message}\r\n", TOKEN))
    assert (problem.kind, problem.first_line, problem.complete) == (kind, message, False)


@pytest.mark.parametrize(
    "message",
    [
        "INFO: task python3:398 is blocked on a mutex likely owned by task kworker/1:2:77.",
        "WARNING: kernel not compiled with CPU_FREQ",
        "virtme-ng-init: starting script (console fallback)",
        "pci 0000:00:01.0: BAR 0 [mem 0x00000000-0x00000fff]: BUG in firmware?",
    ],
)
def test_lookalikes_are_not_problems(message: str) -> None:
    assert not problems(scan(f"[   30.000000] {message}\r\n", TOKEN))


def test_report_cut_short_by_another_report() -> None:
    text = (
        "[    1.000000] BUG: scheduling while atomic: python3/400/0x00000002\r\n"
        "[    1.000001] Modules linked in: p2p_test\r\n"
        "[    1.000002] Kernel panic - not syncing: Aiee, killing interrupt handler!\r\n"
    )
    first, second = problems(scan(text, TOKEN))
    assert (first.kind, first.complete) == ("bug", False)
    assert first.excerpt.count("\n") == 1
    assert second.kind == "panic"


def test_excerpt_is_bounded() -> None:
    lines = [f"[    2.{i:06d}]  frame_{i}+0x1/0x2" for i in range(1, 50)]
    text = "[    2.000000] Kernel panic - not syncing: stuck\n" + "\n".join(lines) + "\n"
    scanner = ConsoleScanner(TOKEN, max_excerpt_lines=10)
    (problem,) = problems(scanner.feed(text))
    assert problem.excerpt.count("\n") == 9
    assert not problem.complete


def test_open_problem_is_visible_before_finish() -> None:
    text = read("oops.log")
    scanner = ConsoleScanner(TOKEN)
    events = scanner.feed(text)
    assert [p.kind for p in problems(events)] == ["oops"]
    pending = scanner.open_problem
    assert pending is not None
    assert (pending.kind, pending.complete) == ("panic", False)
    assert problems(scanner.finish()) == [pending]
    assert scanner.open_problem is None


def test_replayed_report_counts_once() -> None:
    # Boot console and real console both print early records; a test may also cat dmesg.
    once = (
        "[    0.500000] WARNING: at f+0x1/0x2, CPU#0: swapper/0/1\r\n[    0.500001] ---[ end trace 0 ]---\r\n"
    )
    assert len(problems(scan(once + once, TOKEN))) == 1


def test_user_output_after_timestamps_is_not_kernel_text() -> None:
    text = "[    0.000000] Linux version 7.2.13\r\nBUG: this is a test printing a string\r\n"
    assert not problems(scan(text, TOKEN))


def test_kernel_without_printk_time_is_still_parsed() -> None:
    text = "Linux version 7.2.13 #1\nKernel panic - not syncing: VFS: Unable to mount root fs\nend\n"
    events = scan(text, TOKEN)
    assert [e.kind for e in events if isinstance(e, BootMilestone)] == ["kernel_started"]
    (problem,) = problems(events)
    assert problem.first_line == "Kernel panic - not syncing: VFS: Unable to mount root fs"


def test_printk_caller_field_is_stripped() -> None:
    (problem,) = problems(
        scan("[    4.100000][  T412] BUG: kernel NULL pointer dereference, address: 0\n", TOKEN)
    )
    assert problem.first_line == "BUG: kernel NULL pointer dereference, address: 0"


# -- tail ----------------------------------------------------------------------------------------


def test_tail() -> None:
    assert tail("a\r\nb\r\nc\r\n", 2) == "b\nc"
    assert tail("a\nb", 5) == "a\nb"
    assert tail("abc", 0) == ""
    assert tail(read("debian-7.2-boot.log"), 1) == "[    5.170248] reboot: Power down"


def test_blocked_task_inside_a_hung_task_report_stays_in_it() -> None:
    """sched_show_task()'s "task:... state:D" line is a blocked_tasks header on its own (sysrq-w), but the
    same line inside a hung-task report is that report's stack, not a second problem."""
    hung = problems(scan(read("hung-task.log"), TOKEN))
    assert [p.kind for p in hung] == ["hung_task"]
    assert "task:python3         state:D" in hung[0].excerpt


def test_blocked_tasks_are_evidence_not_crashes() -> None:
    """The sysrq-w dump of a hang yields blocked_tasks problems; the verdict logic (harness/console/watch.py)
    counts every other report kind as a crash, blocked tasks only as evidence."""
    from harness.console.watch import ConsoleWatch, guest_end_of
    from harness.results.model import GuestEnd

    seen = ConsoleWatch(started=True, done={"status": "hung"})
    seen.problems = problems(scan(read("blocked-tasks.log"), TOKEN))
    assert [p.kind for p in seen.problems] == ["blocked_tasks"]
    assert "vfio_pci_dma_buf_move" in seen.problems[0].excerpt
    assert guest_end_of(seen) is GuestEnd.HUNG
    seen.done = {"status": "finished", "exit_code": 0}
    assert guest_end_of(seen) is GuestEnd.DONE

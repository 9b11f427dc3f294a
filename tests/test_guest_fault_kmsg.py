"""guest_tests/hil_fault/kmsg.py: /dev/kmsg records, the stacks of injected failures, kernel reports."""

from __future__ import annotations

import sys
from pathlib import Path

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"
if str(GUEST_TESTS) not in sys.path:
    sys.path.insert(0, str(GUEST_TESTS))

from hil_fault.kmsg import FAULT_HEADER, Record, fault_stacks, kernel_reports, parse_record  # noqa: E402


def kmsg_lines(texts: list[str], level: int = 4, first_seq: int = 100) -> list[Record]:
    records = []
    for i, text in enumerate(texts):
        escaped = text.replace("\n", "\\x0a")
        record = parse_record(f"{level},{first_seq + i},{1000 + i},-;{escaped}\n SUBSYSTEM=pci\n")
        assert record is not None
        records.append(record)
    return records


# What lib/fault-inject.c fail_dump() with verbose=2 prints for a failslab failure in the map path
# (7.2 formats: printk_stack_address " %s%pBb", "? " for unreliable frames).
FAULT_DUMP = [
    "FAULT_INJECTION: forcing a failure.\nname failslab, interval 1, probability 0, space 0, times -1",
    "CPU: 0 UID: 0 PID: 215 Comm: python3 Not tainted 7.2.13 #1 PREEMPT(voluntary) ",
    "Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.3-debian-1.16.3-2 04/01/2014",
    "Call Trace:",
    " <TASK>",
    " dump_stack_lvl+0x5d/0x80",
    " should_fail_ex+0x1a9/0x1e0",
    " should_failslab+0x4f/0x70",
    " __kmalloc_noprof+0xb6/0x4c0",
    " ? sg_alloc_table+0x30/0xa0",
    " sg_kmalloc+0x1e/0x30",
    " __sg_alloc_table+0x6f/0x150",
    " sg_alloc_table+0x30/0xa0",
    " dma_buf_phys_vec_to_sgt+0x1d7/0x4b0",
    " vfio_pci_dma_buf_map+0x3c/0x80 [vfio_pci_core]",
    " dma_buf_map_attachment+0x9b/0x170",
    " hil_map+0x120/0x230 [hil_p2p_importer]",
    " hil_ioctl+0x6b/0xa0 [hil_p2p_importer]",
    " __x64_sys_ioctl+0x94/0xd0",
    " do_syscall_64+0x82/0x190",
    " entry_SYSCALL_64_after_hwframe+0x76/0x7e",
    "RIP: 0033:0x7f3a4e91ac5b",
    " </TASK>",
]


def test_parse_record_unescapes_and_drops_continuation_lines() -> None:
    record = parse_record("5,42,123456,-;FAULT_INJECTION: forcing a failure.\\x0aname failslab, x\n KEY=v\n")
    assert record == Record(5, 42, 123456, "FAULT_INJECTION: forcing a failure.\nname failslab, x")


def test_parse_record_level_is_priority_without_facility() -> None:
    record = parse_record("14,1,2,-;user message")  # facility 1 (user), level 6
    assert record is not None and record.level == 6


def test_parse_record_rejects_other_text() -> None:
    assert parse_record("no semicolon") is None
    assert parse_record("x,y,z,-;text") is None


def test_fault_stack_has_reliable_frames_innermost_first() -> None:
    stacks = fault_stacks(kmsg_lines(FAULT_DUMP))
    assert len(stacks) == 1
    stack = stacks[0]
    assert stack.attr == "failslab"
    assert stack.frames[:2] == ("dump_stack_lvl", "should_fail_ex")
    assert "vfio_pci_dma_buf_map [vfio_pci_core]" in stack.frames
    assert stack.functions().count("sg_alloc_table") == 1  # the "? " copy is unreliable and dropped
    assert stack.functions()[-1] == "entry_SYSCALL_64_after_hwframe"  # RIP: lines are not frames


def test_fault_site_skips_the_injection_machinery() -> None:
    (stack,) = fault_stacks(kmsg_lines(FAULT_DUMP))
    assert stack.site().startswith("sg_kmalloc < __sg_alloc_table < sg_alloc_table < dma_buf_phys_vec_to_sgt")


def test_two_dumps_and_interleaved_records() -> None:
    text = [
        "unrelated message",
        *FAULT_DUMP,
        "another",
        *FAULT_DUMP[:1],
        "CPU: 1 UID: 0",
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x5d/0x80",
        " should_fail_alloc_page+0x1/0x2",
        " </TASK>",
    ]
    text[len(FAULT_DUMP) + 2] = text[len(FAULT_DUMP) + 2].replace("failslab", "fail_page_alloc")
    stacks = fault_stacks(kmsg_lines(text))
    assert [s.attr for s in stacks] == ["failslab", "fail_page_alloc"]
    assert stacks[1].functions() == ["dump_stack_lvl", "should_fail_alloc_page"]


def test_verbose_one_dump_has_no_frames() -> None:
    stacks = fault_stacks(kmsg_lines([FAULT_DUMP[0], "hil_p2p_importer: something else"]))
    assert len(stacks) == 1 and stacks[0].frames == ()


def test_a_fault_dump_is_not_a_kernel_report() -> None:
    assert kernel_reports(kmsg_lines(FAULT_DUMP)) == []
    assert FAULT_HEADER in kmsg_lines(FAULT_DUMP)[0].text


def test_kernel_reports_with_their_lines() -> None:
    records = kmsg_lines(
        [
            "WARNING: drivers/dma-buf/dma-buf-mapping.c:201 at dma_buf_phys_vec_to_sgt+0x3f0/0x4b0, "
            "CPU#0: python3/215",
            "Modules linked in: hil_p2p_importer",
            "BUG: KASAN: slab-use-after-free in dma_buf_free_sgt+0x3c/0xd0",
            "Read of size 8 at addr ffff888004e4c780 by task python3/215",
            "DMAR: DRHD: handling fault status reg 2",
        ]
    )
    reports = kernel_reports(records)
    assert [r.kind for r in reports] == ["warning", "kasan"]
    assert reports[0].lines == ("Modules linked in: hil_p2p_importer",)
    assert reports[1].lines[0].startswith("Read of size 8")


def test_tainted_kernel_prelude_is_skipped() -> None:
    """Once an out-of-tree module is loaded dump_stack prints a "Tainted:" line before the trace (seen
    in a 7.2.13 guest with hil_p2p_importer loaded)."""
    dump = [
        FAULT_DUMP[0],
        "CPU: 0 UID: 0 PID: 65 Comm: python Tainted: G           O        7.2.13-hil #1 PREEMPT(lazy)  ",
        "Tainted: [O]=OOT_MODULE",
        FAULT_DUMP[2],
        *FAULT_DUMP[3:],
    ]
    (stack,) = fault_stacks(kmsg_lines(dump))
    assert "dma_buf_phys_vec_to_sgt" in stack.functions()

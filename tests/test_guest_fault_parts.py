"""guest_tests/hil_fault: kmemleak reports and their attribution, /proc/config.gz parsing, the debugfs
knobs set and restored, the snapshot facts and their comparison."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"
if str(GUEST_TESTS) not in sys.path:
    sys.path.insert(0, str(GUEST_TESTS))

from hil_fault.kconfig import missing_options, parse_config  # noqa: E402
from hil_fault.kmemleak import attribute, parse_leaks  # noqa: E402
from hil_fault.kmsg import FaultStack  # noqa: E402
from hil_fault.knobs import SWEEP_SETTINGS, KnobError, sweep_knobs  # noqa: E402
from hil_fault.snapshot import (  # noqa: E402
    bufinfo_facts,
    changes,
    dma_api_dump_lines,
    dma_api_entry_facts,
    dma_api_facts,
)

# mm/kmemleak.c print_unreferenced() as 7.2 prints it (stack_depot frames, no addresses).
KMEMLEAK_READ = """unreferenced object 0xffff888004e4c780 (size 64):
  comm "python3", pid 215, jiffies 4294893960
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 4f3a1c2b):
    __kmalloc_cache_noprof+0x2b0/0x380
    dma_buf_phys_vec_to_sgt+0x69/0x4b0
    vfio_pci_dma_buf_map+0x3c/0x80 [vfio_pci_core]
    dma_buf_map_attachment+0x9b/0x170
    hil_map+0x120/0x230 [hil_p2p_importer]
    __x64_sys_ioctl+0x94/0xd0
    do_syscall_64+0x82/0x190
unreferenced object 0xffff888005000000 (size 4096):
  comm "kworker/0:1", pid 12, jiffies 4294890000
  backtrace (crc 0):
    [<ffffffff81234567>] kmalloc_trace+0x10/0x20
    [<ffffffff81234568>] some_driver_probe+0x10/0x20
"""


def test_parse_leaks() -> None:
    leaks = parse_leaks(KMEMLEAK_READ)
    assert [(leak.address, leak.size, leak.comm) for leak in leaks] == [
        ("ffff888004e4c780", 64, "python3"),
        ("ffff888005000000", 4096, "kworker/0:1"),
    ]
    assert leaks[0].backtrace[1] == "dma_buf_phys_vec_to_sgt"
    assert leaks[1].backtrace == ("kmalloc_trace", "some_driver_probe")  # the older [<addr>] format
    assert "64 bytes at 0xffff888004e4c780 (python3): __kmalloc_cache_noprof < dma_buf" in leaks[0].describe()


def test_parse_leaks_of_an_empty_read() -> None:
    assert parse_leaks("") == []


def test_attribute_to_the_step_sharing_most_specific_frames() -> None:
    leak = parse_leaks(KMEMLEAK_READ)[0]
    sg_fail = FaultStack(
        "failslab",
        (
            "dump_stack_lvl",
            "__kmalloc_noprof",
            "sg_alloc_table",
            "dma_buf_phys_vec_to_sgt",
            "vfio_pci_dma_buf_map [vfio_pci_core]",
            "dma_buf_map_attachment",
            "hil_map [hil_p2p_importer]",
            "__x64_sys_ioctl",
        ),
    )
    attach_fail = FaultStack(
        "failslab", ("__kmalloc_noprof", "hil_attach [hil_p2p_importer]", "__x64_sys_ioctl")
    )
    snapshot_fail = FaultStack(
        "failslab", ("__kvmalloc_node_noprof", "hil_map [hil_p2p_importer]", "__x64_sys_ioctl")
    )
    steps = [
        ("map fault 1", snapshot_fail),
        ("map fault 4", sg_fail),
        ("attach fault 2", attach_fail),
        ("nowarn", None),
    ]
    assert attribute(leak, steps) == ["map fault 4"]


def test_attribute_nothing_shared() -> None:
    leak = parse_leaks(KMEMLEAK_READ)[1]
    assert attribute(leak, [("x", FaultStack("failslab", ("__kmalloc_noprof", "__x64_sys_ioctl")))]) == []


def test_parse_config_and_missing_options() -> None:
    config = parse_config(
        "# comment\nCONFIG_FAULT_INJECTION=y\nCONFIG_FAILSLAB=y\n# CONFIG_FAIL_PAGE_ALLOC is not set\n"
        'CONFIG_LOCALVERSION="-hil"\n'
    )
    assert config == {"FAULT_INJECTION": "y", "FAILSLAB": "y", "FAIL_PAGE_ALLOC": "n", "LOCALVERSION": "-hil"}
    assert (
        missing_options(config) == "the kernel lacks CONFIG_FAIL_PAGE_ALLOC, CONFIG_FAULT_INJECTION_DEBUG_FS"
    )
    config.update(FAIL_PAGE_ALLOC="y", FAULT_INJECTION_DEBUG_FS="y")
    assert missing_options(config) is None
    assert "unreadable" in str(missing_options(None))


def _debugfs(root: Path) -> None:
    for name, default in {
        "failslab/ignore-gfp-wait": "Y",
        "failslab/verbose": "1",
        "failslab/verbose_ratelimit_interval_ms": "5000",
        "fail_page_alloc/ignore-gfp-wait": "Y",
        "fail_page_alloc/ignore-gfp-highmem": "Y",
        "fail_page_alloc/min-order": "1",
        "fail_page_alloc/verbose": "1",
        "fail_page_alloc/verbose_ratelimit_interval_ms": "5000",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(default + "\n")


def test_sweep_knobs_set_and_restored(tmp_path: Path) -> None:
    _debugfs(tmp_path)
    with sweep_knobs(tmp_path) as before:
        assert before["failslab/ignore-gfp-wait"] == "Y"
        assert before["fail_page_alloc/min-order"] == "1"
        now = {name: (tmp_path / name).read_text().strip() for name in SWEEP_SETTINGS}
        assert now == dict(SWEEP_SETTINGS)
        assert now["fail_page_alloc/ignore-gfp-highmem"] == "Y"  # user pages of the interpreter spared
    assert (tmp_path / "failslab/ignore-gfp-wait").read_text().strip() == "Y"
    assert (tmp_path / "fail_page_alloc/min-order").read_text().strip() == "1"


def test_sweep_knobs_restored_after_an_exception(tmp_path: Path) -> None:
    _debugfs(tmp_path)
    with pytest.raises(RuntimeError), sweep_knobs(tmp_path):
        raise RuntimeError("step failed")
    assert (tmp_path / "failslab/verbose").read_text().strip() == "1"


def test_sweep_knobs_missing_debugfs(tmp_path: Path) -> None:
    with pytest.raises(KnobError, match="failslab/ignore-gfp-wait"), sweep_knobs(tmp_path):
        pass


BUFINFO = (
    "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
    "67108864\t00000002\t00080007\t00000003\tvfio_pci_core\t00000012\t<none>\n"
    "\tAttached Devices:\n\t0000:03:00.0\nTotal 1 devices attached\n\n"
    "16777216\t00000002\t00080007\t00000001\tvfio_pci_core\t00000013\t<none>\n"
    "\tAttached Devices:\nTotal 0 devices attached\n\n"
    "\nTotal 2 objects, 83886080 bytes\n"
)


def test_bufinfo_facts_and_changes() -> None:
    facts = bufinfo_facts(BUFINFO)
    assert facts["dma-bufs"] == 2
    assert facts["dma-buf ino 12 (vfio_pci_core)"] == "size 67108864, 3 refs, attached: 0000:03:00.0"
    assert facts["dma-buf ino 13 (vfio_pci_core)"] == "size 16777216, 1 refs, attached: none"
    after = dict(facts)
    after["dma-buf ino 13 (vfio_pci_core)"] = "size 16777216, 1 refs, attached: 0000:00:03.0"
    after["fd 7"] = "anon_inode:dmabuf"
    assert changes(facts, after) == [
        "dma-buf ino 13 (vfio_pci_core): size 16777216, 1 refs, attached: none -> "
        "size 16777216, 1 refs, attached: 0000:00:03.0",
        "fd 7: absent -> anon_inode:dmabuf",
    ]
    assert changes(facts, facts) == []


# kernel/dma/debug.c dump_show, 7.2.13: "%s %s %s idx %d P=%pa D=%llx L=%llx cln=%pa %s %s attrs=0x%lx"
DMA_API_DUMP = (
    "hil_p2p_importer 0000:05:00.0 single idx 1984 P=0x0000000f800000000 D=f800000000 L=200000000 "
    "cln=0x00000003e0000000 DMA_BIDIRECTIONAL dma map error checked attrs=0x400\n"
    "edu 0000:06:00.0 single idx 1984 P=0x0000000f800000000 D=f800000000 L=200000000 "
    "cln=0x00000003e0000000 DMA_BIDIRECTIONAL dma map error checked attrs=0x400\n"
    "edu 0000:06:00.0 single idx 7 P=0x0000000001000000 D=1000000 L=1000 "
    "cln=0x0000000000040000 DMA_FROM_DEVICE dma map error checked attrs=0x0\n"
    "virtio-pci 0000:00:02.0 single idx 3 P=0x0000000002000000 D=2000000 L=1000 "
    "cln=0x0000000000080000 DMA_TO_DEVICE dma map error checked attrs=0x0\n"
)


def test_dma_api_facts_count_live_mappings_and_errors(tmp_path: Path) -> None:
    assert dma_api_entry_facts(DMA_API_DUMP) == {
        "dma-api mappings of 0000:05:00.0 (hil_p2p_importer)": 1,
        "dma-api mappings of 0000:06:00.0 (edu)": 2,
    }
    assert dma_api_facts(tmp_path / "absent") == {}  # a kernel without DMA-API debugging
    (tmp_path / "error_count").write_text("1\n")
    (tmp_path / "dump").write_text(DMA_API_DUMP)
    before = dma_api_facts(tmp_path)
    assert dma_api_dump_lines(5, tmp_path) == DMA_API_DUMP.splitlines()[:3]  # virtio's left out
    assert dma_api_dump_lines(1, tmp_path) == DMA_API_DUMP.splitlines()[:1]
    assert before["dma-api errors"] == 1
    (tmp_path / "error_count").write_text("2\n")  # an error dma-debug did not print (num_errors = 1)
    (tmp_path / "dump").write_text(DMA_API_DUMP.split("edu 0000:06:00.0 single idx 7", maxsplit=1)[0])
    assert dma_api_dump_lines(5, tmp_path / "absent")[0].startswith("unreadable:")
    assert changes(before, dma_api_facts(tmp_path)) == [
        "dma-api errors: 1 -> 2",
        "dma-api mappings of 0000:06:00.0 (edu): 2 -> 1",
    ]


def test_address_watch_blames_the_step_that_lost_space() -> None:
    from hil_fault.ops import AddressWatch
    from hil_importer.sg import DmaList, SgEntry

    def dma(addr: int) -> DmaList:
        return DmaList((SgEntry(addr, 0x4000000),), 0)

    watch = AddressWatch()
    assert watch.check(dma(0xFC000000), "the map") == []
    assert watch.check(dma(0xFC000000), "the map") == []
    lost = watch.check(dma(0xF8000000), "the map")
    assert len(lost) == 1 and "0xf8000000+0x4000000" in lost[0] and "0xfc000000+0x4000000" in lost[0]
    assert watch.check(dma(0xF8000000), "the map") == []  # the step after is not blamed again
    assert watch.seen == ["0xfc000000+0x4000000", "0xf8000000+0x4000000"]
    off = AddressWatch(enabled=False)
    off.check(dma(1 << 12), "x")
    assert off.check(dma(2 << 12), "x") == []


def test_address_watch_notes_the_move_to_64_bit_addresses() -> None:
    from hil_fault.ops import AddressWatch
    from hil_importer.sg import DmaList, SgEntry

    def dma(addr: int) -> DmaList:
        return DmaList((SgEntry(addr, 0x4000000),), 0)

    watch = AddressWatch()
    watch.check(dma(0xBC000000), "the map")
    assert watch.check(dma(0xFFFFFC000000), "the map") == []  # dma-iommu.c:797, not lost space
    assert len(watch.notes) == 1 and "32-bit" in watch.notes[0]
    assert watch.take_move() == watch.notes[0] and watch.take_move() is None  # the sweep restarts once
    lost = watch.check(dma(0xFFFFF8000000), "the retry")  # then a lost range is still caught
    assert len(lost) == 1 and "0xfffff8000000" in lost[0]


def test_uptime_of_kmemleak_jiffies() -> None:
    from hil_fault.kmemleak import uptime_at

    hz = 250
    initial = (-300 * hz) & 0xFFFFFFFF  # include/linux/jiffies.h INITIAL_JIFFIES
    assert uptime_at(initial, hz) == 0.0
    assert uptime_at(initial + 12 * hz + 125, hz) == 12.5
    assert parse_leaks(KMEMLEAK_READ)[0].jiffies == 4294893960
    assert parse_leaks(KMEMLEAK_READ)[0].jiffies is not None


def test_leaks_placed_by_allocation_time() -> None:
    from hil_fault.leakscan import place
    from hil_fault.sweep import Step, SweepResult

    res = SweepResult("map", "host_bridge_iova", "exporter -> dma", window=(100.0, 110.0))
    res.steps = [
        Step(1, 12, False, None, armed_at=(101.0, 101.2)),
        Step(2, 12, False, None, armed_at=(103.0, 103.1)),
    ]
    assert place(101.1, [res], 0.01).step is res.steps[0]
    assert place(103.105, [res], 0.01).step is res.steps[1]
    outside = place(102.0, [res], 0.01)
    assert outside.result is res and outside.step is None  # a fault-free run during the sweep
    assert place(99.0, [res], 0.01).result is None  # before the test

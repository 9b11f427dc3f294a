"""VFIO dma-buf export of the exporter's BAR2 (ivshmem's shared memory): sizes, errnos, release.

Expected errnos come from the kernel source (v7.2: drivers/vfio/pci/vfio_pci_dmabuf.c unless another
file is named); each case cites the line that returns it. The order of the checks there matters: flags
and nr_ranges (243) before the region (250) before the ranges (259 -> 203/206/214) before the BAR bounds
(277 -> 158-164).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hil_vfio import (
    DmaRange,
    VfioDevice,
    dmabuf_size,
    errname,
    export_dma_buf,
    open_device,
    probe_dma_buf,
    region_info,
    uapi,
)
from hil_vfio.dmabuf import bufinfo, fd_inode, fdinfo

from harness.guest.plan import DeviceSpec

PAGE = os.sysconf("SC_PAGE_SIZE")
BAR = uapi.VFIO_PCI_BAR2_REGION_INDEX  # ivshmem-plain: BAR0 registers (256 B), BAR2 shared memory
U64 = 1 << 64
EXP_NAME = "vfio_pci_core"  # DEFINE_DMA_BUF_EXPORT_INFO uses KBUILD_MODNAME of vfio-pci-core.ko

Details = dict[str, Any]


def _export_checked(dev: VfioDevice, ranges: list[DmaRange], details: Details, **kwargs: Any) -> int:
    fd = export_dma_buf(dev, BAR, ranges, **kwargs)
    size = dmabuf_size(fd)
    details.update(fd=fd, size=size, ranges=[(r.offset, r.length) for r in ranges])
    return fd


@pytest.fixture
def bar_size(exporter: VfioDevice) -> int:
    return region_info(exporter, BAR).size


# --- the region --------------------------------------------------------------------------------


def test_bar2_region_matches_plan(
    exporter: VfioDevice, exporter_spec: DeviceSpec, hil_details: Details
) -> None:
    info = region_info(exporter, BAR)
    hil_details.update(bar2_size=info.size, bar2_flags=info.flags, bdf=exporter.bdf)
    assert info.size == exporter_spec.bars[BAR]
    assert info.mmap, "ivshmem BAR2 is RAM-backed and mmap-able"


def test_probe_creates_no_fd(exporter: VfioDevice, hil_details: Details) -> None:
    before = set(os.listdir("/proc/self/fd"))
    assert probe_dma_buf(exporter) == 0
    # vfio_check_feature (include/linux/vfio.h:277-278) returns 0 for PROBE before anything is built.
    assert set(os.listdir("/proc/self/fd")) == before
    hil_details["probe"] = "0"


# --- successful exports ------------------------------------------------------------------------


def test_export_whole_bar(exporter: VfioDevice, bar_size: int, hil_details: Details) -> None:
    fd = _export_checked(exporter, [DmaRange(0, bar_size)], hil_details)
    try:
        info = fdinfo(fd)
        hil_details["fdinfo"] = info
        assert dmabuf_size(fd) == bar_size
        assert int(info["size"]) == bar_size
        assert info["exp_name"] == EXP_NAME
    finally:
        os.close(fd)


def test_export_slice(exporter: VfioDevice, bar_size: int, hil_details: Details) -> None:
    offset, length = bar_size // 4, bar_size // 2
    fd = _export_checked(exporter, [DmaRange(offset, length)], hil_details)
    try:
        assert dmabuf_size(fd) == length
    finally:
        os.close(fd)


def test_export_last_page(exporter: VfioDevice, bar_size: int, hil_details: Details) -> None:
    # vfio_pci_dmabuf.c:163 rejects end > BAR end only: a range ending exactly at the end is valid.
    fd = _export_checked(exporter, [DmaRange(bar_size - PAGE, PAGE)], hil_details)
    try:
        assert dmabuf_size(fd) == PAGE
    finally:
        os.close(fd)


def test_export_several_ranges(exporter: VfioDevice, bar_size: int, hil_details: Details) -> None:
    ranges = [DmaRange(0, PAGE), DmaRange(bar_size // 2, 16 * PAGE), DmaRange(bar_size - 2 * PAGE, 2 * PAGE)]
    fd = _export_checked(exporter, ranges, hil_details)
    try:
        assert dmabuf_size(fd) == sum(r.length for r in ranges)
    finally:
        os.close(fd)


def test_overlapping_ranges_are_accepted(exporter: VfioDevice, hil_details: Details) -> None:
    # validate_dmabuf_input (199-208) checks each range and the sum, never overlap: the size counts
    # the overlapping page twice. Pinned because a kernel that starts rejecting this changes the uapi.
    ranges = [DmaRange(0, 2 * PAGE), DmaRange(PAGE, 2 * PAGE)]
    fd = _export_checked(exporter, ranges, hil_details)
    try:
        assert dmabuf_size(fd) == 4 * PAGE
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("open_flags", "cloexec", "accmode"),
    [
        (os.O_RDWR | os.O_CLOEXEC, True, os.O_RDWR),
        (os.O_RDONLY, False, os.O_RDONLY),
    ],
    ids=["rdwr-cloexec", "rdonly"],
)
def test_open_flags(
    exporter: VfioDevice, open_flags: int, cloexec: bool, accmode: int, hil_details: Details
) -> None:
    # open_flags go to dma_buf_getfile (dma-buf.c:646, O_ACCMODE | O_NONBLOCK kept) and to
    # get_unused_fd_flags (dma-buf.c:795, O_CLOEXEC).
    fd = _export_checked(exporter, [DmaRange(0, PAGE)], hil_details, open_flags=open_flags)
    try:
        fd_flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        fl_flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        hil_details.update(fd_flags=fd_flags, fl_flags=oct(fl_flags))
        assert bool(fd_flags & fcntl.FD_CLOEXEC) == cloexec
        assert fl_flags & os.O_ACCMODE == accmode
    finally:
        os.close(fd)


def test_dmabuf_lseek_only_finds_size(exporter: VfioDevice, hil_details: Details) -> None:
    # dma_buf_llseek (dma-buf.c:265-273): SEEK_END/SEEK_SET with offset 0 only, anything else EINVAL.
    fd = _export_checked(exporter, [DmaRange(0, 2 * PAGE)], hil_details)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) == 2 * PAGE
        assert os.lseek(fd, 0, os.SEEK_SET) == 0
        for offset, whence in ((0, os.SEEK_CUR), (1, os.SEEK_END), (PAGE, os.SEEK_SET)):
            with pytest.raises(OSError) as info:
                os.lseek(fd, offset, whence)
            assert info.value.errno == errno.EINVAL, (offset, whence)
    finally:
        os.close(fd)


def test_dmabuf_mmap_is_refused(exporter: VfioDevice, hil_details: Details) -> None:
    # vfio_pci_dmabuf_ops has no .mmap, so dma_buf_mmap_internal returns EINVAL (dma-buf.c:238-239).
    fd = _export_checked(exporter, [DmaRange(0, PAGE)], hil_details)
    try:
        with pytest.raises(OSError) as info:
            mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ)
        hil_details["errno"] = errname(info.value.errno)
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)


# --- invalid requests: one errno each ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadRequest:
    """An export request that must fail; `build(bar_size)` returns the export_dma_buf arguments."""

    expected: int
    source: str
    build: Callable[[int], dict[str, Any]]


def _ranges(*pairs: tuple[int, int]) -> list[DmaRange]:
    return [DmaRange(offset, length) for offset, length in pairs]


GET, SET, PROBE = uapi.VFIO_DEVICE_FEATURE_GET, uapi.VFIO_DEVICE_FEATURE_SET, uapi.VFIO_DEVICE_FEATURE_PROBE
HEADER = 8  # sizeof(struct vfio_device_feature): argsz counts it
FIXED = 16  # sizeof(struct vfio_device_feature_dma_buf) without its ranges

BAD_REQUESTS: dict[str, BadRequest] = {
    "nr-ranges-zero": BadRequest(
        errno.EINVAL, "vfio_pci_dmabuf.c:243 !nr_ranges", lambda bar: {"ranges": []}
    ),
    "flags-nonzero": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:243 flags",
        lambda bar: {"ranges": _ranges((0, PAGE)), "flags": 1},
    ),
    "offset-unaligned": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:203 !PAGE_ALIGNED(offset)",
        lambda bar: {"ranges": _ranges((PAGE // 2, PAGE))},
    ),
    "length-unaligned": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:203 !PAGE_ALIGNED(len)",
        lambda bar: {"ranges": _ranges((0, PAGE + 512))},
    ),
    "length-zero": BadRequest(
        errno.EINVAL, "vfio_pci_dmabuf.c:203 !len", lambda bar: {"ranges": _ranges((0, 0))}
    ),
    "second-range-invalid": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:199-204 every range is checked",
        lambda bar: {"ranges": _ranges((0, PAGE), (PAGE, 0))},
    ),
    "lengths-sum-wraps-u64": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:206 check_add_overflow(length)",
        lambda bar: {"ranges": _ranges((0, 1 << 63), (0, 1 << 63))},
    ),
    "length-bit63": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:214 length & DMA_IOVA_USE_SWIOTLB",
        lambda bar: {"ranges": _ranges((0, 1 << 63))},
    ),
    "length-past-bar-end": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:163 end > max_addr",
        lambda bar: {"ranges": _ranges((0, bar + PAGE))},
    ),
    "offset-at-bar-end": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:163 end > max_addr",
        lambda bar: {"ranges": _ranges((bar, PAGE))},
    ),
    "second-range-past-bar-end": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:163 end > max_addr",
        lambda bar: {"ranges": _ranges((0, PAGE), (bar - PAGE, 2 * PAGE))},
    ),
    "offset-wraps-phys-addr": BadRequest(
        errno.EOVERFLOW,
        "vfio_pci_dmabuf.c:158-162 check_add_overflow(start, offset)",
        lambda bar: {"ranges": _ranges((U64 - PAGE, PAGE))},
    ),
    "region-bar0-smaller-than-page": BadRequest(
        errno.EINVAL,
        "vfio_pci_dmabuf.c:163 end > max_addr (BAR0 is 256 bytes)",
        lambda bar: {"region_index": uapi.VFIO_PCI_BAR0_REGION_INDEX, "ranges": _ranges((0, PAGE))},
    ),
    "region-bar1-unimplemented": BadRequest(
        errno.ENODEV,
        "vfio_pci_dmabuf.c:251 IS_ERR(get_iomap); vfio_pci_core.c:555-561 barmap = ERR_PTR(-ENODEV)",
        lambda bar: {"region_index": uapi.VFIO_PCI_BAR1_REGION_INDEX, "ranges": _ranges((0, PAGE))},
    ),
    "region-bar5-unimplemented": BadRequest(
        errno.ENODEV,
        "vfio_pci_dmabuf.c:251 IS_ERR(get_iomap); vfio_pci_core.c:555-561",
        lambda bar: {"region_index": uapi.VFIO_PCI_BAR5_REGION_INDEX, "ranges": _ranges((0, PAGE))},
    ),
    "region-rom": BadRequest(
        errno.ENODEV,
        "vfio_pci_dmabuf.c:250 region_index >= VFIO_PCI_ROM_REGION_INDEX",
        lambda bar: {"region_index": uapi.VFIO_PCI_ROM_REGION_INDEX, "ranges": _ranges((0, PAGE))},
    ),
    "region-config": BadRequest(
        errno.ENODEV,
        "vfio_pci_dmabuf.c:250 region_index >= VFIO_PCI_ROM_REGION_INDEX",
        lambda bar: {"region_index": uapi.VFIO_PCI_CONFIG_REGION_INDEX, "ranges": _ranges((0, PAGE))},
    ),
    "region-u32-max": BadRequest(
        errno.ENODEV,
        "vfio_pci_dmabuf.c:250 region_index >= VFIO_PCI_ROM_REGION_INDEX",
        lambda bar: {"region_index": 0xFFFFFFFF, "ranges": _ranges((0, PAGE))},
    ),
    "argsz-below-header": BadRequest(
        errno.EINVAL,
        "vfio_main.c:1248 feature.argsz < minsz",
        lambda bar: {"ranges": _ranges((0, PAGE)), "argsz": HEADER - 4},
    ),
    "argsz-header-only": BadRequest(
        errno.EINVAL,
        "include/linux/vfio.h:282 argsz < minsz (vfio_check_feature)",
        lambda bar: {"ranges": _ranges((0, PAGE)), "argsz": HEADER},
    ),
    "argsz-fixed-part-short": BadRequest(
        errno.EINVAL,
        "include/linux/vfio.h:282 argsz < minsz (vfio_check_feature)",
        lambda bar: {"ranges": _ranges((0, PAGE)), "argsz": HEADER + FIXED - 1},
    ),
    "nr-ranges-u32-max": BadRequest(
        errno.ENOMEM,
        "vfio_pci_dmabuf.c:254 memdup_array_user -> mm/util.c:221-223 (a 64 GiB kmalloc fails)",
        lambda bar: {"ranges": _ranges((0, PAGE)), "nr_ranges": 0xFFFFFFFF},
    ),
    "feature-set": BadRequest(
        errno.EINVAL,
        "include/linux/vfio.h:274-276 SET not in supported_ops",
        lambda bar: {"ranges": _ranges((0, PAGE)), "feature_flags": SET},
    ),
    "feature-get-and-set": BadRequest(
        errno.EINVAL,
        "vfio_main.c:1258-1261 GET and SET without PROBE",
        lambda bar: {"ranges": _ranges((0, PAGE)), "feature_flags": GET | SET},
    ),
    "feature-neither-get-nor-set": BadRequest(
        errno.EINVAL,
        "include/linux/vfio.h:280-281 neither GET nor SET",
        lambda bar: {"ranges": _ranges((0, PAGE)), "feature_flags": 0},
    ),
    "feature-probe-set": BadRequest(
        errno.EINVAL,
        "include/linux/vfio.h:274-276 SET not in supported_ops (checked before PROBE)",
        lambda bar: {"ranges": _ranges((0, PAGE)), "feature_flags": PROBE | SET},
    ),
}


def test_region_preconditions(exporter: VfioDevice, hil_details: Details) -> None:
    """The region cases above assume ivshmem-plain's layout; check it rather than trust it."""
    sizes = {index: region_info(exporter, index).size for index in range(6)}
    hil_details["region_sizes"] = sizes
    assert 0 < sizes[uapi.VFIO_PCI_BAR0_REGION_INDEX] < PAGE
    assert sizes[uapi.VFIO_PCI_BAR1_REGION_INDEX] == 0
    assert sizes[uapi.VFIO_PCI_BAR5_REGION_INDEX] == 0


@pytest.mark.parametrize("case_id", list(BAD_REQUESTS))
def test_invalid_request_errno(
    exporter: VfioDevice, bar_size: int, case_id: str, hil_details: Details
) -> None:
    case = BAD_REQUESTS[case_id]
    kwargs = case.build(bar_size)
    region_index = kwargs.pop("region_index", BAR)
    hil_details.update(expected=errname(case.expected), source=case.source)
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as info:
        fd = export_dma_buf(exporter, region_index, **kwargs)
        os.close(fd)  # not reached unless the kernel accepted the request
    hil_details["errno"] = errname(info.value.errno)
    assert info.value.errno == case.expected, f"{case.source}: got {errname(info.value.errno)}"
    assert set(os.listdir("/proc/self/fd")) == fds_before, "a failed export must not leave an fd"


def test_argsz_does_not_bound_ranges(exporter: VfioDevice, hil_details: Details) -> None:
    """argsz is checked against the fixed part only (vfio.h:282); the kernel then copies nr_ranges
    entries (vfio_pci_dmabuf.c:254) whether argsz covers them or not. Pinned like the overlap case:
    a kernel that starts checking argsz against nr_ranges changes the uapi (this test then fails)."""
    fd = export_dma_buf(exporter, BAR, _ranges((0, PAGE)), argsz=HEADER + FIXED)
    try:
        hil_details["accepted_argsz_without_ranges"] = True
        assert dmabuf_size(fd) == PAGE
    finally:
        os.close(fd)


# --- release -----------------------------------------------------------------------------------


def _vfio_dmabuf_inodes() -> set[int] | None:
    entries = bufinfo()
    return None if entries is None else {e.ino for e in entries if e.exp_name == EXP_NAME}


def test_close_releases_dmabuf(exporter: VfioDevice, hil_details: Details) -> None:
    before = _vfio_dmabuf_inodes()
    if before is None:
        pytest.skip("no debugfs dma_buf/bufinfo in this guest")
    fd = _export_checked(exporter, [DmaRange(0, PAGE)], hil_details)
    ino = fd_inode(fd)
    live = _vfio_dmabuf_inodes()
    os.close(fd)
    after = _vfio_dmabuf_inodes()
    hil_details.update(ino=ino, live_before=sorted(before), live_after=sorted(after or ()))
    assert live is not None and ino in live, "an exported dma-buf is listed in bufinfo"
    assert after == before, "closing the only fd releases the dma-buf"


def test_device_close_with_dmabuf_open(exporter: VfioDevice, exporter_bdf: str, hil_details: Details) -> None:
    """Closing the device first goes through vfio_pci_dma_buf_cleanup (revoke, detach from the
    device): it must not block with no importer, the dma-buf fd must stay usable, and the device
    must open and export again afterwards."""
    fd = _export_checked(exporter, [DmaRange(0, 4 * PAGE)], hil_details)
    try:
        exporter.close()
        assert dmabuf_size(fd) == 4 * PAGE
        assert fdinfo(fd)["exp_name"] == EXP_NAME
    finally:
        os.close(fd)
    with open_device(exporter_bdf) as again:
        fd2 = export_dma_buf(again, BAR, [DmaRange(0, PAGE)])
        assert dmabuf_size(fd2) == PAGE
        os.close(fd2)
    assert (_vfio_dmabuf_inodes() or set()) == set(), "no vfio dma-buf outlives its fds"


def test_reopen_after_release(exporter: VfioDevice, exporter_bdf: str, hil_details: Details) -> None:
    fd = _export_checked(exporter, [DmaRange(0, PAGE)], hil_details)
    os.close(fd)
    exporter.close()
    with open_device(exporter_bdf) as again:
        fd2 = export_dma_buf(again, BAR, [DmaRange(0, PAGE)])
        try:
            assert dmabuf_size(fd2) == PAGE
        finally:
            os.close(fd2)

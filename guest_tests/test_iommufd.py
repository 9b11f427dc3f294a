"""The iommufd importer, from user space, with real DMA: what a VMM does so that one passthrough device
(edu) DMAs into another's BAR (the exporter's ivshmem BAR2) through a VFIO dma-buf.

The exporter is opened through the legacy VFIO container (the session's `exporter` fixture, type1) and
exports its BAR as a dma-buf; edu is opened through its VFIO cdev (/dev/vfio/devices/vfioN), bound to an
iommufd (VFIO_DEVICE_BIND_IOMMUFD) and attached to an IOAS (VFIO_DEVICE_ATTACH_IOMMUFD_PT); the dma-buf is
mapped into that IOAS with IOMMU_IOAS_MAP_FILE at a chosen IOVA, and edu's DMA engine, driven through its
mmap'd BAR0, reads and writes the BAR through that IOVA. The two devices are in different IOMMU groups,
so mixing the legacy container (exporter) and the cdev (edu) is allowed (vfio_device_block_group() only
blocks edu's own group); test_iommufd_cdev_matches_prediction records that both are open at once.

Kernel v7.2.13 paths, with the lines that decide:
- drivers/iommu/iommufd/io_pagetable.c iopt_map_file_pages: dma_buf_get(fd) -> iopt_alloc_dmabuf_pages;
- drivers/iommu/iommufd/pages.c iopt_map_dmabuf: dma_buf_dynamic_attach (vfio_pci_dma_buf_attach: ENODEV
  when revoked, vfio_pci_dmabuf.c:33-34), dma_buf_pin, then vfio_pci_dma_buf_iommufd_map()
  (vfio_pci_dmabuf.c:121-140: one range only, else EOPNOTSUPP at :135-136) hands over the BAR's physical
  range; pfn_reader_fill_dmabuf maps phys + offset at the IOVA (pages.c:1097-1112).
- Revocation: vfio_pci_dma_buf_move(vdev, true) calls dma_buf_invalidate_mappings(); iommufd's
  iopt_revoke_notify (pages.c:1434-1451) unmaps every domain's range of the area and sets phys.len = 0.
  It returns early when already revoked (pages.c:1440-1441), so the un-revoke that follows (memory enable
  back on, the end of a reset) does not bring the area back: the IOVA stays dead until user space
  unmaps it and maps the dma-buf again. That is what each revocation test checks, with real DMA.

The host seeded 4 KiB of random bytes at BAR offset 1 MiB (harness/hostcheck.py). Each test writes to
its own 64 KiB slot from 8 MiB on (unaligned by 0x40 inside it), so the host checks of all tests hold at
once after the VM stops: a copy where the IOVA maps, zeros where it must not.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hil_importer.edu import FaultLog
from hil_importer.host import HostRequestError, host_request, wait_until
from hil_importer.pci import bar as pci_bar
from hil_importer.revoke import (
    PCI_COMMAND_MEMORY,
    VFIO_DEVICE_FLAGS_RESET,
    device_flags,
    read_command,
    request_eventfd,
    reset_device,
    set_memory_enable,
    wait_readable,
)
from hil_iommufd.cdev import DEV_VFIO_DEVICES, PCI_DEVICES, CdevDevice, cdev_name
from hil_iommufd.edu import BUFFER_SIZE, FROM_ADDR, TO_ADDR, Transfer, check_transfer
from hil_iommufd.importer import SCRATCH_PAGES, IommufdImporter
from hil_iommufd.iommufd import DEV_IOMMU, READ_WRITE, Iommufd
from hil_iommufd.uapi import IOMMU_IOAS_MAP_FIXED_IOVA
from hil_vfio import (
    DmaRange,
    NoIommuUnsupportedError,
    VfioDevice,
    bind_to_vfio,
    errname,
    export_dma_buf,
    open_device,
    region_info,
    resolve_bdf,
)
from hil_vfio.sysfs import PCI_DRIVERS_PROBE, VfioSetupError, current_driver
from hil_vfio.uapi import VFIO_PCI_BAR2_REGION_INDEX

from harness.guest.checks import DETAILS_KEY, Seed, check_spec, load_seeds, seed_bytes
from harness.guest.plan import DeviceSpec, GuestPlan, MissingExpectationError, PairExpectation

BAR = VFIO_PCI_BAR2_REGION_INDEX
PAGE = mmap.PAGESIZE
# The dma-buf mappings go at 64 GiB: above the 4 GiB hole (the MSI window 0xfee00000, an intel-iommu
# reserved region), so that even an 8 GiB BAR fits; below QEMU's 39- and 48-bit vIOMMU address widths.
BAR_IOVA = 0x10_0000_0000
MSI_IOVA = 0xFEE0_0000  # intel-iommu's IOMMU_RESV_MSI region (drivers/iommu/intel/iommu.c:3457-3459)
WINDOW = (1 << 20, 16 << 20)  # (BAR offset, length): the "slice" export and the "offset" map
SLOT_BASE = 8 << 20
SLOT_SIZE = 0x10000
SLOT_SKEW = 0x40  # an unaligned destination: edu moves bytes, not pages
GUARD = 256
UNPLUG_TIMEOUT_S = 60.0
RESET_EAGAIN_TRIES = 5
NO_HOST_AGENT = "needs the host agent (QMP), which a raw reproduction does not have"

# Every destination slot, by name: one owner each, so all host checks hold together.
SLOTS = {
    name: index
    for index, name in enumerate(
        [
            "whole", "slice", "offset", "unmap.before", "unmap.after", "noiommu",
            *(f"{means}.{step}" for means in ("memory", "reset", "close", "unplug")
              for step in ("before", "revoked", "stale", "again")),
        ]
    )
}  # fmt: skip


def slot(name: str) -> int:
    return SLOT_BASE + SLOTS[name] * SLOT_SIZE + SLOT_SKEW


# --- plan lookups --------------------------------------------------------------------------------


def _edu_spec(plan: GuestPlan) -> DeviceSpec:
    for dev in plan.devices_with_role("dma"):
        if dev.kind == "edu":
            return dev
    pytest.skip(f"topology {plan.topology} has no edu device with role dma")


def _expectation(plan: GuestPlan, exporter_id: str, edu_id: str) -> PairExpectation:
    try:
        exp = plan.expectation(exporter_id, edu_id)
    except MissingExpectationError as exc:
        pytest.fail(str(exc))
    if exp.iommufd_dma is None:
        pytest.fail(f"the oracle made no iommufd prediction for {exporter_id} -> {edu_id}: harness bug")
    return exp


def _seed(plan: GuestPlan, exporter_id: str) -> tuple[Seed, bytes]:
    for seed in load_seeds(plan.run_dir):
        if seed.device == exporter_id:
            return seed, seed_bytes(plan.run_dir, seed)
    pytest.fail(f"the host recorded no seed for {exporter_id} in {plan.run_dir}: harness bug")


# --- fixtures ------------------------------------------------------------------------------------


def _unbind_from_vfio(bdf: str, driver_before: str | None) -> None:
    """Give edu back as it was: the kernel-module edu tests need it without a driver."""
    if current_driver(bdf) == "vfio-pci":
        (PCI_DEVICES / bdf / "driver" / "unbind").write_text(bdf)
    (PCI_DEVICES / bdf / "driver_override").write_text("\n")
    if driver_before is not None:
        PCI_DRIVERS_PROBE.write_text(bdf)


@pytest.fixture(scope="module")
def edu_bdf(plan: GuestPlan) -> Iterator[str]:
    """edu bound to vfio-pci for this module's tests, given back (unbound) afterwards."""
    if not Path(DEV_IOMMU).exists():
        # A property of the kernel under test (Debian's stock 7.2 config has IOMMUFD off), not a failure.
        pytest.skip(
            f"kernel {platform.release()} has no iommufd: {DEV_IOMMU} is missing (CONFIG_IOMMUFD off)"
        )
    spec = _edu_spec(plan)
    bdf = resolve_bdf(spec.sysfs_glob)
    before = current_driver(bdf)
    try:
        bind_to_vfio(bdf)
    except NoIommuUnsupportedError as exc:
        pytest.skip(str(exc))
    try:
        yield bdf
    finally:
        _unbind_from_vfio(bdf, before)


@dataclass
class Case:
    plan: GuestPlan
    exporter: VfioDevice
    exporter_spec: DeviceSpec
    expectation: PairExpectation
    details: dict[str, Any]
    seed: Seed
    pattern: bytes

    @property
    def bar_size(self) -> int:
        return int(self.exporter_spec.bars[BAR])

    def export(
        self, imp: IommufdImporter, ranges: list[tuple[int, int]] | None = None, dev: VfioDevice | None = None
    ) -> int:
        wanted = [(0, self.bar_size)] if ranges is None else ranges
        fd = export_dma_buf(dev or self.exporter, BAR, [DmaRange(o, n) for o, n in wanted])
        imp.fds.append(fd)
        return fd

    def read_bar(self, offset: int, length: int, dev: VfioDevice | None = None) -> bytes:
        device = dev or self.exporter
        return os.pread(device.device_fd, length, region_info(device, BAR).offset + offset)

    def expect_copy(self, offset: int, what: str) -> None:
        """The host must find the seed at `offset`, and zeros just around it."""
        checks = self.details.setdefault(DETAILS_KEY, [])
        exporter_id, n = self.exporter_spec.id, len(self.pattern)
        checks += [
            check_spec(exporter_id, offset, self.pattern, what),
            check_spec(exporter_id, offset - GUARD, bytes(GUARD), f"zeros before: {what}"),
            check_spec(exporter_id, offset + n, bytes(GUARD), f"zeros after: {what}"),
        ]

    def expect_untouched(self, offset: int, what: str) -> None:
        """The host must find zeros where a DMA that must not reach the BAR was aimed."""
        checks = self.details.setdefault(DETAILS_KEY, [])
        checks.append(
            check_spec(self.exporter_spec.id, offset - GUARD, bytes(len(self.pattern) + 2 * GUARD), what)
        )


def _case(
    plan: GuestPlan, exporter: VfioDevice, exporter_spec: DeviceSpec, details: dict[str, Any], want: str
) -> Case:
    """The case when the oracle predicts `want` for edu's iommufd import, else skip saying what it is."""
    exp = _expectation(plan, exporter_spec.id, _edu_spec(plan).id)
    details.update(
        route=exp.route, qemu_dma=exp.qemu_dma, iommufd_dma=exp.iommufd_dma, iommufd_why=exp.iommufd_why
    )
    if exp.iommufd_dma != want:
        pytest.skip(f"needs iommufd_dma {want}; here edu's is {exp.iommufd_dma} ({exp.iommufd_why})")
    seed, pattern = _seed(plan, exporter_spec.id)
    assert len(pattern) <= BUFFER_SIZE
    return Case(plan, exporter, exporter_spec, exp, details, seed, pattern)


@pytest.fixture
def case(
    plan: GuestPlan,
    exporter: VfioDevice,
    exporter_spec: DeviceSpec,
    edu_bdf: str,
    hil_details: dict[str, Any],
) -> Case:
    """edu's DMA goes through an IOMMU that the IOAS programs."""
    return _case(plan, exporter, exporter_spec, hil_details, "reaches_bar")


@pytest.fixture
def noiommu_case(
    plan: GuestPlan,
    exporter: VfioDevice,
    exporter_spec: DeviceSpec,
    edu_bdf: str,
    hil_details: dict[str, Any],
) -> Case:
    """edu has no IOMMU and binds to an iommufd anyway (7.3's IOMMUFD_NOIOMMU)."""
    return _case(plan, exporter, exporter_spec, hil_details, "noiommu_cdev")


@pytest.fixture
def imp(case: Case, edu_bdf: str) -> Iterator[IommufdImporter]:
    """Requested after `case` (so after `exporter`): closed first, the IOAS gone before the exporter."""
    importer = IommufdImporter.open(edu_bdf)
    case.details.update(
        devid=importer.devid,
        hwpt_id=importer.hwpt_id,
        iova_alignment=importer.iova_alignment,
        iova_ranges=[f"{r.start:#x}-{r.last:#x}" for r in importer.iova_ranges],
    )
    try:
        yield importer
    finally:
        importer.close()


# --- edu moves -----------------------------------------------------------------------------------


@pytest.fixture
def mover(case: Case, imp: IommufdImporter) -> Iterator[Mover]:
    """edu's transfers, and the vIOMMU faults logged from here on (before the test exports or maps)."""
    with FaultLog() as log:
        yield Mover(case, imp, log)


class Mover:
    """edu's transfers for one test, each recorded in the details."""

    def __init__(
        self,
        case: Case,
        imp: IommufdImporter,
        log: FaultLog,
        to_device: Callable[[int, int], int] | None = None,
    ) -> None:
        self.case, self.imp, self.log = case, imp, log
        # What edu is given for an IOVA of the IOAS: the IOVA itself behind an IOMMU; without one, the
        # physical address the IOAS holds for it (physical_addresses).
        self.to_device = to_device
        self.transfers: list[Transfer] = []
        case.details["transfers"] = []

    def _run(self, direction: int, iova: int, length: int) -> None:
        check_transfer(direction, length, 0)
        address = iova if self.to_device is None else self.to_device(iova, length)
        transfer = self.imp.edu.dma(direction, address, length)
        self.transfers.append(transfer)
        via = "" if self.to_device is None else f"iova {iova:#x} = "
        self.case.details["transfers"].append(via + transfer.describe())

    def clear_buffer(self) -> bytes:
        """Fill edu's buffer from scratch page 0 with fresh random bytes (and prove that path works):
        afterwards the buffer holds the seed only if a later read through the dma-buf brought it."""
        noise = os.urandom(len(self.case.pattern))
        self.imp.scratch_write(0, noise)
        self.imp.scratch_write(1, bytes(len(noise)))
        self._run(FROM_ADDR, self.imp.scratch_iova(0), len(noise))
        self._run(TO_ADDR, self.imp.scratch_iova(1), len(noise))
        got = self.imp.scratch_read(1, len(noise))
        assert got == noise, "edu did not copy ordinary memory through the IOAS (scratch page 0 -> 1)"
        return noise

    def load_seed(self, bar_iova: int) -> None:
        """edu reads the host's seed through the dma-buf mapping; scratch page 1 shows what it read."""
        n = len(self.case.pattern)
        self._run(FROM_ADDR, bar_iova, n)
        self._run(TO_ADDR, self.imp.scratch_iova(1), n)
        got = self.imp.scratch_read(1, n)
        diff = _first_difference(got, self.case.pattern)
        assert got == self.case.pattern, f"edu did not read the seed through IOVA {bar_iova:#x}: {diff}"

    def store(self, bar_iova: int) -> None:
        """edu writes its buffer (the seed, after load_seed) to the BAR through `bar_iova`."""
        self._run(TO_ADDR, bar_iova, len(self.case.pattern))

    def faults(self) -> list[str]:
        found = self.log.faults()
        self.case.details["iommu_faults"] = found[:8]
        return found


def _first_difference(got: bytes, want: bytes) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a != b:
            return f"first at +{i:#x}: got {got[i : i + 16].hex()} want {want[i : i + 16].hex()}"
    return "none"


def _copy_lands(
    case: Case, mover: Mover, src_iova: int, dst_iova: int, dst: int, what: str, dev: VfioDevice | None = None
) -> None:
    """Seed in through `src_iova`, out through `dst_iova` to BAR offset `dst`: the guest sees it at once,
    the host checks the backing file later."""
    before = case.read_bar(dst - GUARD, len(case.pattern) + 2 * GUARD, dev)
    assert before == bytes(len(before)), f"BAR offset {dst:#x} is not zero before the copy: slot reused?"
    mover.clear_buffer()
    mover.load_seed(src_iova)
    mover.store(dst_iova)
    case.expect_copy(dst, what)
    got = case.read_bar(dst, len(case.pattern), dev)
    assert got == case.pattern, (
        f"the BAR does not hold the seed at {dst:#x}: {_first_difference(got, case.pattern)}"
    )


def _dead_store(case: Case, mover: Mover, dst_iova: int, dst: int, what: str) -> None:
    """edu (holding the seed) writes through an IOVA that must no longer reach the BAR: zeros stay."""
    mover.store(dst_iova)
    case.expect_untouched(dst, what)


# --- the prediction itself -----------------------------------------------------------------------


def test_iommufd_cdev_matches_prediction(
    plan: GuestPlan,
    exporter: VfioDevice,
    exporter_spec: DeviceSpec,
    edu_bdf: str,
    hil_details: dict[str, Any],
) -> None:
    """The oracle's iommufd prediction against the device: a cdev that binds and attaches to an IOAS
    (with the exporter open through the legacy container at the same time), or no cdev at all."""
    exp = _expectation(plan, exporter_spec.id, _edu_spec(plan).id)
    hil_details.update(
        route=exp.route,
        iommufd_dma=exp.iommufd_dma,
        iommufd_why=exp.iommufd_why,
        exporter_api=f"legacy container, IOMMU type {exporter.iommu_type}",
    )
    sysfs_names = sorted(p.name for p in (PCI_DEVICES / edu_bdf / "vfio-dev").iterdir())
    hil_details["vfio_dev"] = sysfs_names
    assert len(sysfs_names) == 1, f"vfio-pci registered {sysfs_names} for {edu_bdf}"
    node = DEV_VFIO_DEVICES / sysfs_names[0]
    if exp.iommufd_dma == "noiommu_cdev":
        # drivers/vfio/vfio_main.c:326-340 (7.3, IOMMUFD_NOIOMMU): named for what it is, and it binds.
        assert sysfs_names[0].startswith("noiommu-vfio"), f"{sysfs_names[0]}: {exp.iommufd_why}"
        assert node.exists(), f"no {node}: {exp.iommufd_why}"
        with contextlib.closing(Iommufd()) as ctx, contextlib.closing(CdevDevice.open(edu_bdf)) as dev:
            hil_details.update(cdev=sysfs_names[0], devid=dev.bind(ctx.fd))
        return
    if exp.iommufd_dma == "no_cdev":
        # drivers/vfio/vfio.h:361-363: a no-IOMMU vfio_device is device_add()ed without a cdev.
        assert not node.exists(), f"{node} exists although the oracle said no cdev ({exp.iommufd_why})"
        return
    assert exp.iommufd_dma == "reaches_bar"
    assert node.exists(), f"no {node}: {exp.iommufd_why}"
    with contextlib.closing(IommufdImporter.open(edu_bdf)) as importer:
        hil_details.update(
            devid=importer.devid,
            hwpt_id=importer.hwpt_id,
            cdev=cdev_name(edu_bdf),
            iova_alignment=importer.iova_alignment,
            iova_ranges=[f"{r.start:#x}-{r.last:#x}" for r in importer.iova_ranges],
        )
        # io_pagetable.c:1168-1170: the domain's smallest page size, 4 KiB on VT-d, is the alignment.
        assert importer.iova_alignment == PAGE
        assert importer.hwpt_id != importer.iommufd.ioas_id, "attach must create a hw pagetable for the IOAS"
        bar_size = int(exporter_spec.bars[BAR])
        assert importer.iova_allowed(BAR_IOVA, bar_size), f"IOVA {BAR_IOVA:#x}+{bar_size:#x} is not allowed"
        assert not importer.iova_allowed(MSI_IOVA, PAGE), "the MSI window is not reserved in the IOAS"


# --- bytes through IOMMU_IOAS_MAP_FILE -----------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How the BAR is exported and mapped: (offset, length) of the export, and of the map within it."""

    export: tuple[int, int] | None  # None: the whole BAR
    map_start: int
    map_length: int | None  # None: the whole dma-buf
    bar_offset_of_iova0: int  # BAR offset that BAR_IOVA reaches


SHAPES = {
    "whole": Shape(None, 0, None, 0),
    # The dma-buf is a window of the BAR: VFIO's range -> physical arithmetic (vfio_pci_core_fill_phys_vec).
    "slice": Shape(WINDOW, 0, None, WINDOW[0]),
    # The dma-buf is the whole BAR, mapped from an offset: iommufd's pages->dmabuf.start (pages.c:1559).
    "offset": Shape(None, WINDOW[0], WINDOW[1], WINDOW[0]),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_iommufd_dma_through_map_file(case: Case, imp: IommufdImporter, mover: Mover, shape: str) -> None:
    """edu reads the host's seed from the BAR through the IOAS mapping and writes it back elsewhere."""
    spec = SHAPES[shape]
    fd = case.export(imp, None if spec.export is None else [spec.export])
    size = case.bar_size if spec.export is None else spec.export[1]
    length = size - spec.map_start if spec.map_length is None else spec.map_length
    started = time.monotonic()
    iova = imp.iommufd.map_file(fd, spec.map_start, length, BAR_IOVA)
    case.details.update(
        shape=shape,
        map_file_s=round(time.monotonic() - started, 4),
        iova=hex(iova),
        map=f"dma-buf {fd} [{spec.map_start:#x}, +{length:#x}) at {iova:#x}",
    )
    assert iova == BAR_IOVA, "FIXED_IOVA: the kernel must map exactly where asked"

    def at(bar_offset: int) -> int:
        return BAR_IOVA + bar_offset - spec.bar_offset_of_iova0

    dst = slot(shape)
    _copy_lands(case, mover, at(case.seed.offset), at(dst), dst, f"iommufd {shape}: edu's copy via IOVA")
    assert not mover.faults(), "the vIOMMU refused edu's DMA through the mapping"
    assert imp.iommufd.unmap(BAR_IOVA, length) == length


# --- refused requests ----------------------------------------------------------------------------


def test_iommufd_refused_requests(case: Case, imp: IommufdImporter) -> None:
    """What IOMMU_IOAS_MAP_FILE refuses, each with the errno its source line returns (v7.2.13)."""
    size = case.bar_size
    whole = case.export(imp)
    two_ranges = case.export(imp, [(0, PAGE), (2 * PAGE, PAGE)])
    ctx = imp.iommufd
    free = BAR_IOVA + size  # each refused request aims past the mapping made below
    ctx.map_file(whole, 0, PAGE, BAR_IOVA)  # for the overlap case
    rw_fixed = READ_WRITE | IOMMU_IOAS_MAP_FIXED_IOVA
    cases: dict[str, tuple[Callable[[], int], int, str]] = {
        "several ranges": (
            lambda: ctx.map_file(two_ranges, 0, 2 * PAGE, free),
            errno.EOPNOTSUPP,
            "drivers/vfio/pci/vfio_pci_dmabuf.c:135-136 (nr_ranges != 1)",
        ),
        "unaligned start": (
            lambda: ctx.map_file(whole, 0x40, PAGE, free),
            errno.EINVAL,
            "drivers/iommu/iommufd/io_pagetable.c:221-222 (page_offset & iova_alignment)",
        ),
        "unaligned length": (
            lambda: ctx.map_file(whole, 0, PAGE + 0x40, free),
            errno.EINVAL,
            "drivers/iommu/iommufd/io_pagetable.c:273-275 (length & iova_alignment)",
        ),
        "unaligned iova": (
            lambda: ctx.map_file(whole, 0, PAGE, free + 0x40),
            errno.EINVAL,
            "drivers/iommu/iommufd/io_pagetable.c:190-191 (iova & iova_alignment)",
        ),
        "length past the end": (
            lambda: ctx.map_file(whole, size - PAGE, 2 * PAGE, free),
            errno.EINVAL,
            "drivers/iommu/iommufd/pages.c:1540-1542 (dmabuf->size <= start + length - 1)",
        ),
        "start at the end": (
            lambda: ctx.map_file(whole, size, PAGE, free),
            errno.EINVAL,
            "drivers/iommu/iommufd/pages.c:1540-1542 (dmabuf->size <= start + length - 1)",
        ),
        "zero length": (
            lambda: ctx.map_file(whole, 0, 0, free),
            errno.EINVAL,
            "drivers/iommu/iommufd/io_pagetable.c:492-493 (!length)",
        ),
        "start + length overflows": (
            lambda: ctx.map_file(whole, (1 << 64) - PAGE, 2 * PAGE, free),
            errno.EOVERFLOW,
            "drivers/iommu/iommufd/io_pagetable.c:494-495",
        ),
        "neither readable nor writeable": (
            lambda: ctx.map_file(whole, 0, PAGE, free, flags=IOMMU_IOAS_MAP_FIXED_IOVA),
            errno.EINVAL,
            "drivers/iommu/iommufd/ioas.c:220-222",
        ),
        "unknown flag": (
            lambda: ctx.map_file(whole, 0, PAGE, free, flags=rw_fixed | 1 << 3),
            errno.EOPNOTSUPP,
            "drivers/iommu/iommufd/ioas.c:212-215",
        ),
        "iova in the MSI window": (
            lambda: ctx.map_file(whole, 0, PAGE, MSI_IOVA),
            errno.EINVAL,
            "drivers/iommu/iommufd/io_pagetable.c:196-197 (reserved IOVA)",
        ),
        "iova already mapped": (
            lambda: ctx.map_file(whole, PAGE, PAGE, BAR_IOVA),
            errno.EEXIST,
            "drivers/iommu/iommufd/io_pagetable.c:200-202",
        ),
    }
    seen: dict[str, str] = {}
    wrong: list[str] = []
    for name, (call, want, where) in cases.items():
        try:
            got = call()
        except OSError as exc:
            seen[name] = errname(exc.errno)
            if exc.errno != want:
                wrong.append(f"{name}: {errname(exc.errno)}, expected {errname(want)} from {where}")
            continue
        seen[name] = f"mapped at {got:#x}"
        wrong.append(f"{name}: mapped at {got:#x}, expected {errname(want)} from {where}")
    case.details["errnos"] = seen
    case.details["sources"] = {name: where for name, (_c, _w, where) in cases.items()}
    assert not wrong, "; ".join(wrong)
    # Nothing refused left an area behind: unmapping everything (iova 0, length U64_MAX: ioas.c:351-354)
    # finds only the page mapped above and the importer's scratch buffer.
    assert ctx.unmap(0, (1 << 64) - 1) == PAGE + SCRATCH_PAGES * PAGE


# --- IOAS unmap ----------------------------------------------------------------------------------


def physical_addresses(ioas: Iommufd) -> Callable[[int, int], int]:
    """IOVA -> the physical address IOMMU_IOAS_NOIOMMU_GET_PA reports, which must cover the whole transfer
    contiguously (edu moves one contiguous range)."""

    def to_device(iova: int, length: int) -> int:
        phys, contiguous = ioas.noiommu_get_pa(iova, length)
        assert contiguous == length, (
            f"NOIOMMU_GET_PA(iova {iova:#x}, length {length:#x}): only {contiguous:#x} bytes contiguous"
        )
        return phys

    return to_device


def test_iommufd_noiommu_dma_by_physical_address(noiommu_case: Case, edu_bdf: str) -> None:
    """7.3's no-IOMMU iommufd flow, as a VMM drives it: the dma-buf mapped into the IOAS, the physical
    address behind each IOVA from IOMMU_IOAS_NOIOMMU_GET_PA (ioas.c:379-411, io_pagetable.c:866-940)
    given to edu, the bytes in the BAR; revoked, the dma-buf's IOVAs have no physical address (EINVAL), and
    get none back when the exporter recovers, only by a new map."""
    case = noiommu_case
    size = case.bar_size
    with contextlib.closing(IommufdImporter.open(edu_bdf)) as imp, FaultLog() as log:
        case.details.update(devid=imp.devid, hwpt_id=imp.hwpt_id, cdev=cdev_name(edu_bdf))
        fd = case.export(imp)
        imp.iommufd.map_file(fd, 0, size, BAR_IOVA)
        bar_phys = pci_bar(case.exporter.bdf, BAR).start
        get_pa = imp.iommufd.noiommu_get_pa
        answers = {
            "whole": get_pa(BAR_IOVA, size),
            "unaligned": get_pa(BAR_IOVA + 0x100, size),
            "capped": get_pa(BAR_IOVA + PAGE, 3 * PAGE),
            "last page": get_pa(BAR_IOVA + size - PAGE, 2 * PAGE),
        }
        case.details.update(
            bar_phys=hex(bar_phys), get_pa={k: [hex(v) for v in a] for k, a in answers.items()}
        )
        # The BAR is one physically contiguous range: every answer is the BAR's address plus the offset,
        # as long as the caller allows and the mapping lasts.
        assert answers == {
            "whole": (bar_phys, size),
            "unaligned": (bar_phys + 0x100, size - 0x100),
            "capped": (bar_phys + PAGE, 3 * PAGE),
            "last page": (bar_phys + size - PAGE, PAGE),
        }
        bad_queries: dict[str, Callable[[], tuple[int, int]]] = {
            "past the mapping": lambda: get_pa(BAR_IOVA + size, PAGE),
            "length 0": lambda: get_pa(BAR_IOVA, 0),
            "flags": lambda: get_pa(BAR_IOVA, PAGE, flags=1),
        }
        refused = {}
        for what, query in bad_queries.items():
            with pytest.raises(OSError) as info:
                query()
            refused[what] = errname(info.value.errno)
        case.details["refused"] = refused
        # No area: ENOENT (io_pagetable.c:880-883); length 0: EINVAL, flags: EOPNOTSUPP (ioas.c:388-392)
        expected = {"past the mapping": errno.ENOENT, "length 0": errno.EINVAL, "flags": errno.EOPNOTSUPP}
        assert refused == {what: errname(code) for what, code in expected.items()}

        mover = Mover(case, imp, log, to_device=physical_addresses(imp.iommufd))
        dst = slot("noiommu")
        _copy_lands(
            case,
            mover,
            BAR_IOVA + case.seed.offset,
            BAR_IOVA + dst,
            dst,
            "iommufd without an IOMMU: edu's copy by physical address",
        )
        set_memory_enable(case.exporter, False)
        try:
            with pytest.raises(OSError) as info:
                get_pa(BAR_IOVA, PAGE)
            case.details["get_pa_revoked"] = errname(info.value.errno)
            assert info.value.errno == errno.EINVAL, (
                "io_pagetable.c:888-890: a revoked dma-buf has no address"
            )
            assert get_pa(imp.scratch_iova(0), PAGE)[1] == PAGE, (
                "the user memory in the same IOAS still has one"
            )
        finally:
            set_memory_enable(case.exporter, True)
        # As behind an IOMMU, the area stays revoked after the exporter recovers (pages.c:1439-1455: the
        # dma-buf's ranges are dropped, not restored): still no address, until unmapped and mapped again.
        with pytest.raises(OSError) as info:
            get_pa(BAR_IOVA, PAGE)
        case.details["get_pa_recovered"] = errname(info.value.errno)
        assert info.value.errno == errno.EINVAL, "the revoked area got an address back without a new map"
        assert imp.iommufd.unmap(BAR_IOVA, size) == size
        imp.iommufd.map_file(fd, 0, size, BAR_IOVA)
        assert get_pa(BAR_IOVA, PAGE) == (bar_phys, PAGE), "mapped again, the dma-buf has its address back"


def test_iommufd_unmap_stops_dma(case: Case, imp: IommufdImporter, mover: Mover) -> None:
    """After IOMMU_IOAS_UNMAP, edu's DMA through the old IOVA no longer reaches the BAR."""
    fd = case.export(imp)
    imp.iommufd.map_file(fd, 0, case.bar_size, BAR_IOVA)
    before, after = slot("unmap.before"), slot("unmap.after")
    _copy_lands(
        case, mover, BAR_IOVA + case.seed.offset, BAR_IOVA + before, before, "iommufd: copy before unmap"
    )
    assert imp.iommufd.unmap(BAR_IOVA, case.bar_size) == case.bar_size
    _dead_store(case, mover, BAR_IOVA + after, after, "iommufd: edu's write after IOAS unmap")
    case.details["faults_after_unmap"] = len(mover.faults())
    got = case.read_bar(after - GUARD, len(case.pattern) + 2 * GUARD)
    assert got == bytes(len(got)), f"edu's write through an unmapped IOVA reached the BAR at {after:#x}"
    with pytest.raises(OSError) as info:
        imp.iommufd.unmap(BAR_IOVA, case.bar_size)
    case.details["second_unmap"] = errname(info.value.errno)
    assert info.value.errno == errno.ENOENT, "drivers/iommu/iommufd/ioas.c:364-366: nothing was unmapped"


# --- revocation while mapped ---------------------------------------------------------------------


@dataclass
class Revoked:
    """What a revocation means leaves: the exporter device to use afterwards (None: must reopen)."""

    device: VfioDevice | None
    fd_survives: bool  # the same dma-buf can be mapped again once the exporter recovered
    # User space sees the revoked state after the call that revoked (False: revoked and un-revoked within
    # that one call, so a MAP_FILE right after it succeeds).
    window: bool = True


def _revoke_memory(case: Case, recover: list[Callable[[], None]]) -> Revoked:
    set_memory_enable(case.exporter, False)
    recover.append(lambda: set_memory_enable(case.exporter, True))
    case.details["command_revoked"] = hex(read_command(case.exporter))
    return Revoked(case.exporter, fd_survives=True)


def _revoke_reset(case: Case, recover: list[Callable[[], None]]) -> Revoked:
    flags = device_flags(case.exporter)
    case.details["device_flags"] = hex(flags)
    if not flags & VFIO_DEVICE_FLAGS_RESET:
        pytest.skip(
            f"VFIO_DEVICE_GET_INFO: {case.exporter.bdf} has no VFIO_DEVICE_FLAGS_RESET (ivshmem has no "
            "FLR or PM reset; a bus reset needs it alone below its port)"
        )
    for attempt in range(RESET_EAGAIN_TRIES):
        try:
            reset_device(case.exporter)
            break
        except OSError as exc:
            case.details["reset_errno"] = errname(exc.errno)
            if exc.errno in (errno.EINVAL, errno.ENOTTY):
                pytest.skip(
                    f"VFIO_DEVICE_RESET on {case.exporter.bdf}: {errname(exc.errno)} (no reset method)"
                )
            if exc.errno != errno.EAGAIN or attempt == RESET_EAGAIN_TRIES - 1:
                raise
            time.sleep(0.2)
    # vfio_pci_core.c:1339-1342 (vfio_pci_ioctl_reset): revoked around pci_try_reset_function(), un-revoked
    # after it, all under memory_lock inside the ioctl; memory stays enabled (config space restored).
    assert read_command(case.exporter) & PCI_COMMAND_MEMORY, "the reset left memory disabled"
    return Revoked(case.exporter, fd_survives=True, window=False)


def _revoke_close(case: Case, recover: list[Callable[[], None]]) -> Revoked:
    case.exporter.close()  # vfio_pci_core_close_device -> vfio_pci_dma_buf_cleanup: revoked for good
    return Revoked(None, fd_survives=False)


def _hotplug_slot(bdf: str) -> Path | None:
    slots = Path("/sys/bus/pci/slots")
    address = bdf.rsplit(".", 1)[0]
    if not slots.is_dir():
        return None
    for entry in sorted(slots.iterdir()):
        with contextlib.suppress(OSError):
            if (entry / "address").read_text().strip() == address and (entry / "power").exists():
                return entry
    return None


def _present(glob_pattern: str) -> bool:
    try:
        resolve_bdf(glob_pattern)
    except VfioSetupError:
        return False
    return True


def _revoke_unplug(case: Case, recover: list[Callable[[], None]]) -> Revoked:
    bdf, plan = case.exporter.bdf, case.plan
    if not plan.host_agent:
        pytest.skip(NO_HOST_AGENT)
    hotplug = _hotplug_slot(bdf)
    if hotplug is None:
        pytest.skip(f"no hotplug slot manages {bdf} (/sys/bus/pci/slots): the guest cannot let it go")
    spec = case.exporter_spec

    def replug() -> None:
        if wait_until(lambda: not (PCI_DEVICES / bdf).exists(), UNPLUG_TIMEOUT_S) is None:
            pytest.fail(f"{bdf} was never removed after device_del: not plugging it back")
        host_request(plan.run_dir, "device_add", spec.id)
        if wait_until(lambda: _present(spec.sysfs_glob), UNPLUG_TIMEOUT_S) is None:
            pytest.fail(f"{spec.id} did not come back within {UNPLUG_TIMEOUT_S:.0f} s of device_add")
        bind_to_vfio(resolve_bdf(spec.sysfs_glob))

    efd = request_eventfd(case.exporter)
    try:
        started = time.monotonic()
        recover.append(replug)
        try:
            case.details["host"] = host_request(plan.run_dir, "device_del", spec.id)
        except HostRequestError as exc:
            pytest.fail(str(exc))
        asked = wait_readable(efd, UNPLUG_TIMEOUT_S)
        case.details["request_after_s"] = round(time.monotonic() - started, 2)
        assert asked, f"VFIO never asked for {bdf} back (REQ eventfd) within {UNPLUG_TIMEOUT_S:.0f} s"
        case.exporter.close()
    finally:
        os.close(efd)
    gone = wait_until(lambda: not (PCI_DEVICES / bdf).exists(), UNPLUG_TIMEOUT_S)
    case.details["removed_after_s"] = round(time.monotonic() - started, 2)
    assert gone is not None, f"{bdf} is still in sysfs {UNPLUG_TIMEOUT_S:.0f} s after its release"
    return Revoked(None, fd_survives=False)


REVOKERS: dict[str, Callable[[Case, list[Callable[[], None]]], Revoked]] = {
    "memory": _revoke_memory,
    "reset": _revoke_reset,
    "close": _revoke_close,
    "unplug": _revoke_unplug,
}


@pytest.mark.parametrize("means", list(REVOKERS))
def test_iommufd_revocation_cuts_mapping(case: Case, imp: IommufdImporter, mover: Mover, means: str) -> None:
    """Revoked while mapped: the IOVA stops reaching the BAR, stays dead after the exporter recovers
    (pages.c:1440-1441), and unmapping then mapping (again, or a new dma-buf) makes DMA land again."""
    fd = case.export(imp)
    size = case.bar_size
    imp.iommufd.map_file(fd, 0, size, BAR_IOVA)
    src = BAR_IOVA + case.seed.offset
    _copy_lands(
        case,
        mover,
        src,
        BAR_IOVA + slot(f"{means}.before"),
        slot(f"{means}.before"),
        f"iommufd {means}: copy before the revocation",
    )

    recover: list[Callable[[], None]] = []
    started = time.monotonic()
    try:
        revoked = REVOKERS[means](case, recover)
        case.details["revoke_s"] = round(time.monotonic() - started, 4)
        if revoked.window:
            # While revoked: a new IOMMU_IOAS_MAP_FILE of the dma-buf is refused at attach.
            with pytest.raises(OSError) as info:
                imp.iommufd.map_file(fd, 0, PAGE, BAR_IOVA + size)
            case.details["map_while_revoked"] = errname(info.value.errno)
            assert info.value.errno == errno.ENODEV, (
                "drivers/vfio/pci/vfio_pci_dmabuf.c:33-34: vfio_pci_dma_buf_attach refuses a revoked dma-buf"
            )
        else:
            # Already un-revoked: the dma-buf maps again at once, but that is a new area; the old one
            # stays dead (checked below).
            imp.iommufd.map_file(fd, 0, PAGE, BAR_IOVA + size)
            case.details["map_after_call"] = "mapped"
            assert imp.iommufd.unmap(BAR_IOVA + size, PAGE) == PAGE
        _dead_store(
            case,
            mover,
            BAR_IOVA + slot(f"{means}.revoked"),
            slot(f"{means}.revoked"),
            f"iommufd {means}: edu's write while revoked",
        )
    finally:
        for step in recover:
            step()
    case.details["recovered_s"] = round(time.monotonic() - started, 4)

    device = revoked.device
    reopened: contextlib.ExitStack = contextlib.ExitStack()
    with reopened:
        if device is None:
            device = reopened.enter_context(open_device(resolve_bdf(case.exporter_spec.sysfs_glob)))
        # The exporter works again, but the revoked area does not come back by itself.
        stale = slot(f"{means}.stale")
        _dead_store(case, mover, BAR_IOVA + stale, stale, f"iommufd {means}: edu's write via the stale area")
        # The area is still there (revoked, not removed): user space unmaps it, then maps again.
        assert imp.iommufd.unmap(BAR_IOVA, size) == size
        new_fd = fd if revoked.fd_survives else case.export(imp, dev=device)
        case.details["remapped"] = "same dma-buf" if new_fd == fd else "new dma-buf from the reopened device"
        imp.iommufd.map_file(new_fd, 0, size, BAR_IOVA)
        again = slot(f"{means}.again")
        _copy_lands(
            case,
            mover,
            src,
            BAR_IOVA + again,
            again,
            f"iommufd {means}: copy after mapping again",
            dev=device,
        )
        got_stale = case.read_bar(stale - GUARD, len(case.pattern) + 2 * GUARD, device)
        assert got_stale == bytes(len(got_stale)), (
            f"edu's write through the stale area reached the BAR at {stale:#x}"
        )
        imp.iommufd.unmap(BAR_IOVA, size)
    case.details["faults"] = len(mover.faults())

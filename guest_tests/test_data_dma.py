"""Real bytes through an importer's mapping: edu's DMA engine copies within the exporter's BAR.

The host wrote random bytes (its seed) into the exporter's ivshmem backing file before boot
(harness/hostcheck.py). Here the exporter's BAR is exported as a dma-buf, hil_p2p_importer attaches
it *for the edu function* and maps it, and edu's DMA engine copies the seed from its BAR offset into
edu's buffer and back out to another, unaligned offset: two real DMAs, each translated by the vIOMMU
for edu. The guest reads the BAR through VFIO for an immediate verdict; the authority is the host,
which checks the backing file after the VM has stopped (the record's host_checks): the copy at the
destination, the bytes on either side of it untouched, the source unchanged.

The oracle (plan expectations) says whether QEMU can carry such a DMA at all: a bus-address mapping
behind a translating vIOMMU faults (QEMU does not model switch-local p2p), and a refused route has no
mapping. Those cells skip with that reason; everywhere else the bytes must arrive.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import pytest
from hil_importer import abi
from hil_importer.case import BAR, ImportCase, require_feature
from hil_importer.edu import BUFFER_SIZE, FaultLog, Transfer, dma_address, edu_dma, is_edu
from hil_importer.loader import Manifest
from hil_importer.p2p import P2pImporter
from hil_vfio import VfioDevice, errname, region_info

from harness.guest.checks import DETAILS_KEY, Seed, check_spec, load_seeds, seed_bytes
from harness.guest.plan import GuestPlan

pytest_plugins = ["hil_importer.fixtures"]

MASK_BITS = 64  # edu's engine is 64-bit (QEMU property dma_mask=all ones)
# Destination = seed offset + this: another MiB, not aligned; one per shape, so each test starts clean.
DEST_DELTA = {"whole-bar": 0x100000 + 0x88, "window": 0x140000 + 0x1F4}
GUARD = 256  # bytes on either side of the destination that must stay as they were (zeros)
# Export shapes: the whole BAR, or a one-range window that starts at the seed's page, so that
# dma-buf offset 0 is BAR offset seed.offset (the exporter's range arithmetic is part of the path).
WINDOW = 2 << 20


def _dma_device(plan: GuestPlan) -> str:
    for dev in plan.devices_with_role("dma"):
        if dev.kind == "edu":
            return dev.id
    pytest.skip(f"topology {plan.topology} has no edu device with role dma")


def _seed(plan: GuestPlan, exporter_id: str) -> tuple[Seed, bytes]:
    for seed in load_seeds(plan.run_dir):
        if seed.device == exporter_id:
            return seed, seed_bytes(plan.run_dir, seed)
    pytest.fail(f"the host recorded no seed for {exporter_id} in {plan.run_dir}: harness bug")


def _read_bar(dev: VfioDevice, offset: int, length: int) -> bytes:
    """The BAR's bytes as the CPU sees them through VFIO's region read (not through edu)."""
    region = region_info(dev, BAR)
    return os.pread(dev.device_fd, length, region.offset + offset)


def _first_difference(got: bytes, want: bytes) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a != b:
            return f"first at +{i:#x}: got {got[i : i + 16].hex()} want {want[i : i + 16].hex()}"
    return "none"


@pytest.mark.parametrize("shape", sorted(DEST_DELTA, reverse=True))
def test_edu_copies_through_mapping(
    case: ImportCase, p2p: P2pImporter, p2p_module: Manifest, shape: str
) -> None:
    """edu reads the host's seed through the mapping and writes it back 1 MiB further: the host finds it."""
    require_feature(p2p_module, "revoke_callback")
    plan, exporter_id = case.plan, case.exporter_spec.id
    dma_id = _dma_device(plan)
    exp = case.expectation(dma_id)
    details: dict[str, Any] = case.details
    details.update(route=exp.route, qemu_dma=exp.qemu_dma)
    if exp.qemu_dma != "reaches_bar":
        pytest.skip(
            f"QEMU cannot carry edu's DMA to {exporter_id} here: route {exp.route}, qemu_dma "
            f"{exp.qemu_dma} ({exp.why})"
        )
    seed, pattern = _seed(plan, exporter_id)
    src, dst = seed.offset, seed.offset + DEST_DELTA[shape]
    assert seed.length <= BUFFER_SIZE and dst + seed.length + GUARD <= case.bar_size
    base = 0 if shape == "whole-bar" else seed.offset  # BAR offset of dma-buf offset 0
    fd = case.export([(0, case.bar_size)] if shape == "whole-bar" else [(base, WINDOW)])

    dev = case.function(dma_id)
    assert is_edu(dev.bdf), f"{dma_id} ({dev.bdf}) is not an edu device"
    before = _read_bar(case.exporter, dst - GUARD, seed.length + 2 * GUARD)
    assert before == bytes(len(before)), "the destination is not zero before the copy: the host seeded it?"
    att = p2p.attach(fd, dev, dma_mask_bits=MASK_BITS)
    dma = p2p.map(att.handle, abi.DMA_BIDIRECTIONAL)
    src_addr = dma_address(dma, src - base, seed.length)
    dst_addr = dma_address(dma, dst - base, seed.length)
    details.update(edu=dev.bdf, shape=shape, sg=dma.describe(), src_addr=hex(src_addr),
                   dst_addr=hex(dst_addr))  # fmt: skip
    with FaultLog() as log:
        transfers: list[Transfer] = [
            edu_dma(p2p, dev, src_addr, seed.length, abi.EDU_FROM_ADDR),
            edu_dma(p2p, dev, dst_addr, seed.length, abi.EDU_TO_ADDR),
        ]
        p2p.unmap(att.handle)
        p2p.detach(att.handle)
        faults = log.faults()
    details.update(transfers=[t.describe() for t in transfers], bytes_moved=2 * seed.length,
                   edu_us=[t.elapsed_us for t in transfers], iommu_faults=faults[:8])  # fmt: skip

    # The host's verdict, made after the VM stops, from the backing file itself.
    details[DETAILS_KEY] = [
        check_spec(exporter_id, dst, pattern, f"edu's copy of the seed at BAR offset {dst:#x}"),
        check_spec(exporter_id, dst - GUARD, bytes(GUARD), "the bytes just before the copy stay zero"),
        check_spec(exporter_id, dst + seed.length, bytes(GUARD), "the bytes just after the copy stay zero"),
        check_spec(exporter_id, src, pattern, "the seed itself is unchanged"),
    ]
    got = _read_bar(case.exporter, dst, seed.length)
    assert not faults, f"the IOMMU refused edu's DMA: {faults[:3]}"
    assert got == pattern, f"the BAR does not hold the seed at {dst:#x}: {_first_difference(got, pattern)}"
    around = _read_bar(case.exporter, dst - GUARD, GUARD) + _read_bar(case.exporter, dst + seed.length, GUARD)
    assert around == bytes(2 * GUARD), "edu wrote outside the destination"


def test_edu_dma_argument_errors(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest) -> None:
    """The module refuses transfers that would make QEMU abort (outside edu's buffer) or hit a non-edu."""
    dma_id = _dma_device(case.plan)
    edu = case.function(dma_id)
    not_edu = case.function(case.exporter_spec.id)
    read = abi.EDU_FROM_ADDR
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "zero length": (lambda: edu_dma(p2p, edu, 0, 0, read), errno.EINVAL),
        "past the buffer": (lambda: edu_dma(p2p, edu, 0, 16, read, buf_offset=BUFFER_SIZE - 8), errno.EINVAL),
        "bad direction": (lambda: edu_dma(p2p, edu, 0, 16, 7), errno.EINVAL),
        "not an edu": (lambda: edu_dma(p2p, not_edu, 0, 16, read), errno.ENODEV),
    }
    seen = {}
    for name, (call, want) in cases.items():
        with pytest.raises(OSError) as info:
            call()
        seen[name] = errname(info.value.errno)
        assert info.value.errno == want, f"{name}: {seen[name]}"
    case.details["errnos"] = seen

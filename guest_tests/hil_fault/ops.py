"""The operations under test, each as a sweep.Operation: the call built in advance, the facts a failure
must leave unchanged, and what a completed run must give (its DMA list equal to the one before the
sweep: no IOVA space lost) and how it is undone.

Why the DMA address shows lost IOVA space: dma_buf_phys_vec_to_sgt() takes one IOVA range per mapping
(dma_iova_try_alloc, drivers/iommu/dma-iommu.c), and a 64 MiB range is too large for the per-CPU IOVA
caches (IOVA_RANGE_CACHE_MAX_SIZE), so it comes from the rbtree allocator, which hands out the
highest free range that fits. Freed again, the next mapping gets the same address back - unless a
failed mapping kept its range, then the next one lies below it. The freeing may go through the flush
queue (lazy invalidation without caching-mode: drivers/iommu/dma-iommu.c fq_flush_timeout, 10 ms),
so undoing waits FQ_SETTLE_S first. Whether the address repeats without faults is measured before a
sweep relies on it (MapOp.measure_stability).
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hil_importer import abi
from hil_importer.edu import dma_address, edu_dma
from hil_importer.p2p import P2pImporter
from hil_importer.pci import PciFunction
from hil_importer.revoke import PCI_COMMAND, PCI_COMMAND_MEMORY, read_command, set_memory_enable
from hil_importer.sg import DmaList, SgEntry
from hil_vfio import DmaRange, VfioDevice, dma_buf_request, dmabuf_size, errname, region_info, uapi
from hil_vfio.uapi import VFIO_DEVICE_RESET, VFIO_PCI_CONFIG_REGION_INDEX

from hil_fault.armed import ArmedClose, ArmedIoctl, ArmedPwrite, Outcome, touch
from hil_fault.snapshot import Facts, changes, system_facts

FQ_SETTLE_S = 0.05  # > the IOVA flush queue's 10 ms timeout
CAPACITY = 64
# The system call's own entry frame: a fault under do_syscall_64 alone may be the interpreter's mmap.
IOCTL_ENTRY = ("__x64_sys_ioctl",)
SG_FACTS = ("mapped", "nents", "revocations", "dmabuf_size")


def _status_facts(p2p: P2pImporter, handle: int) -> Facts:
    try:
        st = p2p.status(handle)
    except OSError as exc:
        return {f"p2p handle {handle}": f"STATUS {errname(exc.errno)}"}
    return {f"p2p handle {handle}": f"mapped={st.mapped} nents={st.nents} revocations={st.revocations} "
                                    f"size={st.dmabuf_size}"}  # fmt: skip


@dataclass
class AddressWatch:
    """The DMA list of every fault-free mapping, compared with the previous one: a difference is space
    lost by the step in between. Compared with the previous, not the first, so that one lost range
    breaks the step that lost it and not every step after it."""

    enabled: bool = True
    first: DmaList | None = None
    last: DmaList | None = None
    seen: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    moved: str | None = None  # the last move off 32-bit addresses, until the sweep takes it

    def take_move(self) -> str | None:
        """The sweep's restart hook: a lost span hides behind a move (a span leaked below 4 GiB by the
        same step is never asked for again), so the sweep starts over with the device settled above."""
        moved, self.moved = self.moved, None
        return moved

    def check(self, got: DmaList, what: str) -> list[str]:
        previous, self.last = self.last, got
        if previous is None:
            self.first = got
            self.seen.append(got.describe()[0] if got.entries else "empty")
            return []
        if not self.enabled or got == previous:
            return []
        self.seen.append(got.describe()[0] if got.entries else "empty")
        if _left_32bit(previous, got):
            # drivers/iommu/dma-iommu.c:791-798 iommu_dma_alloc_iova: a PCI device's IOVAs come from
            # below 4 GiB until one such allocation fails; then pci_32bit_workaround is cleared for
            # good ("Using 48-bit DMA addresses") - an injected ENOMEM counts as such a failure. No
            # space is lost (nothing was allocated below 4 GiB); the next mappings are compared with
            # this one.
            self.moved = (f"{what}: moved from {previous.describe()} to {got.describe()}: the device "
                          "left 32-bit DMA addresses after a failed 32-bit IOVA allocation "
                          "(dma-iommu.c:797)")  # fmt: skip
            self.notes.append(self.moved)
            return []
        return [f"IOVA space lost or mapping changed: {what} gives {got.describe()}, the fault-free "
                f"mapping before it gave {previous.describe()}"]  # fmt: skip


def _left_32bit(previous: DmaList, got: DmaList) -> bool:
    below = 1 << 32
    return (
        bool(previous.entries and got.entries)
        and all(e.dma_addr + e.length <= below for e in previous.entries)
        and all(e.dma_addr >= below for e in got.entries)
    )


def _entries(req: abi.hil_sg_request, entries: ctypes.Array[abi.hil_sg_entry]) -> DmaList:
    count = min(int(req.nents), CAPACITY)
    return DmaList(tuple(SgEntry(int(e.dma_addr), int(e.len)) for e in entries[:count]), int(req.orig_nents))


@dataclass
class ExportOp:
    """VFIO_DEVICE_FEATURE(GET | DMA_BUF) of the whole BAR: a new dma-buf fd, closed to undo."""

    exporter: VfioDevice
    region: int
    size: int
    name: str = "export"
    route: str | None = None
    entry_frames: tuple[str, ...] = IOCTL_ENTRY
    expected_errno: int = 0
    _call: ArmedIoctl | None = None

    def prepare(self) -> None:
        request = dma_buf_request(self.region, [DmaRange(0, self.size)])
        self._call = ArmedIoctl(self.exporter.device_fd, uapi.VFIO_DEVICE_FEATURE, request, "export")

    def call(self) -> Outcome:
        assert self._call is not None
        return self._call()

    def facts(self) -> Facts:
        return system_facts()

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        fd = outcome.ret
        try:
            size = dmabuf_size(fd)
        finally:
            os.close(fd)
        return [] if size == self.size else [f"the exported dma-buf has {size} bytes, expected {self.size}"]

    def after_failure(self, outcome: Outcome) -> list[str]:
        return []


@dataclass
class AttachOp:
    """HIL_P2P_IOC_ATTACH of `dmabuf_fd` for `dev` (dma_buf_dynamic_attach -> vfio_pci_dma_buf_attach)."""

    p2p: P2pImporter
    dmabuf_fd: int
    dev: PciFunction
    route: str | None
    name: str = "attach"
    entry_frames: tuple[str, ...] = IOCTL_ENTRY
    expected_errno: int = 0
    _req: abi.hil_p2p_attach | None = None
    _call: ArmedIoctl | None = None

    def prepare(self) -> None:
        req = abi.hil_p2p_attach(version=abi.ABI_VERSION, dmabuf_fd=self.dmabuf_fd, dma_mask_bits=64)
        req.dev.domain, req.dev.bus, req.dev.devfn = self.dev.domain, self.dev.bus, self.dev.devfn
        self._req = req
        self._call = ArmedIoctl(self.p2p.fd, abi.HIL_P2P_IOC_ATTACH, req, "attach")

    def call(self) -> Outcome:
        assert self._call is not None
        return self._call()

    def facts(self) -> Facts:
        return system_facts()

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        assert self._req is not None
        handle = int(self._req.handle)
        st = self.p2p.status(handle)
        self.p2p.detach(handle)
        return [] if not st.mapped else ["a fresh attachment reports a mapping"]

    def after_failure(self, outcome: Outcome) -> list[str]:
        return []


@dataclass
class EduProbe:
    """Proof that no IOMMU mapping was left behind: edu writes its buffer (loaded with the host's seed
    while the reference mapping was live) to the reference address of a zeroed probe area; the area must
    stay zero. A positive control first shows that the same write through a live mapping does land."""

    p2p: P2pImporter
    edu: PciFunction
    exporter: VfioDevice
    seed_offset: int
    seed: bytes
    probe_offset: int
    faults_seen: int = 0

    def read_bar(self, offset: int, length: int) -> bytes:
        region = region_info(self.exporter, 2)
        return os.pread(self.exporter.device_fd, length, region.offset + offset)

    def zero(self) -> None:
        region = region_info(self.exporter, 2)
        os.pwrite(self.exporter.device_fd, bytes(len(self.seed)), region.offset + self.probe_offset)

    def control(self, dma: DmaList) -> list[str]:
        """Through the live reference mapping: load the seed into edu, write it to the probe, see it."""
        edu_dma(self.p2p, self.edu, dma_address(dma, self.seed_offset, len(self.seed)), len(self.seed),
                abi.EDU_FROM_ADDR)  # fmt: skip
        edu_dma(self.p2p, self.edu, dma_address(dma, self.probe_offset, len(self.seed)), len(self.seed),
                abi.EDU_TO_ADDR)  # fmt: skip
        landed = self.read_bar(self.probe_offset, len(self.seed)) == self.seed
        self.zero()
        if not landed:
            return ["positive control: edu's write through the live mapping did not reach the BAR, so the "
                    "probe for mappings left behind cannot show anything"]  # fmt: skip
        if self.read_bar(self.probe_offset, len(self.seed)) != bytes(len(self.seed)):
            return ["positive control: the probe area could not be zeroed again through VFIO"]
        return []

    def check(self, reference: DmaList) -> list[str]:
        addr = dma_address(reference, self.probe_offset, len(self.seed))
        edu_dma(self.p2p, self.edu, addr, len(self.seed), abi.EDU_TO_ADDR)
        self.faults_seen += 1
        if self.read_bar(self.probe_offset, len(self.seed)) != bytes(len(self.seed)):
            self.zero()
            return [f"an IOMMU mapping was left behind: edu's DMA to {addr:#x} (the reference mapping's "
                    f"address of BAR offset {self.probe_offset:#x}) reached the BAR"]  # fmt: skip
        return []


@dataclass
class MapOp:
    """HIL_P2P_IOC_MAP of an attachment (dma_buf_map_attachment -> vfio_pci_dma_buf_map ->
    dma_buf_phys_vec_to_sgt); undone with UNMAP."""

    p2p: P2pImporter
    handle: int
    route: str | None
    expected_errno: int = 0
    name: str = "map"
    entry_frames: tuple[str, ...] = IOCTL_ENTRY
    probe: EduProbe | None = None
    watch: AddressWatch = field(default_factory=AddressWatch)
    _req: abi.hil_sg_request | None = None
    _entries: ctypes.Array[abi.hil_sg_entry] | None = None
    _call: ArmedIoctl | None = None

    def measure_stability(self, repeats: int = 3) -> list[str]:
        """The first entry's address of `repeats` fault-free map/unmap cycles, as hex."""
        seen = []
        for _ in range(repeats):
            dma = self.p2p.map(self.handle)
            seen.append(hex(dma.entries[0].dma_addr) if dma.entries else "none")
            self.p2p.unmap(self.handle)
            time.sleep(FQ_SETTLE_S)
        return seen

    def prepare(self) -> None:
        if self.p2p.status(self.handle).mapped:
            self.p2p.unmap(self.handle)
            time.sleep(FQ_SETTLE_S)
        self._entries = (abi.hil_sg_entry * CAPACITY)()
        touch(ctypes.addressof(self._entries), ctypes.sizeof(self._entries))
        self._req = abi.hil_sg_request(handle=self.handle, direction=abi.DMA_BIDIRECTIONAL, capacity=CAPACITY,
                                       entries_ptr=ctypes.addressof(self._entries))  # fmt: skip
        self._call = ArmedIoctl(self.p2p.fd, abi.HIL_P2P_IOC_MAP, self._req, "map")

    def call(self) -> Outcome:
        assert self._call is not None
        return self._call()

    def facts(self) -> Facts:
        return system_facts(lambda: _status_facts(self.p2p, self.handle))

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        assert self._req is not None and self._entries is not None
        got = _entries(self._req, self._entries)
        first = self.watch.last is None
        broken = self.watch.check(got, "the map")
        if first and self.probe is not None:
            broken += self.probe.control(got)
        self.p2p.unmap(self.handle)
        time.sleep(FQ_SETTLE_S)
        return broken

    def after_failure(self, outcome: Outcome) -> list[str]:
        if self.probe is None or self.watch.last is None:
            return []
        return self.probe.check(self.watch.last)


@dataclass
class UnmapOp:
    """HIL_P2P_IOC_UNMAP (dma_buf_unmap_attachment -> dma_buf_free_sgt); cannot fail, so every fault is
    absorbed: the check is that the next map gets the reference list back."""

    mapper: MapOp
    name: str = "unmap"
    entry_frames: tuple[str, ...] = IOCTL_ENTRY
    expected_errno: int = 0
    _call: ArmedIoctl | None = None

    @property
    def route(self) -> str | None:
        return self.mapper.route

    def prepare(self) -> None:
        p2p, handle = self.mapper.p2p, self.mapper.handle
        if not p2p.status(handle).mapped:
            p2p.map(handle)
        self._call = ArmedIoctl(p2p.fd, abi.HIL_P2P_IOC_UNMAP, abi.hil_handle(handle=handle), "unmap")

    def call(self) -> Outcome:
        assert self._call is not None
        return self._call()

    def facts(self) -> Facts:
        return system_facts(lambda: _status_facts(self.mapper.p2p, self.mapper.handle))

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        p2p, handle = self.mapper.p2p, self.mapper.handle
        broken = ["still mapped after UNMAP"] if p2p.status(handle).mapped else []
        time.sleep(FQ_SETTLE_S)
        broken += self.mapper.watch.check(p2p.map(handle), "the next map")
        p2p.unmap(handle)
        time.sleep(FQ_SETTLE_S)
        return broken

    def after_failure(self, outcome: Outcome) -> list[str]:
        return []


@dataclass
class RevokeOp:
    """A revocation of a mapped attachment: memory-enable off and on (two config writes) or
    VFIO_DEVICE_RESET; each ends un-revoked, so afterwards mapping must work and give the reference."""

    means: str  # "memory-enable" | "reset"
    exporter: VfioDevice
    mapper: MapOp
    name: str = "revoke"
    entry_frames: tuple[str, ...] = ("__x64_sys_ioctl", "__x64_sys_pwrite64")
    expected_errno: int = 0
    _calls: list[Callable[[], Outcome]] = field(default_factory=list)
    _revocations: int = 0

    @property
    def route(self) -> str | None:
        return self.mapper.route

    def prepare(self) -> None:
        p2p, handle = self.mapper.p2p, self.mapper.handle
        if not read_command(self.exporter) & PCI_COMMAND_MEMORY:
            set_memory_enable(self.exporter, True)
        if not p2p.status(handle).mapped:
            p2p.map(handle)
        self._revocations = p2p.status(handle).revocations
        if self.means == "reset":
            self._calls = [ArmedIoctl(self.exporter.device_fd, VFIO_DEVICE_RESET, ctypes.c_int(0), "reset")]
            return
        offset = region_info(self.exporter, VFIO_PCI_CONFIG_REGION_INDEX).offset + PCI_COMMAND
        command, fd = read_command(self.exporter), self.exporter.device_fd
        off = (command & ~PCI_COMMAND_MEMORY).to_bytes(2, "little")
        on = (command | PCI_COMMAND_MEMORY).to_bytes(2, "little")
        self._calls = [ArmedPwrite(fd, off, offset, "memory off"), ArmedPwrite(fd, on, offset, "memory on")]

    def call(self) -> Outcome:
        outcome = Outcome(0, 0)
        for call in self._calls:
            outcome = call()
            if outcome.errno:
                return outcome
        return outcome

    def facts(self) -> Facts:
        # The revocation count moves with every attempt that got as far as the exporter: not a leak.
        return system_facts()

    def _works_again(self) -> list[str]:
        p2p, handle = self.mapper.p2p, self.mapper.handle
        broken = []
        st = p2p.status(handle)
        if st.mapped:
            broken.append("the importer still holds its mapping after the revocation")
        if not read_command(self.exporter) & PCI_COMMAND_MEMORY:
            broken.append("memory is still disabled after the revocation ended")
            set_memory_enable(self.exporter, True)
        time.sleep(FQ_SETTLE_S)
        try:
            dma = p2p.map(handle)
        except OSError as exc:
            return [*broken, f"mapping fails with {errname(exc.errno)} after the revocation ended"]
        return broken + self.mapper.watch.check(dma, "mapping after the revocation")
        return broken

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        st = self.mapper.p2p.status(self.mapper.handle)
        broken = []
        if st.revocations != self._revocations + 2:
            broken.append(f"the importer was told {st.revocations - self._revocations} times, expected 2 "
                          "(revoke, then un-revoke)")  # fmt: skip
        return broken + self._works_again()

    def after_failure(self, outcome: Outcome) -> list[str]:
        # A failed revocation must leave the buffer usable: un-revoked, mappable, same address.
        return self._works_again()


@dataclass
class CloseOp:
    """Closing the VFIO device fd with a mapped importer (vfio_pci_core_close_device ->
    vfio_pci_dma_buf_cleanup): revoked for good. `setup` opens the device, exports and maps; each
    step needs a fresh one. close() cannot fail, so every injected fault is absorbed; the checks: the
    importer was told and unmapped, maps give ENODEV, and after detaching and closing the buffer no
    dma-buf or fd is left."""

    setup: Callable[[], tuple[VfioDevice, int, int]]  # -> (device, dma-buf fd, handle), mapped
    p2p: P2pImporter
    route: str | None
    name: str = "revoke"
    # The release runs from task_work on the way back to user space, not under __x64_sys_close.
    entry_frames: tuple[str, ...] = ("__x64_sys_close", "task_work_run", "__fput")
    expected_errno: int = 0
    dev: VfioDevice | None = None
    fd: int = -1
    handle: int = 0
    _call: ArmedClose | None = None
    _baseline: Facts = field(default_factory=dict)

    def prepare(self) -> None:
        self._baseline = system_facts()
        self.dev, self.fd, self.handle = self.setup()
        self._call = ArmedClose(self.dev.device_fd, "close device")

    def call(self) -> Outcome:
        assert self._call is not None
        return self._call()

    def facts(self) -> Facts:
        return system_facts()

    def settle(self, outcome: Outcome) -> list[str]:
        assert self.dev is not None
        if outcome.errno == 0:
            self.dev.device_fd = -1  # closed by the call
        broken = []
        st = self.p2p.status(self.handle)
        if st.mapped or st.revocations < 1:
            broken.append(f"after closing the device the importer shows {st}")
        try:
            self.p2p.map(self.handle)
            broken.append("mapping a buffer of a closed device worked")
            self.p2p.unmap(self.handle)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                broken.append(f"mapping a buffer of a closed device: {errname(exc.errno)}, expected ENODEV")
        self.p2p.detach(self.handle)
        os.close(self.fd)
        self.dev.close()
        left = changes(self._baseline, system_facts())
        return broken + [f"left behind after close, detach and release: {c}" for c in left]

    def after_failure(self, outcome: Outcome) -> list[str]:
        return self.settle(Outcome(0, 0)) if self.dev is not None else []


@dataclass
class RdmaRegOp:
    """HIL_RDMA_IOC_REG: ib_umem_dmabuf_get* (drivers/infiniband/core/umem_dmabuf.c) in one mode;
    undone with DEREG. Without a fault it gives `expected_errno` (EOPNOTSUPP for the pinned mode)."""

    rdma_fd: int
    dmabuf_fd: int
    dev: PciFunction
    mode: int
    length: int
    route: str | None
    expected_errno: int = 0
    name: str = "rdma-umem-get"
    entry_frames: tuple[str, ...] = IOCTL_ENTRY
    deregister: Callable[[int], None] | None = None
    sg: Callable[[int], DmaList] | None = None
    watch: AddressWatch = field(default_factory=AddressWatch)
    _req: abi.hil_rdma_reg | None = None
    _call: ArmedIoctl | None = None

    def prepare(self) -> None:
        req = abi.hil_rdma_reg(version=abi.ABI_VERSION, dmabuf_fd=self.dmabuf_fd, mode=self.mode,
                               access=abi.IB_ACCESS_LOCAL_WRITE, offset=0, length=self.length,
                               dma_mask_bits=64)  # fmt: skip
        req.dev.domain, req.dev.bus, req.dev.devfn = self.dev.domain, self.dev.bus, self.dev.devfn
        self._req = req
        self._call = ArmedIoctl(self.rdma_fd, abi.HIL_RDMA_IOC_REG, req, "rdma reg")

    def call(self) -> Outcome:
        assert self._call is not None
        return self._call()

    def facts(self) -> Facts:
        return system_facts()

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        assert self._req is not None and self.deregister is not None and self.sg is not None
        handle = int(self._req.handle)
        broken = []
        try:
            broken = self.watch.check(self.sg(handle), "the umem")
        finally:
            self.deregister(handle)
            time.sleep(FQ_SETTLE_S)
        return broken

    def after_failure(self, outcome: Outcome) -> list[str]:
        return []

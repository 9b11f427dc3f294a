"""Bounded race tests (issue 10 part 3): importers attach, map, copy, unmap and detach in several
threads while another revokes the exporter's buffer every way it can from user space, for
plan.race_seconds (`hil run --race-seconds`), with a fixed seed in the record.

The revoker owns the VFIO device (a legacy VFIO group opens once, and closing an fd that another
thread uses is a bug of the test, not a race of the kernel): memory enable off/on
(vfio_basic_config_write -> vfio_pci_dma_buf_move), VFIO_DEVICE_RESET where the device has a reset,
and closing the device (vfio_pci_dma_buf_cleanup: revoked for good), after which it reopens it and
exports a new buffer for the importers to move to. Hot-unplug is not raced: it needs the host agent
and can happen once per boot; test_revocation.py::test_revoke_by_hot_unplug covers it.

Failing evidence: an errno no revocation explains (hil_fault/race.py ALLOWED), a kernel report on
/dev/kmsg, wrong bytes (edu's copies through a mapping that stayed valid from before the first DMA to
after the second must land exactly; checked in the guest and by the host), a thread still busy
JOIN_GRACE_S after the time is up (its kernel stack is written to the console and the record), and
the leak invariants at the end: no dma-buf, attachment or fd left, kmemleak clean on the debug kernel.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hil_fault import kmemleak
from hil_fault.env import kernel_hz
from hil_fault.kmsg import Kmsg, kernel_reports
from hil_fault.leakscan import forget_earlier
from hil_fault.race import (
    DEFAULT_SECONDS,
    DEFAULT_SEED,
    JOIN_GRACE_S,
    OK,
    CopyHistory,
    Tally,
    copy_verdict,
    errno_name,
    thread_rng,
    too_idle,
    unexpected,
)
from hil_fault.snapshot import changes, dma_api_dump_lines, system_facts
from hil_importer import abi
from hil_importer.case import BAR, collection_plan, device_function, importer_ids, require_feature
from hil_importer.edu import dma_address, edu_dma, is_edu
from hil_importer.loader import Manifest
from hil_importer.p2p import P2pImporter
from hil_importer.pci import PciFunction
from hil_importer.revoke import VFIO_DEVICE_FLAGS_RESET, device_flags, reset_device, set_memory_enable
from hil_vfio import DmaRange, VfioDevice, export_dma_buf, open_device, region_info

from harness.guest.checks import DETAILS_KEY, check_spec, load_seeds, seed_bytes
from harness.guest.plan import DeviceSpec, GuestPlan

pytest_plugins = ["hil_importer.fixtures"]

_PLAN = collection_plan()
RACE_S = (_PLAN.race_seconds if _PLAN else None) or DEFAULT_SECONDS
IMPORTERS = importer_ids(_PLAN) or ["importer"]
MAPPERS = 2
MASK_BITS = 64
DEST_DELTA = 0x600000 + 0x20  # edu's destination in the BAR (0x700020): away from every other test's bytes
GUARD = 256
DMA_API_SHOWN = 40
QUIET_SHARE = 0.25
STARVED_HOLD_S = 20.0
SAMPLES = 8  # the first copies' status before and after, for the record
pytestmark = [pytest.mark.debug_kernel]


@dataclass
class Exporter:
    """The revoker's device and the buffer importers should use now; old buffers stay open (revoked)
    until the end, so no importer ever holds a closed fd number."""

    bdf: str
    size: int
    stack: contextlib.ExitStack
    dev: VfioDevice | None = None
    current: int = -1
    fds: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reopened: int = 0

    def open(self) -> None:
        self.dev = self.stack.enter_context(open_device(self.bdf))
        fd = export_dma_buf(self.dev, BAR, [DmaRange(0, self.size)])
        with self.lock:
            self.fds.append(fd)
            self.current = fd

    def buffer(self) -> int:
        with self.lock:
            return self.current


@dataclass
class Worker:
    name: str
    body: Callable[[], None]
    tally: Tally = field(default_factory=Tally)
    doing: str = "starting"
    error: str | None = None
    thread: threading.Thread | None = None


def _attempt(worker: Worker, action: str, call: Callable[..., Any], *args: Any) -> Any:
    worker.doing = action
    try:
        result = call(*args)
    except OSError as exc:
        worker.tally.add(action, errno_name(exc.errno))
        return None
    worker.tally.add(action, OK)
    return result


def _attach(p2p: P2pImporter, fd: int, dev: PciFunction) -> Any:
    return p2p.attach(fd, dev, dma_mask_bits=MASK_BITS)


def _run(worker: Worker) -> None:
    try:
        worker.body()
    except BaseException as exc:  # recorded and failed on by the test
        worker.error = f"{type(exc).__name__}: {exc}"
    worker.doing = "done"


def _kernel_stack(worker: Worker) -> str:
    tid = worker.thread.native_id if worker.thread is not None else None
    try:
        return open(f"/proc/self/task/{tid}/stack").read()
    except OSError as exc:
        return f"(no kernel stack for tid {tid}: {exc})"


@pytest.fixture
def race_baseline(dma_buf_probe_errno: int) -> Iterator[dict[str, object]]:
    if dma_buf_probe_errno:
        pytest.skip(f"the exporter has no dma-buf export (probe errno {dma_buf_probe_errno})")
    yield system_facts()


def _revoker(
    exp: Exporter,
    means: list[str],
    seed: int,
    deadline: float,
    starved: Callable[[], bool],
    hold_for_copy: Callable[[], None],
) -> Worker:
    """The one thread that owns the device: a random revocation, a random pause, again."""
    worker = Worker("revoker", lambda: None)

    def toggle(dev: VfioDevice, pause: float) -> None:
        set_memory_enable(dev, False)
        time.sleep(pause)
        set_memory_enable(dev, True)

    def close_reopen(dev: VfioDevice) -> None:
        dev.close()
        exp.reopened += 1
        exp.open()

    def body() -> None:
        rng = thread_rng(seed, worker.name)
        while time.monotonic() < deadline:
            assert exp.dev is not None
            dev, choice = exp.dev, rng.choice(means)
            if choice == "memory-toggle":
                _attempt(worker, choice, toggle, dev, rng.uniform(0, 0.02))
            elif choice == "reset":
                _attempt(worker, choice, reset_device, dev)
            else:
                _attempt(worker, choice, close_reopen, dev)
            # Mostly short pauses (the race), sometimes a quiet spell in which the edu copier can finish
            # a copy through a mapping that stays valid throughout (else its bytes prove nothing).
            if starved():
                # No copy has yet run through a mapping valid throughout (slow kernels: the debug variant
                # under TCG, where one copy takes seconds): hold still until the copier finished one more,
                # or the bytes prove nothing.
                hold_for_copy()
            elif rng.random() < QUIET_SHARE:
                time.sleep(rng.uniform(0.2, 0.4))
            else:
                time.sleep(rng.uniform(0, 0.05))

    worker.body = body
    return worker


def _mapper(
    name: str, exp: Exporter, functions: dict[str, PciFunction], seed: int, deadline: float
) -> Worker:
    """Attach the current buffer for a random importer, map and unmap a few times, sometimes detach
    with the mapping still in place (the module unmaps first), detach."""
    worker = Worker(name, lambda: None)

    def body() -> None:
        rng = thread_rng(seed, worker.name)
        with P2pImporter() as p2p:
            while time.monotonic() < deadline:
                dev = functions[rng.choice(sorted(functions))]
                fd = exp.buffer()
                att = _attempt(worker, "attach", _attach, p2p, fd, dev)
                if att is None:
                    time.sleep(rng.uniform(0, 0.005))  # revoked: the revoker is about to export anew
                    continue
                handle = att.handle
                for _ in range(rng.randint(1, 3)):
                    if _attempt(worker, "map", p2p.map, handle) is not None:
                        time.sleep(rng.uniform(0, 0.01))
                        _attempt(worker, "unmap", p2p.unmap, handle)
                if rng.random() < 0.5:
                    _attempt(worker, "map", p2p.map, handle)
                _attempt(worker, "detach", p2p.detach, handle)

    worker.body = body
    return worker


def _join(workers: list[Worker], deadline: float, details: dict[str, Any]) -> None:
    """Wait for every thread; one still busy JOIN_GRACE_S after the time is up is stuck: its kernel
    stack goes to the record and, through /dev/kmsg, to the console (a teardown may hang behind it)."""
    stuck = []
    for worker in workers:
        assert worker.thread is not None
        worker.thread.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE_S)
        if worker.thread.is_alive():
            stuck.append(worker)
    if not stuck:
        return
    evidence = {w.name: {"doing": w.doing, "kernel_stack": _kernel_stack(w)} for w in stuck}
    details["stuck"] = evidence
    with contextlib.suppress(OSError), open("/dev/kmsg", "w") as log:
        for name, ev in evidence.items():
            log.write(f"p2p-hil race: {name} stuck in {ev['doing']}: {ev['kernel_stack']}\n")
    pytest.fail(
        f"threads still busy {JOIN_GRACE_S:.0f} s after the time was up: "
        + "; ".join(f"{n} in {e['doing']}" for n, e in evidence.items())
    )


@pytest.mark.hil_timeout(RACE_S + 2 * JOIN_GRACE_S + 120)
def test_race_importers_vs_revocation(
    plan: GuestPlan,
    exporter_bdf: str,
    exporter_spec: DeviceSpec,
    race_baseline: dict[str, object],
    p2p_module: Manifest,
    hil_details: dict[str, Any],
) -> None:
    """Mappers and an edu copier against a revoker that toggles memory, resets and closes the device."""
    require_feature(p2p_module, "revoke_callback")
    seed, seconds = DEFAULT_SEED, RACE_S
    hil_details.update(seed=seed, seconds=seconds, mappers=MAPPERS, importers=IMPORTERS)
    kmsg = Kmsg()
    hil_details["race_started_uptime"] = round(time.clock_gettime(time.CLOCK_BOOTTIME), 3)
    has_kmemleak = kmemleak.available()
    if has_kmemleak:
        hil_details["kmemleak_before"] = forget_earlier()
    routes = {i: plan.expectation(exporter_spec.id, i) for i in IMPORTERS}
    functions = {i: device_function(plan, i) for i in IMPORTERS}
    broken: list[str] = []
    tally = Tally()
    with contextlib.ExitStack() as stack:
        exp = Exporter(exporter_bdf, int(exporter_spec.bars[BAR]), stack)
        exp.open()
        assert exp.dev is not None
        means = ["memory-toggle", "close-reopen"]
        if device_flags(exp.dev) & VFIO_DEVICE_FLAGS_RESET:
            means.append("reset")
        hil_details["revocation_means"] = means
        deadline = time.monotonic() + seconds
        workers = [_mapper(f"mapper-{i}", exp, functions, seed, deadline) for i in range(MAPPERS)]
        copier = _edu_copier(plan, exporter_spec, routes, functions, exp, seed, deadline)
        workers.append(
            _revoker(exp, means, seed, deadline, lambda: copier is not None and not copier.valid_copies,
                     lambda: copier.hold() if copier is not None else None)
        )  # fmt: skip
        if copier is not None:
            workers.append(copier.worker)
        hil_details["edu_copier"] = copier is not None
        for worker in workers:
            worker.thread = threading.Thread(target=_run, args=(worker,), name=worker.name, daemon=True)
            worker.thread.start()
        _join(workers, deadline, hil_details)
        for worker in workers:
            tally.merge(worker.tally)
            if worker.error:
                broken.append(f"{worker.name} raised {worker.error} (in {worker.doing})")
        hil_details.update(
            reopened=exp.reopened, race={"seed": seed, "seconds": seconds, "outcomes": tally.counts}
        )
        broken += [f"an errno no revocation explains: {u}" for u in unexpected(tally)]
        needed = {"map": 1, means[0]: 1} | ({"edu-valid-copy": 1} if copier is not None else {})
        broken += [f"did not race: {t}" for t in too_idle(tally, needed)]
        if copier is not None:
            broken += copier.verdict(exp, hil_details)
        for fd in exp.fds:
            os.close(fd)
    broken += _leak_invariants(race_baseline, kmsg, has_kmemleak, hil_details)
    hil_details["race"]["broken"] = broken
    # The shape kernels/known-issues.yaml's broken_invariants patterns are matched against.
    hil_details["broken_invariants"] = [f"race [seed {seed}]: {line}" for line in broken]
    assert not broken, f"seed {seed}: " + "\n".join(broken)


def _leak_invariants(
    baseline: dict[str, object], kmsg: Kmsg, has_kmemleak: bool, details: dict[str, Any]
) -> list[str]:
    """With everything closed: the system as before the race, no kernel report, no leak."""
    records = kmsg.drain()
    kmsg.close()  # before the facts: its own fd is not in the baseline
    broken = [f"left behind: {c}" for c in changes(baseline, system_facts())]
    if any(line.startswith("left behind: dma-api mappings") for line in broken):
        # Which mappings: address, length, direction of each (dma-debug's own dump).
        details["dma_api_left"] = dma_api_dump_lines(limit=DMA_API_SHOWN)
    for r in kernel_reports(records):
        broken.append(f"kernel report ({r.kind}): {r.heading} | " + " | ".join(r.lines[:12]))
    if has_kmemleak:
        scan = kmemleak.scan(time.monotonic())
        details["kmemleak"] = {"leaks": len(scan.leaks), "waited_s": scan.waited_s, "scan_s": scan.scan_s}
        hz, started = kernel_hz(), float(details["race_started_uptime"])
        for leak in scan.leaks:
            if hz and leak.jiffies is not None:
                at = kmemleak.uptime_at(leak.jiffies, hz)
                when = "during the race" if at >= started else f"before the race began at {started:.3f} s"
                broken.append(f"kmemleak (allocated at uptime {at:.3f} s, {when}): {leak.describe()}")
            else:
                broken.append(f"kmemleak: {leak.describe()}")
    return broken


@dataclass
class EduCopier:
    worker: Worker
    exporter_id: str
    edu_id: str
    dest: int
    seed: bytes
    # The route translates through the IOMMU, so revoking unmaps the IOVA and a copy in flight faults
    # instead of landing (p2p through a switch and iommu=pt have nothing that could stop it).
    fenced: bool = False
    valid_copies: int = 0
    # Whether the last copy that moved bytes ran through a mapping valid throughout. A copy that spans a
    # revocation still moves bytes where nothing fences the device (a bus address, iommu=pt): it reads
    # zeros from a BAR with memory off or in reset and writes them over an earlier valid copy.
    last_valid: bool | None = None
    attempts: int = 0
    samples: list[str] = field(default_factory=list)

    def hold(self) -> None:
        """Return once a copy started after this call has finished (the one in flight may span the last
        revocation), a copy was valid, or STARVED_HOLD_S passed."""
        seen, until = self.attempts, time.monotonic() + STARVED_HOLD_S
        while (
            self.attempts < seen + 2
            and not self.valid_copies
            and time.monotonic() < until
            and self.worker.doing != "done"
        ):
            time.sleep(0.05)

    def verdict(self, exp: Exporter, details: dict[str, Any]) -> list[str]:
        """The destination holds the seed if the last copy ran through a mapping valid throughout, or any
        did on a fenced route; zeros or the seed otherwise; the guard bytes around it stay zero."""
        assert exp.dev is not None
        region = region_info(exp.dev, BAR)
        got = os.pread(exp.dev.device_fd, len(self.seed), region.offset + self.dest)
        before = os.pread(exp.dev.device_fd, GUARD, region.offset + self.dest - GUARD)
        after = os.pread(exp.dev.device_fd, GUARD, region.offset + self.dest + len(self.seed))
        details.update(edu_valid_copies=self.valid_copies, edu_dest=hex(self.dest), edu_samples=self.samples)
        details["edu_last_copy_valid"] = self.last_valid
        must_hold, broken = copy_verdict(
            CopyHistory(self.valid_copies, self.last_valid, self.fenced),
            self.dest,
            self.seed,
            got,
            before + after,
        )
        if must_hold:
            details[DETAILS_KEY] = [
                check_spec(self.exporter_id, self.dest, self.seed, "the race's edu copy of the seed")
            ]
        return broken


def _edu_copier(
    plan: GuestPlan,
    exporter_spec: DeviceSpec,
    routes: dict[str, Any],
    functions: dict[str, PciFunction],
    exp: Exporter,
    seed_value: int,
    deadline: float,
) -> EduCopier | None:
    edu_id = next(
        (i for i, e in routes.items() if e.qemu_dma == "reaches_bar" and is_edu(functions[i].bdf)), None
    )
    if edu_id is None:
        return None
    seed = next(s for s in load_seeds(plan.run_dir) if s.device == exporter_spec.id)
    pattern = seed_bytes(plan.run_dir, seed)
    copier = EduCopier(
        Worker("edu-copier", lambda: None), exporter_spec.id, edu_id, seed.offset + DEST_DELTA, pattern,
        fenced=routes[edu_id].route == "host_bridge_iova",
    )  # fmt: skip
    dev = functions[edu_id]

    def copy(p2p: P2pImporter, src: int, dst: int) -> int:
        """Both transfers; the engine's time in microseconds."""
        there = edu_dma(p2p, dev, src, len(pattern), abi.EDU_FROM_ADDR)
        back = edu_dma(p2p, dev, dst, len(pattern), abi.EDU_TO_ADDR)
        return there.elapsed_us + back.elapsed_us

    def body() -> None:
        rng = thread_rng(seed_value, "edu-copier")
        worker = copier.worker
        with P2pImporter() as p2p:
            while time.monotonic() < deadline:
                att = _attempt(worker, "attach", _attach, p2p, exp.buffer(), dev)
                if att is None:
                    time.sleep(rng.uniform(0, 0.005))
                    continue
                dma = _attempt(worker, "map", p2p.map, att.handle)
                if dma is not None:
                    # Valid throughout: mapped before the first DMA and no callback until after the second.
                    before = p2p.status(att.handle)
                    src = dma_address(dma, seed.offset, len(pattern))
                    dst = dma_address(dma, copier.dest, len(pattern))
                    moved = _attempt(worker, "edu-copy", copy, p2p, src, dst)
                    after = p2p.status(att.handle)
                    copier.attempts += 1
                    if len(copier.samples) < SAMPLES:
                        copier.samples.append(f"moved={moved is not None} before={before} after={after}")
                    valid = before.mapped and after.mapped and after.revocations == before.revocations
                    if moved is not None:
                        copier.last_valid = valid
                    if moved is not None and valid:
                        copier.valid_copies += 1
                        worker.tally.add("edu-valid-copy", OK)
                    _attempt(worker, "unmap", p2p.unmap, att.handle)
                time.sleep(rng.uniform(0, 0.01))
                _attempt(worker, "detach", p2p.detach, att.handle)

    copier.worker.body = body
    return copier


@pytest.mark.run_first
def test_fault_injection_and_race_kmemleak_boot(hil_details: dict[str, Any]) -> None:
    """Before any test (debug kernel): scan once and forget what boot left, so that the final scan
    reports only what the suite leaked. What boot left is recorded, not failed on: no test made it."""
    if not kmemleak.available():
        pytest.skip("no /sys/kernel/debug/kmemleak: the kernel is not the debug variant")
    hil_details.update(forget_earlier())


@pytest.mark.run_last
def test_fault_injection_and_race_kmemleak_final(hil_details: dict[str, Any]) -> None:
    """One kmemleak scan after the whole suite (debug kernel): every leak left by any test fails here."""
    if not kmemleak.available():
        pytest.skip("no /sys/kernel/debug/kmemleak: the kernel is not the debug variant")
    scan = kmemleak.scan(time.monotonic())
    hil_details.update(leaks=[leak.describe() for leak in scan.leaks], waited_s=scan.waited_s,
                       scan_s=scan.scan_s)  # fmt: skip
    hil_details["broken_invariants"] = [f"kmemleak after the suite: {leak.describe()}" for leak in scan.leaks]
    assert not scan.leaks, f"{len(scan.leaks)} leak(s): " + "; ".join(
        leak.describe() for leak in scan.leaks[:10]
    )

"""guest_tests/hil_fault/sweep.py against a fake operation: termination, clean and broken steps, absorbed
faults, the retry after a failure, faults that land outside the operation, the cap, kernel reports."""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass, field
from pathlib import Path

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"
if str(GUEST_TESTS) not in sys.path:
    sys.path.insert(0, str(GUEST_TESTS))

from hil_fault.armed import Outcome  # noqa: E402
from hil_fault.kmsg import Record  # noqa: E402
from hil_fault.ops import AddressWatch  # noqa: E402
from hil_fault.snapshot import Facts  # noqa: E402
from hil_fault.sweep import NOWARN_SITE, SweepResult, sweep  # noqa: E402
from hil_importer.sg import DmaList, SgEntry  # noqa: E402


@dataclass
class World:
    """The fake kernel: fail-nth, the log, and the state an operation may leak."""

    fail_nth: int = 0
    log: list[Record] = field(default_factory=list)
    leaked: int = 0
    iova: int = 0x1000

    def should_fail(self, frames: tuple[str, ...], nowarn: bool = False) -> bool:
        if not self.fail_nth:
            return False
        self.fail_nth -= 1
        if self.fail_nth:
            return False
        if not nowarn:
            self.say("FAULT_INJECTION: forcing a failure.\nname failslab, interval 1")
            self.say("Call Trace:")
            for frame in ("dump_stack_lvl", "should_fail_ex", *frames):
                self.say(f" {frame}+0x1/0x10")
            self.say(" </TASK>")
        return True

    def say(self, text: str) -> None:
        self.log.append(Record(4, len(self.log), 0, text))


class Injector:
    def __init__(self, world: World) -> None:
        self.world = world
        self.armed: list[int] = []

    def arm(self, n: int) -> None:
        self.armed.append(n)
        self.world.fail_nth = n

    def left(self) -> int:
        return self.world.fail_nth

    def disarm(self) -> None:
        self.world.fail_nth = 0


class Log:
    def __init__(self, world: World) -> None:
        self.world = world
        self.seen = 0

    def drain(self) -> list[Record]:
        out = self.world.log[self.seen :]
        self.seen = len(self.world.log)
        return out


# Behaviours of a failed site: "clean", "leak" (state not restored), "absorb" (the operation completes
# anyway), "iova" (completes later calls at another address: space lost), "warn" (a kernel WARNING),
# "nowarn" (an allocation without a printed stack), "outside" (the stack is not the operation's).
@dataclass
class FakeOp:
    world: World
    sites: list[str]
    name: str = "map"
    route: str | None = "host_bridge_iova"
    entry_frames: tuple[str, ...] = ("__x64_sys_ioctl",)
    expected_errno: int = 0
    reference: int | None = None
    prepared: int = 0
    settled: list[int] = field(default_factory=list)

    def prepare(self) -> None:
        self.prepared += 1

    def call(self) -> Outcome:
        for i, kind in enumerate(self.sites):
            frames = ("asm_exc_page_fault",) if kind == "outside" else (f"site{i}", "__x64_sys_ioctl")
            if self.world.should_fail(frames, nowarn=kind == "nowarn"):
                if kind == "absorb":
                    continue
                if kind == "leak":
                    self.world.leaked += 1
                if kind == "iova":
                    self.world.iova += 0x1000
                if kind == "warn":
                    self.world.say("WARNING: drivers/x.c:1 at site+0x1/0x2, CPU#0: python3/1")
                return Outcome(-1, errno.ENOMEM)
        return Outcome(self.world.iova, 0)

    def facts(self) -> Facts:
        return {"leaked": self.world.leaked}

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        self.settled.append(outcome.ret)
        if self.reference is None:
            self.reference = outcome.ret
            return []
        return [] if outcome.ret == self.reference else [f"address {outcome.ret:#x} != {self.reference:#x}"]

    def after_failure(self, outcome: Outcome) -> list[str]:
        return []


def run(sites: list[str], cap: int = 200) -> tuple[dict[str, object], FakeOp, Injector]:
    world = World()
    op, injector = FakeOp(world, sites), Injector(world)
    result = sweep(op, injector, Log(world), label="exporter -> dma", cap=cap, clock=lambda: 0.0)
    return result.summary(), op, injector


def test_clean_operation_sweeps_every_site_and_stops() -> None:
    summary, op, injector = run(["clean"] * 4)
    assert summary["sites"] == 4
    assert injector.armed == [1, 2, 3, 4, 5]  # the fifth run had no fault: done
    assert summary["steps"] == 4 and summary["steps_clean"] == 4
    assert summary["broken"] == [] and summary["capped"] is False
    # reference + one fault-free retry per failed step + the final fault-free run
    assert len(op.settled) == 1 + 4 + 1


def test_state_left_behind_is_broken_with_fault_number_and_stack() -> None:
    summary, _, _ = run(["clean", "leak", "clean"])
    broken = summary["broken"]
    assert isinstance(broken, list) and len(broken) == 1
    entry = broken[0]
    assert entry["fault"] == 2 and entry["operation"] == "map" and entry["route"] == "host_bridge_iova"
    assert entry["invariant"] == "state not restored: leaked: 0 -> 1"
    assert "site1" in entry["stack"]
    assert summary["broken_steps"] == [2] and summary["steps_clean"] == 2


def test_lost_iova_shows_in_the_retry_after_the_failure() -> None:
    summary, _, _ = run(["clean", "iova", "clean"])
    broken = summary["broken"]
    assert isinstance(broken, list)
    # The retry after step 2 differs, and so does every later fault-free run (step 3's retry, the last).
    assert [e["fault"] for e in broken] == [2, 3, None]
    assert broken[0]["invariant"].startswith("the retry without a fault: address 0x2000 != 0x1000")
    assert broken[2]["invariant"].startswith("without a fault (the sweep's last run): address 0x2000")
    assert summary["sites"] == 3


def test_absorbed_fault_is_checked_through_settle() -> None:
    summary, _op, _ = run(["clean", "absorb", "clean"])
    assert summary["absorbed"] == [2]
    assert summary["broken"] == []
    assert summary["sites"] == 3


def test_kernel_report_breaks_the_step() -> None:
    summary, _, _ = run(["warn", "clean"])
    broken = summary["broken"]
    assert isinstance(broken, list) and broken[0]["fault"] == 1
    assert broken[0]["invariant"].startswith("kernel report (warning): WARNING: drivers/x.c:1")


def test_nowarn_failure_is_a_step_without_stack() -> None:
    summary, _, _ = run(["nowarn", "clean"])
    log = summary["step_log"]
    assert isinstance(log, list) and log[0]["site"] == NOWARN_SITE
    assert summary["broken"] == []


def test_fault_outside_the_operation_is_retried_then_recorded() -> None:
    summary, _, injector = run(["outside", "clean"])
    # fault 1 lands outside three times (two retries), then counts as a step marked outside
    assert injector.armed[:3] == [1, 1, 1]
    assert summary["outside"] == [1]
    assert summary["sites"] == 2


def test_cap_is_reported_as_broken() -> None:
    summary, _, _ = run(["clean"] * 10, cap=3)
    assert summary["capped"] is True and summary["sites"] is None
    broken = summary["broken"]
    assert isinstance(broken, list) and "cap of 3" in broken[-1]["invariant"]


def test_failing_reference_run_stops_before_sweeping() -> None:
    world = World()
    op = FakeOp(world, ["clean"], expected_errno=errno.EINVAL)
    injector = Injector(world)
    result = sweep(op, injector, Log(world), label="x", clock=lambda: 0.0)
    assert injector.armed == []
    assert result.broken()[0]["invariant"] == "before the sweep: errno 0, expected 22"


def test_refused_route_sweep_expects_its_errno() -> None:
    world = World()

    @dataclass
    class Refused(FakeOp):
        expected_errno: int = errno.EINVAL

        def call(self) -> Outcome:
            out = super().call()
            return out if out.errno else Outcome(-1, errno.EINVAL)

    op = Refused(world, ["clean", "clean"])
    result = sweep(op, Injector(world), Log(world), label="x", clock=lambda: 0.0)
    assert result.sites == 2 and result.broken() == []


@dataclass
class Dma32World(World):
    """The IOVA allocator as dma-iommu.c runs it: a device gets addresses below 4 GiB, top down, until
    a 32-bit allocation fails; then addresses below 2^48 for good. A leaked span is never given out
    again, so the next mapping in the same space lands one span lower."""

    span: int = 0x4000000
    high: bool = False
    lost: dict[bool, int] = field(default_factory=lambda: {False: 0, True: 0})

    def address(self) -> int:
        top = (1 << 48) if self.high else 0xC0000000
        return top - (1 + self.lost[self.high]) * self.span


@dataclass
class WatchedMapOp(FakeOp):
    """A map whose fault-free DMA list goes through the real AddressWatch. Site kinds: "move" (the
    32-bit attempt fails, the retry above 4 GiB succeeds), "move-and-lose" (that, and the step loses
    the span it held: the case a move could hide), "lose" (a failure after the IOVA allocation that
    does not give the span back)."""

    watch: AddressWatch = field(default_factory=AddressWatch)

    @property
    def space(self) -> Dma32World:
        assert isinstance(self.world, Dma32World)
        return self.world

    def call(self) -> Outcome:
        for i, kind in enumerate(self.sites):
            if self.space.should_fail((f"site{i}", "__x64_sys_ioctl")):
                if kind in ("lose", "move-and-lose"):
                    self.space.lost[self.space.high] += 1
                if kind in ("move", "move-and-lose"):
                    self.space.high = True
                if kind == "move":
                    continue  # absorbed: the allocation above 4 GiB succeeded
                return Outcome(-1, errno.ENOMEM)
        return Outcome(self.space.address(), 0)

    def settle(self, outcome: Outcome) -> list[str]:
        if outcome.errno:
            return []
        return self.watch.check(DmaList((SgEntry(outcome.ret, self.space.span),), 0), "the map")


def _watched(sites: list[str], restart: bool) -> tuple[SweepResult, Injector]:
    world = Dma32World()
    op = WatchedMapOp(world, sites)
    injector = Injector(world)
    hook = op.watch.take_move if restart else None
    return sweep(op, injector, Log(world), label="x", clock=lambda: 0.0, restart=hook), injector


def test_a_span_lost_by_the_step_that_moves_the_device_is_found_after_the_restart() -> None:
    # Without the restart the move excuses the step, and the lost 32-bit span is never seen again.
    missed, _ = _watched(["clean", "move-and-lose", "clean"], restart=False)
    assert missed.broken() == []
    result, injector = _watched(["clean", "move-and-lose", "clean"], restart=True)
    assert injector.armed == [1, 2, 1, 2, 3, 4]  # fault 2 moved the device: from fault 1 again
    assert result.restarted is not None and result.restarted.startswith("after fault 2: the map: moved")
    assert [s.n for s in result.first_pass] == [1, 2] and [s.n for s in result.steps] == [1, 2, 3]
    broken = result.broken()
    assert [e["fault"] for e in broken] == [2]  # the same fault, now above 4 GiB, loses its span
    assert "IOVA space lost" in broken[0]["invariant"] and "first pass" not in broken[0]["invariant"]
    summary = result.summary()
    assert [s["n"] for s in summary["first_pass_log"]] == [1, 2] and summary["sites"] == 3


def test_a_move_alone_restarts_once_and_breaks_nothing() -> None:
    result, injector = _watched(["move", "clean", "move"], restart=True)
    assert injector.armed == [1, 1, 2, 3, 4]
    assert result.broken() == [] and result.sites == 3
    assert result.restarted is not None and "restarted" in result.summary()


def test_a_loss_before_the_move_stays_broken_in_the_first_pass() -> None:
    result, _ = _watched(["lose", "move", "clean"], restart=True)
    first = [e for e in result.broken() if e["invariant"].startswith("first pass")]
    assert [e["fault"] for e in first] == [1] and "IOVA space lost" in first[0]["invariant"]

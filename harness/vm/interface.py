"""What the cell sequencer (harness/run.py) needs from a VM, so that it can take one from a factory:
the real GuestVM, or a fake from harness/vm/fake.py that replays a recorded guest without QEMU."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.console.events import Event
from harness.deadline import Deadline
from harness.guest.plan import GuestPlan
from harness.vm.machine import GuestVM, VmHelper


@dataclass(frozen=True)
class VmLaunch:
    """Everything a VM of one cell is made from."""

    argv: list[str]
    console_log: Path
    plan: GuestPlan
    plan_path: Path
    env: dict[str, str] | None = None
    helpers: Sequence[VmHelper] = field(default_factory=tuple)


class CellVM(Protocol):
    exit_status: int | None

    def launch(self) -> None: ...

    def watch(self, deadline: Deadline, idle_timeout: float | Callable[[], float]) -> Iterator[Event]: ...

    def shutdown(self, before_cleanup: Callable[[], None] | None = None) -> None: ...

    def console_tail(self, lines: int = ...) -> str: ...


VmFactory = Callable[[VmLaunch], CellVM]


def real_vm(launch: VmLaunch) -> GuestVM:
    return GuestVM(
        launch.argv,
        console_log=launch.console_log,
        token=launch.plan.token,
        env=launch.env,
        helpers=launch.helpers,
    )

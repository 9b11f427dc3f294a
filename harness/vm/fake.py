"""VMs without QEMU, for testing everything above the console (the labgrid way: fakes ship in the package).

- `ReplayVM` replays a recorded console (token rewritten to this run's) and does the guest's side effects
  through a callback (write the results file, write bytes into a backing file), then ends the way the
  recording says: the VM exits, or it goes silent until the host gives up (a hang), or it never starts.
- `host_entry_vm` runs the real guest entry (harness.guest.entry) on the host under GuestVM: the real
  frames, plugin and results file, with a tests directory of the caller's choosing.

Use them through run_cell(..., vm_factory=...).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from harness.console.events import ConsoleScanner, Event, tail
from harness.deadline import Deadline
from harness.errors import GuestHang, LaunchError
from harness.guest.plan import GuestPlan
from harness.paths import REPO_ROOT
from harness.vm.interface import VmFactory, VmLaunch
from harness.vm.machine import GuestVM

GuestSide = Callable[[GuestPlan], None]
Ending = Literal["exit", "silent", "launch-error"]


def _nothing(_plan: GuestPlan) -> None:
    return None


@dataclass(frozen=True)
class Recording:
    """A guest's life as the host saw it.

    `console` is the console text; `token` the run token it was recorded with (replaced by the new
    run's). `guest` runs at launch with the plan: it writes what the guest would have written into the
    shared run directory and the backing files. `ending`: "exit" (the VM powers off after the console),
    "silent" (it stops making progress: the host's deadline or idle timeout ends it), "launch-error"
    (vng cannot be started)."""

    console: str
    token: str = "RECORDED"
    guest: GuestSide = _nothing
    ending: Ending = "exit"
    exit_status: int = 0
    chunk: int = 4096  # console delivered in pieces of this size, as pexpect would


@dataclass
class ReplayVM:
    launch_spec: VmLaunch
    recording: Recording
    exit_status: int | None = None
    launched: bool = False
    shut_down: bool = False
    _seen: list[str] = field(default_factory=list)

    def launch(self) -> None:
        if self.recording.ending == "launch-error":
            raise LaunchError(
                "could not start the VM: replayed launch failure", " ".join(self.launch_spec.argv)
            )
        self.launched = True
        self.recording.guest(self.launch_spec.plan)

    def watch(self, deadline: Deadline, idle_timeout: float | Callable[[], float]) -> Iterator[Event]:
        if not self.launched:
            raise LaunchError("watch() before launch()", " ".join(self.launch_spec.argv))
        text = self.recording.console.replace(
            f"@@HIL:{self.recording.token}:", f"@@HIL:{self.launch_spec.plan.token}:"
        )
        scanner = ConsoleScanner(self.launch_spec.plan.token)
        with self.launch_spec.console_log.open("w", encoding="utf-8") as log:
            for start in range(0, len(text), self.recording.chunk):
                piece = text[start : start + self.recording.chunk]
                log.write(piece)
                self._seen.append(piece)
                yield from scanner.feed(piece)
            if self.recording.ending == "silent":
                log.flush()
                # The guest says nothing more: as GuestVM would after the idle timeout (not waited for).
                limit = idle_timeout() if callable(idle_timeout) else idle_timeout
                raise GuestHang(f"no console output for {limit:.0f} s", self.console_tail())
        yield from scanner.finish()
        self.exit_status = self.recording.exit_status

    def shutdown(self, before_cleanup: Callable[[], None] | None = None) -> None:
        self.shut_down = True
        if before_cleanup is not None:
            before_cleanup()

    def console_tail(self, lines: int = 60) -> str:
        return tail("".join(self._seen), lines)


def replay(recording: Recording, made: list[ReplayVM] | None = None) -> VmFactory:
    """A factory for run_cell; the VMs it made are appended to `made` for the test to inspect."""

    def factory(launch: VmLaunch) -> ReplayVM:
        vm = ReplayVM(launch, recording)
        if made is not None:
            made.append(vm)
        return vm

    return factory


def host_entry_vm(launch: VmLaunch) -> GuestVM:
    """The real guest entry, run on the host: its console is the entry's stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    argv = [sys.executable, "-m", "harness.guest.entry", str(launch.plan_path)]
    return GuestVM(argv, console_log=launch.console_log, token=launch.plan.token, env=env)


FAKE_BOOT = (
    "[    0.000000] Linux version 7.2.13-hil (builder@p2p-hil) #1 SMP PREEMPT_DYNAMIC\n"
    "[    3.530393] Run /init as init process\n"
    "[    5.605915] virtme-ng-init: starting script (console fallback)\n"
)
Script = Callable[[GuestPlan], Sequence[Mapping[str, object]]]


def scripted(script: Script, token: str = "SCRIPTED") -> VmFactory:
    """A factory of guests that run the tests `script(plan)` returns (records: name, outcome, and any
    of duration, message, details), each VM its own: what a matrix of cells needs, where the records
    depend on the topology, the kernel or the tests asked for (a retry's plan.only)."""
    from harness.guest.protocol import encode_frame

    def factory(launch: VmLaunch) -> ReplayVM:
        records = [{"duration": 0.1, "message": "", "details": {}, **r} for r in script(launch.plan)]
        frames = [encode_frame(token, "start", {"kernel": "7.2.13-hil"})]
        frames.append(encode_frame(token, "collected", {"count": len(records)}))
        for r in records:
            frames.append(encode_frame(token, "begin", {"name": r["name"]}))
            frames.append(encode_frame(token, "test", {k: r[k] for k in ("name", "outcome", "duration")}))
        frames.append(encode_frame(token, "done", {"status": "finished", "exit_code": 0, "elapsed": 1.0}))
        console = FAKE_BOOT + "".join(frames) + "[    9.000000] reboot: Power down\n"

        def guest(plan: GuestPlan) -> None:
            with plan.results_path.open("a") as out:
                out.writelines(json.dumps(r) + "\n" for r in records)

        return ReplayVM(launch, Recording(console, token, guest))

    return factory

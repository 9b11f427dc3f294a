"""Guest entry point: `python -m harness.guest.entry <plan.json>`, run by vng inside the VM.

Runs pytest as a subprocess on plan.tests_dir with the results plugin, its output going straight to the
console, and frames start/done lines around it (protocol.py). The plugin tells the entry's watchdog
what pytest is doing over a pipe (phases.py): starting up, between tests, in test X since when. A test
past its own limit (plan.test_timeout_s, or its hil_timeout marker) is presumed stuck in the kernel,
where no signal reaches it: dump the blocked tasks' stacks to the console, report "hung" naming the
test, and power the VM off with sysrq (the only way out). plan.guest_deadline_s passing first, in any
phase (Python starting slowly over 9p, say), is reported "timeout" with the phase, the same way out.

Stdlib only, and nothing is written outside the run directory: the host tree is read-only here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import select
import subprocess
import sys
import termios
import time
from collections.abc import Mapping
from pathlib import Path

from harness.guest import clock
from harness.guest.phases import PHASE_FD_ENV, PhaseState
from harness.guest.plan import PLAN_ENV, GuestPlan, PlanError, load_plan
from harness.guest.protocol import CONSOLE_FD_ENV, encode_frame

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSRQ_TRIGGER = Path("/proc/sysrq-trigger")
SYSRQ_ENABLE = Path("/proc/sys/kernel/sysrq")
PROC_CMDLINE = Path("/proc/cmdline")
# Time for the kernel and the tty to push console output out before the VM disappears.
CONSOLE_SETTLE_S = 2.0
# The watchdog learns of pytest's exit from the phase pipe's end of file; a grandchild that inherited
# the pipe would hide it, so the exit is also polled this often.
EXIT_POLL_S = 1.0
EXIT_INFRA = 3


def pytest_command(plan: GuestPlan, python: str) -> list[str]:
    tests = str(plan.tests_dir)
    # Byte-code and assertion rewrites prepared on the host (harness.guest.prepare): the guest cannot
    # write them into the read-only tree, so without the prefix it compiles them again on every boot.
    prefix = [] if plan.pycache_prefix is None else ["-X", f"pycache_prefix={plan.pycache_prefix}"]
    return [
        python,
        *prefix,
        "-m",
        "pytest",
        *([f"{tests}/{nodeid}" for nodeid in plan.only] or [tests]),
        "-p",
        "harness.guest.plugin",
        "-p",
        "no:cacheprovider",  # .pytest_cache would go into the read-only tree
        "-q",
        "--color=no",  # the console log is parsed and archived: no ANSI escapes
        # One module that fails to import is an "error" record; the other modules still run.
        "--continue-on-collection-errors",
        f"--rootdir={tests}",
        f"--confcutdir={tests}",  # no conftest.py above the tests is picked up
        *plan.pytest_args,
    ]


def pytest_env(base: Mapping[str, str], plan_path: str, console_fd: int) -> dict[str, str]:
    env = dict(base)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ (or assertion-rewrite .pyc) writes
    env["PYTHONUNBUFFERED"] = "1"  # progress reaches the console as it happens
    # Else pytest reads every installed distribution's entry points over 9p to find plugins; the guest
    # needs none of them (its own are named with -p).
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env[PLAN_ENV] = plan_path
    env[CONSOLE_FD_ENV] = str(console_fd)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), base.get("PYTHONPATH", "")) if p)
    return env


def emit(token: str, kind: str, payload: Mapping[str, object]) -> None:
    # The guest's own clock (uptime, and t since this process started), so that a timeline can be
    # read on the guest's side too, without the console's delay.
    stamped = {**payload, **clock.since_start(os.getpid())}
    os.write(1, encode_frame(token, kind, stamped).encode())


def _drain_console() -> None:
    """Wait until the tty has sent what we wrote: the VM may power off right after."""
    with contextlib.suppress(OSError, termios.error):
        if os.isatty(1):
            termios.tcdrain(1)


def is_guest(cmdline_path: Path = PROC_CMDLINE) -> bool:
    """True inside a vng guest (its kernel command line has virtme_* words) or one booted with
    `hil_guest`. Guards the sysrq power-off: run by mistake on a host as root, it would stop the host."""
    try:
        words = cmdline_path.read_text().split()
    except OSError:
        return False
    return any(word.startswith("virtme") or word == "hil_guest" for word in words)


def _sysrq(key: str) -> None:
    SYSRQ_TRIGGER.write_text(key)


def _dump_blocked_tasks() -> None:
    # The trigger file works whatever this mask says; enabling it keeps the keyboard path consistent.
    with contextlib.suppress(OSError):
        SYSRQ_ENABLE.write_text("1")
    for key in ("w", "l"):  # tasks in D state; then what each CPU is doing (a kernel busy loop)
        try:
            _sysrq(key)
        except OSError as exc:
            print(f"hil guest entry: sysrq {key}: {exc}", flush=True)


def _power_off() -> None:
    with contextlib.suppress(OSError):
        _sysrq("o")
        time.sleep(30)  # sysrq 'o' only queues the power-off
    linux_reboot_cmd_power_off = 0x4321FEDC
    ctypes.CDLL(None, use_errno=True).reboot(linux_reboot_cmd_power_off)


def _watch(
    proc: subprocess.Popen[bytes], phase_fd: int, state: PhaseState, deadline_s: float | None
) -> int | dict[str, object]:
    """Follow the plugin's steps until pytest exits (its exit code) or a limit passes (the done payload)."""
    pending = b""
    pipe_open = True
    while True:
        now = time.monotonic()
        expired = state.expired(now, deadline_s)
        if expired is not None:
            return expired
        expiry = state.next_expiry(deadline_s)
        wait = None if expiry is None else max(0.0, expiry - now)
        if not pipe_open:
            try:
                return proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        poll = EXIT_POLL_S if wait is None else min(wait, EXIT_POLL_S)
        readable, _, _ = select.select([phase_fd], [], [], poll)
        if not readable:
            if proc.poll() is not None:
                pipe_open = False  # pytest is gone: what it said is all there is
            continue
        chunk = os.read(phase_fd, 65536)
        if not chunk:
            pipe_open = False
            continue
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            state.feed(line, time.monotonic())


def _on_deadline(plan: GuestPlan, proc: subprocess.Popen[bytes], done: dict[str, object]) -> int:
    in_guest = is_guest()
    if in_guest:
        # Also after a mere timeout: where a slow phase waits (9p, say) is worth having.
        _dump_blocked_tasks()
        time.sleep(CONSOLE_SETTLE_S)  # printk may print from a thread: let the dump out first
    else:
        print(f"hil guest entry: {done['status']} outside a VM: killing pytest, not powering off", flush=True)
        proc.kill()
    emit(plan.token, "done", done)
    _drain_console()
    if in_guest:
        # A task stuck in the kernel cannot be killed, and the guest's shutdown would wait for it.
        time.sleep(CONSOLE_SETTLE_S)
        _power_off()
    return EXIT_INFRA


def run(plan: GuestPlan, plan_path: str) -> int:
    started = time.monotonic()
    emit(
        plan.token,
        "start",
        {"kernel": platform.release(), "python": platform.python_version(), "machine": platform.machine()},
    )
    os.chdir(plan.run_dir)  # a stray relative write lands in the shared run dir, not the read-only tree
    console_fd = os.dup(1)  # pytest's fd capture takes over fd 1; the plugin frames on this copy
    phase_read, phase_write = os.pipe()
    env = pytest_env(os.environ, plan_path, console_fd)
    env[PHASE_FD_ENV] = str(phase_write)
    try:
        proc = subprocess.Popen(
            pytest_command(plan, sys.executable),
            env=env,
            pass_fds=(console_fd, phase_write),
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        os.close(phase_read)
        emit(plan.token, "done", {"status": "error", "message": f"cannot start pytest: {exc}"})
        _drain_console()
        return EXIT_INFRA
    finally:
        os.close(console_fd)
        os.close(phase_write)  # only pytest holds it now: its exit is the pipe's end of file
    try:
        ended = _watch(proc, phase_read, PhaseState(started), plan.guest_deadline_s)
    finally:
        os.close(phase_read)
    if isinstance(ended, dict):
        return _on_deadline(plan, proc, ended)
    exit_code = ended
    elapsed = round(time.monotonic() - started, 3)
    emit(plan.token, "done", {"status": "finished", "exit_code": exit_code, "elapsed": elapsed})
    _drain_console()
    return exit_code


def main(argv: list[str]) -> int:
    sys.dont_write_bytecode = True
    if len(argv) != 1:
        print("usage: python -m harness.guest.entry <plan.json>", file=sys.stderr)
        return 2
    try:
        plan = load_plan(argv[0])
    except PlanError as exc:
        # No token without a plan, so no frame: the host sees no "start" and reports an infra error.
        print(f"hil guest entry: {exc}", file=sys.stderr, flush=True)
        return EXIT_INFRA
    return run(plan, str(Path(argv[0]).resolve()))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""A tiny supervisor between the harness and vng, so QEMU never outlives the harness.

vng runs `sh -c virtme-run ...`, and virtme-run keeps QEMU as its child: killing vng
orphans QEMU, and QEMU 10.0 has no exit-with-parent. The guardian asks the kernel for a
signal when its parent dies (PR_SET_PDEATHSIG works even when the harness gets SIGKILL),
leads its own process group, and on any ending kills every process of that group. The run's
private scratch directory belongs to the harness (harness/cell/scratch.py), which reads the guest's
bytes there after the VM stops; the guardian removes it only when the harness is gone.

Usage: python -m harness.vm.guardian --parent PID [--scratch DIR] -- COMMAND...
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """PIDs whose process group is pgid (read from /proc/<pid>/stat)."""
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def kill_group_except_self() -> None:
    me = os.getpid()
    for _ in range(3):  # a dying shell may still fork; sweep a few times
        others = [pid for pid in group_members(os.getpgrp()) if pid != me]
        if not others:
            return
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness.vm.guardian")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--scratch", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)

    def finish(code: int) -> int:
        kill_group_except_self()
        # Orphaned (the harness died): nobody else will remove scratch. A SIGTERM from a live harness
        # is a host kill of the VM, after which the harness still reads the backing files.
        if args.scratch is not None and os.getppid() != args.parent:
            shutil.rmtree(args.scratch, ignore_errors=True)
        return code

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        sys.exit(finish(128 + signum))

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    # The parent may have died before prctl took effect: then nobody would ever signal us.
    if os.getppid() != args.parent:
        return finish(128 + signal.SIGTERM)

    child = subprocess.Popen(command)
    code = child.wait()
    # The guest is done; anything left in the group (a stuck QEMU) must not survive us.
    kill_group_except_self()
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

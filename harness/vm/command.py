"""The vng command line for one VM: a pure function of its inputs."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VngSpec:
    """Everything that decides the vng invocation; no probing happens here."""

    vng: str
    kernel: Path
    accel: str
    memory: str
    cpus: int
    append: tuple[str, ...]
    qemu_args: tuple[str, ...]
    guest_command: str
    rwdirs: tuple[Path, ...] = field(default_factory=tuple)
    cwd: Path | None = None


def vng_argv(spec: VngSpec) -> list[str]:
    argv = [
        spec.vng,
        "--run",
        str(spec.kernel),
        # microvm has no PCIe; the topology's -machine q35 merges with vng's own.
        "--disable-microvm",
        # A stock Debian kernel only prints the command's output with -v (console fallback).
        "--verbose",
        "--memory",
        spec.memory,
        "--cpus",
        str(spec.cpus),
    ]
    if spec.accel != "kvm":
        argv.append("--disable-kvm")
    for rwdir in spec.rwdirs:
        argv += ["--rwdir", str(rwdir)]
    if spec.cwd is not None:
        argv += ["--cwd", str(spec.cwd)]
    if spec.append:
        argv += ["--append", " ".join(spec.append)]
    # vng pastes --qemu-opts into a `sh -c` string, so each argument is shell-quoted once here;
    # the '=' form is needed because the value starts with '-'.
    argv.append("--qemu-opts=" + shlex.join(spec.qemu_args))
    argv += ["--exec", spec.guest_command]
    return argv


def guarded_argv(argv: list[str], parent_pid: int, scratch: Path | None) -> list[str]:
    """Wrap argv in the guardian that kills the VM's process tree if the harness dies."""
    wrapper = [sys.executable, "-m", "harness.vm.guardian", "--parent", str(parent_pid)]
    if scratch is not None:
        wrapper += ["--scratch", str(scratch)]
    return [*wrapper, "--", *argv]

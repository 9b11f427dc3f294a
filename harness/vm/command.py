"""The vng command line for one VM: a pure function of its inputs."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The guest's root is the host's / over 9p, read-only (vng's fsdev has readonly=on). vng mounts it with
# 9p's default cache=none: every stat, open and read is a round trip to QEMU, which is most of what
# Python and pytest cost in the guest (`python -c 'import pytest'` 8.6 s -> 2.3 s with the cache, TCG).
# cache=loose lets the guest keep what it looked up: right for a tree that nothing changes while the VM
# runs (what the host writes during a run, the results and the host agent's answers, is in the run
# directory, an --rwdir mount of its own that stays uncached). vng's own rootflags are repeated because
# the last rootflags= on the command line wins. A kernel booted through vng's initramfs (a stock
# distribution kernel with 9p as a module) mounts the root itself and ignores this.
ROOT_9P_FLAGS = "version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose"


# One host thread emulates all of a guest's vCPUs. Multi-threaded TCG (QEMU's default) hit two QEMU-side
# failures here that single-threaded TCG did not: the iotlb_to_section assertion during a VFIO reset (1 of
# 21 boots vs 0 of 30) and, with two VMs on two cores (`-j 2`), a vCPU that stopped answering IPIs (the
# other vCPU's soft lockup in smp_call_function_many_cond). The guest's work is one Python process, so
# the second emulation thread bought nothing (same cell time), and a VM that uses one core is what lets
# cells run side by side on a small host.
TCG_ARGS = ("-accel", "tcg,thread=single")


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
    cache_root: bool = True  # the guest caches the host's root file system (ROOT_9P_FLAGS)


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
    append = list(spec.append)
    if spec.cache_root:
        # 9p whatever vng would pick (virtiofs when virtiofsd is installed): the flags are 9p's.
        argv.append("--force-9p")
        append.append(f"rootflags={ROOT_9P_FLAGS}")
    for rwdir in spec.rwdirs:
        argv += ["--rwdir", str(rwdir)]
    if spec.cwd is not None:
        argv += ["--cwd", str(spec.cwd)]
    if append:
        argv += ["--append", " ".join(append)]
    qemu_args = list(spec.qemu_args)
    if spec.accel == "tcg":
        qemu_args = [*TCG_ARGS, *qemu_args]
    # vng pastes --qemu-opts into a `sh -c` string, so each argument is shell-quoted once here;
    # the '=' form is needed because the value starts with '-'.
    argv.append("--qemu-opts=" + shlex.join(qemu_args))
    argv += ["--exec", spec.guest_command]
    return argv


def guarded_argv(argv: list[str], parent_pid: int, scratch: Path | None) -> list[str]:
    """Wrap argv in the guardian that kills the VM's process tree if the harness dies."""
    wrapper = [sys.executable, "-m", "harness.vm.guardian", "--parent", str(parent_pid)]
    if scratch is not None:
        wrapper += ["--scratch", str(scratch)]
    return [*wrapper, "--", *argv]

"""The commands and files a cell is made of, as pure functions of the topology, kernel and paths."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from harness.cell.request import CellRequest, HostFacts
from harness.guest.prepare import python_options
from harness.hostcheck import seed_commands
from harness.kernels.image import KernelImage
from harness.paths import REPO_ROOT
from harness.topology import Layout, Topology, backing_files, kernel_cmdline, qemu_topology_args
from harness.vm.command import VngSpec
from harness.vm.host_agent import HostAgent, device_table, object_table, qmp_args, unix_qmp
from harness.vm.machine import VmHelper

VmProgress = Callable[[str], None]

QMP_SOCKET = "qmp.sock"  # in the scratch directory; the host agent's way to QEMU (hot-unplug)


def guest_command(plan_path: Path, pycache_prefix: Path | None = None) -> str:
    # The guest sees the host's root file system, so the host's interpreter and venv run there too,
    # with the byte-code the host prepared (harness.guest.prepare).
    entry = [sys.executable, *python_options(pycache_prefix), "-m", "harness.guest.entry", str(plan_path)]
    return shlex.join(entry)


def make_vng_spec(
    topo: Topology,
    layout: Layout,
    kernel: KernelImage,
    facts: HostFacts,
    run_dir: Path,
    scratch: Path,
    plan_path: Path,
    pycache_prefix: Path | None = None,
) -> VngSpec:
    return VngSpec(
        vng=facts.vng,
        kernel=kernel.image,
        accel=facts.accel,
        memory=f"{topo.machine.memory >> 20}M",
        cpus=topo.machine.smp,
        append=tuple(kernel_cmdline(topo)),
        # The topology, plus a QMP socket for the host agent (harness/vm/host_agent.py): guest tests
        # ask the host for device_del/device_add through the run directory.
        qemu_args=(*qemu_topology_args(layout, scratch), *qmp_args(scratch / QMP_SOCKET)),
        guest_command=guest_command(plan_path, pycache_prefix),
        rwdirs=(run_dir,),
        cwd=REPO_ROOT,
    )


def harness_command(req: CellRequest) -> list[str]:
    hil = ["./hil", "run", "--topology", req.topology, "--kernel", req.kernel_spec]
    if req.series:
        hil += ["--series", str(req.series)]
    for fragment in req.fragments:
        hil += ["--fragment", fragment]
    for key, value in req.axes:
        hil += ["--axis", f"{key}={value}"]
    if req.select:
        hil += ["-k", req.select]
    for name in req.kselftests:
        hil += ["--kselftest", name]
    if req.race_seconds is not None:
        hil += ["--race-seconds", f"{req.race_seconds:g}"]
    return [*hil, "--timeout", f"{req.timeout:g}"]


def seed_targets(layout: Layout, scratch: Path) -> list[tuple[str, Path]]:
    """(device, backing file) of every exporter: the host seeds random bytes there (harness/hostcheck.py)."""
    roles = {d.id: d.role for d in layout.devices}
    return [(dev, path) for dev, path, _size in backing_files(layout, scratch) if roles[dev] == "exporter"]


def raw_commands(
    layout: Layout, scratch: Path, vng: list[str], run_dir: Path | None = None
) -> list[list[str]]:
    """What the harness runs underneath, for re-running the cell by hand without it."""
    # The raw script owns its scratch directory as the harness does: gone when the script ends.
    cleanup = ["trap", f"rm -rf {shlex.quote(str(scratch))}", "EXIT"]
    raw: list[list[str]] = [["mkdir", "-p", str(scratch)], cleanup]
    raw += [["truncate", "-s", str(size), str(path)] for _id, path, size in backing_files(layout, scratch)]
    if run_dir is not None:  # the host's seed bytes, kept in the run directory
        raw += seed_commands(seed_targets(layout, scratch), run_dir)
    return [*raw, vng]


def host_agent(layout: Layout, run_dir: Path, scratch: Path, progress: VmProgress) -> VmHelper:
    """The guest's way to QMP (hot-unplug): requests in the run directory, QEMU's QMP socket."""
    args = qemu_topology_args(layout, scratch)
    qmp = unix_qmp(scratch / QMP_SOCKET)
    return HostAgent(run_dir, qmp, device_table(args), progress, objects=object_table(args))


def create_backing_files(layout: Layout, scratch: Path) -> None:
    for _dev, path, size in backing_files(layout, scratch):
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: an 8 GiB BAR costs no disk until written

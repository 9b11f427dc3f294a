"""The actions behind each `hil` subcommand: parse nothing, print progress, return an exit code."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError, LaunchError
from harness.paths import REPO_ROOT

if TYPE_CHECKING:
    from harness.kernels.image import KernelImage
    from harness.run import CellRequest, CellResult, HostFacts
    from harness.topology import Topology


def _progress(message: str) -> None:
    print(f"[hil] {message}", file=sys.stderr, flush=True)


def topology_command(args: argparse.Namespace) -> int:
    from harness import topology as t

    if args.action == "list":
        for topo in t.list_topologies():
            print(f"{topo.name:24} {topo.description}")
        return 0
    topo = t.load_topology(args.topology)
    if args.action == "render":
        run_dir = Path("/tmp/p2p-hil-render")
        print(shlex.join(t.standalone_qemu_argv(t.lay_out(topo), run_dir)))
        print(f"# kernel command line additions: {' '.join(t.kernel_cmdline(topo)) or '(none)'}")
        print(f"# ivshmem backing files are created as sparse files in {run_dir}/ by `hil run`")
        return 0
    if args.action == "check":
        from harness.topology.check import check_topology

        problems = check_topology(topo)
        if problems:
            for problem in problems:
                print(f"MISMATCH {problem}")
            return 1
        print(f"{topo.name}: the live PCI tree matches the definition")
        return 0
    from harness.topology.oracle import explain_table

    print(explain_table(topo))
    return 0


def _series(args: argparse.Namespace) -> Path | None:
    """--series as an absolute path (git am runs in the kernel tree, not here), checked before any work."""
    given = getattr(args, "series", None)
    if not given:
        return None
    path = Path(given).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"no such file: {given}", "--series")
    return path


def kernel_command(args: argparse.Namespace) -> int:
    from harness.kernels.image import resolve_kernel

    series = _series(args)
    if args.action == "fetch" and not args.spec.startswith("debian:"):
        raise ConfigError(f"'{args.spec}' is not a stock image; use `hil kernel build` for sources", "spec")
    t0 = time.monotonic()
    kernel = resolve_kernel(
        args.spec, progress=_progress, series=series, fragments=tuple(getattr(args, "fragment", ()))
    )
    print(f"{kernel.spec}: {kernel.version}  image {kernel.image}  ({time.monotonic() - t0:.1f} s)")
    return 0


def _host_facts(kernel_image: Path, requested: str) -> HostFacts:
    from harness.paths import cache_dir
    from harness.run import HostFacts
    from harness.vm.accel import cached_accelerator, qemu_version

    qemu = shutil.which("qemu-system-x86_64")
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    if qemu is None:
        raise LaunchError("qemu-system-x86_64 is not installed (./hil installs it when run as root)")
    choice = cached_accelerator(qemu, kernel_image, requested, cache_dir() / "accel.json")
    _progress(f"accelerator: {choice.accel} ({choice.reason})")
    return HostFacts(
        qemu=qemu, qemu_version=qemu_version(qemu), accel=choice.accel, accel_reason=choice.reason, vng=vng
    )


def run_command(args: argparse.Namespace) -> int:
    from harness import topology as t
    from harness.kernels.image import resolve_kernel
    from harness.modules import build_test_modules, default_out_dir
    from harness.results.model import exit_code
    from harness.results.report import matrix_table
    from harness.results.routes import route_rows, routes_table
    from harness.run import CellRequest, print_cell, run_cell

    names = [topo.name for topo in t.list_topologies()] if args.topology == "all" else [args.topology]
    topologies = [t.load_topology(name) for name in names]  # every file validated before any VM starts
    specs = list(dict.fromkeys(args.kernel))  # in the order given, each once
    if args.out and len(topologies) * len(specs) > 1:
        raise ConfigError("--out names one directory; use it with one topology and one kernel", "--out")
    series = _series(args)
    # Every kernel is fetched or built before the first VM: a build that fails costs no VM time.
    kernels = [resolve_kernel(spec, progress=_progress, series=series) for spec in specs]
    invocation = ("./hil", *sys.argv[1:])
    results = []
    for spec, kernel in zip(specs, kernels, strict=True):
        facts = _host_facts(kernel.image, args.accel)
        modules = build_test_modules(kernel, default_out_dir(), _progress)
        for topo in topologies:
            req = CellRequest(
                topology=topo.name if args.topology == "all" else args.topology,
                kernel_spec=spec,
                select=args.select,
                timeout=args.timeout,
                idle_timeout=args.idle_timeout,
                out=Path(args.out) if args.out else None,
                invocation=invocation,
                series=series,
            )
            if args.dry_run:
                _print_dry_run(req, topo, kernel, facts)
                continue
            result = run_cell(req, topo, kernel, facts, REPO_ROOT / "runs", _progress, modules.out_dir)
            result = _rerun_if_qemu_aborted(result, req, topo, kernel, facts, modules.out_dir)
            print_cell(result, print)
            results.append(result)
    if args.dry_run:
        return 0
    if len(results) > 1:
        print(matrix_table([(r.meta, r.records, r.verdict) for r in results]))
    routes = routes_table([row for r in results for row in route_rows(r.meta, r.records)])
    if routes:
        print(routes)
    return max(exit_code(r.verdict) for r in results)


def _rerun_if_qemu_aborted(
    result: CellResult,
    req: CellRequest,
    topo: Topology,
    kernel: KernelImage,
    facts: HostFacts,
    modules_dir: Path | None,
) -> CellResult:
    """QEMU's TCG has rare internal asserts (not the kernel's fault): rerun such a cell once, keeping
    the first attempt's directory next to it and saying so in the second attempt's report."""
    from harness.results.model import Verdict
    from harness.run import qemu_abort_line, run_cell

    if result.verdict is not Verdict.INFRA_ERROR:
        return result
    console = result.run_dir / "console.log"
    line = qemu_abort_line(console.read_text(errors="replace")) if console.exists() else None
    if line is None:
        return result
    kept = result.run_dir.with_name(result.run_dir.name + "-qemu-abort")
    result.run_dir.rename(kept)
    _progress(f"QEMU itself aborted ({line}); rerunning the cell once, first attempt kept in {kept}")
    again = replace(req, out=result.run_dir, earlier_attempt=f"first attempt: QEMU aborted: {line} ({kept})")
    return run_cell(again, topo, kernel, facts, REPO_ROOT / "runs", _progress, modules_dir)


def _print_dry_run(req: CellRequest, topo: Topology, kernel: KernelImage, facts: HostFacts) -> None:
    from harness import topology as t
    from harness.run import make_vng_spec, raw_commands
    from harness.vm.command import vng_argv

    layout = t.lay_out(topo)
    scratch, run_dir = Path("/tmp/p2p-hil-dry-run"), Path("runs/dry-run")
    argv = vng_argv(make_vng_spec(topo, layout, kernel, facts, run_dir, scratch, run_dir / "plan.json"))
    for command in raw_commands(layout, scratch, argv):
        print(shlex.join(command))

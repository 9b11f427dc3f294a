"""The actions behind each `hil` subcommand: parse nothing, print progress, return an exit code."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError, InfraError, LaunchError
from harness.paths import REPO_ROOT

if TYPE_CHECKING:
    from harness.cell.request import CellRequest, CellResult, HostFacts
    from harness.kernels.image import KernelImage
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
    from harness.cell.request import HostFacts
    from harness.paths import cache_dir
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


# Run directories of `hil run` without --out; module-level so tests can point it elsewhere.
RUNS_ROOT = REPO_ROOT / "runs"

KERNEL_FIRST_NOTE = (
    "no VM was started: every kernel is fetched and built before the first cell, so that a kernel "
    "that cannot be built costs no VM time; fix the build (or drop that --kernel) and run again"
)


def _resolve_kernels(specs: list[str], series: Path | None) -> list[KernelImage]:
    """Every kernel, before any VM. A fetch or build error here ends the invocation (by design)."""
    from harness.kernels.image import resolve_kernel

    kernels = []
    for spec in specs:
        try:
            kernels.append(resolve_kernel(spec, progress=_progress, series=series))
        except InfraError as exc:
            exc.add_note(f"kernel {spec}: {KERNEL_FIRST_NOTE}")
            raise
    return kernels


def run_command(args: argparse.Namespace) -> int:
    from harness import topology as t
    from harness.results.model import exit_code
    from harness.results.report import matrix_table
    from harness.results.routes import route_rows, routes_table
    from harness.rundir import check_out_dir

    names = [topo.name for topo in t.list_topologies()] if args.topology == "all" else [args.topology]
    topologies = [t.load_topology(name) for name in names]  # every file validated before any VM starts
    specs = list(dict.fromkeys(args.kernel))  # in the order given, each once
    if args.out and len(topologies) * len(specs) > 1:
        raise ConfigError("--out names one directory; use it with one topology and one kernel", "--out")
    series = _series(args)
    out = Path(args.out) if args.out else None
    if out is not None:
        check_out_dir(out)  # a usage error, found before anything is fetched or built
    if args.dry_run:
        from harness.dryrun import dry_run
        from harness.paths import cache_dir

        return dry_run(
            topologies,
            args.topology,
            specs,
            series=series,
            select=args.select,
            timeout=args.timeout,
            idle_timeout=args.idle_timeout,
            accel_requested=args.accel,
            out=out,
            runs_root=RUNS_ROOT,
            now=datetime.now().astimezone(),
            accel_cache=cache_dir() / "accel.json",
            emit=lambda text: print(text, end="", flush=True),
        )
    kernels = _resolve_kernels(specs, series)
    invocation = ("./hil", *sys.argv[1:])
    results: list[CellResult] = []
    # A matrix prints each cell's tests that did not simply pass (its results.json has them all).
    passed_rows = len(topologies) * len(specs) == 1
    for spec, kernel in zip(specs, kernels, strict=True):
        cells = [(topo, _cell_request(args, topo, spec, series, invocation)) for topo in topologies]
        try:
            facts = _host_facts(kernel.image, args.accel)
            modules_dir = _test_modules(kernel)
        except InfraError as exc:
            # The accelerator probe or this kernel's test modules failed: this kernel's cells cannot
            # run, the other kernels' cells still do.
            _progress(f"kernel {spec}: {exc}\n[hil] its {len(cells)} cell(s) are recorded as infra-error")
            for topo, req in cells:
                started_at = datetime.now(UTC)
                run_dir = _claim_run_dir(req, topo, started_at)
                stage = f"preparing kernel {spec} for its cells"
                results.append(_infra_error_cell(req, topo, kernel, None, run_dir, stage, exc, started_at))
                _print_cell(results[-1], passed_rows)
            continue
        for topo, req in cells:
            results.append(_run_one_cell(req, topo, kernel, facts, modules_dir))
            _print_cell(results[-1], passed_rows)
    if len(results) > 1:
        print(matrix_table([(r.meta, r.records, r.verdict) for r in results]))
    routes = routes_table([row for r in results for row in route_rows(r.meta, r.records)])
    if routes:
        print(routes)
    return max(exit_code(r.verdict) for r in results)


def _cell_request(
    args: argparse.Namespace, topo: Topology, spec: str, series: Path | None, invocation: tuple[str, ...]
) -> CellRequest:
    from harness.cell.request import CellRequest

    return CellRequest(
        topology=topo.name if args.topology == "all" else args.topology,
        kernel_spec=spec,
        select=args.select,
        timeout=args.timeout,
        idle_timeout=args.idle_timeout,
        out=Path(args.out) if args.out else None,
        invocation=invocation,
        series=series,
    )


def _test_modules(kernel: KernelImage) -> Path | None:
    from harness.kernels.modules import build_test_modules, default_out_dir

    return build_test_modules(kernel, default_out_dir(), _progress).out_dir


def _print_cell(result: CellResult, passed_rows: bool) -> None:
    from harness.run import print_cell

    print_cell(result, print, passed_rows=passed_rows)


def _claim_run_dir(req: CellRequest, topo: Topology, started_at: datetime) -> Path:
    """The cell's own directory, claimed before the cell starts, so that whatever happens in the
    cell its results.json has a place that no other run shares."""
    from harness.rundir import allocate_run_dir, claim_out_dir

    if req.out is not None:
        return claim_out_dir(req.out)
    return allocate_run_dir(RUNS_ROOT, topo.name, req.kernel_label, started_at.astimezone())


def _run_one_cell(
    req: CellRequest, topo: Topology, kernel: KernelImage, facts: HostFacts, modules_dir: Path | None
) -> CellResult:
    """run_cell, with an infrastructure error turned into this cell's infra-error result: one broken
    cell of a matrix must not cost the others their runs, nor itself its results.json."""
    from harness.run import run_cell

    started_at = datetime.now(UTC)
    run_dir = _claim_run_dir(req, topo, started_at)
    cell = replace(req, out=run_dir)
    try:
        result = run_cell(cell, topo, kernel, facts, run_dir, _progress, modules_dir)
        return _rerun_if_qemu_aborted(result, cell, topo, kernel, facts, modules_dir)
    except InfraError as exc:
        _progress(f"{topo.name} x {req.kernel_label}: infrastructure error, going on with the next cell")
        return _infra_error_cell(cell, topo, kernel, facts, run_dir, "the cell", exc, started_at)


def _infra_error_cell(
    req: CellRequest,
    topo: Topology,
    kernel: KernelImage,
    facts: HostFacts | None,
    run_dir: Path,
    stage: str,
    exc: InfraError,
    started_at: datetime,
) -> CellResult:
    """Record a cell that could not run as `infra-error`, the error text as its evidence, in its own
    results directory (results.json and junit.xml, like any other cell)."""
    import socket

    from harness import __version__
    from harness.cell.request import CellResult
    from harness.results.model import RunMeta, Verdict
    from harness.results.write import write_junit, write_results_json

    meta = RunMeta(
        topology=topo.name,
        kernel=req.kernel_label,
        kernel_version=kernel.version,
        qemu_version=facts.qemu_version if facts else None,
        accelerator=facts.accel if facts else "none",
        started_at=started_at.isoformat(),
        durations={"total": round((datetime.now(UTC) - started_at).total_seconds(), 2)},
        host=socket.gethostname(),
        harness_version=__version__,
        command=list(req.invocation),
    )
    evidence = [f"infrastructure error in {stage} ({type(exc).__name__}): {exc}"]
    write_results_json(run_dir / "results.json", meta, [], Verdict.INFRA_ERROR, evidence)
    write_junit(run_dir / "junit.xml", meta, [])
    return CellResult(run_dir, meta, [], Verdict.INFRA_ERROR, list(evidence))


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
    from harness.console.watch import qemu_abort_line
    from harness.results.model import Verdict
    from harness.run import run_cell

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
    return run_cell(again, topo, kernel, facts, result.run_dir, _progress, modules_dir)

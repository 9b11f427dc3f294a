"""The actions behind each `hil` subcommand: parse nothing, print progress, return an exit code."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from harness.errors import ConfigError, InfraError, LaunchError
from harness.paths import REPO_ROOT

if TYPE_CHECKING:
    from harness.cell.execute import PreparedKernel
    from harness.cell.request import CellRequest, CellResult, HostFacts
    from harness.kernels.image import KernelImage
    from harness.matrix.cells import CellSpec
    from harness.matrix.document import Matrix, Shard

T = TypeVar("T")


_PROGRESS_LOCK = threading.Lock()


def progress(message: str) -> None:
    # One write per line under a lock: cells run in threads, and print()'s separate write of the
    # newline let two cells' lines run together ("...bar-4g-pt__src-debian-7.2[hil] bar-4g: booting").
    with _PROGRESS_LOCK:
        sys.stderr.write(f"[hil] {message}\n")
        sys.stderr.flush()


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
        args.spec, progress=progress, series=series, fragments=tuple(getattr(args, "fragment", ()))
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
    progress(f"accelerator: {choice.accel} ({choice.reason})")
    return HostFacts(
        qemu=qemu, qemu_version=qemu_version(qemu), accel=choice.accel, accel_reason=choice.reason, vng=vng
    )


# Run directories of `hil run` without --out; module-level so tests can point it elsewhere.
RUNS_ROOT = REPO_ROOT / "runs"

KERNEL_FIRST_NOTE = (
    "no VM was started: every kernel is fetched and built before the first cell, so that a kernel "
    "that cannot be built costs no VM time; fix the build (or drop that --kernel) and run again"
)


def _resolve_kernels(specs: list[str], series: Path | None, fragments: tuple[str, ...]) -> list[KernelImage]:
    """Every kernel, before any VM. A fetch or build error here ends the invocation (by design)."""
    from harness.kernels.image import resolve_kernel

    kernels = []
    for spec in specs:
        try:
            kernels.append(resolve_kernel(spec, progress=progress, series=series, fragments=fragments))
        except InfraError as exc:
            exc.add_note(f"kernel {spec}: {KERNEL_FIRST_NOTE}")
            raise
    return kernels


def run_command(args: argparse.Namespace) -> int:
    from harness.matrix.document import parse_shard
    from harness.rundir import check_out_dir

    series = _series(args)
    fragments = _fragments(args)
    _race_seconds(args)
    cell_timeout(args)
    cells = _plan_cells(args, series)  # every topology file and axis validated before anything starts
    shard = _parse_flag(parse_shard, args.shard, "--shard") if args.shard else None
    out = Path(args.resume or args.out) if (args.resume or args.out) else None
    is_matrix = len(cells) > 1 or shard is not None or args.resume is not None
    baseline = _baseline(args.baseline)
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"{args.jobs}: run at least one cell at a time", "-j")
    if args.retries < 0:
        raise ConfigError(f"{args.retries}: a number of retries, 0 or more", "--retries")
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise ConfigError("--resume names the matrix directory to complete; drop --out", "--out")
    if out is not None and not args.resume:
        check_out_dir(out)  # a usage error, found before anything is fetched or built
    if args.dry_run:
        from harness.dryrun import dry_run
        from harness.paths import cache_dir

        matrix_dir = out or RUNS_ROOT / f"{datetime.now().astimezone():%Y%m%d-%H%M%S}-matrix"
        return dry_run(
            cells,
            series=series,
            fragments=fragments,
            kselftests=tuple(dict.fromkeys(getattr(args, "kselftest", None) or ())),
            race_seconds=_race_seconds(args),
            select=args.select,
            timeout=cell_timeout(args),
            idle_timeout=args.idle_timeout,
            accel_requested=args.accel,
            run_dir_of=lambda cell: _dry_run_dir(cell, matrix_dir if is_matrix else out, is_matrix),
            accel_cache=cache_dir() / "accel.json",
            emit=lambda text: print(text, end="", flush=True),
        )
    if is_matrix:
        return _run_matrix(args, cells, out, shard, baseline, series)
    kernels = prepared_kernels([c.kernel_spec for c in cells], series, args.accel, fragments)
    return _run_single(
        cells[0], kernels[cells[0].kernel_spec], _cell_request(args, cells[0], series), out, args
    )


def _run_matrix(
    args: argparse.Namespace,
    cells: list[CellSpec],
    out: Path | None,
    shard: Shard | None,
    baseline: Matrix | None,
    series: Path | None,
) -> int:
    from harness.matrix.compare import comparison_text, has_regressions
    from harness.matrix.session import MatrixSession
    from harness.results.model import exit_code
    from harness.results.report import matrix_table
    from harness.results.routes import routes_table

    session = MatrixSession.open(
        cells, out, shard, resume=args.resume is not None, baseline=baseline, runs_root=RUNS_ROOT
    )
    jobs = session.pending()
    kernels = prepared_kernels([c.kernel_spec for c in jobs], series, args.accel, _fragments(args))
    matrix, comparison = session.run(
        jobs,
        kernels,
        lambda cell: _cell_request(args, cell, series),
        parallel=args.jobs or default_jobs_for(kernels, cells),
        retries=args.retries,
        progress=progress,
        report=lambda result: _print_cell(result, passed_rows=False),
    )
    docs = [matrix.cells[c.id] for c in session.cells if c.id in matrix.cells]
    print(matrix_table([(d.meta, d.records, d.verdict) for d in docs]))
    routes = routes_table(matrix.routes())
    if routes:
        print(routes)
    status = exit_code(matrix.verdict)
    if comparison is not None:
        print(comparison_text(comparison))
        status = max(status, 1 if has_regressions(comparison) else 0)
    for cell in matrix.missing:
        print(f"missing: {cell} (no results; `--resume {matrix.dir}` runs it)")
    print(f"matrix: {matrix.dir} (index.html, matrix.json, junit.xml, kcidb.json)")
    return status


def _parse_flag(parse: Callable[[str], T], text: str, flag: str) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(str(exc), flag) from None


def _baseline(given: str | None) -> Matrix | None:
    """--baseline read before any work: a wrong directory is a usage error, not a failure at the end."""
    if given is None:
        return None
    from harness.matrix.document import read_matrix

    try:
        return read_matrix(Path(given))
    except InfraError as exc:
        raise ConfigError(str(exc), "--baseline") from None


def _plan_cells(args: argparse.Namespace, series: Path | None) -> list[CellSpec]:
    from harness import topology as t
    from harness.cell.request import kernel_label
    from harness.matrix.cells import plan_cells
    from harness.topology.axes import expand, parse_axes

    given: list[str] = []
    for name in args.topology:
        given += [topo.name for topo in t.list_topologies()] if name == "all" else [name]
    axes = parse_axes(args.axis)
    variants = [
        (name, variant.topology, variant.axes)
        for name in dict.fromkeys(given)
        for variant in expand(t.load_topology(name), axes)
    ]
    specs = list(dict.fromkeys(args.kernel))  # in the order given, each once
    fragments = _fragments(args)
    for spec in specs:
        _check_variant(spec, series, fragments)
    labels = [(spec, kernel_label(spec, fragments, series)) for spec in specs]
    return plan_cells(variants, labels)


def _fragments(args: argparse.Namespace) -> tuple[str, ...]:
    """--fragment names, each readable (checked before anything starts), in order, each once."""
    from harness.kernels.kconfig import load_fragments

    names = tuple(dict.fromkeys(getattr(args, "fragment", None) or ()))
    try:
        load_fragments(names)
    except ConfigError as exc:
        raise ConfigError(str(exc), "--fragment") from None
    return names


def _check_variant(spec: str, series: Path | None, fragments: tuple[str, ...]) -> None:
    """A series or fragments on a kernel we do not build is a usage error, found before any work."""
    from harness.kernels.spec import parse_spec

    parse_spec(spec, series=series, fragments=fragments)


def _dry_run_dir(cell: CellSpec, out: Path | None, is_matrix: bool) -> tuple[Path, str]:
    from harness.rundir import run_dir_name

    if is_matrix:
        assert out is not None
        return out / cell.id, "the cell's directory in the matrix directory"
    if out is None:
        path = RUNS_ROOT / run_dir_name(cell.topology.name, cell.kernel_label, datetime.now().astimezone())
        return path, "not created; the name gets _2, _3, ... if taken"
    return out, "--out; created when the cell starts"


def prepared_kernels(
    specs: Sequence[str], series: Path | None, accel: str, fragments: tuple[str, ...] = ()
) -> dict[str, PreparedKernel]:
    """Every kernel fetched or built before any VM (a build error ends the invocation, by design); then
    per kernel the accelerator probe and the test modules, whose failure costs only its cells."""
    from harness.cell.execute import PreparedKernel

    wanted = list(dict.fromkeys(specs))
    prepared = {}
    for spec, kernel in zip(wanted, _resolve_kernels(wanted, series, fragments), strict=True):
        try:
            facts = _host_facts(kernel.image, accel)
            prepared[spec] = PreparedKernel(spec, kernel, facts, _test_modules(kernel))
        except InfraError as exc:
            progress(f"kernel {spec}: {exc}\n[hil] its cells are recorded as infra-error")
            prepared[spec] = PreparedKernel(spec, kernel, error=exc)
    return prepared


def default_jobs_for(kernels: dict[str, PreparedKernel], cells: Sequence[CellSpec]) -> int:
    from harness.matrix.runner import default_jobs, host_cores

    accels = {k.facts.accel for k in kernels.values() if k.facts is not None} or {"tcg"}
    vcpus = max((c.topology.machine.smp for c in cells), default=1)
    return default_jobs(host_cores(), "kvm" if accels == {"kvm"} else "tcg", vcpus)


def _run_single(
    cell: CellSpec, kernel: PreparedKernel, req: CellRequest, out: Path | None, args: argparse.Namespace
) -> int:
    from harness.cell.execute import run_prepared
    from harness.results.model import exit_code
    from harness.results.routes import route_rows, routes_table

    run_dir = _claim_run_dir(req, cell, out, datetime.now(UTC))
    result = run_prepared(req, cell.topology, kernel, run_dir, args.retries, progress)
    _print_cell(result, passed_rows=True)
    routes = routes_table(route_rows(result.meta, result.records))
    if routes:
        print(routes)
    return exit_code(result.verdict)


def _cell_request(args: argparse.Namespace, cell: CellSpec, series: Path | None) -> CellRequest:
    from harness.cell.request import CellRequest

    return CellRequest(
        topology=cell.given,
        kernel_spec=cell.kernel_spec,
        select=args.select,
        timeout=cell_timeout(args),
        idle_timeout=args.idle_timeout,
        invocation=("./hil", *sys.argv[1:]),
        series=series,
        axes=cell.axes,
        fragments=_fragments(args),
        race_seconds=_race_seconds(args),
        kselftests=tuple(dict.fromkeys(getattr(args, "kselftest", None) or ())),
    )


# A cell's deadline without --timeout; each upstream selftest directory adds its own budget (the vfio and
# iommu binaries may each run minutes under TCG: harness/kselftest/catalog.py).
DEFAULT_CELL_TIMEOUT_S = 900.0
KSELFTEST_TIMEOUT_S = 900.0
# The debug variant runs the default suite about 3x slower under TCG (KASAN, lockdep) and adds the
# fault-injection sweeps and races: a whole cell took 12 min alone here and passed 900 s under load.
DEBUG_TIMEOUT_FACTOR = 3.0


def cell_timeout(args: argparse.Namespace) -> float:
    given: float | None = getattr(args, "timeout", None)
    if given is not None:
        if not given > 0:
            raise ConfigError(f"{given}: a number of seconds above 0", "--timeout")
        return given
    selftests = len(dict.fromkeys(getattr(args, "kselftest", None) or ()))
    factor = DEBUG_TIMEOUT_FACTOR if "debug" in (getattr(args, "fragment", None) or ()) else 1.0
    return DEFAULT_CELL_TIMEOUT_S * factor + KSELFTEST_TIMEOUT_S * selftests


def _race_seconds(args: argparse.Namespace) -> float | None:
    seconds: float | None = getattr(args, "race_seconds", None)
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"{seconds}: a number of seconds above 0", "--race-seconds")
    return seconds


def _test_modules(kernel: KernelImage) -> Path | None:
    from harness.kernels.modules import build_test_modules, default_out_dir

    return build_test_modules(kernel, default_out_dir(), progress).out_dir


def _print_cell(result: CellResult, passed_rows: bool) -> None:
    from harness.run import print_cell

    print_cell(result, print, passed_rows=passed_rows)


def _claim_run_dir(req: CellRequest, cell: CellSpec, out: Path | None, started_at: datetime) -> Path:
    """The cell's own directory, claimed before the cell starts, so that whatever happens in the
    cell its results.json has a place that no other run shares."""
    from harness.rundir import allocate_run_dir, claim_out_dir

    if out is not None:
        return claim_out_dir(out)
    return allocate_run_dir(RUNS_ROOT, cell.topology.name, req.kernel_label, started_at.astimezone())

"""`hil run --dry-run`: what a run would do, found out without doing any of it.

Nothing here downloads, builds, probes, boots or creates a file or directory: the kernel caches
are asked offline, the accelerator choice is read from its cache, and where the answer needs
work (a kernel not built yet, a KVM probe not made yet) the block says so and shows a placeholder.
Reading files and asking tools for their version (`gcc --version`, `qemu --version`) is allowed:
it changes nothing.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import FetchError
from harness.kernels.kimage import KernelImage
from harness.kernels.spec import DebianImage, DebianSource, ImageFile, LocalTree, parse_spec

if TYPE_CHECKING:
    from harness.matrix.cells import CellSpec

# Where the harness's mkdtemp would put the scratch directory; the X's are filled in at run time.
SCRATCH_PLACEHOLDER = Path("/tmp/p2p-hil-XXXXXXXX")


@dataclass(frozen=True)
class KernelLookup:
    """A kernel spec as the caches know it. `image` is None when a run would first fetch or build it."""

    spec: str
    image: KernelImage | None
    action: str  # "cached", "given", "would fetch", "would build"
    detail: str

    def bootable(self) -> KernelImage:
        """The image to show in commands: the real one, or a placeholder that says why there is none."""
        if self.image is not None:
            return self.image
        verb = "fetched" if self.action == "would fetch" else "built"
        return KernelImage(spec=self.spec, version="?", image=Path(f"<{self.spec}: not {verb} yet>"))

    def line(self) -> str:
        if self.image is not None:
            return f"{self.action} {self.image.image} ({self.image.version}){self.detail}"
        return f"{self.action}{self.detail}"


def _quiet(_message: str) -> None:
    """Offline cache lookups report nothing: the dry run's block says what matters."""


def lookup_kernel(spec: str, series: Path | None, fragments: tuple[str, ...] = ()) -> KernelLookup:
    """Ask the caches (offline) whether `spec` is ready; never fetch or build."""
    from harness.kernels import build, debian, debsrc, kconfig, source

    parsed = parse_spec(spec, series=series, fragments=fragments)
    if isinstance(parsed, ImageFile):
        from harness.kernels.image import resolve_kernel

        # A bzImage path is read, never fetched or built: resolving it is the lookup.
        return KernelLookup(spec, resolve_kernel(spec, progress=_quiet), "given", "")
    if isinstance(parsed, DebianImage):
        try:
            return KernelLookup(spec, debian.fetch_image(parsed, _quiet, offline=True), "cached", "")
        except FetchError:
            return KernelLookup(spec, None, "would fetch", " (stock image, not in the cache)")
    if isinstance(parsed, DebianSource):
        try:
            tree = debsrc.fetch_source(parsed, _quiet, offline=True)
        except FetchError:
            return KernelLookup(
                spec, None, "would build", f" (after fetching {parsed.package}: not in the cache)"
            )
        where = f"source cached at {tree.path}"
    else:
        assert isinstance(parsed, LocalTree)
        tree = source.local_tree(parsed.path)
        where = f"tree {tree.path}"
    fragments = kconfig.fragment_names(parsed.fragments)
    hit = build.lookup_build(tree, series=series, fragments=fragments, spec=spec)
    if hit is None:
        patched = f" with the series {series.name}" if series is not None else ""
        return KernelLookup(spec, None, "would build", f" ({where}{patched}; no finished build in the cache)")
    return KernelLookup(spec, hit, "cached", "")


@dataclass(frozen=True)
class AccelLookup:
    accel: str
    how: str  # said in the block


def lookup_accelerator(qemu: str | None, requested: str, cache_file: Path) -> AccelLookup:
    """What --accel resolves to, from the flag or the remembered probe; never probes."""
    from harness.vm import accel

    if requested == "tcg":
        return AccelLookup("tcg", "TCG requested")
    problem = accel.kvm_usable_device()
    if requested == "kvm":
        return AccelLookup("kvm", "KVM requested" + (f" although {problem}" if problem else ""))
    if problem is not None:
        return AccelLookup("tcg", problem)
    remembered = accel.remembered_accelerator(qemu, cache_file) if qemu is not None else None
    if remembered is not None:
        return AccelLookup(remembered.accel, remembered.reason)
    return AccelLookup("tcg", "would probe with a short KVM boot first; commands shown for TCG")


@dataclass(frozen=True)
class DryCell:
    """One cell of the dry run, all facts gathered: `block` turns it into text."""

    index: int
    total: int
    topology: str
    kernel_label: str  # the spec with its variant and series, as reports name it
    kernel: KernelLookup
    accel: AccelLookup
    run_dir: Path
    run_dir_note: str
    harness: list[str]
    raw: list[list[str]]


def block(cell: DryCell) -> str:
    """Pure: the text of one cell."""
    lines = [
        f"cell {cell.index}/{cell.total}: {cell.topology} x {cell.kernel_label}",
        f"  kernel:       {cell.kernel.line()}",
        f"  accelerator:  {cell.accel.accel} ({cell.accel.how})",
        "  test modules: built for the kernel before its first cell, unless cached",
        f"  results:      {cell.run_dir} ({cell.run_dir_note})",
        "  command:",
        f"    {shlex.join(cell.harness)}",
        "  underneath (plan.json and the exporters' seed bytes are written by the harness first):",
        *(f"    {shlex.join(command)}" for command in cell.raw),
    ]
    return "\n".join(lines) + "\n"


def dry_run(
    cells: Sequence[CellSpec],
    *,
    series: Path | None,
    fragments: tuple[str, ...] = (),
    kselftests: tuple[str, ...] = (),
    race_seconds: float | None = None,
    select: str | None,
    timeout: float,
    idle_timeout: float,
    accel_requested: str,
    run_dir_of: Callable[[CellSpec], tuple[Path, str]],
    accel_cache: Path,
    emit: Callable[[str], None],
) -> int:
    """Print one block per cell (kernels outer, topologies inner, as a run orders them); 0.
    `run_dir_of` says where a cell would write, and a note on how that directory comes about."""
    from harness import topology as t
    from harness.cell.request import CellRequest, HostFacts
    from harness.cell.setup import harness_command, make_vng_spec, raw_commands
    from harness.guest.prepare import pycache_prefix
    from harness.kselftest.devices import with_selftest_devices
    from harness.paths import cache_dir
    from harness.vm.accel import qemu_version
    from harness.vm.command import vng_argv

    qemu = shutil.which("qemu-system-x86_64")
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    if qemu is None:
        emit("note: qemu-system-x86_64 is not installed; a run would stop with an infrastructure error\n")
    total = len(cells)
    specs = dict.fromkeys(c.kernel_spec for c in cells)
    kernels = {spec: lookup_kernel(spec, series, fragments) for spec in specs}
    chosen = lookup_accelerator(qemu, accel_requested, accel_cache)
    facts = HostFacts(
        qemu=qemu or "qemu-system-x86_64",
        qemu_version=qemu_version(qemu) if qemu else "not installed",
        accel=chosen.accel,
        accel_reason=chosen.how,
        vng=vng,
    )
    for index, cell in enumerate(cells, start=1):
        kernel = kernels[cell.kernel_spec]
        # The machine the run would boot: the selftests' device, memory and kernel arguments included.
        topo = with_selftest_devices(cell.topology, kselftests)
        req = CellRequest(
            topology=cell.given,
            kernel_spec=cell.kernel_spec,
            select=select,
            timeout=timeout,
            idle_timeout=idle_timeout,
            series=series,
            axes=cell.axes,
            fragments=fragments,
            race_seconds=race_seconds,
            kselftests=kselftests,
        )
        run_dir, note = run_dir_of(cell)
        layout = t.lay_out(topo)
        spec_ = make_vng_spec(
            topo, layout, kernel.bootable(), facts, run_dir, SCRATCH_PLACEHOLDER, run_dir / "plan.json",
            pycache_prefix(cache_dir()),  # where the harness prepares the guest's byte-code
        )  # fmt: skip
        emit(
            block(
                DryCell(
                    index=index,
                    total=total,
                    topology=topo.name,
                    kernel_label=req.kernel_label,
                    kernel=kernel,
                    accel=chosen,
                    run_dir=run_dir,
                    run_dir_note=note,
                    harness=harness_command(req),
                    raw=raw_commands(layout, SCRATCH_PLACEHOLDER, vng_argv(spec_)),
                )
            )
        )
    emit(f"dry run: {total} cell{'s' if total != 1 else ''}; nothing was fetched, built, probed or booted\n")
    return 0

"""make_bundle: a cell directory -> one .tar.gz that reproduces it elsewhere (harness.bundle.read reads it).

What the cell directory does not hold is gathered here: the topology's YAML file, the kernel's .config
(recorded by the run, else the build cache's answer for the same kernel version), the series mbox, the
known issues, the guest side for the raw script, the checkout's revision and the host's kernel. What
cannot be found is said in the manifest's notes, never silently left out.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__
from harness.bundle import manifest as m
from harness.bundle import raw, rawtool
from harness.bundle.guest_sources import guest_sources
from harness.bundle.script import HarnessCommand, ReproduceScript, harness_options, parse_reproduce, qemu_opts
from harness.errors import ConfigError, HilError
from harness.kernels.kimage import KernelImage
from harness.paths import GUEST_TESTS_DIR, KERNELS_DIR, REPO_ROOT
from harness.results.read import read_results_json
from harness.rundir import slug

# The cell's own files that travel as they are (those missing are skipped: an interrupted cell may lack some).
CELL_FILES = (
    m.RESULTS,
    m.CONSOLE,
    m.JUNIT,
    m.PLAN,
    "plan-raw.json",
    m.REPRODUCE,
    m.TOPOLOGY_JSON,
    "guest-results.jsonl",
    "host-seeds.json",
)
REQUIRED = (m.RESULTS, m.REPRODUCE, m.PLAN, m.TOPOLOGY_JSON)

KernelLookup = Callable[[str, Path | None, tuple[str, ...]], KernelImage | None]


def cached_kernel(spec: str, series: Path | None, fragments: tuple[str, ...] = ()) -> KernelImage | None:
    """The kernel the caches hold for `spec` now (offline; nothing fetched or built)."""
    from harness.dryrun import lookup_kernel

    try:
        return lookup_kernel(spec, series, fragments).image
    except HilError:
        return None


@dataclass
class _Members:
    data: dict[str, bytes]
    modes: dict[str, int]

    def add(self, name: str, content: bytes, mode: int = 0o644) -> None:
        self.data[name] = content
        self.modes[name] = mode


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD, dirty) of the checkout; (None, None) when it is not a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head, bool(status.strip())


def guest_digest(root: Path = REPO_ROOT, tests_dir: Path = GUEST_TESTS_DIR) -> str:
    """One sha256 over the guest side's files (names and contents): says whether the tests changed."""
    lines = [
        f"{rel} {m.sha256_bytes((root / rel).read_bytes())}" for rel in guest_sources(root, tests_dir).files
    ]
    return m.sha256_bytes("\n".join(lines).encode())


def file_sha256(path: Path) -> str | None:
    try:
        return m.sha256_bytes(path.read_bytes())
    except OSError:
        return None


def local_environment(
    *,
    qemu_version: str | None,
    accelerator: str,
    kernel: KernelImage | None,
    known_issues: Path = KERNELS_DIR / "known-issues.yaml",
    root: Path = REPO_ROOT,
) -> m.Environment:
    """This host and checkout, as a reproduction here would run."""
    revision, dirty = git_state(root)
    return m.Environment(
        harness_version=__version__,
        git_revision=revision,
        git_dirty=dirty,
        guest_sources_sha256=guest_digest(root),
        known_issues_sha256=file_sha256(known_issues),
        qemu_version=qemu_version,
        accelerator=accelerator,
        host_kernel=platform.release(),
        host=platform.node(),
        kernel_version=kernel.version if kernel else None,
        kernel_source=kernel.source if kernel else "",
    )


def _topology_yaml(given: str, cwd: str | None) -> Path | None:
    from harness.topology.load import topology_path

    try:
        path = topology_path(given)
    except ConfigError:
        return None
    for candidate in (path, Path(cwd or REPO_ROOT) / path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate
    return None


def _yaml_matches(yaml_path: Path, axes: tuple[tuple[str, str], ...], sha: str) -> bool:
    from harness.topology import load_topology, topology_sha256
    from harness.topology.axes import expand

    try:
        variants = expand(load_topology(yaml_path), [(k, (v,)) for k, v in axes])
    except ConfigError:
        return False
    return len(variants) == 1 and topology_sha256(variants[0].topology) == sha


def _kernel_config(
    meta: Mapping[str, Any], opts: HarnessCommand, series: Path | None, lookup: KernelLookup, notes: list[str]
) -> tuple[bytes | None, str]:
    """The .config the cell's kernel was built with, and the kernel's source identity."""
    recorded = meta.get("kernel_config")
    source = str(meta.get("kernel_source") or "")
    if isinstance(recorded, str) and Path(recorded).is_file():
        return Path(recorded).read_bytes(), source
    found = lookup(opts.kernel, series, opts.fragments)
    version = meta.get("kernel_version")
    if found is None:
        notes.append(f"kernel .config not bundled: no cached kernel for {opts.kernel} here")
        return None, source
    if found.version != version:
        now = f"the cache's {opts.kernel} is {found.version} now"
        notes.append(f"kernel .config not bundled: {now}, the cell ran {version}")
        return None, source
    source = source or found.source
    if found.config is None or not found.config.is_file():
        notes.append(f"kernel .config not bundled: {opts.kernel} ({found.version}) has no known .config")
        return None, source
    return found.config.read_bytes(), source


def _readme(manifest: m.Manifest) -> str:
    return "\n".join(
        [
            f"p2p-hil bundle: {manifest.topology} x {manifest.kernel_label} ({manifest.verdict})",
            "",
            "  ./hil reproduce THIS.tar.gz      rebuild or refetch the kernel, rerun, compare outcomes",
            "  sh raw/run.sh [KERNEL_IMAGE]     the same steps without p2p-hil (QEMU, virtme-ng, a",
            "                                   Python with pytest, and the kernel image are needed)",
            "",
            "manifest.json says what ran where; results.json and console.log are the original run's.",
            *(f"note: {n}" for n in manifest.notes),
            "",
        ]
    )


def _write_tar(out: Path, members: _Members) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    mtime = time.time()
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in sorted(members.data):
                info = tarfile.TarInfo(name)
                info.size = len(members.data[name])
                info.mode = members.modes[name]
                info.mtime = int(mtime)
                tar.addfile(info, io.BytesIO(members.data[name]))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def make_bundle(
    cell_dir: Path,
    out: Path,
    *,
    now: datetime | None = None,
    kernel_lookup: KernelLookup = cached_kernel,
    known_issues: Path = KERNELS_DIR / "known-issues.yaml",
    root: Path = REPO_ROOT,
    tests_dir: Path = GUEST_TESTS_DIR,
) -> Path:
    """Write the bundle of the cell in `cell_dir` to `out` (a new file); returns `out`."""
    where = str(cell_dir)
    if not cell_dir.is_dir():
        raise ConfigError("not a directory", where)
    if out.exists():
        raise ConfigError(f"{out} exists; name a new file", "-o")
    missing = [name for name in REQUIRED if not (cell_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"not a cell directory that ran (no {', '.join(missing)}): bundle a cell's own directory, "
            "e.g. runs/<time>-<topology>-<kernel> or <matrix>/<cell id>",
            where,
        )
    try:
        doc = read_results_json(cell_dir / m.RESULTS)
    except HilError as exc:
        raise ConfigError(str(exc), where) from None
    meta_json: dict[str, Any] = json.loads((cell_dir / m.RESULTS).read_text(encoding="utf-8"))["meta"]
    repro = parse_reproduce((cell_dir / m.REPRODUCE).read_text(encoding="utf-8"), str(cell_dir / m.REPRODUCE))
    opts = harness_options(repro.harness_argv, str(cell_dir / m.REPRODUCE))
    notes: list[str] = []
    members = _Members({}, {})
    for name in CELL_FILES:
        path = cell_dir / name
        if path.is_file():
            members.add(name, path.read_bytes(), 0o755 if name == m.REPRODUCE else 0o644)

    series_path = Path(opts.series) if opts.series else None
    series_member = _add_series(members, series_path, notes)
    yaml_member, yaml_matches = _add_topology_yaml(members, opts, repro.cwd, doc.meta.topology_sha256, notes)
    config, source = _kernel_config(meta_json, opts, series_path, kernel_lookup, notes)
    if config is not None:
        members.add(m.KERNEL_CONFIG, config)
    if known_issues.is_file():
        members.add(m.KNOWN_ISSUES, known_issues.read_bytes())
        recorded = meta_json.get("known_issues_sha256")
        if isinstance(recorded, str) and recorded != m.sha256_bytes(known_issues.read_bytes()):
            notes.append("known-issues.yaml has changed since the run; the bundled one is today's")

    _add_raw(members, cell_dir, repro, meta_json, doc.meta.topology, doc.meta.kernel, root, tests_dir, notes)

    revision, dirty = git_state(root)
    environment = m.Environment(
        harness_version=doc.meta.harness_version,
        git_revision=revision,
        git_dirty=dirty,
        guest_sources_sha256=guest_digest(root, tests_dir),
        known_issues_sha256=str(meta_json.get("known_issues_sha256") or file_sha256(known_issues) or ""),
        qemu_version=doc.meta.qemu_version,
        accelerator=doc.meta.accelerator,
        host_kernel=str(meta_json.get("host_kernel") or platform.release()),
        host=doc.meta.host,
        kernel_version=doc.meta.kernel_version,
        kernel_source=source,
    )
    manifest = m.Manifest(
        schema=m.BUNDLE_SCHEMA,
        created_at=(now or datetime.now(UTC)).isoformat(),
        topology=doc.meta.topology,
        topology_given=opts.topology,
        topology_sha256=doc.meta.topology_sha256,
        topology_yaml=yaml_member,
        topology_yaml_matches=yaml_matches,
        kernel_spec=opts.kernel,
        kernel_label=doc.meta.kernel,
        kernel_image=raw.kernel_of(repro) or "",
        kernel_config=m.KERNEL_CONFIG if config is not None else None,
        series=series_member,
        select=opts.select,
        axes=dict(opts.axes),
        timeout=opts.timeout,
        verdict=doc.verdict.value,
        environment=environment,
        hil_command=repro.harness_argv,
        vng_command=repro.vng_argv,
        qemu_topology_args=qemu_opts(repro.vng_argv),
        notes=notes,
    )
    members.add(m.README, _readme(manifest).encode())
    manifest = replace(manifest, files={name: m.sha256_bytes(data) for name, data in members.data.items()})
    members.add(m.MANIFEST, (json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n").encode())
    _write_tar(out, members)
    return out


def _add_series(members: _Members, series: Path | None, notes: list[str]) -> str | None:
    if series is None:
        return None
    if not series.is_file():
        notes.append(f"series {series} not bundled: it no longer exists here")
        return None
    member = f"{m.SERIES_DIR}/{series.name}"
    members.add(member, series.read_bytes())
    return member


def _add_topology_yaml(
    members: _Members, opts: HarnessCommand, cwd: str | None, sha: str, notes: list[str]
) -> tuple[str | None, bool | None]:
    """The YAML file the topology was given as (as it is now), and whether it still makes that machine."""
    yaml_path = _topology_yaml(opts.topology, cwd)
    if yaml_path is None:
        notes.append(f"topology file of {opts.topology!r} not found; topology.json is the machine that ran")
        return None, None
    member = f"{m.TOPOLOGY_DIR}/{yaml_path.name}"
    members.add(member, yaml_path.read_bytes())
    matches = _yaml_matches(yaml_path, opts.axes, sha)
    if not matches:
        why = "topology.json is the machine that ran (and that reproduce boots)"
        notes.append(f"{member} has changed since the run; {why}")
    return member, matches


def _add_raw(
    members: _Members,
    cell_dir: Path,
    repro: ReproduceScript,
    meta: Mapping[str, Any],
    topology: str,
    kernel_label: str,
    root: Path,
    tests_dir: Path,
    notes: list[str],
) -> None:
    """raw/: the script, its helper, the plan template, the seed bytes, the guest side, the test modules."""
    if not repro.raw:
        notes.append("no raw steps in reproduce.sh: raw/ not bundled")
        return
    plan = (
        json.loads((cell_dir / "plan-raw.json").read_text(encoding="utf-8"))
        if (cell_dir / "plan-raw.json").is_file()
        else json.loads((cell_dir / m.PLAN).read_text(encoding="utf-8"))
    )
    run_dir = str(plan.get("run_dir") or cell_dir)
    modules = _modules(plan.get("modules_dir"), notes)
    for rel, data in modules.items():
        members.add(f"{raw.RAW_DIR}/{raw.MODULES_DIR}/{rel}", data)
    template = raw.plan_template(plan, run_dir, repro.scratch or "/nonexistent-scratch", bool(modules))
    members.add(f"{raw.RAW_DIR}/{raw.PLAN_TEMPLATE}", (json.dumps(template, indent=1) + "\n").encode())
    for seed in sorted(cell_dir.glob("host-seed-*.bin")):
        members.add(f"{raw.RAW_DIR}/{seed.name}", seed.read_bytes())
    sources = guest_sources(root, tests_dir)
    for source in sources.files:
        members.add(f"{raw.RAW_DIR}/{source.as_posix()}", (root / source).read_bytes())
    members.add(f"{raw.RAW_DIR}/rawtool.py", Path(rawtool.__file__).read_bytes(), 0o755)
    script = raw.raw_script(
        repro,
        run_dir=run_dir,
        kernel_image=raw.kernel_of(repro) or "bzImage",
        header=[f"cell: {topology} x {kernel_label}", f"recorded: {meta.get('started_at', '?')}"],
        third_party=sources.third_party,
        run_name=f"raw-{slug(topology)}",
    )
    members.add(f"{raw.RAW_DIR}/run.sh", script.encode(), 0o755)


def _modules(modules_dir: object, notes: list[str]) -> dict[str, bytes]:
    """The test modules the cell loaded (modules.json and the .ko files it names), relative paths."""
    if not isinstance(modules_dir, str):
        return {}
    directory = Path(modules_dir)
    try:
        manifest = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
        wanted = ["modules.json", *manifest.get("modules", {}).values()]
        if any(Path(rel).is_absolute() or ".." in Path(rel).parts for rel in wanted):
            raise ValueError("a module path leaves its directory")
        return {str(rel): (directory / rel).read_bytes() for rel in wanted}
    except (OSError, ValueError, AttributeError) as exc:
        notes.append(
            f"test modules of {directory} not bundled ({exc}); the raw run skips the tests needing them"
        )
        return {}

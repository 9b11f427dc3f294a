"""Building a kernel: config from virtme-ng's base plus our fragments, verified, then kbuild with ccache.

Layout: each build directory (O=) sits directly inside the tree it builds, as <tree>/hil-o-<key>/.
kbuild then uses the relative srctree "..", so compiler command lines do not depend on where
the tree is, and ccache hits carry over between trees (pristine and patched, any cache dir).
Local trees are not written into: their build directories live in the cache (absolute srctree;
CCACHE_BASEDIR makes paths relative again).

Result record <objtree>/hil-build.json is written last: a directory without it is never served,
only resumed (make is incremental) by the next build with the same key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import jsonfile
from harness.errors import BuildError
from harness.kernels import cache, kconfig, source
from harness.kernels import key as keys
from harness.kernels import series as patch_series
from harness.kernels.debsrc import SourceTree
from harness.kernels.kimage import KernelImage, Progress
from harness.kernels.makelog import MakeProgress, ObjectTotal, PreviousCount, expected_total
from harness.kernels.proc import capture, run_logged

RECORD = "hil-build.json"
LOG = "hil-build.log"
CONFIGURED = "hil-configured"
# Written when make first starts in a build directory: a later make there resumes an interrupted build.
MAKE_STARTED = "hil-make-started"
# "LOCALVERSION=" (set, empty) stops setlocalversion from appending "+" for a git tree that is not
# at a release tag: uname -r is then <version><CONFIG_LOCALVERSION> in every tree.
MAKE_VARS = ("LOCALVERSION=",)
TARGETS = ("bzImage", "modules")
IMAGE = Path("arch/x86/boot/bzImage")
# Objects (kbuild's CC and AS lines, as makelog counts them) in a full build with the project's
# fragments: 1869 in the log of src:debian-7.2 (linux-source-7.2 7.2.13-1, virtme-ng 1.42's
# fragment, gcc 12), of which 1813 CC lines. Only a first build uses it, as "about": later ones use
# the previous build's real count (its record). Extra fragments (debug, dwarf) change the count by a
# few objects, other kernel versions by a few percent.
SHIPPED_OBJECTS = 1869


@dataclass(frozen=True)
class BuildPlan:
    """Where and how one build happens (pure data; made by `plan_build`)."""

    srctree: Path
    objtree: Path
    key: str
    config_key: str
    inputs: keys.BuildInputs


def make_argv(
    plan: BuildPlan, targets: Sequence[str], *, jobs: int, use_ccache: bool, nice: int
) -> list[str]:
    argv = ["nice", "-n", str(nice)] if nice > 0 else []
    argv += ["make", "-C", str(plan.srctree), f"O={plan.objtree}", f"-j{jobs}", *plan.inputs.make_vars]
    if use_ccache:
        argv += ["CC=ccache gcc", "HOSTCC=ccache gcc"]
    return [*argv, *targets]


def _ccache_basedir(plan: BuildPlan) -> str:
    # Paths under the base dir are rewritten relative to the compiler's cwd, so trees at different
    # places share hits. "/" would also rewrite system paths, which ccache's manual advises against.
    common = os.path.commonpath([plan.srctree, plan.objtree])
    return common if common != "/" else str(plan.srctree)


def build_env(plan: BuildPlan, ccache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CCACHE_DIR": str(ccache_dir),
            # Paths under the base dir are rewritten relative to the compiler's cwd, so trees at
            # different places share hits. Without debug info the cwd itself is not hashed.
            "CCACHE_BASEDIR": _ccache_basedir(plan),
            # Depend mode: on a miss, ccache hashes the compiler's own -MD output instead of running
            # the preprocessor a second time. Measured on drivers/acpi/: a cold compile costs 43 CPU-s
            # with it, 66 without, 46 with no ccache at all; hits are the same direct-mode hits.
            "CCACHE_DEPEND": "1",
            "KBUILD_BUILD_USER": "p2p-hil",
            "KBUILD_BUILD_HOST": "p2p-hil",
            "LC_ALL": "C",
        }
    )
    return env


def toolchain_identity() -> str:
    gcc = capture(["gcc", "--version"]).splitlines()[:1]
    ld = capture(["ld", "--version"]).splitlines()[:1]
    if not gcc:
        raise BuildError(
            "gcc is not installed (kernel build dependencies: gcc bc bison flex libelf-dev libssl-dev)"
        )
    return " | ".join(gcc + ld)


def _venv_tool(name: str) -> str | None:
    # vng's helpers are installed next to the interpreter running us, which may not be on PATH.
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def vng_fragment() -> str:
    """virtme-ng's own config additions (`virtme-configkernel --defconfig --dry-run`)."""
    tool = _venv_tool("virtme-configkernel")
    text = capture([tool, "--defconfig", "--dry-run", "--arch", "x86_64"]) if tool else ""
    if "CONFIG_" not in text:
        raise BuildError(
            "cannot get virtme-ng's config fragment from `virtme-configkernel --dry-run` "
            "(is virtme-ng installed in this environment?)"
        )
    return text


def plan_build(tree: SourceTree, inputs: keys.BuildInputs, *, in_tree: bool) -> BuildPlan:
    build_key = keys.build_key(inputs)
    objtree = (
        tree.path / f"{source.BUILD_DIR_PREFIX}{build_key[:16]}"
        if in_tree
        else cache.kernels_root() / "tree-builds" / build_key[:16]
    )
    return BuildPlan(tree.path, objtree, build_key, keys.config_key(inputs), inputs)


def finished(plan: BuildPlan, spec: str) -> KernelImage | None:
    """The KernelImage of a completed build of `plan`, or None."""
    record = jsonfile.read_record(plan.objtree / RECORD)
    if record is None or record.get("key") != plan.key or not (plan.objtree / IMAGE).is_file():
        return None
    return KernelImage(
        spec=spec,
        version=str(record["version"]),
        image=plan.objtree / IMAGE,
        build_dir=plan.objtree,
        config=plan.objtree / ".config",
        source=str(record["source"]),
    )


def _finished_records(config_key: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(build directory, record) of every finished build in the cache with this config key."""
    root = cache.kernels_root()
    # Explicit depths: a recursive glob would walk every file of every cached source tree.
    patterns = [
        (root / "src", f"*/*/{source.BUILD_DIR_PREFIX}*/{RECORD}"),  # src/<pkg_ver>/<tree>/hil-o-*/
        (root / "trees", f"*/{source.BUILD_DIR_PREFIX}*/{RECORD}"),  # trees/<id>/hil-o-*/
        (root / "tree-builds", f"*/{RECORD}"),  # tree-builds/<key>/
    ]
    for base, pattern in patterns:
        for record_path in base.glob(pattern):
            record = jsonfile.read_record(record_path)
            if record is not None and record.get("config_key") == config_key:
                yield record_path.parent, record


def _find_seed(plan: BuildPlan, lineage: str) -> Path | None:
    """Newest finished unpatched build with the same config of the same lineage (see source.py)."""
    best: tuple[float, Path] | None = None
    for build_dir, record in _finished_records(plan.config_key):
        if record.get("lineage") != lineage or record.get("series") != "none" or build_dir == plan.objtree:
            continue
        finished_at = float(record.get("finished", 0))
        if best is None or finished_at > best[0]:
            best = (finished_at, build_dir)
    return best[1] if best else None


def previous_counts(config_key: str) -> list[PreviousCount]:
    """Real object counts of earlier full builds (not seeded, not resumed) with this config."""
    counts = []
    for _build_dir, record in _finished_records(config_key):
        objects = record.get("objects")
        if record.get("objects_full") is True and isinstance(objects, int) and objects > 0:
            finished_at = float(record.get("finished", 0))
            counts.append(PreviousCount(str(record.get("source", "")), objects, finished_at))
    return counts


def _objects_present(objtree: Path) -> int:
    # What an interrupted make left: kbuild does not compile these again.
    return sum(1 for path in objtree.rglob("*.o") if path.is_file())


def _seed(plan: BuildPlan, seed: Path, progress: Progress) -> None:
    t0 = time.monotonic()
    tmp = plan.objtree.with_name(plan.objtree.name + ".seeding")
    shutil.rmtree(tmp, ignore_errors=True)
    # cp -a keeps mtimes: make then rebuilds only what the series (or the user) changed.
    seed_log = plan.objtree.with_name(plan.objtree.name + ".seed.log")
    run_logged(
        ["cp", "-a", "--reflink=auto", str(seed), str(tmp)], log=seed_log, what=f"copy seed build {seed}"
    )
    for name in (RECORD, LOG, ".virtme_mods"):
        path = tmp / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    os.rename(tmp, plan.objtree)
    seed_log.unlink(missing_ok=True)
    progress(f"seeded from {seed} ({time.monotonic() - t0:.1f} s): only changed files get rebuilt")


def freshen_series_files(srctree: Path) -> list[str]:
    """Give the files a series changed (root commit .. HEAD of the tree) the current mtime. The seed's
    objects keep their mtimes (cp -a), so when the series tree was made before the seed was built, make
    would find the unpatched objects newer than the patched sources and keep them: a kernel without
    its series under the series' name."""
    git = ["git", "-C", str(srctree)]
    roots = subprocess.run(
        [*git, "rev-list", "--max-parents=0", "HEAD"], capture_output=True, text=True, check=False
    )
    if roots.returncode != 0 or not roots.stdout.split():
        return []
    changed = subprocess.run(
        [*git, "diff", "--name-only", roots.stdout.split()[0], "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    names = changed.stdout.split() if changed.returncode == 0 else []
    now = time.time()
    for name in names:
        path = srctree / name
        if path.is_file():
            os.utime(path, (now, now))
    return names


def configure(
    plan: BuildPlan, progress: Progress, env: dict[str, str], *, nice: int, use_ccache: bool
) -> None:
    """defconfig, merge vng's and our fragments, olddefconfig, then check every requested value."""
    log = plan.objtree / LOG
    t0 = time.monotonic()
    frag_dir = plan.objtree / "hil-fragments"
    frag_dir.mkdir(parents=True, exist_ok=True)
    files = [frag_dir / "00-virtme-ng.config"]
    files[0].write_text(plan.inputs.vng_fragment)
    for i, fragment in enumerate(plan.inputs.fragments, start=1):
        path = frag_dir / f"{i:02d}-{Path(fragment.name).stem}.config"
        path.write_text(fragment.text)
        files.append(path)
    run_logged(
        make_argv(plan, ["defconfig"], jobs=1, use_ccache=use_ccache, nice=nice),
        log=log,
        what="defconfig",
        env=env,
    )
    run_logged(
        kconfig.merge_argv(plan.srctree, plan.objtree, files),
        log=log,
        what="merge_config.sh",
        cwd=plan.objtree,
        env=env,
    )
    run_logged(
        make_argv(plan, ["olddefconfig"], jobs=1, use_ccache=use_ccache, nice=nice),
        log=log,
        what="olddefconfig",
        env=env,
    )
    verify_config(plan, progress)
    (plan.objtree / CONFIGURED).write_text(plan.config_key + "\n")
    progress(
        f"configured ({len(plan.inputs.fragments)} fragments + virtme-ng's) in {time.monotonic() - t0:.1f} s"
    )


def verify_config(plan: BuildPlan, progress: Progress, *, notes: bool = True) -> None:
    """BuildError listing every value our fragments ask for that .config does not have."""
    wanted = kconfig.requested(plan.inputs.fragments)
    text = (plan.objtree / ".config").read_text()
    missing = kconfig.dropped(wanted, text)
    if missing:
        raise BuildError(dropped_message(missing, plan.objtree / ".config"), plan.objtree / LOG)
    kept_on = kconfig.still_set(wanted, text)
    if kept_on and notes:
        names = ", ".join(s.removeprefix("CONFIG_") for s in kept_on)
        progress(f"note: selected by other options, so still on: {names}")


def dropped_message(missing: Sequence[kconfig.Mismatch], config: Path) -> str:
    lines = "\n".join(f"  {m}" for m in missing)
    return (
        f"kconfig dropped {len(missing)} requested option(s) (unmet dependencies or unknown symbols); "
        f"fix the fragments or their dependencies:\n{lines}\nresulting config: {config}"
    )


def run_make(
    plan: BuildPlan,
    progress: Progress,
    env: dict[str, str],
    *,
    jobs: int,
    nice: int,
    use_ccache: bool,
    total: ObjectTotal | None = None,
) -> int:
    """Run make; returns the number of objects it compiled."""
    tracker = MakeProgress(time.monotonic(), total=total)

    def on_line(line: str) -> None:
        status = tracker.feed(line, time.monotonic())
        if status is not None:
            progress(status)

    argv = make_argv(plan, TARGETS, jobs=jobs, use_ccache=use_ccache, nice=nice)
    progress(f"make -j{jobs} {' '.join(TARGETS)} in {plan.objtree} (log {plan.objtree / LOG})")
    if total is not None:
        progress(f"{total.text} objects to compile ({total.why})")
    seconds = run_logged(argv, log=plan.objtree / LOG, what="make", env=env, on_line=on_line)
    progress(f"make done in {seconds:.0f} s ({tracker.compiled} objects compiled)")
    return tracker.compiled


def _prep_vng_modules(plan: BuildPlan) -> None:
    # vng --run <build dir> runs this itself when modules.order is newer than its output; doing it
    # here keeps concurrent boots from writing into the cached build directory.
    tool = _venv_tool("virtme-prep-kdir-mods")
    if tool and (plan.objtree / "modules.order").exists():
        run_logged([tool], log=plan.objtree / LOG, what="virtme-prep-kdir-mods", cwd=plan.objtree)


@dataclass(frozen=True)
class _KeyedBuild:
    plan: BuildPlan
    build_tree: SourceTree
    digest: str  # of the series ("none" without one)
    patches: list[patch_series.Patch]


def _keyed_build(tree: SourceTree, series: Path | None, fragments: Sequence[str]) -> _KeyedBuild:
    """What decides the cache entry of a build: everything build_kernel and lookup_build agree on."""
    series_bytes, patches = patch_series.read_series(series) if series is not None else (None, [])
    inputs = keys.BuildInputs(
        source_identity=tree.identity,
        series=series_bytes,
        fragments=tuple(kconfig.load_fragments(fragments)),
        vng_fragment=vng_fragment(),
        toolchain=toolchain_identity(),
        make_vars=MAKE_VARS,
    )
    digest = keys.series_digest(series_bytes)
    build_tree = source.patched_tree_for(tree, digest) if series is not None else tree
    # Patched trees are always ours, so their build directories live inside them.
    return _KeyedBuild(plan_build(build_tree, inputs, in_tree=build_tree.owned), build_tree, digest, patches)


def lookup_build(
    tree: SourceTree, *, series: Path | None, fragments: Sequence[str], spec: str
) -> KernelImage | None:
    """The finished build build_kernel() would serve for these inputs, else None: no lock, no build."""
    return finished(_keyed_build(tree, series, fragments).plan, spec)


def build_kernel(
    tree: SourceTree,
    *,
    series: Path | None = None,
    fragments: Sequence[str] = kconfig.DEFAULT_FRAGMENTS,
    progress: Progress,
    spec: str = "",
    jobs: int | None = None,
    nice: int = 10,
) -> KernelImage:
    """Build `tree` (+ series) with the named fragments; a cache hit when nothing changed.

    `fragments` is the full ordered list of fragment names or paths (kconfig.fragment_names adds the
    defaults to a user's extras). Builds run under `nice` so they yield to interactive work.
    """
    t_start = time.monotonic()
    spec = spec or f"tree:{tree.path}"
    keyed = _keyed_build(tree, series, fragments)
    plan, build_tree, digest = keyed.plan, keyed.build_tree, keyed.digest
    if (hit := finished(plan, spec)) is not None:
        return hit
    with cache.locked(f"build-{plan.key[:16]}", progress=progress):
        if (hit := finished(plan, spec)) is not None:
            return hit
        if series is not None:
            source.patched_tree(tree, series, keyed.patches, digest, progress)
        return _build_locked(
            plan, tree, build_tree, digest, progress, spec=spec, jobs=jobs, nice=nice, t_start=t_start
        )


def _build_locked(
    plan: BuildPlan,
    tree: SourceTree,
    build_tree: SourceTree,
    digest: str,
    progress: Progress,
    *,
    spec: str,
    jobs: int | None,
    nice: int,
    t_start: float,
) -> KernelImage:
    use_ccache = shutil.which("ccache") is not None
    if not use_ccache:
        progress("ccache not found: building without it (install ccache for fast rebuilds)")
    ccache_dir = cache.ccache_root()
    ccache_dir.mkdir(parents=True, exist_ok=True)
    env = build_env(plan, ccache_dir)
    jobs = jobs or len(os.sched_getaffinity(0))
    seeded = False
    if not (plan.objtree / CONFIGURED).is_file():
        seed = None if plan.objtree.exists() else _find_seed(plan, tree.lineage)
        if seed is not None:
            _seed(plan, seed, progress)
            freshen_series_files(plan.srctree)
            seeded = True
        else:
            plan.objtree.mkdir(parents=True, exist_ok=True)
            configure(plan, progress, env, nice=nice, use_ccache=use_ccache)
    resumed = (plan.objtree / MAKE_STARTED).exists()
    # A seeded build recompiles only what its series changed: no total can be known in advance.
    total = (
        None
        if seeded
        else expected_total(
            source=build_tree.identity,
            previous=previous_counts(plan.config_key),
            shipped=SHIPPED_OBJECTS or None,
            present=_objects_present(plan.objtree) if resumed else 0,
        )
    )
    (plan.objtree / MAKE_STARTED).write_text(f"{time.time()}\n")
    compiled = run_make(plan, progress, env, jobs=jobs, nice=nice, use_ccache=use_ccache, total=total)
    # A patch may change Kconfig; kbuild re-synced .config during make, so check the final one too.
    verify_config(plan, progress, notes=False)
    _prep_vng_modules(plan)
    version = (plan.objtree / "include" / "config" / "kernel.release").read_text().strip()
    identity = build_tree.identity
    jsonfile.write_record(
        plan.objtree / RECORD,
        {
            "key": plan.key,
            "config_key": plan.config_key,
            "lineage": tree.lineage,
            "series": digest,
            "source": identity,
            "version": version,
            "finished": time.time(),
            "spec": spec,
            "fragments": [f.name for f in plan.inputs.fragments],
            "toolchain": plan.inputs.toolchain,
            # The next build of this config shows progress against this count when it is complete.
            "objects": compiled,
            "objects_full": not (seeded or resumed),
        },
    )
    progress(f"built {version} in {time.monotonic() - t_start:.0f} s: {plan.objtree / IMAGE}")
    kimg = finished(plan, spec)
    if kimg is None:
        raise BuildError(f"build finished but {plan.objtree / IMAGE} is missing", plan.objtree / LOG)
    return kimg

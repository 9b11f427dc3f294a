"""Stock Debian kernels and Debian kernel sources, fetched through the isolated apt state.

Package layouts handled:
  7.x   linux-image-<rel> is a meta package; the kernel is in linux-binary-<rel>
        (usr/lib/modules/<rel>/vmlinuz), modules in linux-modules-<rel>, config in linux-base-<rel>.
  6.x   linux-image-<rel> holds everything (boot/vmlinuz-<rel>, lib/modules/<rel>/, boot/config-<rel>).
Both are normalised to <root>/usr/lib/modules/<rel>/{vmlinuz,config,...}, the place where
`vng --run .../usr/lib/modules/<rel>/vmlinuz` looks for modules.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import jsonfile
from harness.errors import FetchError
from harness.kernels import apt, cache, debver
from harness.kernels.kimage import KernelImage, Progress
from harness.kernels.spec import DebianImage

# Lists older than this are refreshed before resolving "newest"; a cached resolution is reused
# (no apt at all) for as long.
MAX_LIST_AGE_HOURS = 12.0

_KERNEL_PACKAGE = re.compile(r"linux-(?P<kind>binary|image)-(?P<rel>\d[0-9A-Za-z.+~]*(?:-\d+)?-amd64)")


@dataclass(frozen=True)
class Release:
    """One kernel release in the archive and the packages that make it up."""

    release: str  # uname -r, e.g. 7.2.13+deb14-amd64
    version: str  # package version, e.g. 7.2.13-1
    packages: tuple[str, ...]

    @property
    def dirname(self) -> str:
        return f"{self.release}_{self.version}".replace(":", "%3a")


def _matches(upstream: str, series: str, sublevel: int | None) -> bool:
    if sublevel is not None:
        return re.match(rf"{re.escape(series)}\.{sublevel}(?!\d)", upstream) is not None
    return re.match(rf"{re.escape(series)}(?:[.~+]|$)", upstream) is not None


def pick_release(spec: DebianImage, names: set[str], stanzas: list[apt.Stanza]) -> Release | None:
    """Newest release of `spec` among candidate `stanzas`; `names` are all known package names."""
    best: Release | None = None
    for stanza in stanzas:
        match = _KERNEL_PACKAGE.fullmatch(stanza.package)
        if match is None or not _matches(debver.upstream(stanza.version), spec.series, spec.sublevel):
            continue
        rel = match.group("rel")
        if f"linux-binary-{rel}" in names:
            packages = tuple(
                p for p in (f"linux-binary-{rel}", f"linux-modules-{rel}", f"linux-base-{rel}") if p in names
            )
        else:
            packages = (f"linux-image-{rel}",)
        candidate = Release(rel, stanza.version, packages)
        if best is None or debver.compare(candidate.version, best.version) > 0:
            best = candidate
    return best


def image_prefixes(series: str) -> list[str]:
    return [f"linux-{kind}-{series}" for kind in ("binary", "image", "modules", "base")]


def _as_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def apt_session(
    state: apt.AptState, progress: Progress, *, max_age_hours: float = MAX_LIST_AGE_HOURS
) -> Iterator[None]:
    """Hold the lock of `state` with fresh lists: queries and downloads run inside, never next to an update.

    Lock order: the apt lock first, then a release/source lock (taken inside the session).
    """
    with cache.locked(f"apt-{state.root.name}", progress=progress):
        for directory in state.directories():
            directory.mkdir(parents=True, exist_ok=True)
        text = apt.sources_list_text(state.suites)
        if not state.sources_list.exists() or state.sources_list.read_text() != text:
            state.sources_list.write_text(text)
            state.stamp.unlink(missing_ok=True)  # new sources: old lists say nothing about them
        stamp = state.stamp.stat().st_mtime if state.stamp.exists() else None
        if apt.needs_update(stamp, time.time(), max_age_hours):
            t0 = time.monotonic()
            progress(f"apt-get update ({' '.join(state.suites)}) in {state.root}")
            apt.run_apt(apt.update_argv(state, as_root=_as_root()))
            state.stamp.write_text(f"{time.time()}\n")
            progress(f"apt lists ready ({time.monotonic() - t0:.1f} s)")
        yield


def query(
    state: apt.AptState, prefixes: list[str], show: list[str] | None = None
) -> tuple[set[str], list[apt.Stanza]]:
    """Known package names under `prefixes`, and the candidate stanzas of the kernel packages."""
    # One pkgnames call for the common prefix: each apt-cache run has a fixed start-up cost.
    common = prefixes[0]
    while not all(p.startswith(common) for p in prefixes):
        common = common[:-1]
    listed = apt.parse_pkgnames(apt.run_apt(apt.pkgnames_argv(state, common, as_root=_as_root())))
    names = {n for n in listed if n.startswith(tuple(prefixes))}
    wanted = show if show is not None else sorted(n for n in names if _KERNEL_PACKAGE.fullmatch(n))
    if not wanted:
        return names, []
    return names, apt.parse_show(apt.run_apt(apt.show_argv(state, wanted, as_root=_as_root())))


def download(state: apt.AptState, pins: list[tuple[str, str]], dest: Path, progress: Progress) -> list[Path]:
    """apt-get download the pinned packages into `dest`; the .deb files."""
    dest.mkdir(parents=True, exist_ok=True)
    if _as_root():
        dest.chmod(0o755)
    t0 = time.monotonic()
    progress(f"downloading {', '.join(f'{n}={v}' for n, v in pins)}")
    apt.run_apt(apt.download_argv(state, pins, as_root=_as_root()), cwd=dest)
    debs = sorted(dest.glob("*.deb"))
    if len(debs) != len(pins):
        raise FetchError(f"apt-get download produced {[d.name for d in debs]} for {pins}")
    size = sum(d.stat().st_size for d in debs) / 1e6
    progress(f"downloaded {size:.0f} MB in {time.monotonic() - t0:.1f} s")
    return debs


def run_tool(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise FetchError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise FetchError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _normalise(root: Path, rel: str) -> Path:
    """Move a 6.x layout (boot/, lib/modules/) into usr/lib/modules/<rel>/; return that directory."""
    moddir = root / "usr" / "lib" / "modules" / rel
    legacy = root / "lib" / "modules" / rel
    if not moddir.exists() and legacy.exists():
        moddir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(legacy, moddir)
    moddir.mkdir(parents=True, exist_ok=True)
    for name, target in (
        (f"vmlinuz-{rel}", "vmlinuz"),
        (f"config-{rel}", "config"),
        (f"System.map-{rel}", "System.map"),
    ):
        found = root / "boot" / name
        if found.exists() and not (moddir / target).exists():
            os.rename(found, moddir / target)
    return moddir


def _depmod(root: Path, rel: str, progress: Progress) -> None:
    # Debian packages ship no modules.dep (postinst makes it). Make it now, inside the unpack,
    # so vng never writes into the shared cache at boot time.
    depmod = shutil.which("depmod") or next(
        (p for p in ("/usr/sbin/depmod", "/sbin/depmod") if Path(p).exists()), None
    )
    if depmod is None:
        progress("depmod not found (install kmod): vng will generate modules.dep itself")
        return
    t0 = time.monotonic()
    run_tool([depmod, "-a", "-b", str(root / "usr"), rel], f"depmod for {rel}")
    progress(f"depmod in {time.monotonic() - t0:.1f} s")


def unpack_image(state: apt.AptState, release: Release, final: Path, progress: Progress) -> None:
    """Download and unpack `release` into `final` atomically."""
    with cache.atomic_dir(final) as tmp:
        debs = download(state, [(p, release.version) for p in release.packages], tmp / ".debs", progress)
        root = tmp / "root"
        t0 = time.monotonic()
        for deb in debs:
            run_tool(apt.unpack_argv(deb, root), f"dpkg-deb -x {deb.name}")
        shutil.rmtree(tmp / ".debs")
        progress(f"unpacked in {time.monotonic() - t0:.1f} s")
        moddir = _normalise(root, release.release)
        if not (moddir / "vmlinuz").is_file():
            raise FetchError(f"{', '.join(release.packages)} contain no vmlinuz for {release.release}")
        if (moddir / "kernel").is_dir():
            _depmod(root, release.release, progress)
        jsonfile.write_record(
            tmp / "meta.json",
            {
                "release": release.release,
                "version": release.version,
                "packages": list(release.packages),
                "fetched": time.time(),
            },
        )


def image_from_dir(spec: str, final: Path) -> KernelImage | None:
    """The KernelImage of a complete unpacked release directory, None if it is not one."""
    meta = jsonfile.read_record(final / "meta.json")
    if meta is None:
        return None
    rel = str(meta["release"])
    root = final / "root"
    moddir = root / "usr" / "lib" / "modules" / rel
    image = moddir / "vmlinuz"
    if not image.is_file():
        return None
    config = moddir / "config"
    source = ",".join(f"{p}={meta['version']}" for p in meta["packages"])
    return KernelImage(
        spec=spec,
        version=rel,
        image=image,
        modules_root=root,
        config=config if config.is_file() else None,
        source=source,
    )


def _alias(spec: DebianImage) -> Path:
    return cache.kernels_root() / "debian" / "aliases" / f"{str(spec).replace(':', '_')}.json"


def _cached_images(spec: DebianImage) -> list[KernelImage]:
    """Complete cached releases matching `spec`, newest first (for offline use)."""
    found: list[tuple[str, KernelImage]] = []
    for meta_path in (cache.kernels_root() / "debian").glob("*/meta.json"):
        meta = jsonfile.read_record(meta_path)
        kimg = image_from_dir(str(spec), meta_path.parent)
        if (
            meta is None
            or kimg is None
            or not _matches(debver.upstream(str(meta["version"])), spec.series, spec.sublevel)
        ):
            continue
        found.append((str(meta["version"]), kimg))
    found.sort(key=lambda item: debver.sort_key(item[0]), reverse=True)
    return [k for _, k in found]


def fetch_image(spec: DebianImage, progress: Progress, *, offline: bool = False) -> KernelImage:
    """Resolve `spec` to the newest matching release, downloading it if not cached."""
    alias = jsonfile.read_record(_alias(spec))
    if alias is not None:
        kimg = image_from_dir(str(spec), Path(alias["dir"]))
        fresh = time.time() - float(alias["resolved"]) < MAX_LIST_AGE_HOURS * 3600.0
        if kimg is not None and (fresh or offline):
            return kimg
    if offline:
        cached = _cached_images(spec)
        if cached:
            return cached[0]
        raise FetchError(
            f"{spec}: offline and nothing matching is cached in {cache.kernels_root() / 'debian'}"
        )
    state = apt.AptState.for_series(cache.apt_root(), spec.series)
    with apt_session(state, progress):
        names, stanzas = query(state, image_prefixes(spec.series))
        release = pick_release(spec, names, stanzas)
        if release is None:
            raise FetchError(
                f"{spec}: no linux-binary-/linux-image-{spec.series}* amd64 package in suites "
                f"{', '.join(state.suites)}"
            )
        progress(f"{spec} -> {release.release} ({release.version})")
        final = cache.kernels_root() / "debian" / release.dirname
        _unpack_once(spec, state, release, final, progress)
    jsonfile.write_record(
        _alias(spec), {"dir": str(final), "resolved": time.time(), "release": release.release}
    )
    kimg = image_from_dir(str(spec), final)
    if kimg is None:
        raise FetchError(f"{spec}: {final} is incomplete after unpacking")
    return kimg


def _unpack_once(
    spec: DebianImage, state: apt.AptState, release: Release, final: Path, progress: Progress
) -> None:
    with cache.locked(f"debian-{release.dirname}", progress=progress):
        if image_from_dir(str(spec), final) is None:
            shutil.rmtree(
                final, ignore_errors=True
            )  # incomplete leftovers never get renamed here, but be sure
            unpack_image(state, release, final, progress)

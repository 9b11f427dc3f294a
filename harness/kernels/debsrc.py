"""Debian's linux-source-<series> package, unpacked once into a pristine tree shared by all builds."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness import jsonfile
from harness.errors import FetchError
from harness.kernels import apt, cache, debian, gitutil
from harness.kernels.kimage import Progress
from harness.kernels.spec import DebianSource


@dataclass(frozen=True)
class SourceTree:
    """An unpacked kernel source tree and the identity it is cached under."""

    path: Path  # the tree (Makefile at its top)
    identity: str  # linux-source-7.2=7.2.13-1
    lineage: str  # what incremental builds may share mtimes with: the pristine tree's identity
    # True for our own cached trees: never edited, so build dirs may live inside and patched
    # copies may hard-link to it. False for a user's tree.
    owned: bool = True


def _root(package: str, version: str) -> Path:
    return cache.kernels_root() / "src" / f"{package}_{version}".replace(":", "%3a")


def pristine_dir(package: str, version: str) -> Path:
    return _root(package, version) / "pristine"


def _alias(spec: DebianSource) -> Path:
    return cache.kernels_root() / "src" / "aliases" / f"{spec.package}.json"


def _tree(spec: DebianSource, version: str) -> SourceTree | None:
    path = pristine_dir(spec.package, version)
    if not (path / "Makefile").is_file():
        return None
    ident = f"{spec.package}={version}"
    return SourceTree(path=path, identity=ident, lineage=ident)


def unpack_source(state: apt.AptState, package: str, version: str, progress: Progress) -> None:
    final = pristine_dir(package, version)
    with cache.atomic_dir(final) as tmp:
        (deb,) = debian.download(state, [(package, version)], tmp / ".debs", progress)
        debian.run_tool(apt.unpack_argv(deb, tmp / ".deb"), f"dpkg-deb -x {deb.name}")
        shutil.rmtree(tmp / ".debs")
        tarballs = sorted((tmp / ".deb" / "usr" / "src").glob("linux-source-*.tar.*"))
        if len(tarballs) != 1:
            raise FetchError(
                f"{package}={version}: expected one usr/src/linux-source-*.tar.* inside, "
                f"found {[t.name for t in tarballs]}"
            )
        t0 = time.monotonic()
        progress(f"extracting {tarballs[0].name}")
        debian.run_tool(["tar", "-xf", str(tarballs[0]), "-C", str(tmp)], f"tar -xf {tarballs[0].name}")
        shutil.rmtree(tmp / ".deb")
        tops = [p for p in tmp.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "Makefile").is_file():
            raise FetchError(f"{tarballs[0].name}: expected one kernel tree at its top, found {tops}")
        progress(f"extracted in {time.monotonic() - t0:.1f} s")
        # atomic_dir renames tmp itself, so lift the tree's contents one level up.
        for entry in tops[0].iterdir():
            os.rename(entry, tmp / entry.name)
        tops[0].rmdir()
        # Once per source version, so that the first patch series does not pay for it.
        gitutil.record_tree(tmp, f"pristine {package}={version}", progress)


def fetch_source(spec: DebianSource, progress: Progress, *, offline: bool = False) -> SourceTree:
    """The pristine tree of the newest linux-source-<series>, downloaded and unpacked if needed."""
    alias = jsonfile.read_record(_alias(spec))
    if alias is not None:
        tree = _tree(spec, str(alias["version"]))
        fresh = time.time() - float(alias["resolved"]) < debian.MAX_LIST_AGE_HOURS * 3600.0
        if tree is not None and (fresh or offline):
            return tree
    if offline:
        raise FetchError(
            f"{spec}: offline and {spec.package} was never unpacked into {cache.kernels_root() / 'src'}"
        )
    state = apt.AptState.for_series(cache.apt_root(), spec.series)
    with debian.apt_session(state, progress):
        _, stanzas = debian.query(state, [spec.package], show=[spec.package])
        stanza = next((s for s in stanzas if s.package == spec.package), None)
        if stanza is None:
            raise FetchError(f"{spec}: no {spec.package} package in suites {', '.join(state.suites)}")
        progress(f"{spec} -> {spec.package} {stanza.version}")
        with cache.locked(f"src-{_root(spec.package, stanza.version).name}", progress=progress):
            if _tree(spec, stanza.version) is None:
                unpack_source(state, spec.package, stanza.version, progress)
    jsonfile.write_record(_alias(spec), {"version": stanza.version, "resolved": time.time()})
    tree = _tree(spec, stanza.version)
    if tree is None:
        raise FetchError(
            f"{spec}: {pristine_dir(spec.package, stanza.version)} is incomplete after unpacking"
        )
    return tree

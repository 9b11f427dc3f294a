"""The in-guest test modules (guest_tests/modules): feature probes and the build, on the host.

Kernel interface drift is found by compiling, like autoconf: each probe is a tiny C file
(guest_tests/modules/probes/<feature>.c) built as an object against the kernel's build tree; a probe
that compiles turns on a -DHIL_HAVE_* macro for the real build. A baseline probe must always compile,
so a broken tree or toolchain is a BuildError and never mistaken for a missing feature.

The build happens in a copy of the sources inside the cache entry (the source tree must stay free of
build products, and may be read-only in the guest). Entries are keyed by the kernel build's identity,
the module sources (the probes' among them) and the probe table; `modules.json` in the entry is what
the guest reads (plan.modules_dir is the entry) and is written last, so a half-built entry is never
served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BuildError
from harness.kernels.cache import atomic_dir, locked
from harness.kernels.kimage import KernelImage
from harness.kernels.proc import capture, run_logged
from harness.paths import GUEST_TESTS_DIR, cache_dir

Progress = Callable[[str], None]

MODULES_SRC = GUEST_TESTS_DIR / "modules"
PROBES_SRC = MODULES_SRC / "probes"
MANIFEST = "modules.json"
MANIFEST_FORMAT = 1
LOG = "build.log"
P2P_MODULE = "hil_p2p_importer"
RDMA_MODULE = "hil_rdma_importer"
# Bump when the build steps change in a way that changes results. The probes' sources and table are
# in the key already. modules-2: the probes moved from Python strings to probes/*.c.
RECIPE = "modules-2"
NICE = 10
JOBS = 2
# Files of the tree whose bytes identify a kernel build for out-of-tree modules.
TREE_IDENTITY_FILES = (".config", "Module.symvers", "include/generated/utsrelease.h")


@dataclass(frozen=True)
class Probe:
    """One compile probe: `feature` is true when its source, PROBES_SRC/<feature>.c, compiles."""

    feature: str
    macro: str | None  # -D flag for the real build, None for probes that only gate a module
    missing: str  # why dependent tests skip when the probe fails


BASELINE = Probe(feature="baseline", macro=None, missing="")

PROBES: tuple[Probe, ...] = (
    Probe(
        feature="dma_buf_dynamic_attach",
        macro=None,
        missing="no dynamic dma-buf importer API (dma_buf_dynamic_attach) or no CONFIG_DMA_SHARED_BUFFER",
    ),
    Probe(
        feature="invalidate_mappings",
        macro="HIL_HAVE_INVALIDATE_MAPPINGS",
        missing="struct dma_buf_attach_ops has no invalidate_mappings",
    ),
    Probe(
        feature="move_notify",
        macro="HIL_HAVE_MOVE_NOTIFY",
        missing="struct dma_buf_attach_ops has no move_notify",
    ),
    Probe(
        feature="attach_revocable",
        macro="HIL_HAVE_ATTACH_REVOCABLE",
        missing="the kernel has no dma_buf_attach_revocable()",
    ),
    Probe(
        feature="import_ns_ident",
        macro="HIL_HAVE_IMPORT_NS_IDENT",
        missing="MODULE_IMPORT_NS takes a string literal",
    ),
    Probe(
        feature="infiniband_user_mem",
        macro=None,
        missing="the kernel config lacks INFINIBAND / INFINIBAND_USER_MEM (no ib_umem dma-buf import)",
    ),
    Probe(
        feature="umem_revocable",
        macro="HIL_HAVE_UMEM_REVOCABLE",
        missing="the kernel has no ib_umem_dmabuf_get_pinned_revocable_and_lock()",
    ),
    Probe(
        feature="umem_pinned_dma_device",
        macro="HIL_HAVE_UMEM_PINNED_DMA_DEV",
        missing="the kernel has no ib_umem_dmabuf_get_pinned_with_dma_device()",
    ),
)


def probe_object(probe: Probe) -> str:
    return f"probe_{probe.feature}.o"


def probe_file(probe: Probe, src: Path = PROBES_SRC) -> Path:
    return src / f"{probe.feature}.c"


_LOCAL_INCLUDE = re.compile(r'#include "(?P<name>[\w.-]+)"')


def probe_text(probe: Probe, src: Path = PROBES_SRC) -> str:
    """The C text compiled for `probe`: its file, with `#include "x.h"` of files in `src` inlined.

    Inlined rather than included so that an error in a shared prologue is reported against the
    probe's own file, which is how probe_errors attributes it to the feature. The header's first
    line (its SPDX tag) is dropped: the probe file has its own.
    """
    lines = []
    for line in probe_file(probe, src).read_text().splitlines(keepends=True):
        match = _LOCAL_INCLUDE.fullmatch(line.rstrip("\n"))
        header = src / match.group("name") if match is not None else None
        lines.append(header.read_text().partition("\n")[2] if header and header.is_file() else line)
    return "".join(lines)


def probe_sources(probes: Sequence[Probe], src: Path = PROBES_SRC) -> dict[str, str]:
    """File name -> text of a directory that builds every probe."""
    files = {f"probe_{p.feature}.c": probe_text(p, src) for p in probes}
    # Objects named in obj-m so that kbuild accepts them as single targets. -Wno-error: a warning
    # (new compiler, noisy header) must not read as a missing feature; errors that mean "absent"
    # (undeclared name, no such member) stay errors.
    files["Kbuild"] = "ccflags-y += -Wno-error\n" + "".join(f"obj-m += {probe_object(p)}\n" for p in probes)
    return files


_PROBE_ERROR = re.compile(r"probe_(?P<feature>\w+)\.c:\d+:(?:\d+:)? (?:fatal )?error: (?P<message>.*)")


def probe_errors(log_text: str) -> dict[str, str]:
    """Feature -> the compiler's first error for its probe, from the build log (pure).

    Kept in the skip reason so that a reader can check the probe failed for the right reason.
    """
    errors: dict[str, str] = {}
    for line in log_text.splitlines():
        match = _PROBE_ERROR.search(line)
        if match is not None:
            errors.setdefault(match.group("feature"), match.group("message").strip())
    return errors


def derived_features(raw: Mapping[str, bool]) -> dict[str, bool]:
    """Probe results plus the features the modules and tests reason with (pure)."""
    features = dict(raw)
    features["revoke_callback"] = raw.get("invalidate_mappings", False) or raw.get("move_notify", False)
    return features


def feature_reasons(raw: Mapping[str, bool], errors: Mapping[str, str] | None = None) -> dict[str, str]:
    """Why each missing feature is missing, phrased for a skip message (pure)."""
    errors = errors or {}
    reasons = {}
    for p in PROBES:
        if not raw.get(p.feature, False):
            why = f": {errors[p.feature]}" if p.feature in errors else ""
            reasons[p.feature] = f"{p.missing} (compile probe{why})"
    if not (raw.get("invalidate_mappings") or raw.get("move_notify")):
        reasons["revoke_callback"] = (
            "struct dma_buf_attach_ops has neither invalidate_mappings nor move_notify (compile probe)"
        )
    return reasons


def feature_cflags(raw: Mapping[str, bool]) -> list[str]:
    return [f"-D{p.macro}" for p in PROBES if p.macro and raw.get(p.feature, False)]


def module_skips(raw: Mapping[str, bool]) -> dict[str, str]:
    """Module name -> why it is not built (pure)."""
    reasons = feature_reasons(raw)
    skips: dict[str, str] = {}
    if not raw.get("dma_buf_dynamic_attach", False):
        skips[P2P_MODULE] = reasons["dma_buf_dynamic_attach"]
        skips[RDMA_MODULE] = reasons["dma_buf_dynamic_attach"]
    elif not raw.get("infiniband_user_mem", False):
        skips[RDMA_MODULE] = reasons["infiniband_user_mem"]
    return skips


def toolchain_vars(config_text: str) -> list[str]:
    """make variables the kernel's own build used, read from its .config (pure).

    Out-of-tree objects must be built by the compiler family that built the kernel.
    """
    return ["LLVM=1"] if "\nCONFIG_CC_IS_CLANG=y" in f"\n{config_text}" else []


def make_argv(
    build_dir: Path,
    module_dir: Path,
    targets: Sequence[str],
    *,
    variables: Sequence[str] = (),
    jobs: int = JOBS,
    nice: int = NICE,
    keep_going: bool = False,
) -> list[str]:
    """`make -C <kernel build tree> M=<module dir>` (pure)."""
    argv = ["nice", "-n", str(nice)] if nice > 0 else []
    argv += ["make", "-C", str(build_dir), f"M={module_dir}", f"-j{jobs}"]
    if keep_going:
        argv.append("-k")
    return [*argv, *variables, *targets]


def module_build_vars(
    raw: Mapping[str, bool], skips: Mapping[str, str], toolchain: Sequence[str]
) -> list[str]:
    """Variables of the real build: the feature macros and which modules Kbuild builds (pure)."""
    rdma = "" if RDMA_MODULE in skips else "m"
    return [*toolchain, f"HIL_FEATURE_CFLAGS={' '.join(feature_cflags(raw))}", f"HIL_RDMA={rdma}"]


def sources_digest(src: Path) -> str:
    """Hash of every file under `src` (names and bytes), ignoring build products."""
    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file() and _is_source(p)):
        rel = path.relative_to(src).as_posix()
        data = path.read_bytes()
        h.update(f"{rel}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def _is_source(path: Path) -> bool:
    return path.name in ("Kbuild", "Makefile") or path.suffix in (".c", ".h")


def tree_identity(build_dir: Path) -> str:
    h = hashlib.sha256()
    for rel in TREE_IDENTITY_FILES:
        path = build_dir / rel
        data = path.read_bytes() if path.is_file() else b"<missing>"
        h.update(f"{rel}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def probe_table_digest(probes: Sequence[Probe]) -> str:
    """Hash of the probes' metadata: a macro or a skip reason changes what an entry holds (pure)."""
    table = [[p.feature, p.macro, p.missing] for p in probes]
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()


def entry_key(
    kernel_identity: str, sources: str, toolchain: str, recipe: str = RECIPE, probes: str = ""
) -> str:
    """Cache key of one modules build (pure)."""
    h = hashlib.sha256()
    for label, value in (("recipe", recipe), ("kernel", kernel_identity), ("sources", sources),
                         ("toolchain", toolchain), ("probes", probes)):  # fmt: skip
        h.update(f"{label}:{len(value)}:{value}".encode())
    return h.hexdigest()[:24]


def modules_key(kernel_identity: str, toolchain: str, src: Path = MODULES_SRC) -> str:
    """The key build_test_modules files an entry under: `src` holds the modules and probes/."""
    probes = probe_table_digest((BASELINE, *PROBES))
    return entry_key(kernel_identity, sources_digest(src), toolchain, probes=probes)


@dataclass(frozen=True)
class ModuleSet:
    """What the guest gets: `out_dir` (plan.modules_dir) holds modules.json and the .ko files.

    paths     module name -> .ko
    features  probe results and derived features (revoke_callback)
    skipped   module or feature name -> why it is unavailable (the dependent tests' skip reason)
    """

    out_dir: Path | None
    paths: dict[str, Path] = field(default_factory=dict)
    features: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cflags: tuple[str, ...] = ()


def manifest_dict(kernel: KernelImage, key: str, modules: ModuleSet) -> dict[str, Any]:
    base = modules.out_dir
    return {
        "format": MANIFEST_FORMAT,
        "key": key,
        "kernel": {"spec": kernel.spec, "version": kernel.version, "source": kernel.source},
        "modules": {
            name: str(p.relative_to(base) if base else p) for name, p in sorted(modules.paths.items())
        },
        "features": dict(sorted(modules.features.items())),
        "skipped": dict(sorted(modules.skipped.items())),
        "cflags": list(modules.cflags),
    }


def module_set_from_manifest(out_dir: Path, data: Mapping[str, Any]) -> ModuleSet:
    return ModuleSet(
        out_dir=out_dir,
        paths={name: out_dir / rel for name, rel in data["modules"].items()},
        features={k: bool(v) for k, v in data["features"].items()},
        skipped={k: str(v) for k, v in data["skipped"].items()},
        cflags=tuple(data.get("cflags", ())),
    )


def default_out_dir() -> Path:
    return cache_dir() / "modules"


NO_BUILD_TREE = (
    "kernel {spec} has no build tree (a stock image built with a different compiler): "
    "out-of-tree test modules cannot be built reliably for it"
)


def build_test_modules(kernel: KernelImage, out_dir: Path, progress: Progress) -> ModuleSet:
    """Probe and build the test modules for `kernel` in a cache entry under `out_dir`.

    A kernel without a build tree gets an entry with no modules and the reason (so the guest tests
    skip saying why). BuildError when the tree cannot build even the baseline probe or a module.
    """
    toolchain = _toolchain()
    if kernel.build_dir is None:
        identity = f"image:{kernel.spec}:{kernel.version}:{kernel.source}"
    else:
        _check_tree(kernel.build_dir)
        identity = f"tree:{tree_identity(kernel.build_dir)}"
    key = modules_key(identity, toolchain)
    final = out_dir / key
    with locked(f"modules-{key}", progress=progress):
        data = _read_manifest(final)
        if data is not None:
            progress(f"test modules: cached {final}")
            return module_set_from_manifest(final, data)
        with atomic_dir(final) as tmp:
            modules = _build_into(kernel, tmp, progress)
            # Paths in the manifest are relative, so it stays valid after the rename.
            (tmp / MANIFEST).write_text(json.dumps(manifest_dict(kernel, key, modules), indent=1) + "\n")
    data = _read_manifest(final)
    if data is None:
        raise BuildError(f"test modules: {final / MANIFEST} unreadable right after writing it")
    return module_set_from_manifest(final, data)


def _read_manifest(entry: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None
    return data


def _toolchain() -> str:
    return " / ".join(capture([tool, "--version"]).partition("\n")[0] for tool in ("gcc", "ld", "make"))


def _check_tree(build_dir: Path) -> None:
    missing = [
        rel for rel in (".config", "Module.symvers", "scripts/mod/modpost") if not (build_dir / rel).exists()
    ]
    if missing:
        what = ", ".join(missing)
        raise BuildError(
            f"kernel build tree {build_dir} is not prepared for external modules (missing {what})"
        )


def _build_into(kernel: KernelImage, entry: Path, progress: Progress) -> ModuleSet:
    if kernel.build_dir is None:
        reason = NO_BUILD_TREE.format(spec=kernel.spec)
        progress(f"test modules: skipped: {reason}")
        return ModuleSet(out_dir=entry, skipped={P2P_MODULE: reason, RDMA_MODULE: reason})
    build_dir = kernel.build_dir
    log = entry / LOG
    toolchain = toolchain_vars((build_dir / ".config").read_text(errors="replace"))
    raw = run_probes(build_dir, entry / "probes", toolchain, log, progress)
    skips = module_skips(raw)
    features = derived_features(raw)
    skipped = {**feature_reasons(raw, probe_errors(log.read_text(errors="replace"))), **skips}
    src = entry / "build"
    # Without probes/: they were built above, and kbuild has no use for them here.
    ignore = shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*", PROBES_SRC.name)
    shutil.copytree(MODULES_SRC, src, ignore=ignore)
    wanted = [name for name in (P2P_MODULE, RDMA_MODULE) if name not in skips]
    if wanted:
        progress(f"test modules: building {', '.join(wanted)} against {build_dir}")
        argv = make_argv(build_dir, src, ["modules"], variables=module_build_vars(raw, skips, toolchain))
        run_logged(argv, log=log, what="test modules", cwd=src, env=_c_locale())
    paths = {name: src / f"{name}.ko" for name in wanted}
    absent = [str(p) for p in paths.values() if not p.is_file()]
    if absent:
        raise BuildError(f"test modules: make succeeded but {', '.join(absent)} missing", log)
    return ModuleSet(out_dir=entry, paths=paths, features=features, skipped=skipped,
                     cflags=tuple(feature_cflags(raw)))  # fmt: skip


def _c_locale() -> dict[str, str]:
    # ASCII quotes in compiler messages, which end up in skip reasons. kbuild unexports LC_ALL, so
    # the categories gcc reads are set one by one.
    return {**os.environ, "LC_ALL": "C", "LANG": "C", "LC_CTYPE": "C", "LC_MESSAGES": "C"}


def run_probes(
    build_dir: Path, probe_dir: Path, toolchain: Sequence[str], log: Path, progress: Progress
) -> dict[str, bool]:
    """Compile every probe in one make -k run; a probe holds when its object exists."""
    probes = (BASELINE, *PROBES)
    probe_dir.mkdir(parents=True)
    for name, text in probe_sources(probes).items():
        (probe_dir / name).write_text(text)
    progress(f"test modules: {len(PROBES)} compile probes against {build_dir}")
    argv = make_argv(build_dir, probe_dir, [probe_object(p) for p in probes], variables=toolchain,
                     keep_going=True)  # fmt: skip
    # make fails whenever a feature is missing: each object's presence is the answer.
    with contextlib.suppress(BuildError):
        run_logged(argv, log=log, what="compile probes", cwd=probe_dir, env=_c_locale())
    if not (probe_dir / probe_object(BASELINE)).is_file():
        raise BuildError(
            f"the baseline compile probe failed against {build_dir}: tree or compiler broken", log
        )
    results = {p.feature: (probe_dir / probe_object(p)).is_file() for p in PROBES}
    progress("test modules: probes: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in results.items()))
    return results

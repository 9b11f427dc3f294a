"""Benchmark: kernel builds through harness.kernels next to the raw kbuild commands they wrap.

    .venv/bin/python bench/bench_kernel_build.py [--cache DIR] [--raw-cold] [--out FILE]
    .venv/bin/python bench/bench_kernel_build.py --variants debug [--cache DIR] [--out FILE]

Rows: cold build (empty ccache, no build dirs), cache hit (same spec again), one-file-patch
rebuild (a trivial mbox patch to drivers/pci/p2pdma.c applied with git am). The raw column runs
plain `make -j<N> bzImage` in an equally configured tree with ccache disabled:
  cold      a fresh O= dir with the same .config (only with --raw-cold: it is a second full build)
  hit       make in the finished build dir (kbuild's no-op walk)
  patch     the same one-file change written into a hard-linked copy of the pristine tree whose
            build dir is a copy of the pristine build, then make (what a developer does by hand)
The source download/extraction is measured separately and is not part of any row.

--variants F1,F2,...: instead, one cold build (empty ccache, no build dirs) of the plain config and one
per kernel variant (`--fragment F`), one after the other in the same run, with their ratio to the plain
build in CPU time (comparable when other work shares the machine) and the bzImage size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.kernels import cache, debsrc
from harness.kernels.build import MAKE_VARS
from harness.kernels.image import KernelImage, resolve_kernel
from harness.kernels.source import BUILD_DIR_PREFIX
from harness.kernels.spec import DebianSource

SPEC = "src:debian-7.2"
PATCH_FILE = "drivers/pci/p2pdma.c"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Timing:
    """Wall time and CPU time (user+sys of finished child processes), to compare across machine load."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall = wall
        self.cpu = cpu

    def __str__(self) -> str:
        return f"{self.wall:7.1f} s ({self.cpu / 60:5.1f} cpu-min)"


def timed(what: str, fn: Callable[[], object]) -> Timing:
    log(f"--- {what}")
    t0, c0 = time.monotonic(), child_cpu()
    fn()
    result = Timing(time.monotonic() - t0, child_cpu() - c0)
    log(f"--- {what}: {result}")
    return result


def one_file_mbox(tree: Path) -> bytes:
    """A git format-patch style mbox adding one comment line to PATCH_FILE (deterministic bytes)."""
    old = (tree / PATCH_FILE).read_text().splitlines(keepends=True)
    new = [*old[:1], "/* p2p-hil bench: a trivial one-file patch */\n", *old[1:]]
    diff = "".join(difflib.unified_diff(old, new, f"a/{PATCH_FILE}", f"b/{PATCH_FILE}"))
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: p2p-hil bench <bench@localhost>\n"
        "Date: Tue, 24 Nov 2026 00:00:00 +0000\n"
        "Subject: [PATCH] PCI/P2PDMA: bench: trivial one-file change\n\n"
        f"---\n {PATCH_FILE} | 1 +\n 1 file changed, 1 insertion(+)\n\n"
        f"diff --git a/{PATCH_FILE} b/{PATCH_FILE}\n{diff}--\n2.39.5\n\n"
    ).encode()


def raw_make(srctree: Path, objtree: Path, jobs: int, logfile: Path) -> str:
    """Plain make -jN bzImage; same CC string as the configured tree (else kbuild rebuilds all), no ccache."""
    argv = ["nice", "-n", "10", "make", "-C", str(srctree), f"O={objtree}", f"-j{jobs}", *MAKE_VARS,
            "CC=ccache gcc", "HOSTCC=ccache gcc", "bzImage"]  # fmt: skip
    env = {
        **os.environ,
        "CCACHE_DISABLE": "1",
        "KBUILD_BUILD_USER": "p2p-hil",
        "KBUILD_BUILD_HOST": "p2p-hil",
    }
    with logfile.open("w") as out:
        try:
            return str(
                timed(
                    f"raw make in {objtree}",
                    lambda: subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=True),
                )
            )
        except subprocess.CalledProcessError as exc:
            # Reported in the table instead of losing the rows measured so far.
            return f"(failed: exit {exc.returncode}, see {logfile.name})"


def hardlink_tree(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    entries = [str(p) for p in src.iterdir() if p.name != ".git" and not p.name.startswith(BUILD_DIR_PREFIX)]
    subprocess.run(["cp", "-al", *entries, str(dest)], check=True)


def cold_row() -> tuple[tuple[str, Timing, str], Path]:
    built: list[KernelImage] = []
    ours = timed("cold build", lambda: built.append(resolve_kernel(SPEC, progress=log)))
    build_dir = built[0].build_dir
    assert build_dir is not None
    return ("cold build (empty ccache)", ours, "(not run: --raw-cold)"), build_dir


def raw_cold(tree: Path, build_dir: Path, scratch: Path, jobs: int) -> str:
    """A second full build, by hand: fresh O= dir, the same .config, no ccache. Runs last."""
    raw_tree = scratch / "cold-tree"
    hardlink_tree(tree, raw_tree)
    (raw_tree / "hil-o-raw").mkdir()
    shutil.copy(build_dir / ".config", raw_tree / "hil-o-raw" / ".config")
    result = raw_make(raw_tree, raw_tree / "hil-o-raw", jobs, scratch / "raw-cold.log")
    shutil.rmtree(raw_tree)
    return result


def hit_row(tree: Path, build_dir: Path, scratch: Path, jobs: int) -> tuple[str, Timing, str]:
    ours = timed("cache hit", lambda: resolve_kernel(SPEC, progress=log))
    raw = raw_make(tree, build_dir, jobs, scratch / "raw-hit.log")
    return ("cache hit (same spec again)", ours, raw)


def patch_row(tree: Path, build_dir: Path, scratch: Path, jobs: int) -> tuple[str, Timing, str]:
    mbox = scratch / "one-file.mbox"
    mbox.write_bytes(one_file_mbox(tree))
    ours = timed("one-file-patch rebuild", lambda: resolve_kernel(SPEC, progress=log, series=mbox))
    # By hand: the same edit in a configured, built tree, then make.
    raw_tree = scratch / "patch-tree"
    hardlink_tree(tree, raw_tree)
    subprocess.run(["cp", "-a", str(build_dir), str(raw_tree / "hil-o-raw")], check=True)
    target = raw_tree / PATCH_FILE
    text = target.read_text().splitlines(keepends=True)
    target.unlink()  # break the hard link: the pristine file must stay as it is
    target.write_text("".join([*text[:1], "/* p2p-hil bench: a trivial one-file patch */\n", *text[1:]]))
    raw = raw_make(raw_tree, raw_tree / "hil-o-raw", jobs, scratch / "raw-patch.log")
    shutil.rmtree(raw_tree)
    return ("one-file-patch rebuild (git am)", ours, raw)


def variant_rows(fragments: list[str]) -> list[str]:
    """Cold builds of the plain config and of each variant, each from an empty ccache."""
    rows: list[tuple[str, Timing, int, int]] = []
    for variant in ["", *fragments]:
        shutil.rmtree(cache.ccache_root(), ignore_errors=True)
        extra: tuple[str, ...] = (variant,) if variant else ()

        def build(extra: tuple[str, ...] = extra) -> KernelImage:
            return resolve_kernel(SPEC, progress=log, fragments=extra)

        t0, c0 = time.monotonic(), child_cpu()
        image = build()
        timing = Timing(time.monotonic() - t0, child_cpu() - c0)
        log(f"--- cold build {variant or 'plain'}: {timing}")
        built = [image]
        build_dir = built[0].build_dir
        assert build_dir is not None
        objects = len(list(build_dir.rglob("*.o")))
        rows.append((variant or "(plain: base+trim)", timing, objects, built[0].image.stat().st_size))
    base_cpu = rows[0][1].cpu
    lines = [f"{'variant':22} {'cold build':>26} {'x plain cpu':>11} {'objects':>8} {'bzImage':>9}"]
    for name, timing, objects, size in rows:
        ratio = timing.cpu / base_cpu if base_cpu else float("nan")
        lines.append(f"{name:22} {timing!s:>26} {ratio:>10.2f}x {objects:>8} {size / 2**20:>7.1f}Mi")
    return lines


def render(
    rows: list[tuple[str, Timing, str]], fetch: Timing, identity: str, jobs: int, build_dir: Path
) -> str:
    gcc = subprocess.run(
        ["gcc", "-dumpfullversion"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        f"# kernel build benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {SPEC} ({identity}), "
        f"{jobs} cores, gcc {gcc}, nice 10, fragments base+trim",
        f"# source fetch (apt download + extract, not in any row): {fetch}",
        f"# raw = plain `make -j{jobs} bzImage` in an equally configured tree, ccache disabled",
        "# cpu-min = user+sys CPU time of all child processes: comparable when other work shares the machine",
        f"{'case':34} {'p2p-hil':>26}   {'raw make':>26}",
    ]
    lines += [f"{name:34} {ours!s:>26}   {raw:>26}" for name, ours, raw in rows]
    lines.append(f"# build dir: {build_dir}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", default="/tmp/p2p-hil-bench-cache", help="P2P_HIL_CACHE for the run")
    parser.add_argument(
        "--raw-cold", action="store_true", help="also time a raw cold make (a second full build)"
    )
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument(
        "--variants", metavar="F1,F2", help="cold builds of the plain config and of these fragments instead"
    )
    args = parser.parse_args()
    os.environ["P2P_HIL_CACHE"] = args.cache  # read by harness.paths.cache_dir() at each call
    jobs = len(os.sched_getaffinity(0))
    fetch = timed("fetch source", lambda: debsrc.fetch_source(DebianSource("7.2"), log))
    tree = debsrc.fetch_source(DebianSource("7.2"), log)
    # Cold means cold: no ccache, no build dirs, no patched trees (the downloaded source stays).
    shutil.rmtree(cache.ccache_root(), ignore_errors=True)
    for old in [*tree.path.glob(f"{BUILD_DIR_PREFIX}*"), *tree.path.parent.glob("series-*")]:
        shutil.rmtree(old)
    if args.variants:
        gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True, check=False)
        header = [
            f"# kernel variant cold builds, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {SPEC} "
            f"({tree.identity}), {jobs} cores, gcc {gcc.stdout.strip()}, empty ccache for each row",
            "# cpu-min = user+sys CPU time of all child processes: comparable when other work shares "
            "the machine",
        ]
        table = "\n".join([*header, *variant_rows(args.variants.split(","))]) + "\n"
        print(table, end="")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(table)
        return
    scratch = Path(args.cache) / "bench-raw"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cold, build_dir = cold_row()
    rows = [
        cold,
        hit_row(tree.path, build_dir, scratch, jobs),
        patch_row(tree.path, build_dir, scratch, jobs),
    ]
    if args.raw_cold:  # last: a second full build; the other rows are measured already
        rows[0] = (cold[0], cold[1], raw_cold(tree.path, build_dir, scratch, jobs))
    table = render(rows, fetch, tree.identity, jobs, build_dir)
    print(table, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()

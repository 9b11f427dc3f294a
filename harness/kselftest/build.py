"""Build a selftest directory of the kernel under test on the host, cached.

The kernel's own tree is the source (a src: build's objtree links it as `source`; an in-tree build is
the tree itself). Nothing is written into it: `make O=<cache>/headers headers_install` installs the uapi
headers elsewhere, and `make -C tools/testing/selftests/<name> OUTPUT=<cache>/<name>/out
KHDR_INCLUDES=-isystem <headers>/usr/include` puts objects and binaries in the cache. A build that fails
is cached as a failure too (same tree, same compiler, same failure), with the compiler's message.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.kernels.build import toolchain_identity
from harness.kernels.cache import atomic_dir, locked
from harness.kernels.kimage import KernelImage
from harness.paths import cache_dir

Progress = Callable[[str], None]
SELFTESTS = Path("tools/testing/selftests")
RESULT_FILE = "build.json"
LOG_FILE = "build.log"
# gcc/ld/make's error lines: what a build failure's record says first.
_ERROR_LINE = re.compile(r"(?:\berror\b|undefined reference|No such file|\*\*\*)", re.IGNORECASE)
MESSAGE_LINES = 12


@dataclass(frozen=True)
class Built:
    """A selftest directory built (or not) for one kernel tree."""

    name: str
    ok: bool
    out_dir: Path  # binaries are out_dir/<binary>
    binaries: tuple[str, ...]  # what its Makefile runs (lib.mk emit_tests), built or not
    message: str  # the compiler's error lines when not ok
    log: Path
    seconds: float
    cached: bool = False


def source_tree(kernel: KernelImage) -> Path | None:
    """The kernel's source tree: the objtree's `source` link (O= builds), or the build dir itself."""
    if kernel.build_dir is None:
        return None
    link = kernel.build_dir / "source"
    tree = link.resolve() if link.exists() else kernel.build_dir
    return tree if (tree / SELFTESTS).is_dir() else None


def cache_key(tree: Path, kernel: KernelImage, toolchain: str) -> str:
    text = "\n".join([str(tree), kernel.source, kernel.version, toolchain])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def error_message(log_text: str) -> str:
    """The first compiler/linker/make error lines of a build log (the log's tail if none matched)."""
    lines = [ln.rstrip() for ln in log_text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not ln.startswith(("gcc ", "cc "))]
    chosen = errors[:MESSAGE_LINES] if errors else lines[-MESSAGE_LINES:]
    return "\n".join(chosen) or "(the build printed nothing)"


def _make(argv: list[str], log: Path) -> int:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def _emit_tests(tree: Path, name: str, out_dir: Path) -> tuple[str, ...]:
    """The binaries the selftest's Makefile runs, from lib.mk's own `emit_tests` target."""
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(tree / SELFTESTS / name), f"OUTPUT={out_dir}",
         f"COLLECTION={name}", "emit_tests"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    names = [line.rpartition(":")[2].strip() for line in proc.stdout.splitlines() if ":" in line]
    return tuple(n for n in names if n)


def _headers(tree: Path, root: Path, progress: Progress) -> tuple[Path | None, str]:
    """<root>/headers/usr/include, installed once per tree; (None, message) when that fails."""
    final = root / "headers"
    with locked(f"kselftest-{root.name}-headers", progress=progress):
        if (final / "usr" / "include").is_dir():
            return final / "usr" / "include", ""
        log = root / "headers.log"
        root.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        try:
            with atomic_dir(final) as tmp:
                if _make(["make", "-s", "-C", str(tree), f"O={tmp}", "headers_install"], log) != 0:
                    raise RuntimeError(error_message(log.read_text(errors="replace")))
        except RuntimeError as exc:
            return None, f"make headers_install failed:\n{exc}"
    return final / "usr" / "include", ""


def build_selftest(kernel: KernelImage, name: str, progress: Progress) -> Built:
    """Build tools/testing/selftests/<name> for `kernel`, or return the cached build (ok or failed)."""
    t0 = time.monotonic()
    tree = source_tree(kernel)
    if tree is None:
        where = kernel.build_dir or kernel.image
        why = f"kernel {kernel.spec} ({where}) has no source tree with {SELFTESTS}: selftests build from it"
        return Built(name, False, Path(), (), why, Path(), 0.0)
    if not (tree / SELFTESTS / name).is_dir():
        return Built(name, False, Path(), (), f"{tree / SELFTESTS} has no directory {name!r}", Path(), 0.0)
    root = cache_dir() / "kselftest" / cache_key(tree, kernel, toolchain_identity())
    final = root / name
    with locked(f"kselftest-{root.name}-{name}", progress=progress):
        if (final / RESULT_FILE).is_file():
            return _load(final, name, cached=True)
        include, problem = _headers(tree, root, progress)
        with atomic_dir(final) as tmp:
            out = tmp / "out"
            out.mkdir()
            log = tmp / LOG_FILE
            log.write_text(f"# {name} from {tree} for {kernel.version}\n")
            if include is None:
                ok, message = False, problem
            else:
                code = _make(["make", "-C", str(tree / SELFTESTS / name), f"OUTPUT={out}",
                              f"KHDR_INCLUDES=-isystem {include}"], log)  # fmt: skip
                ok = code == 0
                message = "" if ok else error_message(log.read_text(errors="replace"))
            binaries = _emit_tests(tree, name, out)
            record = {"ok": ok, "binaries": list(binaries), "message": message,
                      "seconds": round(time.monotonic() - t0, 2)}  # fmt: skip
            (tmp / RESULT_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return _load(final, name, cached=False)


def _load(final: Path, name: str, *, cached: bool) -> Built:
    data = json.loads((final / RESULT_FILE).read_text())
    return Built(
        name=name,
        ok=bool(data["ok"]),
        out_dir=final / "out",
        binaries=tuple(str(b) for b in data["binaries"]),
        message=str(data["message"]),
        log=final / LOG_FILE,
        seconds=float(data["seconds"]),
        cached=cached,
    )

"""Host-side preparation of the guest's Python start-up: byte-code and pytest's assertion rewrites.

The guest sees the host's file system read-only over 9p, where every lookup is a round trip to the
host: whatever Python or pytest cannot find compiled, they compile again on every boot, under TCG.
So the host compiles it, under a pycache prefix (sys.pycache_prefix) that the guest's interpreters are
pointed at with `-X pycache_prefix=DIR` (python_options). Same interpreter, same source paths, so the
same .pyc names; a .pyc is used only while its source's mtime and size match (Python checks that, and
pytest for its rewrites), so a changed source is compiled again in the guest, never used stale.

What gets prepared is what the guest imports: the host runs the guest's own Python work with the
prefix, short of running tests: the guest entry's imports, then pytest's collection of the plan's tests
with the entry's command line and environment (pytest_command, pytest_env) plus --collect-only. That
writes the byte-code of every module imported before the first test and pytest's rewrites of the test
modules, conftest.py and plugins. A stamp named by a fingerprint of the sources makes a repeated
preparation cost a walk over the harness's and the tests' files.

Preparation only saves time: when it fails the guest compiles as before, and prepare() says why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.guest.entry import pytest_command, pytest_env
from harness.guest.plan import GuestPlan, dump_plan

REPO_ROOT = Path(__file__).resolve().parents[2]
# Sources of the guest's own code, besides the plan's tests.
GUEST_SOURCES = (REPO_ROOT / "harness",)
STAMPS = ".prepared"
# A preparation that takes longer is stuck (a test module waiting on something at import).
PREPARE_TIMEOUT_S = 300.0
# pytest's exit codes that still mean "collected what there is": ok, and no tests collected.
_COLLECTED = (0, 5)


@dataclass(frozen=True)
class Prepared:
    prefix: Path
    fresh: bool  # True: compiled now; False: the stamp said it was done already
    seconds: float
    error: str | None = None  # why the preparation failed (the guest then compiles as before)


def pycache_prefix(cache_root: Path) -> Path:
    """The shared prefix: one tree for every checkout and interpreter (.pyc names carry the
    interpreter's tag and the source's absolute path)."""
    return cache_root / "pycache"


def python_options(prefix: Path | None) -> list[str]:
    """Interpreter options for a Python the guest starts (the guest entry's, pytest's)."""
    return [] if prefix is None else ["-X", f"pycache_prefix={prefix}"]


def _py_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath, name)


def fingerprint(python: str, roots: Sequence[Path], extra: Sequence[Path] = ()) -> str:
    """Changes whenever any .py under `roots` is added, removed or touched, or an `extra` path's
    mtime changes (a directory's: when an entry is added or removed), or the interpreter changes."""
    digest = hashlib.sha256()
    digest.update(f"{os.path.realpath(python)}\0{sys.implementation.cache_tag}\0".encode())
    for root in roots:
        for path in _py_files(root):
            st = path.stat()
            digest.update(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    for path in extra:
        try:
            digest.update(f"{path}\0{path.stat().st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0-\n".encode())
    return digest.hexdigest()[:24]


def _site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def _run(argv: list[str], env: dict[str, str], cwd: Path, pass_fds: tuple[int, ...] = ()) -> str | None:
    """None on success, else what went wrong (the command's output tail)."""
    try:
        proc = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PREPARE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]}: {exc}"
    if proc.returncode in _COLLECTED:
        return None
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    return f"exit status {proc.returncode}: " + " | ".join(tail)


def prepare(plan: GuestPlan, prefix: Path, python: str = sys.executable) -> Prepared:
    """Compile under `prefix` what the guest's Python will import for `plan`, unless a stamp says it is
    done for these sources. Never raises for a failed compilation: see Prepared.error."""
    started = time.monotonic()
    stamp = prefix / STAMPS / fingerprint(python, (*GUEST_SOURCES, plan.tests_dir), _site_dirs())
    if stamp.exists():
        return Prepared(prefix, fresh=False, seconds=round(time.monotonic() - started, 3))
    prefix.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="p2p-hil-prepare-") as tmp:
        work = Path(tmp)
        # The same plan, but nothing it names in the run directory is touched: a collection error's
        # record goes to a scratch file, not into the cell's results.
        scratch_plan = dataclasses.replace(
            plan, run_dir=work, results_path=work / "results.jsonl", pycache_prefix=prefix
        )
        plan_path = work / "plan.json"
        dump_plan(scratch_plan, plan_path)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            env = pytest_env(os.environ, str(plan_path), devnull)
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # writing the byte-code is the point here
            error = _run([python, *python_options(prefix), "-c", "import harness.guest.entry"], env, work)
            if error is None:
                collect = [*pytest_command(scratch_plan, python), "--collect-only"]
                error = _run(collect, env, work, pass_fds=(devnull,))
        finally:
            os.close(devnull)
    if error is None:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(f"{python}\n{plan.tests_dir}\n")
    return Prepared(prefix, fresh=True, seconds=round(time.monotonic() - started, 3), error=error)

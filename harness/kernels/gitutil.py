"""git helpers for source trees: running git, and recording a pristine tree as one commit.

`git am` needs a repository. Debian's source tarball is not one, so the pristine tree is
committed once, when it is unpacked; patched trees then borrow its objects (see source.py).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from harness.errors import BuildError
from harness.kernels import series
from harness.kernels.kimage import Progress

BUILD_DIR_PREFIX = "hil-o-"  # build directories live directly inside the tree they build
RECORDED = "hil-pristine-commit"  # in .git/: the commit of a completely recorded tree


def git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", "-C", str(tree), *series.GIT_IDENTITY, *args], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise BuildError(f"git {' '.join(args)} in {tree} failed: {proc.stderr.strip()[-1500:]}")
    return proc


def git_bytes(tree: Path, *args: str) -> bytes:
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"git {' '.join(args)} in {tree} failed: {proc.stderr.decode(errors='replace')[-1500:]}"
        )
    return proc.stdout


def recorded_commit(tree: Path) -> str | None:
    marker = tree / ".git" / RECORDED
    return marker.read_text().strip() if marker.is_file() else None


def record_tree(tree: Path, message: str, progress: Progress) -> str:
    """Commit everything in `tree` (build dirs excepted) as the root commit of a new repository.

    The caller holds the tree's lock. Returns the commit; a marker makes a second call free.
    """
    if (done := recorded_commit(tree)) is not None:
        return done
    t0 = time.monotonic()
    git(tree, "init", "-q")
    # No background `git gc --auto`: 90k fresh loose objects would start a repack of ~1 GB that
    # competes with builds for minutes. The repository is write-once.
    git(tree, "config", "gc.auto", "0")
    git(tree, "config", "maintenance.auto", "false")
    (tree / ".git" / "info").mkdir(parents=True, exist_ok=True)
    (tree / ".git" / "info" / "exclude").write_text(f"/{BUILD_DIR_PREFIX}*/\n")
    # --force: Debian's tarball ships a .gitignore that ignores everything at the top level.
    # Low compression: this repository is only a base for git am, never transferred.
    exclude = f":(exclude){BUILD_DIR_PREFIX}*"
    git(tree, "-c", "core.looseCompression=1", "add", "--force", "-A", "--", ".", exclude)
    git(tree, "commit", "-q", "--no-verify", "-m", message)
    commit = git(tree, "rev-parse", "HEAD").stdout.strip()
    (tree / ".git" / RECORDED).write_text(commit + "\n")
    progress(f"tree recorded in git (for git am) in {time.monotonic() - t0:.1f} s")
    return commit

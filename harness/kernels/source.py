"""Source trees to build: identities of local trees, and patched copies for a patch series.

A patched tree never modifies what it comes from:
  src:   a hard-link farm of the pristine tree. git am replaces a file by unlink + create (it
         never writes into an existing inode), so the pristine files stay untouched, and the
         unchanged files keep their mtimes, which lets make reuse a pristine build's objects.
  tree:  a real copy (cp -a keeps mtimes) of the user's tree: their files may be edited in place.
Its git repository borrows the objects of the original through objects/info/alternates.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness.errors import BuildError, ConfigError
from harness.kernels import cache, series
from harness.kernels.debsrc import SourceTree
from harness.kernels.gitutil import BUILD_DIR_PREFIX, git, git_bytes, record_tree, recorded_commit
from harness.kernels.kimage import Progress

__all__ = ["BUILD_DIR_PREFIX", "local_tree", "patched_tree", "patched_tree_for", "tree_identity"]


def is_git_tree(path: Path) -> bool:
    return (path / ".git").exists()


def tree_identity(path: Path) -> str:
    """HEAD + hash of `git diff HEAD` + hash of untracked files, or a stat hash of a non-git tree.

    Untracked files count (a new driver file is part of the build), ignored ones do not (build output).
    """
    if is_git_tree(path):
        head = git_bytes(path, "rev-parse", "HEAD").decode().strip()
        diff = hashlib.sha256(git_bytes(path, "diff", "HEAD", "--binary")).hexdigest()[:16]
        untracked = hashlib.sha256()
        for rel in sorted(git_bytes(path, "ls-files", "--others", "--exclude-standard", "-z").split(b"\0")):
            if rel:
                untracked.update(rel + b"\0")
                file = path / os.fsdecode(rel)
                untracked.update(file.read_bytes() if file.is_file() else b"")
        return f"tree:{path}@{head}+diff:{diff}+untracked:{untracked.hexdigest()[:16]}"
    stat_hash = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(BUILD_DIR_PREFIX))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            entry = f"{os.path.relpath(full, path)}\0{st.st_size}\0{st.st_mtime_ns}\n"
            stat_hash.update(entry.encode(errors="surrogateescape"))
    return f"tree:{path}@nogit+stat:{stat_hash.hexdigest()[:16]}"


def local_tree(path: Path) -> SourceTree:
    real = path.expanduser().resolve()
    if not (real / "Makefile").is_file() or not (real / "Kconfig").is_file():
        raise ConfigError(
            f"tree:{path}: not a kernel source tree (no Makefile and Kconfig at its top)", "kernel"
        )
    return SourceTree(path=real, identity=tree_identity(real), lineage=f"tree:{real}", owned=False)


def _ensure_pristine_repo(pristine: Path, identity: str, progress: Progress) -> str:
    """The pristine tree's commit; trees unpacked before recording existed get recorded now."""
    if (commit := recorded_commit(pristine)) is not None:
        return commit
    with cache.locked(f"src-{pristine.parent.name}", progress=progress):
        shutil.rmtree(pristine / ".git", ignore_errors=True)
        return record_tree(pristine, f"pristine {identity}", progress)


def _borrow_repo(tree: Path, objects: Path, index: Path | None, commit: str) -> None:
    """A repository in `tree` whose objects come from `objects` (no copy), HEAD at `commit`."""
    git(tree, "init", "-q")
    (tree / ".git" / "objects" / "info" / "alternates").write_text(f"{objects}\n")
    git(tree, "config", "core.trustctime", "false")  # hard links changed every ctime
    git(tree, "config", "gc.auto", "0")
    git(tree, "config", "maintenance.auto", "false")
    git(tree, "update-ref", "HEAD", commit)
    if index is not None:
        shutil.copyfile(index, tree / ".git" / "index")
    else:
        git(tree, "read-tree", "HEAD")


def apply_series(tree: Path, mbox: Path, patches: Sequence[series.Patch], progress: Progress) -> None:
    """git am the series in `tree`; on failure abort and raise BuildError naming the patch."""
    t0 = time.monotonic()
    proc = subprocess.run(series.am_argv(tree, mbox), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        next_file = tree / ".git" / "rebase-apply" / "next"
        index = series.failed_index(next_file.read_text() if next_file.is_file() else None)
        subprocess.run(series.abort_argv(tree), capture_output=True, check=False)
        raise BuildError(series.failure_message(mbox, list(patches), index, proc.stdout + proc.stderr))
    progress(f"applied {len(patches)} patch(es) with git am in {time.monotonic() - t0:.1f} s")


def _top_entries(tree: Path) -> list[str]:
    return sorted(
        str(p) for p in tree.iterdir() if p.name != ".git" and not p.name.startswith(BUILD_DIR_PREFIX)
    )


def patched_tree_for(source: SourceTree, digest: str) -> SourceTree:
    """Where the tree of `source` with the series `digest` lives (it may not exist yet)."""
    if source.owned:
        final = source.path.parent / f"series-{digest[:16]}"
    else:
        ident = hashlib.sha256(source.identity.encode()).hexdigest()[:16]
        final = cache.kernels_root() / "trees" / f"{ident}-{digest[:16]}"
    return SourceTree(path=final, identity=f"{source.identity}+series:{digest[:16]}", lineage=source.lineage)


def patched_tree(
    source: SourceTree, mbox: Path, patches: Sequence[series.Patch], digest: str, progress: Progress
) -> SourceTree:
    """The tree of `source` with the series applied, created once (atomically) and cached."""
    pristine = source.owned
    if not pristine and not is_git_tree(source.path):
        raise ConfigError(f"tree:{source.path}: a patch series needs a git tree (git am)", "series")
    result = patched_tree_for(source, digest)
    final = result.path
    with cache.locked(f"tree-{final.name}", progress=progress):
        if (final / ".git" / "hil-series-applied").is_file():
            return result
        shutil.rmtree(final, ignore_errors=True)
        t0 = time.monotonic()
        with cache.atomic_dir(final) as tmp:
            if pristine:
                commit = _ensure_pristine_repo(source.path, source.identity, progress)
                _run(["cp", "-al", *_top_entries(source.path), str(tmp)], "hard-linking the pristine tree")
                _borrow_repo(tmp, source.path / ".git" / "objects", source.path / ".git" / "index", commit)
            else:
                _run(
                    ["cp", "-a", "--reflink=auto", *_top_entries(source.path), str(tmp)],
                    f"copying {source.path}",
                )
                objects = Path(
                    git(
                        source.path, "rev-parse", "--path-format=absolute", "--git-path", "objects"
                    ).stdout.strip()
                )
                _borrow_repo(tmp, objects, None, git(source.path, "rev-parse", "HEAD").stdout.strip())
                # Commit the tree as it is (uncommitted and untracked files included), then patch on top.
                git(tmp, "add", "-A")
                if git(tmp, "diff", "--cached", "--quiet", check=False).returncode != 0:
                    git(tmp, "commit", "-q", "--no-verify", "-m", f"working tree of {source.path}")
            progress(f"source tree for the series ready in {time.monotonic() - t0:.1f} s")
            apply_series(tmp, mbox, patches, progress)
            (tmp / ".git" / "hil-series-applied").write_text(f"{digest}\n")
    return result


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {proc.stderr.strip()[-1500:]}")

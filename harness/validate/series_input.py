"""The series as validate reads it, and every check of it that costs no build (ConfigError, exit 2).

Checked in this order, each naming the file and the problem: readable, not empty, an mbox (messages
starting with `From ` lines, as git format-patch writes), at least one message with a diff, no binary
patch, every file a patch modifies exists in the base tree (or an earlier patch created it), and the
cumulative series applies (`git apply --check` of patch i on top of patches 1..i-1). The apply check
runs in a temporary directory holding only the files the series touches, copied from the base tree:
seconds for any series, and the base tree is never written to. Nothing is left behind.

Cover letters (messages without a diff) are not patches; the rest keep their order (1-based, as git am
counts). The prefix mboxes (patches 1..i) are written the way harness/bisect/candidates.py writes its
own (`<stem>-<i>of<n>.mbox`, the messages concatenated), so a later bisect of the same series hits the
same build cache entries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.kernels import series as patch_series
from harness.kernels.spec import DebianSource, LocalTree, parse_spec

_FROM_LINE = re.compile(rb"^From \S+ .*\d{4}\s*$")
_DIFF_GIT = re.compile(r"^diff --git a/(\S+) b/(\S+)$")
_OLD = re.compile(r"^--- (?:a/(\S+)|/dev/null)\s*$")
_NEW = re.compile(r"^\+\+\+ (?:b/(\S+)|/dev/null)\s*$")
FLAG = "SERIES"


@dataclass(frozen=True)
class FileChange:
    path: str
    created: bool = False
    deleted: bool = False
    binary: bool = False
    old_path: str | None = None  # a rename's source


@dataclass(frozen=True)
class SeriesPatch:
    index: int  # 1-based
    total: int
    subject: str
    message: bytes
    files: tuple[FileChange, ...]

    @property
    def label(self) -> str:
        return f"patch {self.index}/{self.total} {self.subject!r}"

    @property
    def touched(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files if not f.deleted)


def _bad(mbox: Path, problem: str) -> ConfigError:
    return ConfigError(f"patch series {mbox}: {problem}", FLAG)


def file_changes(message: bytes) -> tuple[FileChange, ...]:
    """The files a patch message changes, from its diff headers (pure)."""
    text = message.decode("utf-8", errors="replace")
    changes: list[FileChange] = []
    current: dict[str, object] | None = None

    def close() -> None:
        if current is not None:
            changes.append(FileChange(**current))  # type: ignore[arg-type]

    for line in text.splitlines():
        if m := _DIFF_GIT.match(line):
            close()
            current = {"path": m[2]}
            continue
        if current is None:
            # A diff without git headers (diff -u, quilt): one file per ---/+++ pair.
            if (m := _NEW.match(line)) and m[1]:
                changes.append(FileChange(m[1]))
            continue
        if line.startswith("new file mode"):
            current["created"] = True
        elif line.startswith("deleted file mode"):
            current["deleted"] = True
        elif line.startswith("rename from "):
            current["old_path"] = line.removeprefix("rename from ").strip()
        elif line == "GIT binary patch" or (line.startswith("Binary files ") and line.endswith(" differ")):
            current["binary"] = True
    close()
    return tuple(changes)


def parse_series(mbox: Path, data: bytes) -> list[SeriesPatch]:
    """The patches of `data` (the bytes of `mbox`); ConfigError for an empty file, a file that is not an
    mbox, an mbox without a patch, and a binary patch. Pure."""
    if not data.strip():
        raise _bad(mbox, "empty (no message in it)")
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    if not _FROM_LINE.match(first):
        raise _bad(
            mbox,
            "not an mbox: it does not start with a 'From <sha> <date>' line "
            "(make one with `git format-patch --stdout` or `b4 am`)",
        )
    messages = patch_series.split_mbox(data)
    patches = [m for m in messages if b"\ndiff --git " in m or b"\n+++ " in m]
    if not patches:
        raise _bad(mbox, f"{len(messages)} message(s), none with a diff (a cover letter alone?)")
    total = len(patches)
    result = []
    for i, message in enumerate(patches, start=1):
        subject = patch_series.subject_of(message)
        files = file_changes(message)
        for change in files:
            if change.binary:
                raise _bad(
                    mbox,
                    f"patch {i}/{total} {subject!r} is a binary patch ({change.path}); "
                    "a kernel series is posted as text",
                )
        if not files:
            raise _bad(mbox, f"patch {i}/{total} {subject!r}: no file in its diff")
        result.append(SeriesPatch(i, total, subject, message, files))
    return result


def read_series(mbox: Path) -> list[SeriesPatch]:
    try:
        data = mbox.read_bytes()
    except OSError as exc:
        raise _bad(mbox, exc.strerror or str(exc)) from None
    return parse_series(mbox, data)


def missing_files(patches: list[SeriesPatch], exists: set[str]) -> tuple[SeriesPatch, str] | None:
    """The first patch changing a file that is neither in the base tree (`exists`: the base's files
    the series names) nor created by an earlier patch. Pure."""
    present = set(exists)
    for patch in patches:
        for change in patch.files:
            source = change.old_path or change.path
            if not change.created and source not in present:
                return patch, source
            if change.old_path:
                present.discard(change.old_path)
            if change.deleted:
                present.discard(change.path)
            else:
                present.add(change.path)
    return None


def _apply(tree: Path, patch: Path, *, check: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)}
    env.pop("GIT_DIR", None)
    argv = ["git", "apply", *(["--check"] if check else []), "--verbose", str(patch)]
    return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)


def check_applies(mbox: Path, patches: list[SeriesPatch], base_tree: Path) -> None:
    """ConfigError when a patch changes a file the base tree lacks, or does not apply on top of the
    patches before it. Works on copies of the touched files in a temporary directory."""
    named = {p for patch in patches for c in patch.files for p in (c.path, c.old_path) if p}
    exists = {p for p in named if (base_tree / p).is_file()}
    if (missing := missing_files(patches, exists)) is not None:
        patch, path = missing
        raise _bad(mbox, f"{patch.label} changes {path}, which is not in the base tree {base_tree}")
    with tempfile.TemporaryDirectory(prefix="hil-validate-apply-") as tmp:
        work = Path(tmp) / "tree"
        for rel in sorted(exists):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base_tree / rel, work / rel)
        work.mkdir(exist_ok=True)
        for patch in patches:
            file = Path(tmp) / f"{patch.index:04d}.patch"
            file.write_bytes(patch.message)
            proc = _apply(work, file, check=True)
            if proc.returncode == 0:
                proc = _apply(work, file, check=False)
            if proc.returncode != 0:
                detail = "\n".join(
                    line for line in proc.stderr.strip().splitlines() if not line.startswith("Checking patch")
                )
                raise _bad(mbox, f"{patch.label} does not apply to {base_tree}:\n{detail}")


def prefix_files(mbox: Path, patches: list[SeriesPatch], directory: Path) -> list[tuple[Path, bytes]]:
    """(path, content) of each prefix mbox, patches 1..i (not written here)."""
    total = len(patches)
    return [
        (directory / f"{mbox.stem}-{i}of{total}.mbox", b"".join(p.message for p in patches[:i]))
        for i in range(1, total + 1)
    ]


def base_tree(spec: str, mbox: Path, progress: Callable[[str], None]) -> tuple[Path, bool]:
    """The base kernel's source tree (fetched, never built) and whether it has git history to look
    commit ids up in. ConfigError for a kernel validate cannot build."""
    parsed = parse_spec(spec, series=mbox)  # refuses debian:X and image files: nothing to patch
    if isinstance(parsed, DebianSource):
        from harness.kernels.debsrc import fetch_source

        return fetch_source(parsed, progress).path, False
    assert isinstance(parsed, LocalTree)
    from harness.kernels.source import local_tree

    tree = local_tree(parsed.path).path
    count = subprocess.run(
        ["git", "-C", str(tree), "rev-list", "--count", "--max-count=2", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return tree, count.returncode == 0 and count.stdout.strip() == "2"


def check_series(
    spec: str, mbox: Path, progress: Callable[[str], None]
) -> tuple[list[SeriesPatch], Path, bool]:
    """The series read and checked against the base's source tree (fetched, never built): every patch
    applies on top of the ones before it. The patches, the tree, and whether the tree has git history."""
    patches = read_series(mbox)
    tree, history = base_tree(spec, mbox, progress)
    check_applies(mbox, patches, tree)
    return patches, tree, history

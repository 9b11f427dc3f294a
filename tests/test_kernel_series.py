"""Patch series and source trees without building: subjects, git am failures by index and subject,
local-tree identities, patched copies of the pristine tree (tiny git repos, no network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.errors import BuildError, ConfigError
from harness.kernels import key, series
from harness.kernels.debsrc import SourceTree
from harness.kernels.source import apply_series, patched_tree, patched_tree_for, tree_identity

MBOX = b"""From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: A Developer <a@example.org>
Date: Tue, 24 Nov 2026 08:00:00 +0000
Subject: [PATCH 1/2] PCI/P2PDMA: first change

---
 a.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/a.c b/a.c
--- a/a.c
+++ b/a.c
@@ -1 +1 @@
-int a = 1;
+int a = 2;
--
2.39.5

From 2222222222222222222222222222222222222222 Mon Sep 17 00:00:00 2001
From: A Developer <a@example.org>
Date: Tue, 24 Nov 2026 08:00:01 +0000
Subject: [PATCH 2/2] vfio/pci: a second change with a long
 folded subject

---
 b.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/b.c b/b.c
--- a/b.c
+++ b/b.c
@@ -1 +1 @@
-int b = 1;
+int b = 3;
--
2.39.5
"""


def test_subjects_are_unfolded_and_untagged() -> None:
    patches = series.parse_series(MBOX)
    assert [(p.index, p.subject) for p in patches] == [
        (1, "PCI/P2PDMA: first change"),
        (2, "vfio/pci: a second change with a long folded subject"),
    ]


def test_failure_message_names_index_and_subject() -> None:
    patches = series.parse_series(MBOX)
    git_output = (
        "Applying: vfio/pci: a second change\nerror: patch failed: b.c:1\nerror: b.c: patch does not apply\n"
        "Patch failed at 0002 vfio/pci: a second change\nhint: Use 'git am --show-current-patch=diff'\n"
    )
    message = series.failure_message(Path("s.mbox"), patches, 2, git_output)
    first = message.splitlines()[0]
    assert (
        first == "patch 2/2 'vfio/pci: a second change with a long folded subject' of s.mbox does not apply"
    )
    assert "error: b.c: patch does not apply" in message and "hint:" not in message
    assert series.failure_message(Path("s.mbox"), patches, None, "").startswith(
        "patch series s.mbox (2 patches)"
    )
    assert (
        series.failed_index("2\n") == 2
        and series.failed_index(None) is None
        and series.failed_index("x") is None
    )


def test_read_series_rejects_a_file_without_patches(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mbox"
    empty.write_text("hello\n")
    with pytest.raises(ConfigError, match="no patches found"):
        series.read_series(empty)
    with pytest.raises(ConfigError, match=r"missing\.mbox"):
        series.read_series(tmp_path / "missing.mbox")


def _repo(tmp_path: Path, b_content: str) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.c").write_text("int a = 1;\n")
    (tree / "b.c").write_text(b_content)
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", "-C", str(tree), *series.GIT_IDENTITY, *argv], check=True)
    return tree


def test_a_patch_that_does_not_apply_stops_with_its_index_and_subject(tmp_path: Path) -> None:
    tree = _repo(tmp_path, "int b = 42;\n")  # patch 2 expects "int b = 1;"
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(MBOX)
    with pytest.raises(BuildError) as info:
        apply_series(tree, mbox, series.parse_series(MBOX), lambda _m: None)
    assert str(info.value).startswith("patch 2/2 'vfio/pci: a second change with a long folded subject'")
    assert not (tree / ".git" / "rebase-apply").exists()  # git am --abort ran
    assert (tree / "a.c").read_text() == "int a = 1;\n"  # abort rolled back patch 1 too


def test_a_clean_series_applies(tmp_path: Path) -> None:
    tree = _repo(tmp_path, "int b = 1;\n")
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(MBOX)
    apply_series(tree, mbox, series.parse_series(MBOX), lambda _m: None)
    assert (tree / "b.c").read_text() == "int b = 3;\n"


COVER = b"""From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Dev <dev@example.org>
Date: Tue, 24 Nov 2026 00:00:00 +0000
Subject: [PATCH 0/2] two changes

What the series does, as a cover letter says it.

Dev (2):
  one
  two

--
2.39.5

"""


def test_a_series_with_a_cover_letter_applies_its_patches(tmp_path: Path) -> None:
    tree = _repo(tmp_path, "int b = 1;\n")
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(COVER + MBOX)
    apply_series(tree, mbox, series.parse_series(COVER + MBOX), lambda _m: None)
    assert (tree / "b.c").read_text() == "int b = 3;\n"


def _git(tree: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(tree), *series.GIT_IDENTITY, *args], check=True, capture_output=True)


def _kernelish(root: Path, b_content: str = "int b = 1;\n") -> Path:
    root.mkdir(parents=True)
    (root / "Makefile").write_text("all:\n")
    (root / "Kconfig").write_text("")
    (root / "a.c").write_text("int a = 1;\n")
    (root / "b.c").write_text(b_content)
    return root


def test_tree_identity_tracks_commits_diffs_and_untracked_files(tmp_path: Path) -> None:
    tree = _kernelish(tmp_path / "linux")
    (tree / ".gitignore").write_text("*.o\n")
    _git(tree, "init", "-q")
    _git(tree, "add", "-A")
    _git(tree, "commit", "-q", "-m", "base")
    first = tree_identity(tree)
    assert tree_identity(tree) == first
    (tree / "a.o").write_text("build output")
    assert tree_identity(tree) == first  # ignored files are not sources
    (tree / "a.c").write_text("int a = 2;\n")
    edited = tree_identity(tree)
    assert edited != first
    (tree / "new.c").write_text("int n;\n")
    with_new = tree_identity(tree)
    assert with_new != edited
    (tree / "new.c").write_text("int n = 1;\n")
    assert tree_identity(tree) != with_new  # untracked contents count, not just names


def test_non_git_tree_identity_follows_file_stats(tmp_path: Path) -> None:
    tree = _kernelish(tmp_path / "linux")
    first = tree_identity(tree)
    assert "nogit" in first and tree_identity(tree) == first
    os.utime(tree / "a.c", ns=(1, 1))
    assert tree_identity(tree) != first


@pytest.fixture
def pristine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SourceTree:
    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    path = _kernelish(tmp_path / "cache" / "kernels" / "src" / "linux-source-7.2_7.2.13-1" / "pristine")
    (path / ".gitignore").write_text("/*\n")  # like Debian's tarball: ignores everything at the top
    (path / "hil-o-0123").mkdir()  # a build dir inside the tree must not be copied or committed
    (path / "hil-o-0123" / "vmlinux").write_text("elf")
    ident = "linux-source-7.2=7.2.13-1"
    return SourceTree(path=path, identity=ident, lineage=ident)


def test_patched_copy_shares_unchanged_files_and_never_touches_the_pristine_tree(
    pristine: SourceTree, tmp_path: Path
) -> None:
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(MBOX)
    digest = key.series_digest(MBOX)
    result = patched_tree(pristine, mbox, series.parse_series(MBOX), digest, lambda _m: None)
    assert result == patched_tree_for(pristine, digest)
    assert result.lineage == pristine.lineage and result.identity.startswith(pristine.identity + "+series:")
    assert (result.path / "b.c").read_text() == "int b = 3;\n"
    assert (pristine.path / "b.c").read_text() == "int b = 1;\n"
    assert (pristine.path / "a.c").read_text() == "int a = 1;\n"
    # unchanged files are the same inodes (same mtimes: a pristine build's objects stay valid)
    assert (result.path / "Makefile").stat().st_ino == (pristine.path / "Makefile").stat().st_ino
    assert (result.path / "b.c").stat().st_ino != (pristine.path / "b.c").stat().st_ino
    assert not (result.path / "hil-o-0123").exists()
    log = subprocess.run(
        ["git", "-C", str(result.path), "log", "--format=%s"], capture_output=True, text=True, check=True
    )
    assert log.stdout.splitlines()[:2] == [
        "vfio/pci: a second change with a long folded subject",
        "PCI/P2PDMA: first change",
    ]
    status = subprocess.run(
        ["git", "-C", str(result.path), "status", "--porcelain"], capture_output=True, text=True, check=True
    )
    assert status.stdout == ""
    # second call: already there, nothing redone
    again = patched_tree(pristine, mbox, series.parse_series(MBOX), digest, lambda _m: None)
    assert again == result


def test_a_failing_series_leaves_no_tree_behind(pristine: SourceTree, tmp_path: Path) -> None:
    (pristine.path / "b.c").write_text("int b = 42;\n")
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(MBOX)
    digest = key.series_digest(MBOX)
    with pytest.raises(BuildError, match=r"^patch 2/2 'vfio/pci"):
        patched_tree(pristine, mbox, series.parse_series(MBOX), digest, lambda _m: None)
    final = patched_tree_for(pristine, digest).path
    assert not final.exists()
    assert not list(final.parent.glob(f".tmp-{final.name}-*"))

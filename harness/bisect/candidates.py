"""The candidates of a bisect, in history order, and every check of the input that costs no build.

A git range: the first-parent line of --bad back to --good (`git log --first-parent --reverse
BAD ^GOOD`), with --good as candidate 0. Bisecting a fixed, linear list keeps the search a pure
function of the marks (search.py) and makes a step's record mean the same thing on resume; driving
`git bisect` itself would put the state in a repository instead. On a linear history (a developer's
branch, a series applied with git am) this is exactly git bisect. Across merges it names the first bad
commit on the first-parent line, which for a change that came in through a merge is that merge: the
answer says so and gives the range to bisect next (the merged branch). --good must lie on that line,
so that every candidate contains it.

A series: candidate i is the base with patches 1..i applied (0: the base alone), each prefix written as
its own mbox so that the ordinary build path (resolve_kernel with series=...) builds and caches it.
Messages without a diff (a cover letter) are not patches and are left out.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.kernels import series as patch_series


@dataclass(frozen=True)
class Candidate:
    """index: position in history order; key: the commit (range) or "base"/"patch-<i>" (series);
    label: how progress and the answer name it; series: the mbox of patches 1..index (series only)."""

    index: int
    key: str
    subject: str
    label: str
    slug: str
    series: Path | None = None


@dataclass(frozen=True)
class Plan:
    """What is bisected: the candidates, and the inputs that make a recorded bisect this one."""

    kind: str  # "range" | "series"
    candidates: tuple[Candidate, ...]
    inputs: dict[str, str]
    # Written by write_files once the output directory is ours (the series' prefix mboxes).
    files: tuple[tuple[Path, bytes], ...] = ()


def write_files(plan: Plan) -> None:
    for path, content in plan.files:
        if not path.is_file() or path.read_bytes() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def _git(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False)


def git_toplevel(tree: Path) -> Path:
    """The top of the git work tree at `tree`, or ConfigError naming --kernel."""
    if not tree.is_dir():
        raise ConfigError(f"tree:{tree}: no such directory", "--kernel")
    proc = _git(tree, "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        raise ConfigError(f"tree:{tree}: not a git tree (a bisect over commits needs git)", "--kernel")
    top = Path(proc.stdout.strip()).resolve()
    if top != tree.resolve():
        raise ConfigError(f"tree:{tree}: not the top of a git tree (that is {top})", "--kernel")
    return top


def resolve_commit(tree: Path, rev: str, flag: str) -> str:
    proc = _git(tree, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ConfigError(f"{rev!r} is not a commit of {tree}", flag)
    return proc.stdout.strip()


def _is_ancestor(tree: Path, older: str, newer: str) -> bool:
    return _git(tree, "merge-base", "--is-ancestor", older, newer).returncode == 0


def range_plan(tree: Path, good: str, bad: str) -> Plan:
    """Check the range (ConfigError naming the flag) and list its candidates; runs git, builds nothing."""
    top = git_toplevel(tree)
    good_sha = resolve_commit(top, good, "--good")
    bad_sha = resolve_commit(top, bad, "--bad")
    if good_sha == bad_sha:
        raise ConfigError(f"--good {good} and --bad {bad} are the same commit {good_sha[:12]}", "--good")
    if not _is_ancestor(top, good_sha, bad_sha):
        if _is_ancestor(top, bad_sha, good_sha):
            raise ConfigError(f"--good {good} is newer than --bad {bad} (swapped?)", "--good")
        raise ConfigError(f"--good {good} is not an ancestor of --bad {bad}", "--good")
    log = _git(top, "log", "--first-parent", "--reverse", "--format=%H%x00%P%x00%s", bad_sha, f"^{good_sha}")
    rows = [line.split("\0", 2) for line in log.stdout.splitlines() if line]
    if log.returncode != 0 or not rows:
        raise ConfigError(f"no commits between --good {good} and --bad {bad}", "--good")
    base_parent = rows[0][1].split(" ")[0] if rows[0][1] else ""
    if base_parent != good_sha:
        raise ConfigError(
            f"--good {good} is an ancestor of --bad {bad} but not on its first-parent line (it came in "
            f"through a merge); the bisect runs over that line: give --good {base_parent[:12]} instead",
            "--good",
        )
    subject = _git(top, "log", "-1", "--format=%s", good_sha).stdout.strip()
    commits = [(good_sha, subject), *((sha, subj) for sha, _parents, subj in rows)]
    candidates = tuple(
        Candidate(i, sha, subj, f"commit {sha[:12]} {subj!r}", sha[:12])
        for i, (sha, subj) in enumerate(commits)
    )
    inputs = {"kind": "range", "tree": str(top), "good": good_sha, "bad": bad_sha}
    return Plan("range", candidates, inputs)


def merge_hint(tree: Path, sha: str) -> str | None:
    """For a first bad commit that is a merge: the range of the branch it brought in."""
    parents = _git(tree, "log", "-1", "--format=%P", sha).stdout.split()
    if len(parents) < 2:
        return None
    base = _git(tree, "merge-base", parents[0], parents[1]).stdout.strip()
    return (
        f"{sha[:12]} is a merge: the change came in with the branch it merged; bisect that branch with "
        f"--good {base[:12]} --bad {parents[1][:12]}"
    )


def check_kernel_tree(tree: Path, sha: str) -> None:
    """The commit looks like a kernel tree (what building it would find out only later)."""
    for name in ("Makefile", "Kconfig"):
        if _git(tree, "cat-file", "-e", f"{sha}:{name}").returncode != 0:
            raise ConfigError(
                f"tree:{tree} at {sha[:12]}: not a kernel tree (no top-level {name})", "--kernel"
            )


def series_patches(mbox: Path) -> list[bytes]:
    """The patch messages of the mbox (cover letters left out); ConfigError naming --series."""
    try:
        data, _ = patch_series.read_series(mbox)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix(f"{exc.where}: "), "--series") from None
    patches = [m for m in patch_series.split_mbox(data) if b"\ndiff --git " in m or b"\n+++ " in m]
    if not patches:
        raise ConfigError(f"patch series {mbox}: no message carries a diff", "--series")
    if len(patches) == 1:
        raise ConfigError(
            f"patch series {mbox}: one patch only, nothing to bisect (`hil run --series` tests it)",
            "--series",
        )
    return patches


def series_plan(base: str, mbox: Path, prefix_dir: Path) -> Plan:
    """Check the series; each prefix (patches 1..i) is to be written as `prefix_dir/<stem>-<i>of<n>.mbox`."""
    patches = series_patches(mbox)
    total = len(patches)
    candidates = [Candidate(0, "base", "", f"the base {base} (no patch)", "base")]
    files = []
    for i in range(1, total + 1):
        path = prefix_dir / f"{mbox.stem}-{i}of{total}.mbox"
        files.append((path, b"".join(patches[:i])))
        subject = patch_series.subject_of(patches[i - 1])
        candidates.append(
            Candidate(i, f"patch-{i}", subject, f"patch {i}/{total} {subject!r}", f"patch-{i}of{total}", path)
        )
    digest = hashlib.sha256(b"".join(patches)).hexdigest()
    inputs = {"kind": "series", "base": base, "series": str(mbox), "series_sha256": digest}
    return Plan("series", tuple(candidates), inputs, tuple(files))

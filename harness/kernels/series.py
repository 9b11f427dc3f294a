"""Patch series (mbox) handling: reading subjects, `git am` argv, failure messages.

Only `read_series` touches the disk; everything else is pure.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

# git am refuses to commit without an identity; these commits never leave the cache.
GIT_IDENTITY = ["-c", "user.name=p2p-hil", "-c", "user.email=p2p-hil@localhost"]
_FROM_LINE = re.compile(rb"^From \S+ .*\d{4}\s*$")
_TAGS = re.compile(r"^(\s*\[[^\]]*\]\s*)+")


@dataclass(frozen=True)
class Patch:
    index: int  # 1-based, as git am counts
    subject: str


def split_mbox(data: bytes) -> list[bytes]:
    """Messages of an mbox (git format-patch output, or several concatenated)."""
    messages: list[list[bytes]] = []
    for line in data.splitlines(keepends=True):
        if _FROM_LINE.match(line) or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"".join(m) for m in messages if b"".join(m).strip()]


def subject_of(message: bytes) -> str:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    subject = " ".join(str(parsed.get("Subject", "")).split())
    return _TAGS.sub("", subject) or "(no subject)"


def parse_series(data: bytes) -> list[Patch]:
    return [Patch(i, subject_of(m)) for i, m in enumerate(split_mbox(data), start=1)]


def read_series(path: Path) -> tuple[bytes, list[Patch]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"patch series {path}: {exc.strerror}", "series") from exc
    patches = parse_series(data)
    if not patches or (b"\n---" not in data and b"diff --git" not in data):
        raise ConfigError(
            f"patch series {path}: no patches found (expected an mbox from git format-patch)", "series"
        )
    return data, patches


def am_argv(tree: Path, mbox: Path) -> list[str]:
    # --no-3way: the pristine tree has no history to merge from; a context mismatch is a failure.
    # --empty=drop: a cover letter ([PATCH 0/N], no diff), as a posted series has, is not a patch.
    return [
        "git",
        "-C",
        str(tree),
        *GIT_IDENTITY,
        "am",
        "--no-3way",
        "--committer-date-is-author-date",
        "--empty=drop",
        str(mbox),
    ]


def abort_argv(tree: Path) -> list[str]:
    return ["git", "-C", str(tree), *GIT_IDENTITY, "am", "--abort"]


def failed_index(next_file_text: str | None) -> int | None:
    """The 1-based index git am stopped at (the content of .git/rebase-apply/next)."""
    if next_file_text is None:
        return None
    text = next_file_text.strip()
    return int(text) if text.isdigit() else None


def failure_message(series: Path, patches: list[Patch], index: int | None, git_output: str) -> str:
    """'patch 2/3 "subject" of series.mbox does not apply' plus git's own explanation."""
    total = len(patches)
    if index is not None and 1 <= index <= total:
        head = f"patch {index}/{total} {patches[index - 1].subject!r} of {series} does not apply"
    else:
        head = f"patch series {series} ({total} patches) does not apply"
    detail = "\n".join(
        line
        for line in git_output.strip().splitlines()[-12:]
        if not line.startswith(("hint:", "When you have resolved"))
    )
    return f"{head}\n{detail}" if detail else head

"""Small git histories for tests (bisect, validate): run git in a tree with a fixed identity."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(tree: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

"""checkpatch.pl --strict, the kernel tree's own, run on one patch at a time; its output counted.

It runs from the base tree's root (so it finds MAINTAINERS, the spelling list and the other files its
tree checks read) on the patch's own message saved as a file. One check is switched off where it cannot
work: UNKNOWN_COMMIT_ID looks the ids of `Fixes:` and `commit <sha>` up in the tree's git history, and a
tree unpacked from Debian's linux-source package has none (the cache records it as one commit), so
every correct Fixes: tag would be a warning there. The report says so; in a tree:PATH kernel with its
history the check runs.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path("scripts/checkpatch.pl")
NO_HISTORY_IGNORES = ("UNKNOWN_COMMIT_ID",)
_TOTAL = re.compile(r"^total: (\d+) errors, (\d+) warnings, (?:(\d+) checks, )?\d+ lines checked", re.M)
_MESSAGE = re.compile(r"^(ERROR|WARNING|CHECK):(?:[A-Z0-9_]+:)? .*$")


@dataclass(frozen=True)
class CheckpatchResult:
    errors: int
    warnings: int
    checks: int
    messages: tuple[str, ...] = field(default=())  # "ERROR: ..." first lines, in checkpatch's order
    ignored: tuple[str, ...] = ()
    problem: str | None = None  # checkpatch could not judge the patch (did not run, no totals)

    @property
    def clean(self) -> bool:
        return self.problem is None and self.errors == 0 and self.warnings == 0

    @property
    def counts(self) -> str:
        return "?" if self.problem else f"{self.errors}/{self.warnings}/{self.checks}"


def parse_output(text: str, ignored: tuple[str, ...] = ()) -> CheckpatchResult:
    """checkpatch's report -> counts and the first line of each message (pure)."""
    total = _TOTAL.search(text)
    messages = tuple(m.group(0) for line in text.splitlines() if (m := _MESSAGE.match(line)))
    if total is None:
        tail = " ".join(text.strip().splitlines()[-3:]) or "no output"
        return CheckpatchResult(0, 0, 0, messages, ignored, problem=f"no totals in its output: {tail}")
    return CheckpatchResult(int(total[1]), int(total[2]), int(total[3] or 0), messages, ignored, problem=None)


def checkpatch_argv(patch_file: Path, ignored: tuple[str, ...]) -> list[str]:
    argv = ["perl", str(SCRIPT), "--strict", "--no-color", "--show-types"]
    if ignored:
        argv += ["--ignore", ",".join(ignored)]
    return [*argv, str(patch_file)]


def run_checkpatch(tree: Path, patch_file: Path, *, has_history: bool) -> CheckpatchResult:
    """Run the tree's checkpatch on `patch_file` (its exit status only says clean or not: the counts
    come from its report)."""
    ignored = () if has_history else NO_HISTORY_IGNORES
    if not (tree / SCRIPT).is_file():
        return CheckpatchResult(0, 0, 0, ignored=ignored, problem=f"{tree / SCRIPT} does not exist")
    proc = subprocess.run(
        checkpatch_argv(patch_file, ignored), cwd=tree, capture_output=True, text=True, check=False
    )
    return parse_output(proc.stdout + proc.stderr, ignored)

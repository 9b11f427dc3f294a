"""New compiler warnings: the prefix build's warnings in the files a patch touched that the base build
did not have (pure).

A warning is keyed by file, option and message, not by line: a patch that adds lines above an old
warning moves it, and a moved warning is not new. Paths are compared relative to the source tree:
kbuild prints `../drivers/x.c` for a build directory inside the tree (srctree ".."), an absolute path
for a tree elsewhere. A prefix build seeded from an earlier one recompiles the files its series
changed, so the touched files' warnings are in its log (ccache replays a cached compile's warnings).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WARNING = re.compile(
    r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? warning: (?P<text>.*?)"
    r"(?: \[(?P<option>-W[^\]]+)\])?\s*$"
)


@dataclass(frozen=True)
class CompilerWarning:
    file: str  # relative to the source tree
    line: int
    text: str
    option: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.file, self.option, self.text)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}" + (f" [{self.option}]" if self.option else "")


def _relative(path: str, srctree_names: Sequence[str]) -> str:
    while path.startswith(("../", "./")):
        path = path.split("/", 1)[1]
    for root in srctree_names:
        if root and path.startswith(root.rstrip("/") + "/"):
            return path[len(root.rstrip("/")) + 1 :]
    return path


def parse_warnings(lines: Iterable[str], srctree_names: Sequence[str] = ()) -> list[CompilerWarning]:
    """gcc/clang `file:line[:col]: warning: text [-Wopt]` lines of a make log, each once."""
    seen: dict[tuple[str, int, str, str], CompilerWarning] = {}
    for line in lines:
        m = _WARNING.match(line.rstrip("\n"))
        if m is None:
            continue
        warning = CompilerWarning(
            _relative(m["file"], srctree_names), int(m["line"]), m["text"], m["option"] or ""
        )
        seen.setdefault((warning.file, warning.line, warning.text, warning.option), warning)
    return list(seen.values())


def new_warnings(
    base: Sequence[CompilerWarning], prefix: Sequence[CompilerWarning], touched: Iterable[str]
) -> list[CompilerWarning]:
    """The prefix build's warnings in `touched` files that the base build did not give."""
    files = set(touched)
    old = {w.key for w in base}
    return [w for w in prefix if w.file in files and w.key not in old]

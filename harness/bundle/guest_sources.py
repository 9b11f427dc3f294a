"""Which files the guest side needs, found from the imports themselves, so that the raw script of a
bundle runs without a p2p-hil checkout and says what it still needs from the host.

The guest runs `python -m harness.guest.entry`, which starts pytest with `-p harness.guest.plugin` on
guest_tests/ (whose conftest and test modules import harness.guest.* and the tests' own packages).
Everything those import from `harness` is followed file by file; what is neither the standard library
nor ours is a module the host's Python must provide (pytest).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.paths import GUEST_TESTS_DIR, REPO_ROOT

# What the guest starts: the entry, the plugin pytest loads by name, and what test modules import lazily.
GUEST_ROOTS = (
    "harness.guest.entry",
    "harness.guest.plugin",
    "harness.guest.agent",
    "harness.guest.checks",
    "harness.guest.shapes",
)
_SKIP_DIRS = {"__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class GuestSources:
    files: list[Path]  # relative to the checkout, sorted
    third_party: list[str]  # top-level modules the host's Python must provide, sorted


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> Iterable[tuple[str, int]]:
    """(module, relative level) of every import in the file, the function-level ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            yield base, node.level
            # `from harness.guest import clock` imports the module harness.guest.clock
            yield from ((f"{base}.{alias.name}", node.level) for alias in node.names if base)


def _packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def guest_sources(root: Path = REPO_ROOT, tests_dir: Path = GUEST_TESTS_DIR) -> GuestSources:
    """The guest's file closure: every .py under the tests directory (and its data files), plus the
    `harness` modules reachable from GUEST_ROOTS and from the tests' imports."""
    test_files = sorted(
        p
        for p in tests_dir.rglob("*")
        if p.is_file() and not (_SKIP_DIRS & set(p.relative_to(tests_dir).parts))
    )
    local_top = {p.stem for p in tests_dir.glob("*.py")} | {p.name for p in tests_dir.iterdir() if p.is_dir()}
    local_top.add("harness")
    pending = [m for r in GUEST_ROOTS for m in _packages(r)]
    seen: set[str] = set()
    found: set[Path] = set()
    third: set[str] = set()

    def note(module: str, level: int) -> None:
        if level or not module:
            return  # relative: a file of the same package, present already
        top = module.split(".", maxsplit=1)[0]
        if top == "harness":
            pending.extend(_packages(module))
        elif top not in local_top and top not in sys.stdlib_module_names and top != "__future__":
            third.add(top)

    for path in test_files:
        if path.suffix == ".py":
            for module, level in _imports(path):
                note(module, level)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        source = _module_file(root, module)
        if source is None:
            continue  # a name imported from a module, not a module
        found.add(source)
        for imported, level in _imports(source):
            note(imported, level)
    files = sorted({p.relative_to(root) for p in found} | {p.relative_to(root) for p in test_files})
    return GuestSources(files, sorted(third))

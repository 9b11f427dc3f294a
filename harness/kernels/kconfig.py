"""Config fragments: reading them, merging them (argv), and checking what kconfig really kept.

kconfig drops a requested =y silently when its dependencies are unmet (or when the symbol does not
exist in this kernel), so after olddefconfig every explicit value our fragments ask for is compared
with the resulting .config. All pure except `load_fragments`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.paths import KERNELS_DIR

CONFIGS_DIR = KERNELS_DIR / "configs"
DEFAULT_FRAGMENTS = ("base", "trim")

_SET = re.compile(r"(?P<sym>CONFIG_[A-Za-z0-9_]+)=(?P<val>.*)")
_UNSET = re.compile(r"# (?P<sym>CONFIG_[A-Za-z0-9_]+) is not set")


@dataclass(frozen=True)
class Fragment:
    name: str  # "base", or the path the user gave
    text: str


@dataclass(frozen=True)
class Mismatch:
    symbol: str
    wanted: str
    got: str | None  # None: not set / absent

    def __str__(self) -> str:
        return f"{self.symbol}={self.wanted} (got {'not set' if self.got is None else self.got})"


def parse_assignments(text: str) -> dict[str, str | None]:
    """Symbol -> value ('y', 'm', '"str"', '42'), or None for '# ... is not set' and '=n'."""
    out: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if match := _SET.fullmatch(line):
            value = match.group("val").strip()
            out[match.group("sym")] = None if value == "n" else value
        elif match := _UNSET.fullmatch(line):
            out[match.group("sym")] = None
    return out


def requested(fragments: Sequence[Fragment]) -> dict[str, str | None]:
    """The values the fragments ask for, later fragments overriding earlier ones (as merge_config does)."""
    merged: dict[str, str | None] = {}
    for fragment in fragments:
        merged.update(parse_assignments(fragment.text))
    return merged


def dropped(wanted: dict[str, str | None], config_text: str) -> list[Mismatch]:
    """Explicit values in `wanted` that the final .config does not have."""
    actual = parse_assignments(config_text)
    return [
        Mismatch(sym, val, actual.get(sym))
        for sym, val in sorted(wanted.items())
        if val is not None and actual.get(sym) != val
    ]


def still_set(wanted: dict[str, str | None], config_text: str) -> list[str]:
    """Symbols a fragment turns off that something else selected back on (a note, not an error)."""
    actual = parse_assignments(config_text)
    return sorted(sym for sym, val in wanted.items() if val is None and actual.get(sym) is not None)


def fragment_path(name: str) -> Path:
    """'debug' -> kernels/configs/debug.config; anything with a slash or .config suffix is a path."""
    if "/" in name or name.endswith(".config"):
        return Path(name).expanduser()
    return CONFIGS_DIR / f"{name}.config"


def load_fragments(names: Sequence[str]) -> list[Fragment]:
    out = []
    for name in names:
        path = fragment_path(name)
        try:
            out.append(Fragment(name, path.read_text()))
        except OSError as exc:
            known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.config")))
            raise ConfigError(
                f"config fragment {name!r}: cannot read {path} ({exc.strerror}); shipped fragments: {known}",
                "fragment",
            ) from exc
    return out


def fragment_names(extra: Sequence[str]) -> tuple[str, ...]:
    """Defaults first, then the user's extras in order, without duplicates."""
    names: list[str] = []
    for name in (*DEFAULT_FRAGMENTS, *extra):
        if name not in names:
            names.append(name)
    return tuple(names)


def merge_argv(srctree: Path, objtree: Path, fragment_files: Sequence[Path]) -> list[str]:
    """merge_config.sh -m: merge fragments into objtree/.config without running make itself."""
    return [
        str(srctree / "scripts" / "kconfig" / "merge_config.sh"),
        "-m",
        "-O",
        str(objtree),
        str(objtree / ".config"),
        *(str(p) for p in fragment_files),
    ]

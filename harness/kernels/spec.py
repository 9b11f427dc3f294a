"""Kernel specs: what the user asked for, parsed without touching the disk or the network.

Accepted forms:
    debian:7.2            stock Debian image, newest 7.2.x in the archive (also debian:7.2.13)
    src:debian-7.2        Debian's linux-source-7.2 package, configured and built by us
    tree:PATH             a local kernel tree, built as it is (uncommitted changes included)
    PATH                  an existing bzImage / vmlinuz file, used as is

A patch series (an mbox file, applied with `git am`) and extra config fragments only make sense
for kernels we build, so they attach to src: and tree: specs only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

ACCEPTED_FORMS = "debian:<major.minor>, src:debian-<major.minor>, tree:<path>, or a path to a bzImage/vmlinuz"

# major.minor with an optional sublevel: 7.2 picks the newest 7.2.x, 7.2.13 pins one.
_VERSION = re.compile(r"(?P<series>[1-9]\d*\.\d+)(?:\.(?P<sublevel>\d+))?")
_SRC = re.compile(r"debian-(?P<series>[1-9]\d*\.\d+)")
_IMAGE_NAMES = re.compile(r"(bzImage|vmlinuz|vmlinux)([-.].*)?")


@dataclass(frozen=True)
class DebianImage:
    """A stock image from the Debian archive."""

    series: str  # "7.2"
    sublevel: int | None = None  # 13 pins 7.2.13; None takes the newest

    def __str__(self) -> str:
        return f"debian:{self.series}" + (f".{self.sublevel}" if self.sublevel is not None else "")


@dataclass(frozen=True)
class DebianSource:
    """Debian's linux-source-<series> package, built here."""

    series: str  # "7.2"
    patch_series: Path | None = None
    fragments: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        return f"linux-source-{self.series}"

    def __str__(self) -> str:
        return f"src:debian-{self.series}"


@dataclass(frozen=True)
class LocalTree:
    """A kernel source tree on this machine, built as it is."""

    path: Path
    patch_series: Path | None = None
    fragments: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"tree:{self.path}"


@dataclass(frozen=True)
class ImageFile:
    """A ready kernel image file."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


KernelSpec = DebianImage | DebianSource | LocalTree | ImageFile
BuiltSpec = DebianSource | LocalTree


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"kernel spec {text!r}: {why}; accepted forms: {ACCEPTED_FORMS}", "kernel")


def _looks_like_path(text: str) -> bool:
    """A bare argument is a path when it has a directory part or an image-like file name."""
    return "/" in text or text.startswith(("~", ".")) or bool(_IMAGE_NAMES.fullmatch(text))


def parse_spec(text: str, *, series: Path | None = None, fragments: tuple[str, ...] = ()) -> KernelSpec:
    """Parse `text`; `series` (mbox) and extra config `fragments` attach to src:/tree: specs only."""
    raw = text.strip()
    if not raw:
        raise _bad(text, "empty")
    if raw.startswith("debian:"):
        match = _VERSION.fullmatch(raw.removeprefix("debian:"))
        if match is None:
            raise _bad(text, "expected a version like debian:7.2")
        sub = match.group("sublevel")
        spec: KernelSpec = DebianImage(match.group("series"), int(sub) if sub is not None else None)
    elif raw.startswith("src:"):
        match = _SRC.fullmatch(raw.removeprefix("src:"))
        if match is None:
            raise _bad(text, "expected src:debian-<major.minor>, e.g. src:debian-7.2")
        return DebianSource(match.group("series"), series, tuple(fragments))
    elif raw.startswith("tree:"):
        path = raw.removeprefix("tree:")
        if not path:
            raise _bad(text, "tree: needs a path")
        return LocalTree(Path(path).expanduser(), series, tuple(fragments))
    elif ":" in raw.split("/", 1)[0]:
        # "foo:bar" with no slash before the colon is a mistyped scheme, not a file name.
        raise _bad(text, f"unknown scheme {raw.split(':', 1)[0]!r}")
    elif _looks_like_path(raw):
        spec = ImageFile(Path(raw).expanduser())
    else:
        raise _bad(text, "not a known form")
    if series is not None or fragments:
        raise _bad(text, "a patch series or config fragments need a kernel we build (src: or tree:)")
    return spec

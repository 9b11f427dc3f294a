"""Content keys for kernel builds (pure).

A build is reused only when every input that can change its output is identical:
source identity, patch series bytes, every fragment's name and bytes in order, virtme-ng's own
fragment, the toolchain, the make variables and this recipe's version. The *config* key leaves out
the source and series: builds sharing it differ only in sources, so one can seed the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from harness.kernels.kconfig import Fragment

# Bump when the build steps change in a way that changes results (layout, make targets, flags).
RECIPE_VERSION = "kbuild-1"


@dataclass(frozen=True)
class BuildInputs:
    source_identity: str
    series: bytes | None
    fragments: tuple[Fragment, ...]
    vng_fragment: str
    toolchain: str  # `gcc --version` and `ld --version` first lines
    make_vars: tuple[str, ...]
    recipe: str = RECIPE_VERSION


def _digest(parts: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for label, data in parts:
        # Length-prefixed so that moving bytes between fields can never produce the same stream.
        h.update(f"{label}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def config_key(inputs: BuildInputs) -> str:
    parts: list[tuple[str, bytes]] = [
        ("recipe", inputs.recipe.encode()),
        ("toolchain", inputs.toolchain.encode()),
        ("vng", inputs.vng_fragment.encode()),
    ]
    parts += [("make", var.encode()) for var in inputs.make_vars]
    for fragment in inputs.fragments:
        parts += [("fragment-name", fragment.name.encode()), ("fragment", fragment.text.encode())]
    return _digest(parts)


def series_digest(series: bytes | None) -> str:
    return "none" if series is None else hashlib.sha256(series).hexdigest()


def build_key(inputs: BuildInputs) -> str:
    return _digest(
        [
            ("config", config_key(inputs).encode()),
            ("source", inputs.source_identity.encode()),
            ("series", series_digest(inputs.series).encode()),
        ]
    )

"""Small JSON files shared between processes: written atomically, read as absent when unreadable."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON record, or None when missing or unreadable (treated as absent, never as an error)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so readers see the old or the new record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(data), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_document(path: Path, missing: str) -> object:
    """A JSON file another p2p-hil command wrote; `missing` says what its absence means. Unreadable or
    absent is an InfraError naming the file (the caller turns it into a usage error where it is one)."""
    from harness.errors import InfraError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InfraError(f"{path}: {missing}") from None
    except (OSError, ValueError) as exc:
        raise InfraError(f"{path}: unreadable: {exc}") from None

"""The host -> guest contract of the selftests: run_dir/kselftest/manifest.json, and what the guest
writes back per binary (<name>/<binary>.out: its raw output; <name>/<binary>.json: how it ended).
The guest's reader is guest_tests/hil_kselftest/manifest.py (stdlib only); both sides are tested
against each other (tests/test_kselftest_guest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KSELFTEST_DIR = "kselftest"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    built: bool
    out_dir: str  # where the binaries are (the host's cache, visible in the guest over 9p)
    binaries: tuple[str, ...]
    build_message: str = ""
    device: str | None = None  # plan device id whose BDF the binaries get
    hugepages_2m: int = 0
    hugepages_1g: int = 0
    module_params: tuple[tuple[str, str], ...] = ()
    timeouts: dict[str, float] = field(default_factory=dict)


def manifest_path(run_dir: Path) -> Path:
    return run_dir / KSELFTEST_DIR / MANIFEST


def output_paths(run_dir: Path, name: str, binary: str) -> tuple[Path, Path]:
    """(raw output, status json) of one binary in the run directory."""
    base = run_dir / KSELFTEST_DIR / name
    return base / f"{binary}.out", base / f"{binary}.json"


def entry_to_json(entry: ManifestEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "built": entry.built,
        "out_dir": entry.out_dir,
        "binaries": list(entry.binaries),
        "build_message": entry.build_message,
        "device": entry.device,
        "hugepages_2m": entry.hugepages_2m,
        "hugepages_1g": entry.hugepages_1g,
        "module_params": [list(p) for p in entry.module_params],
        "timeouts": dict(entry.timeouts),
    }


def write_manifest(run_dir: Path, entries: list[ManifestEntry]) -> Path:
    path = manifest_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"version": 1, "selftests": [entry_to_json(e) for e in entries]}, indent=1) + "\n"
    )
    return path


def read_manifest(run_dir: Path) -> list[ManifestEntry]:
    """The entries the host wrote ([] when the cell ran no selftests)."""
    path = manifest_path(run_dir)
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return [
        ManifestEntry(
            name=str(e["name"]),
            built=bool(e["built"]),
            out_dir=str(e["out_dir"]),
            binaries=tuple(str(b) for b in e["binaries"]),
            build_message=str(e.get("build_message", "")),
            device=None if e.get("device") is None else str(e["device"]),
            hugepages_2m=int(e.get("hugepages_2m", 0)),
            hugepages_1g=int(e.get("hugepages_1g", 0)),
            module_params=tuple((str(p[0]), str(p[1])) for p in e.get("module_params", [])),
            timeouts={str(k): float(v) for k, v in dict(e.get("timeouts", {})).items()},
        )
        for e in data["selftests"]
    ]


@dataclass(frozen=True)
class BinaryStatus:
    """How one binary's run ended, as the guest recorded it."""

    exit_code: int | None = None  # None: killed by a signal or by the timeout
    signal: str | None = None
    timed_out: bool = False
    duration: float = 0.0
    timeout_s: float = 0.0
    argv: tuple[str, ...] = ()
    # Set when the guest did not run the binary: why, and as what (skipped: an environment limit).
    not_run: str | None = None
    not_run_outcome: str = "skipped"
    setup: tuple[str, ...] = ()  # what the guest did to prepare (bound devices, hugepages, parameters)


def status_from_json(data: dict[str, Any]) -> BinaryStatus:
    code = data.get("exit_code")
    return BinaryStatus(
        exit_code=None if code is None else int(code),
        signal=data.get("signal"),
        timed_out=bool(data.get("timed_out", False)),
        duration=float(data.get("duration", 0.0)),
        timeout_s=float(data.get("timeout_s", 0.0)),
        argv=tuple(str(a) for a in data.get("argv", [])),
        not_run=data.get("not_run"),
        not_run_outcome=str(data.get("not_run_outcome", "skipped")),
        setup=tuple(str(s) for s in data.get("setup", [])),
    )

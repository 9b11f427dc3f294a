"""The guest's reader of run_dir/kselftest/manifest.json (written by harness/kselftest/manifest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

KSELFTEST_DIR = "kselftest"


@dataclass(frozen=True)
class Selftest:
    name: str
    built: bool
    out_dir: Path
    binaries: tuple[str, ...]
    device: str | None = None
    hugepages_2m: int = 0
    hugepages_1g: int = 0
    module_params: tuple[tuple[str, str], ...] = ()
    timeouts: dict[str, float] = field(default_factory=dict)

    def outputs(self, run_dir: Path, binary: str) -> tuple[Path, Path]:
        """(raw output, status json) of `binary`, as the host reads them."""
        base = run_dir / KSELFTEST_DIR / self.name
        return base / f"{binary}.out", base / f"{binary}.json"


def load_manifest(run_dir: Path) -> list[Selftest]:
    path = run_dir / KSELFTEST_DIR / "manifest.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return [
        Selftest(
            name=str(e["name"]),
            built=bool(e["built"]),
            out_dir=Path(str(e["out_dir"])),
            binaries=tuple(str(b) for b in e["binaries"]),
            device=None if e.get("device") is None else str(e["device"]),
            hugepages_2m=int(e.get("hugepages_2m", 0)),
            hugepages_1g=int(e.get("hugepages_1g", 0)),
            module_params=tuple((str(p[0]), str(p[1])) for p in e.get("module_params", [])),
            timeouts={str(k): float(v) for k, v in dict(e.get("timeouts", {})).items()},
        )
        for e in data["selftests"]
    ]

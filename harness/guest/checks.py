"""The guest's half of the host byte checks (harness/hostcheck.py): the seeds the host wrote, and the
check specs a guest test puts in its record. Stdlib only: the guest imports it over 9p at every boot.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEEDS_FILE = "host-seeds.json"
SEEDS_FORMAT = 1
SEED_OFFSET = 1 << 20  # away from offset 0, so that an offset bug cannot pass by accident
SEED_LENGTH = 4096  # edu's DMA buffer
SEED_BLOCK = 4096  # dd block size of the raw reproduction (offset and length are multiples)
DETAILS_KEY = "host_checks"


@dataclass(frozen=True)
class Seed:
    """Random bytes the host wrote into `device`'s backing file before boot."""

    device: str
    offset: int
    length: int
    sha256: str
    file: str  # name of the file in the run directory that holds the bytes

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "offset": self.offset, "length": self.length,
                "sha256": self.sha256, "file": self.file}  # fmt: skip


def seed_file_name(device: str) -> str:
    return f"host-seed-{device}.bin"


def load_seeds(run_dir: Path) -> list[Seed]:
    data = json.loads((run_dir / SEEDS_FILE).read_text())
    if data.get("format") != SEEDS_FORMAT:
        raise ValueError(f"{run_dir / SEEDS_FILE}: format {data.get('format')!r}, expected {SEEDS_FORMAT}")
    return [Seed(str(s["device"]), int(s["offset"]), int(s["length"]), str(s["sha256"]), str(s["file"]))
            for s in data["seeds"]]  # fmt: skip


def seed_bytes(run_dir: Path, seed: Seed) -> bytes:
    data = (run_dir / seed.file).read_bytes()
    if len(data) != seed.length or hashlib.sha256(data).hexdigest() != seed.sha256:
        raise ValueError(f"{run_dir / seed.file} does not hold the recorded seed {seed.sha256}")
    return data


def check_spec(device: str, offset: int, expected: bytes, what: str) -> dict[str, Any]:
    """What a guest test records so that the host checks `expected` at `offset` of `device`'s file."""
    return {"device": device, "offset": offset, "length": len(expected),
            "sha256": hashlib.sha256(expected).hexdigest(), "what": what}  # fmt: skip

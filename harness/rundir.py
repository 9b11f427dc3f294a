"""Run directories: one per cell, never shared, even between `hil run`s started in the same second.

Uniqueness comes from the file system, not from the clock: a directory is ours only if our own
mkdir created it (mkdir without exist_ok is atomic), so two processes can never both get it.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from harness.errors import ConfigError, InfraError

# Enough for any burst of runs started in one second; past it something else is wrong (a full or
# read-only disk shows up as another OSError, not as FileExistsError).
MAX_ATTEMPTS = 1000
# Not in slug()'s output, so a suffixed name can never equal another run's unsuffixed one
# ("...-debian-7.2_2" cannot be read as the kernel "debian-7.2-2").
SUFFIX_SEPARATOR = "_"


def slug(text: str) -> str:
    """`text` as one file-name component: anything but letters, digits and . + - becomes '-'."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")


def run_dir_name(topology: str, kernel_label: str, now: datetime, attempt: int = 1) -> str:
    """Pure: <YYYYmmdd-HHMMSS>-<topology>-<kernel>, with _<attempt> from the second attempt on."""
    base = f"{now:%Y%m%d-%H%M%S}-{slug(topology)}-{slug(kernel_label)}"
    return base if attempt == 1 else f"{base}{SUFFIX_SEPARATOR}{attempt}"


def allocate_run_dir(root: Path, topology: str, kernel_label: str, now: datetime) -> Path:
    """Create and return a directory under `root` that no other caller got: the time-stamped name,
    or the same name with _2, _3, ... when another run created it first."""
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        candidate = root / run_dir_name(topology, kernel_label, now, attempt)
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise InfraError(
        f"no free run directory under {root}: {run_dir_name(topology, kernel_label, now)} and "
        f"{MAX_ATTEMPTS - 1} suffixed names all exist"
    )


def claim_out_dir(path: Path) -> Path:
    """The directory the user named with --out: created if missing, accepted if empty, refused if it
    holds anything (an earlier run's results must not be mixed with or overwritten by this one's)."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise ConfigError(f"{path} exists and is not a directory", "--out") from None
        if any(path.iterdir()):
            raise ConfigError(f"results directory {path} exists and is not empty", "--out") from None
    return path


def check_out_dir(path: Path) -> None:
    """claim_out_dir's refusals without creating anything: for checking --out before any work."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        claim_out_dir(path)  # raises the same ConfigError the claim would

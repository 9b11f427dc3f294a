"""The running kernel's configuration, from /proc/config.gz (CONFIG_IKCONFIG_PROC)."""

from __future__ import annotations

import gzip
from pathlib import Path

PROC_CONFIG = Path("/proc/config.gz")
# What a fail-nth sweep needs: per-task fail-nth exists with CONFIG_FAULT_INJECTION
# (fs/proc/base.c proc_fail_nth_operations); slab and page allocations are failed only with their
# own options; the ignore-gfp-* knobs the sweep sets live in debugfs.
SWEEP_OPTIONS = ("FAULT_INJECTION", "FAILSLAB", "FAIL_PAGE_ALLOC", "FAULT_INJECTION_DEBUG_FS")


def parse_config(text: str) -> dict[str, str]:
    """`CONFIG_X=value` lines -> {"X": value}; "# CONFIG_X is not set" lines -> {"X": "n"} (pure)."""
    options: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            options[key.removeprefix("CONFIG_")] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            options[line[len("# CONFIG_") : -len(" is not set")]] = "n"
    return options


def read_config() -> dict[str, str] | None:
    """The running kernel's options; None when the kernel does not expose them."""
    try:
        return parse_config(gzip.decompress(PROC_CONFIG.read_bytes()).decode())
    except OSError:
        return None


def missing_options(config: dict[str, str] | None, wanted: tuple[str, ...] = SWEEP_OPTIONS) -> str | None:
    """Why a sweep cannot run on this kernel (None: it can), naming the missing options (pure)."""
    if config is None:
        return f"{PROC_CONFIG} is unreadable: cannot tell whether the kernel has fault injection"
    missing = [name for name in wanted if config.get(name) != "y"]
    if missing:
        return "the kernel lacks " + ", ".join(f"CONFIG_{name}" for name in missing)
    return None

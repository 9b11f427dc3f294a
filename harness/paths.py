"""Where things live: the checkout, the user's cache, the run directories."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_DIR = REPO_ROOT / "qemu_configs" / "topologies"
TEMPLATE_DIR = REPO_ROOT / "qemu_configs" / "templates"
GUEST_TESTS_DIR = REPO_ROOT / "guest_tests"
KERNELS_DIR = REPO_ROOT / "kernels"


def cache_dir() -> Path:
    """$P2P_HIL_CACHE, else $XDG_CACHE_HOME/p2p-hil, else ~/.cache/p2p-hil."""
    explicit = os.environ.get("P2P_HIL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "p2p-hil"

"""The host's modules.json (harness/kernels/modules.py) read in the guest, and insmod of its modules."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "modules.json"
MANIFEST_FORMAT = 1
SYS_MODULE = Path("/sys/module")
P2P_MODULE = "hil_p2p_importer"
RDMA_MODULE = "hil_rdma_importer"
# What hil_rdma_importer needs loaded first when the RDMA core is modular (insmod resolves nothing).
RDMA_DEPS = ("ib_core", "ib_uverbs")


class ModuleLoadError(RuntimeError):
    """A module the host built did not load: a real failure, never a skip."""


@dataclass(frozen=True, slots=True)
class Manifest:
    directory: Path
    kernel_version: str
    modules: dict[str, Path]  # name -> .ko
    features: dict[str, bool]
    skipped: dict[str, str]  # module or feature -> why unavailable

    def unavailable(self, name: str) -> str | None:
        """Why module or feature `name` is unavailable, None when it is there."""
        if name in self.skipped:
            return self.skipped[name]
        if name in self.modules or self.features.get(name, False):
            return None
        return f"{name}: not built and no reason recorded in {self.directory / MANIFEST}"


def read_manifest(directory: Path) -> Manifest:
    data = json.loads((directory / MANIFEST).read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{directory / MANIFEST}: format {data.get('format')!r}, expected {MANIFEST_FORMAT}")
    return Manifest(
        directory=directory,
        kernel_version=str(data["kernel"]["version"]),
        modules={name: directory / rel for name, rel in data["modules"].items()},
        features={k: bool(v) for k, v in data["features"].items()},
        skipped={k: str(v) for k, v in data["skipped"].items()},
    )


def is_loaded(name: str) -> bool:
    return (SYS_MODULE / name).is_dir()


def _dmesg_tail(lines: int = 8) -> str:
    proc = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    return "\n".join(proc.stdout.splitlines()[-lines:])


def load(manifest: Manifest, name: str) -> None:
    """insmod `name` unless loaded; ModuleLoadError with insmod's and the kernel's words otherwise."""
    if is_loaded(name):
        return
    if name == RDMA_MODULE:
        for dep in RDMA_DEPS:
            if not is_loaded(dep):
                subprocess.run(["modprobe", "-q", dep], check=False)
    path = manifest.modules[name]
    proc = subprocess.run(["insmod", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ModuleLoadError(
            f"insmod {path} failed ({proc.returncode}): {proc.stderr.strip()}\n"
            f"built for {manifest.kernel_version}; dmesg:\n{_dmesg_tail()}"
        )

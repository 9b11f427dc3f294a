"""Layout -> QEMU arguments, through qemu_configs/templates/topology.args.j2.

Pure: the result is a list of argv strings, never a shell string. The template writes one
argument per line so that it stays readable; this module splits the lines.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from harness import paths
from harness.errors import ConfigError
from harness.sizes import format_size
from harness.topology.layout import Layout
from harness.topology.model import Topology

TEMPLATE = "topology.args.j2"


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(paths.TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["qemu_opt"] = qemu_opt
    env.filters["size"] = format_size
    return env


def qemu_opt(value: str) -> str:
    """Quote a value for QEMU's key=value,... syntax, where ',' must be doubled."""
    return value.replace(",", ",,")


def _check_run_dir(run_dir: Path | str) -> Path:
    text = str(run_dir)
    if any(c in text for c in "\n\r\0"):
        raise ConfigError(f"run directory {text!r} contains a line break or NUL; QEMU cannot take it")
    return Path(run_dir)


def qemu_topology_args(layout: Layout, run_dir: Path | str) -> list[str]:
    """-machine/-cpu/-device/-object for the topology only (vng adds kernel, console, 9p)."""
    topo = layout.topology
    text = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            iommu=topo.iommu,
            cpu=topo.machine.cpu,
            nodes=layout.nodes,
            backing={dev: str(path) for dev, path, _ in backing_files(layout, run_dir)},
        )
    )
    return [line.strip() for line in text.splitlines() if line.strip()]


def standalone_qemu_argv(layout: Layout, run_dir: Path | str, qemu: str = "qemu-system-x86_64") -> list[str]:
    """A complete QEMU command without a kernel: what `topology render` prints (shlex.join it)."""
    machine = layout.topology.machine
    return [
        qemu,
        "-nodefaults",
        "-display",
        "none",
        "-m",
        f"{machine.memory >> 20}M",
        "-smp",
        str(machine.smp),
        *qemu_topology_args(layout, run_dir),
    ]


def kernel_cmdline(topo: Topology) -> list[str]:
    args = []
    if topo.iommu == "intel":
        args.append("intel_iommu=on")
    if topo.iommu_passthrough:
        args.append("iommu=pt")
    return [*args, *topo.kernel_args]


def backing_files(layout: Layout, run_dir: Path | str) -> list[tuple[str, Path, int]]:
    """(device id, file, size) of every ivshmem backing file QEMU will create in run_dir."""
    base = _check_run_dir(run_dir)
    return [(d.id, base / f"{d.id}.shm", d.size) for d in layout.devices if d.size is not None]

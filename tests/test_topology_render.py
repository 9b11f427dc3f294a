"""Rendering: golden argv per shipped topology, plus the rules the goldens encode.

The goldens are tests/golden/<topology>.argv, one argument per line, rendered with
run_dir=/RUN. After an intended change, regenerate them and review the diff:

    HIL_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_topology_render.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.topology import (
    Topology,
    backing_files,
    kernel_cmdline,
    lay_out,
    list_topologies,
    load_topology,
    qemu_topology_args,
    standalone_qemu_argv,
)

GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = "/RUN"


@pytest.mark.parametrize("topo", list_topologies(), ids=lambda t: t.name)
def test_golden_argv(topo: Topology) -> None:
    text = "\n".join(standalone_qemu_argv(lay_out(topo), RUN_DIR)) + "\n"
    golden = GOLDEN / f"{topo.name}.argv"
    if os.environ.get("HIL_REGEN_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"no golden for {topo.name}: run with HIL_REGEN_GOLDEN=1"
    assert text == golden.read_text(), f"{golden} differs; if intended, regenerate with HIL_REGEN_GOLDEN=1"


def test_every_golden_has_a_topology() -> None:
    names = {t.name for t in list_topologies()}
    assert {p.stem for p in GOLDEN.glob("*.argv")} <= names


def pairs(args: list[str]) -> list[tuple[str, str]]:
    return list(zip(args[::2], args[1::2], strict=True))


def test_switch_p2p_args() -> None:
    args = qemu_topology_args(lay_out(load_topology("switch-p2p")), "/r")
    assert all(flag.startswith("-") for flag, _ in pairs(args))
    assert args[:6] == [
        "-machine",
        "q35,kernel-irqchip=split",
        "-cpu",
        "Skylake-Server",
        "-device",
        "intel-iommu,intremap=on",
    ]
    assert "pcie-root-port,id=rp1,bus=pcie.0,addr=10.0,chassis=1,slot=1" in args
    assert "xio3130-downstream,id=dp2,bus=sw1,addr=01.0,chassis=3,slot=3" in args
    assert "memory-backend-file,id=mem-exporter,mem-path=/r/exporter.shm,size=64M,share=on" in args
    assert "ivshmem-plain,id=exporter,memdev=mem-exporter,bus=dp1,addr=00.0" in args
    assert "edu,id=dma,bus=rp2,addr=00.0,dma_mask=0xffffffffffffffff" in args


def test_no_iommu_means_no_iommu_device_and_plain_machine() -> None:
    args = qemu_topology_args(lay_out(load_topology("switch-p2p-noiommu")), "/r")
    assert args[:2] == ["-machine", "q35"]
    assert not any("intel-iommu" in a for a in args)


def test_acs_off_disables_it_on_the_port() -> None:
    base = load_topology("rootports-acs")
    topo = base.model_copy(
        update={"root_ports": [base.root_ports[0].model_copy(update={"acs": False}), *base.root_ports[1:]]}
    )
    args = qemu_topology_args(lay_out(topo), "/r")
    assert "pcie-root-port,id=rp1,bus=pcie.0,addr=10.0,chassis=1,slot=1,disable-acs=on" in args
    assert "pcie-root-port,id=rp2,bus=pcie.0,addr=11.0,chassis=2,slot=2" in args


def test_big_bar_needs_no_extra_options() -> None:
    # Measured: SeaBIOS + QEMU 10 place 8G, 32G and 64G BARs without pref64-reserve or pci-hole64-size.
    args = qemu_topology_args(lay_out(load_topology("bar-4g")), "/r")
    assert "memory-backend-file,id=mem-exporter,mem-path=/r/exporter.shm,size=8G,share=on" in args
    assert not any("hole64" in a or "reserve" in a for a in args)


def test_commas_in_run_dir_are_doubled_and_newlines_refused() -> None:
    layout = lay_out(load_topology("switch-p2p"))
    assert "mem-path=/a,,b/exporter.shm" in " ".join(qemu_topology_args(layout, "/a,b"))
    with pytest.raises(ConfigError, match="line break"):
        qemu_topology_args(layout, "/a\nb")


def test_standalone_argv_has_no_kernel() -> None:
    argv = standalone_qemu_argv(lay_out(load_topology("switch-p2p")), "/r", qemu="/opt/q")
    assert argv[:8] == ["/opt/q", "-nodefaults", "-display", "none", "-m", "1024M", "-smp", "2"]
    assert "-kernel" not in argv


@pytest.mark.parametrize(
    ("name", "cmdline"),
    [
        ("switch-p2p", ["intel_iommu=on"]),
        ("switch-p2p-pt", ["intel_iommu=on", "iommu=pt"]),
        ("switch-p2p-noiommu", []),
    ],
)
def test_kernel_cmdline(name: str, cmdline: list[str]) -> None:
    assert kernel_cmdline(load_topology(name)) == cmdline


def test_kernel_cmdline_appends_user_args() -> None:
    topo = load_topology("switch-p2p").model_copy(update={"kernel_args": ["pci=disable_acs_redir=pci:0:0"]})
    assert kernel_cmdline(topo) == ["intel_iommu=on", "pci=disable_acs_redir=pci:0:0"]


def test_backing_files() -> None:
    files = backing_files(lay_out(load_topology("bar-4g")), "/r")
    assert files == [
        ("exporter", Path("/r/exporter.shm"), 8 << 30),
        ("importer", Path("/r/importer.shm"), 16 << 20),
    ]

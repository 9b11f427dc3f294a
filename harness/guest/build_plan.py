"""The host side of the guest contract: the plan for one cell, built from the topology (pure)."""

from __future__ import annotations

from pathlib import Path

from harness.guest.plan import DeviceSpec, GuestPlan, PairExpectation
from harness.guest.shapes import export_shapes
from harness.paths import GUEST_TESTS_DIR
from harness.topology import Layout, Topology, backing_files
from harness.topology.oracle import UNKNOWN_KERNEL, KernelTraits, predict_pairs, sg_entries


def pair_expectations(
    topo: Topology, layout: Layout, traits: KernelTraits = UNKNOWN_KERNEL
) -> tuple[PairExpectation, ...]:
    """The oracle's prediction per exporter/importer pair, with sg entry counts per export shape."""
    bars = {d.id: d.bars.get(2, 0) for d in layout.devices}
    out = []
    for p in predict_pairs(topo, traits=traits):
        shapes = export_shapes(bars[p.exporter]) if bars[p.exporter] else {}
        counts = {name: sg_entries(p.route, [n for _, n in ranges]) for name, ranges in shapes.items()}
        out.append(PairExpectation(exporter=p.exporter, importer=p.importer, route=p.route, why=p.why,
                                   qemu_dma=p.qemu_dma, sg_entries_for=counts, iommufd_dma=p.iommufd_dma,
                                   iommufd_why=p.iommufd_why))  # fmt: skip
    return tuple(out)


def make_plan(
    topo: Topology,
    layout: Layout,
    kernel_spec: str,
    run_dir: Path,
    scratch: Path,
    token: str,
    select: str | None,
    guest_deadline_s: float | None,
    modules_dir: Path | None,
    tests_dir: Path = GUEST_TESTS_DIR,
    test_timeout_s: float | None = None,
    only: tuple[str, ...] = (),
    traits: KernelTraits = UNKNOWN_KERNEL,
) -> GuestPlan:
    backing = {dev_id: path for dev_id, path, _size in backing_files(layout, scratch)}
    devices = tuple(
        DeviceSpec(
            id=d.id,
            kind=d.kind,
            role=d.role,
            sysfs_glob=d.sysfs_glob,
            bars=dict(d.bars),
            backing=backing.get(d.id),
        )
        for d in layout.devices
    )
    return GuestPlan(
        token=token,
        run_dir=run_dir,
        results_path=run_dir / "guest-results.jsonl",
        topology=topo.name,
        kernel=kernel_spec,
        devices=devices,
        tests_dir=tests_dir,
        pytest_args=("-k", select) if select else (),
        only=only,
        modules_dir=modules_dir,
        guest_deadline_s=guest_deadline_s,
        expectations=pair_expectations(topo, layout, traits),
        test_timeout_s=test_timeout_s,
    )

"""What the importer tests share besides fixtures: the case under test and plan lookups.

Kept apart from fixtures.py, which the test files load as a pytest plugin: importing names from a
plugin module before pytest registers it would cost it assertion rewriting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hil_vfio import DmaRange, VfioDevice, export_dma_buf, resolve_bdf
from hil_vfio.uapi import VFIO_PCI_BAR2_REGION_INDEX

from harness.guest.plan import PLAN_ENV, DeviceSpec, GuestPlan
from hil_importer.loader import Manifest
from hil_importer.pci import PciFunction, parse_bdf

BAR = VFIO_PCI_BAR2_REGION_INDEX  # ivshmem-plain: BAR2 is the shared memory


def device_function(plan: GuestPlan, device_id: str) -> PciFunction:
    return parse_bdf(resolve_bdf(plan.device(device_id).sysfs_glob))


def require_feature(manifest: Manifest, feature: str) -> None:
    reason = manifest.unavailable(feature)
    if reason is not None:
        pytest.skip(reason)


def collection_plan() -> dict[str, Any] | None:
    """The raw plan at collection time (for parametrizing by pair), None outside a guest run."""
    path = os.environ.get(PLAN_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data: dict[str, Any] = json.load(handle)
    except (OSError, ValueError):
        return None
    return data


def importer_ids(raw: dict[str, Any] | None) -> list[str]:
    """Devices that can be the importing side: roles importer and dma (the oracle's choice too)."""
    if raw is None:
        return []
    return [d["id"] for d in raw.get("devices", []) if d.get("role") in ("importer", "dma")]


def expectation(raw: dict[str, Any], exporter_id: str, importer_id: str) -> dict[str, Any]:
    """The oracle's prediction for the pair, or a skip saying it is missing."""
    expectations = raw.get("expectations")
    if not expectations:
        pytest.skip("the plan has no expectations (the oracle's predictions per pair)")
    for exp in expectations:
        if exp.get("exporter") == exporter_id and exp.get("importer") == importer_id:
            return dict(exp)
    pytest.skip(f"the plan has no expectation for {exporter_id} -> {importer_id}")


@dataclass
class ImportCase:
    """What an importer test works with: the plan, the exporter (open through VFIO), its dma-bufs."""

    plan: GuestPlan
    raw: dict[str, Any]
    exporter: VfioDevice
    exporter_spec: DeviceSpec
    details: dict[str, Any]
    fds: list[int] = field(default_factory=list)

    @property
    def bar_size(self) -> int:
        return int(self.exporter_spec.bars[BAR])

    def function(self, device_id: str) -> PciFunction:
        return device_function(self.plan, device_id)

    def route(self, importer_id: str) -> str:
        return str(expectation(self.raw, self.exporter_spec.id, importer_id)["route"])

    def export(self, ranges: Sequence[tuple[int, int]] | None = None) -> int:
        """A dma-buf of `ranges` (offset, length) of BAR2, the whole BAR by default; closed at teardown."""
        wanted = [(0, self.bar_size)] if ranges is None else ranges
        fd = export_dma_buf(self.exporter, BAR, [DmaRange(o, n) for o, n in wanted])
        self.fds.append(fd)
        return fd

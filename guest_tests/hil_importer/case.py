"""What the importer tests share besides fixtures: the case under test and plan lookups.

Kept apart from fixtures.py, which the test files load as a pytest plugin: importing names from a
plugin module before pytest registers it would cost it assertion rewriting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hil_vfio import DmaRange, VfioDevice, export_dma_buf, resolve_bdf
from hil_vfio.uapi import VFIO_PCI_BAR2_REGION_INDEX

from harness.guest.plan import (
    PLAN_ENV,
    DeviceSpec,
    GuestPlan,
    MissingExpectationError,
    PairExpectation,
    PlanError,
    load_plan,
)
from hil_importer.loader import Manifest
from hil_importer.pci import PciFunction, parse_bdf

BAR = VFIO_PCI_BAR2_REGION_INDEX  # ivshmem-plain: BAR2 is the shared memory


def device_function(plan: GuestPlan, device_id: str) -> PciFunction:
    return parse_bdf(resolve_bdf(plan.device(device_id).sysfs_glob))


def require_feature(manifest: Manifest, feature: str) -> None:
    reason = manifest.unavailable(feature)
    if reason is not None:
        pytest.skip(reason)


def collection_plan() -> GuestPlan | None:
    """The plan at collection time (for parametrizing by pair), None outside a guest run.

    An unreadable plan is None here too: the `plan` fixture then fails every test that needs it, with
    the reason, rather than the whole module failing to collect.
    """
    path = os.environ.get(PLAN_ENV)
    if not path:
        return None
    try:
        return load_plan(path)
    except PlanError:
        return None


def importer_ids(plan: GuestPlan | None) -> list[str]:
    """Devices that can be the importing side: roles importer and dma (the oracle's choice too)."""
    if plan is None:
        return []
    return [dev.id for dev in plan.devices if dev.role in ("importer", "dma")]


def expectation(plan: GuestPlan, exporter_id: str, importer_id: str) -> PairExpectation:
    """The oracle's prediction for the pair. None is a FAILURE naming the pair: a skip would let an oracle
    that predicts nothing turn every suite that asks into skips, and the run green."""
    try:
        return plan.expectation(exporter_id, importer_id)
    except MissingExpectationError as exc:
        pytest.fail(str(exc))


@dataclass
class ImportCase:
    """What an importer test works with: the plan, the exporter (open through VFIO), its dma-bufs."""

    plan: GuestPlan
    exporter: VfioDevice
    exporter_spec: DeviceSpec
    details: dict[str, Any]
    fds: list[int] = field(default_factory=list)

    @property
    def bar_size(self) -> int:
        return int(self.exporter_spec.bars[BAR])

    def function(self, device_id: str) -> PciFunction:
        return device_function(self.plan, device_id)

    def expectation(self, importer_id: str) -> PairExpectation:
        """The oracle's prediction for this exporter and `importer_id`; fails the test when there is none."""
        return expectation(self.plan, self.exporter_spec.id, importer_id)

    def route(self, importer_id: str) -> str:
        return self.expectation(importer_id).route

    def export(self, ranges: Sequence[tuple[int, int]] | None = None) -> int:
        """A dma-buf of `ranges` (offset, length) of BAR2, the whole BAR by default; closed at teardown."""
        wanted = [(0, self.bar_size)] if ranges is None else ranges
        fd = export_dma_buf(self.exporter, BAR, [DmaRange(o, n) for o, n in wanted])
        self.fds.append(fd)
        return fd

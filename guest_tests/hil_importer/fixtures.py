"""pytest fixtures of the importer tests, loaded by the test files with pytest_plugins."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hil_vfio import VfioDevice

from harness.guest.plan import DeviceSpec, GuestPlan
from hil_importer.case import ImportCase
from hil_importer.loader import P2P_MODULE, RDMA_MODULE, Manifest, load, read_manifest
from hil_importer.p2p import P2pImporter
from hil_importer.rdma import RdmaImporter


@pytest.fixture(scope="session")
def manifest(plan: GuestPlan) -> Manifest:
    if plan.modules_dir is None:
        pytest.skip("the plan has no modules_dir: the host built no test modules for this run")
    return read_manifest(plan.modules_dir)


def _loaded(manifest: Manifest, name: str) -> Manifest:
    reason = manifest.unavailable(name)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    load(manifest, name)
    return manifest


@pytest.fixture(scope="session")
def p2p_module(manifest: Manifest) -> Manifest:
    return _loaded(manifest, P2P_MODULE)


@pytest.fixture(scope="session")
def rdma_module(manifest: Manifest) -> Manifest:
    return _loaded(manifest, RDMA_MODULE)


@pytest.fixture
def p2p(p2p_module: Manifest) -> Iterator[P2pImporter]:
    """A fresh /dev/hil_p2p per test: closing it releases whatever the test left attached."""
    with P2pImporter() as importer:
        yield importer


@pytest.fixture
def rdma(rdma_module: Manifest) -> Iterator[RdmaImporter]:
    with RdmaImporter() as importer:
        yield importer


@pytest.fixture
def case(
    exporter: VfioDevice, exporter_spec: DeviceSpec, plan: GuestPlan, hil_details: dict[str, Any]
) -> Iterator[ImportCase]:
    """Request it before `p2p`/`rdma`: importers are then closed (unmapped) before the exporter."""
    state = ImportCase(plan, exporter, exporter_spec, hil_details)
    try:
        yield state
    finally:
        for fd in state.fds:
            os.close(fd)

"""Fixtures of the in-guest tests. Run by harness.guest.entry inside the VM; $HIL_PLAN names the plan."""

from __future__ import annotations

import errno
import os
import platform
import re
from collections.abc import Iterator

import pytest
from hil_vfio import (
    NoIommuUnsupportedError,
    VfioDevice,
    bind_to_vfio,
    open_device,
    probe_dma_buf,
    resolve_bdf,
)

from harness.guest.plan import PLAN_ENV, DeviceSpec, GuestPlan, PlanError, load_plan

# VFIO_DEVICE_FEATURE_PROBE errnos meaning "this kernel has no such feature": vfio_pci_core_ioctl_feature
# answers ENOTTY for unknown features (so does the !CONFIG_VFIO_PCI_DMABUF stub); EINVAL is accepted
# too, for feature dispatchers that reject flags they do not know.
NO_FEATURE_ERRNOS = (errno.ENOTTY, errno.EINVAL)


@pytest.fixture(scope="session")
def plan() -> GuestPlan:
    path = os.environ.get(PLAN_ENV)
    if not path:
        pytest.fail(f"${PLAN_ENV} is not set: these tests run inside the guest via harness.guest.entry")
    return load_plan(path)


@pytest.fixture(scope="session")
def exporter_spec(plan: GuestPlan) -> DeviceSpec:
    specs = plan.devices_with_role("exporter")
    if not specs:
        pytest.skip(f"topology {plan.topology} has no device with role exporter")
    if len(specs) > 1:
        pytest.fail(f"topology {plan.topology} has {len(specs)} exporters; these tests expect one")
    return specs[0]


@pytest.fixture(scope="session")
def exporter_bdf(exporter_spec: DeviceSpec) -> str:
    """The exporter's BDF, bound to vfio-pci for the whole session."""
    bdf = resolve_bdf(exporter_spec.sysfs_glob)
    try:
        bind_to_vfio(bdf)
    except NoIommuUnsupportedError as exc:
        pytest.skip(str(exc))  # a property of this kernel x topology cell, not a test failure
    return bdf


@pytest.fixture(scope="session")
def dma_buf_probe_errno(exporter_bdf: str) -> int:
    """0 if the exporter supports VFIO_DEVICE_FEATURE_DMA_BUF, else the PROBE errno."""
    with open_device(exporter_bdf) as dev:
        return probe_dma_buf(dev)


@pytest.fixture
def exporter(exporter_bdf: str, dma_buf_probe_errno: int) -> Iterator[VfioDevice]:
    """The exporter opened through VFIO for this test only; closed afterwards (if the test did not)."""
    err = dma_buf_probe_errno
    if err in NO_FEATURE_ERRNOS:
        pytest.skip(f"kernel {platform.release()} has no VFIO dma-buf export (merged in v6.19)")
    if err == errno.EOPNOTSUPP:
        # vfio_pci_dmabuf.c:232-233: a vfio-pci variant driver without get_dmabuf_phys.
        pytest.skip(f"the vfio driver of {exporter_bdf} does not implement dma-buf export")
    if err:
        pytest.fail(f"VFIO_DEVICE_FEATURE_PROBE(DMA_BUF) failed with {errno.errorcode.get(err, err)}")
    with open_device(exporter_bdf) as dev:
        yield dev


def _plan_fragments() -> tuple[str, ...]:
    """The kernel variant's fragments from the plan at collection time; () outside a guest run or when
    the plan is unreadable (the `plan` fixture then fails the tests that need it, with the reason)."""
    path = os.environ.get(PLAN_ENV)
    if not path:
        return ()
    try:
        return load_plan(path).fragments
    except PlanError:
        return ()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Opt-in tests (they panic or hang the guest on purpose) run only when -k names them:
    some word of the -k expression (other than and/or/not) must occur in the test's name.
    Tests marked debug_kernel (fault injection, races: slow, and meant for the debug variant) run
    by default when the plan's kernel has the "debug" fragment, and otherwise only when -k names them.
    Tests marked run_first / run_last (the kmemleak scans around the suite) are moved there."""
    words = set(re.findall(r"\w+", str(config.getoption("keyword") or ""))) - {"and", "or", "not"}
    debug = "debug" in _plan_fragments()
    selected, deselected = [], []
    for item in items:
        named = any(word in item.name for word in words)
        opt_in = item.get_closest_marker("opt_in") is not None
        debug_only = item.get_closest_marker("debug_kernel") is not None
        if (opt_in and not named) or (debug_only and not (debug or named)):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
    first = [i for i in items if i.get_closest_marker("run_first") is not None]
    last = [i for i in items if i.get_closest_marker("run_last") is not None]
    if first or last:
        middle = [i for i in items if i not in first and i not in last]
        items[:] = first + middle + last

"""Revocation of the exporter's VFIO dma-buf, path by path: what the importer is told, what mapping does.

The paths, as drivers/vfio/pci (v7.2) implements them; each ends in vfio_pci_dma_buf_move(vdev, true),
which invalidates every importer (hil_p2p_importer's callback unmaps and counts) and waits, without a
timeout, until each has unmapped:
- memory enable cleared through VFIO's config region (vfio_basic_config_write): revoked until it is set
  again, which un-revokes with one more invalidation. Maps fail ENODEV meanwhile.
- VFIO_DEVICE_RESET (vfio_pci_ioctl_reset): revoked around pci_try_reset_function(), un-revoked after it
  when memory is still enabled (it is: the reset restores the config space). Supported only if the
  device has a reset method; ivshmem has no FLR or PM reset, so only a bus reset when it is alone below
  its port. The revoked window is inside the ioctl: userspace sees the two invalidations, not ENODEV.
- closing the VFIO device fd (vfio_pci_core_close_device -> vfio_pci_dma_buf_cleanup): revoked for
  good, and the dma-buf loses its device (priv->vdev = NULL).
- hot-unplug by the host (QMP device_del through harness/vm/host_agent.py): the hotplug driver removes
  the function, vfio-pci's remove waits in vfio_unregister_group_dev() and asks the user to release the
  device through the REQ eventfd; the user's close revokes (as above). The dma-buf outlives the device:
  mapping it must keep failing cleanly with ENODEV.
The hang of a revoking process whose importer never unmaps is test_hang_demo.py (opt-in).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hil_importer.case import BAR, ImportCase, importer_ids, require_feature
from hil_importer.host import HostRequestError, host_request, wait_until
from hil_importer.loader import Manifest
from hil_importer.p2p import P2pImporter, P2pStatus
from hil_importer.pci import PCI_DEVICES
from hil_importer.revoke import (
    PCI_COMMAND_MEMORY,
    VFIO_DEVICE_FLAGS_RESET,
    device_flags,
    read_command,
    request_eventfd,
    reset_device,
    set_memory_enable,
    wait_readable,
)
from hil_vfio import (
    DmaRange,
    bind_to_vfio,
    dmabuf_size,
    errname,
    export_dma_buf,
    open_device,
    resolve_bdf,
)
from hil_vfio.sysfs import VfioSetupError

from harness.guest.plan import GuestPlan

pytest_plugins = ["hil_importer.fixtures"]

MASK_BITS = 64
SLOTS = Path("/sys/bus/pci/slots")
# pciehp waits 5 s after the attention button before it powers the slot off; TCG is slow.
UNPLUG_TIMEOUT_S = 60.0
REPLUG_TIMEOUT_S = 60.0
RESET_EAGAIN_TRIES = 5
NO_HOST_AGENT = "needs the host agent (QMP), which a raw reproduction does not have"


def _mapped(case: ImportCase, p2p: P2pImporter) -> tuple[int, int, str]:
    """(dma-buf fd, handle, importer id): the whole BAR attached and mapped for an importer that maps."""
    for importer_id in importer_ids(case.plan):
        if case.route(importer_id) != "refused":
            fd = case.export()
            handle = p2p.attach(fd, case.function(importer_id), dma_mask_bits=MASK_BITS).handle
            p2p.map(handle)
            return fd, handle, importer_id
    pytest.skip(f"no importer maps {case.exporter_spec.id}'s buffer on this topology (all refused)")


def _map_errno(p2p: P2pImporter, handle: int) -> int | None:
    try:
        p2p.map(handle)
    except OSError as exc:
        return exc.errno
    p2p.unmap(handle)
    return None


def _attach_errno(p2p: P2pImporter, fd: int, case: ImportCase, importer_id: str) -> int | None:
    try:
        handle = p2p.attach(fd, case.function(importer_id), dma_mask_bits=MASK_BITS).handle
    except OSError as exc:
        return exc.errno
    p2p.detach(handle)
    return None


def _told(before: P2pStatus, after: P2pStatus, callbacks: int) -> None:
    """The importer's callback ran `callbacks` more times and its mapping is gone."""
    assert after.revocations == before.revocations + callbacks, (
        f"revocation callbacks {before.revocations} -> {after.revocations}, expected +{callbacks}"
    )
    assert not after.mapped, "the importer still holds a mapping after the revocation"


# --- memory enable -------------------------------------------------------------------------------


def test_revoke_by_memory_disable(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest) -> None:
    """Clearing PCI_COMMAND.MEMORY revokes (ENODEV for map and attach); setting it again un-revokes."""
    require_feature(p2p_module, "revoke_callback")
    fd, handle, importer_id = _mapped(case, p2p)
    before = p2p.status(handle)
    started = time.monotonic()
    set_memory_enable(case.exporter, False)
    try:
        case.details["revoke_s"] = round(time.monotonic() - started, 4)
        revoked = p2p.status(handle)
        case.details.update(command=hex(read_command(case.exporter)), revoked=repr(revoked))
        _told(before, revoked, 1)
        seen = {"map": _map_errno(p2p, handle), "attach": _attach_errno(p2p, fd, case, importer_id)}
        case.details["while_revoked"] = {k: errname(v) for k, v in seen.items()}
        assert seen == {"map": errno.ENODEV, "attach": errno.ENODEV}
    finally:
        set_memory_enable(case.exporter, True)
    restored = p2p.status(handle)
    case.details["restored"] = repr(restored)
    assert restored.revocations == before.revocations + 2, "un-revoking invalidates once more"
    assert p2p.map(handle).total == dmabuf_size(fd), "mapping works again once memory is enabled"


# --- VFIO_DEVICE_RESET ---------------------------------------------------------------------------


def test_revoke_by_device_reset(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest) -> None:
    """VFIO_DEVICE_RESET revokes for the duration of the reset: two callbacks, then mapping works again."""
    require_feature(p2p_module, "revoke_callback")
    flags = device_flags(case.exporter)
    case.details["device_flags"] = hex(flags)
    if not flags & VFIO_DEVICE_FLAGS_RESET:
        pytest.skip(
            f"VFIO_DEVICE_GET_INFO: {case.exporter.bdf} has no VFIO_DEVICE_FLAGS_RESET (ivshmem has no FLR "
            "or PM reset; a bus reset needs it alone below its port)"
        )
    fd, handle, _importer = _mapped(case, p2p)
    before = p2p.status(handle)
    started = time.monotonic()
    for attempt in range(RESET_EAGAIN_TRIES):
        try:
            reset_device(case.exporter)
            break
        except OSError as exc:
            case.details["reset_errno"] = errname(exc.errno)
            if exc.errno in (errno.EINVAL, errno.ENOTTY):
                why = f"{errname(exc.errno)} (no reset method)"
                pytest.skip(f"VFIO_DEVICE_RESET on {case.exporter.bdf}: {why}")
            if exc.errno != errno.EAGAIN or attempt == RESET_EAGAIN_TRIES - 1:
                raise
            time.sleep(0.2)
    case.details["reset_s"] = round(time.monotonic() - started, 4)
    after = p2p.status(handle)
    command = read_command(case.exporter)
    case.details.update(after_reset=repr(after), command=hex(command))
    _told(before, after, 2)  # revoke before the reset, un-revoke after it
    assert command & PCI_COMMAND_MEMORY, "the reset left memory disabled (config space not restored)"
    assert p2p.map(handle).total == dmabuf_size(fd), "mapping works again after the reset"


# --- closing the device fd -----------------------------------------------------------------------


def test_revoke_by_closing_device(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest) -> None:
    """Closing the VFIO device revokes for good: the dma-buf stays, but maps and attaches fail ENODEV."""
    require_feature(p2p_module, "revoke_callback")
    fd, handle, importer_id = _mapped(case, p2p)
    before = p2p.status(handle)
    started = time.monotonic()
    case.exporter.close()
    case.details["close_s"] = round(time.monotonic() - started, 4)
    after = p2p.status(handle)
    case.details["after_close"] = repr(after)
    _told(before, after, 1)
    seen = {"map": _map_errno(p2p, handle), "attach": _attach_errno(p2p, fd, case, importer_id)}
    case.details["after_close_errnos"] = {k: errname(v) for k, v in seen.items()}
    assert seen == {"map": errno.ENODEV, "attach": errno.ENODEV}
    # The device itself is fine: opened again, a new buffer maps.
    with open_device(case.exporter.bdf) as again, P2pImporter() as other:
        new_fd = export_dma_buf(again, BAR, [DmaRange(0, case.bar_size)])
        case.fds.append(new_fd)
        new = other.attach(new_fd, case.function(importer_id), dma_mask_bits=MASK_BITS).handle
        assert other.map(new).total == case.bar_size


# --- hot-unplug ----------------------------------------------------------------------------------


def _hotplug_slot(bdf: str) -> Path | None:
    """The hotplug slot of `bdf`'s port, if a hotplug driver (pciehp, acpiphp) manages one."""
    address = bdf.rsplit(".", 1)[0]  # slots are named by domain:bus:device
    if not SLOTS.is_dir():
        return None
    for slot in sorted(SLOTS.iterdir()):
        with contextlib.suppress(OSError):
            # "power" exists only for a slot registered by a hotplug driver (pci_hp_register).
            if (slot / "address").read_text().strip() == address and (slot / "power").exists():
                return slot
    return None


def _hotplug_drivers() -> str:
    present = [name for name in ("pciehp", "acpiphp") if Path("/sys/module", name).exists()]
    return ", ".join(present) or "none (CONFIG_HOTPLUG_PCI_PCIE and CONFIG_HOTPLUG_PCI_ACPI off?)"


def _present(glob_pattern: str) -> bool:
    try:
        resolve_bdf(glob_pattern)
    except VfioSetupError:
        return False
    return True


@pytest.fixture
def replug(plan: GuestPlan, exporter_bdf: str) -> Iterator[list[str]]:
    """After a test asked the host to unplug the exporter ("device_del" appended to the list), plug it
    back (host device_add), wait for the guest to find it and bind it to vfio-pci again: the session's
    other tests use it. Requested first, so this runs after the test's other fixtures closed."""
    unplugged: list[str] = []
    yield unplugged
    if not unplugged:
        return
    spec = next(d for d in plan.devices if d.role == "exporter")
    gone = wait_until(lambda: not (PCI_DEVICES / exporter_bdf).exists(), REPLUG_TIMEOUT_S)
    if gone is None:
        pytest.fail(f"{exporter_bdf} was never removed after device_del: not plugging it back")
    host_request(plan.run_dir, "device_add", spec.id)
    if wait_until(lambda: _present(spec.sysfs_glob), REPLUG_TIMEOUT_S) is None:
        pytest.fail(f"{spec.id} did not come back within {REPLUG_TIMEOUT_S:.0f} s of device_add")
    bdf = resolve_bdf(spec.sysfs_glob)
    assert bdf == exporter_bdf, f"{spec.id} came back as {bdf}, was {exporter_bdf}"
    bind_to_vfio(bdf)


def test_revoke_by_hot_unplug(
    replug: list[str], case: ImportCase, p2p: P2pImporter, p2p_module: Manifest
) -> None:
    """The host unplugs the exporter: VFIO asks for the device, the release revokes, the dma-buf survives
    its device and maps fail ENODEV; the host plugs it back afterwards."""
    bdf, plan = case.exporter.bdf, case.plan
    if not plan.host_agent:
        # Asked anyway, the request would wait out its timeout for an answer nobody gives.
        pytest.skip(NO_HOST_AGENT)
    require_feature(p2p_module, "revoke_callback")
    slot = _hotplug_slot(bdf)
    if slot is None:
        pytest.skip(
            f"no hotplug slot manages {bdf} (/sys/bus/pci/slots), so the guest kernel cannot let it go; "
            f"hotplug drivers loaded: {_hotplug_drivers()}"
        )
    fd, handle, importer_id = _mapped(case, p2p)
    before = p2p.status(handle)
    efd = request_eventfd(case.exporter)
    try:
        started = time.monotonic()
        replug.append("device_del")
        try:
            answer = host_request(plan.run_dir, "device_del", case.exporter_spec.id)
        except HostRequestError as exc:
            pytest.fail(str(exc))
        case.details.update(slot=slot.name, host=answer)
        asked = wait_readable(efd, UNPLUG_TIMEOUT_S)
        case.details["request_after_s"] = round(time.monotonic() - started, 2)
        assert asked, f"VFIO never asked for {bdf} back (REQ eventfd) within {UNPLUG_TIMEOUT_S:.0f} s"
        # Recorded, not asserted: the kernel may or may not revoke before the user releases the device.
        case.details["at_request"] = repr(p2p.status(handle))
        case.exporter.close()
    finally:
        os.close(efd)
    gone = wait_until(lambda: not (PCI_DEVICES / bdf).exists(), UNPLUG_TIMEOUT_S)
    case.details["removed_after_s"] = round(time.monotonic() - started, 2)
    assert gone is not None, f"{bdf} is still in sysfs {UNPLUG_TIMEOUT_S:.0f} s after its release"
    after = p2p.status(handle)
    case.details["after_unplug"] = repr(after)
    _told(before, after, 1)
    seen = {"map": _map_errno(p2p, handle), "attach": _attach_errno(p2p, fd, case, importer_id)}
    case.details["after_unplug_errnos"] = {k: errname(v) for k, v in seen.items()}
    assert seen == {"map": errno.ENODEV, "attach": errno.ENODEV}
    p2p.detach(handle)  # and the dma-buf fd is closed at teardown: release without a device

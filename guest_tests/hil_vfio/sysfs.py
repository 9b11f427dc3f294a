"""Finding a PCI device by its sysfs glob, binding it to vfio-pci, and finding its VFIO group node."""

from __future__ import annotations

import glob
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PCI_DEVICES = Path("/sys/bus/pci/devices")
PCI_DRIVERS_PROBE = Path("/sys/bus/pci/drivers_probe")
VFIO_PCI_DRIVER = Path("/sys/bus/pci/drivers/vfio-pci")
VFIO_NOIOMMU_PARAM = Path("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
DEV_VFIO = Path("/dev/vfio")
NODE_WAIT_S = 5.0
# A device that just came back by hotplug is in sysfs before pci_bus_add_device() lets drivers match it
# (dev->match_driver is still false): drivers_probe then binds nothing, and the attach that follows a
# moment later honours driver_override. Measured: 1-2 s on a loaded debug kernel under TCG.
BIND_WAIT_S = 15.0


class VfioSetupError(RuntimeError):
    """The guest could not prepare a device for VFIO (not a test failure of the kernel's export)."""


@dataclass(frozen=True, slots=True)
class VfioGroup:
    number: int
    noiommu: bool

    @property
    def path(self) -> Path:
        return DEV_VFIO / (f"noiommu-{self.number}" if self.noiommu else str(self.number))


def resolve_bdf(sysfs_glob: str) -> str:
    """The one PCI device matching `sysfs_glob`, as its BDF ("0000:03:00.0")."""
    matches = sorted(glob.glob(sysfs_glob))
    if len(matches) != 1:
        raise VfioSetupError(
            f"sysfs glob {sysfs_glob} must match exactly one device, matched {len(matches)}: {matches}"
        )
    bdf = Path(matches[0]).name
    if not (PCI_DEVICES / bdf).exists():
        raise VfioSetupError(f"{matches[0]} is not a PCI device (no {PCI_DEVICES / bdf})")
    return bdf


def current_driver(bdf: str) -> str | None:
    link = PCI_DEVICES / bdf / "driver"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def iommu_group_number(bdf: str) -> int | None:
    link = PCI_DEVICES / bdf / "iommu_group"
    return int(Path(os.readlink(link)).name) if link.is_symlink() else None


def _modprobe(*args: str) -> None:
    proc = subprocess.run(["modprobe", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VfioSetupError(f"modprobe {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


class NoIommuUnsupportedError(VfioSetupError):
    """No IOMMU, and a kernel built without CONFIG_VFIO_NOIOMMU: VFIO cannot offer the device at all."""


def _enable_noiommu() -> None:
    """Without an IOMMU, VFIO only offers devices through its unsafe no-IOMMU groups."""
    if not VFIO_NOIOMMU_PARAM.exists():
        # A no-op if vfio is loaded already; modprobe also succeeds when the parameter does not exist
        # (the kernel logs "unknown parameter ... ignored"), hence the check below.
        _modprobe("vfio", "enable_unsafe_noiommu_mode=1")
    if not VFIO_NOIOMMU_PARAM.exists():
        raise NoIommuUnsupportedError(
            f"kernel {os.uname().release} has no VFIO no-IOMMU mode (CONFIG_VFIO_NOIOMMU is off) "
            "and this machine has no IOMMU: VFIO cannot open the device"
        )
    VFIO_NOIOMMU_PARAM.write_text("1")  # writable at runtime (S_IWUSR)


def bind_to_vfio(bdf: str) -> VfioGroup:
    """Bind `bdf` to vfio-pci (idempotent) and return its VFIO group."""
    noiommu = iommu_group_number(bdf) is None  # no group before binding: there is no IOMMU
    if noiommu:
        _enable_noiommu()
    if not VFIO_PCI_DRIVER.exists():
        _modprobe("vfio-pci")
    driver = current_driver(bdf)
    if driver != "vfio-pci":
        if driver is not None:
            (PCI_DEVICES / bdf / "driver" / "unbind").write_text(bdf)
        # driver_override makes vfio-pci claim the device without a new_id for every vendor:device.
        (PCI_DEVICES / bdf / "driver_override").write_text("vfio-pci")
        PCI_DRIVERS_PROBE.write_text(bdf)
        driver = current_driver(bdf)
        deadline = time.monotonic() + BIND_WAIT_S
        while driver is None and time.monotonic() < deadline:
            time.sleep(0.05)
            driver = current_driver(bdf)
        if driver != "vfio-pci":
            waited = f" (waited {BIND_WAIT_S:.0f} s)" if driver is None else ""
            raise VfioSetupError(f"{bdf}: bound to {driver!r} after drivers_probe{waited}, expected vfio-pci")
    return vfio_group(bdf)


def vfio_group(bdf: str) -> VfioGroup:
    """The VFIO group of `bdf` (bound to vfio-pci): /dev/vfio/N, or /dev/vfio/noiommu-N without IOMMU."""
    number = iommu_group_number(bdf)
    if number is None:
        raise VfioSetupError(f"{bdf} has no iommu_group: is it bound to vfio-pci?")
    noiommu = (DEV_VFIO / f"noiommu-{number}").exists()
    group = VfioGroup(number, noiommu)
    _wait_for(group.path)
    return group


def group_members(group: int) -> dict[str, str | None]:
    """BDF -> driver of every device in IOMMU group `group` (all must be VFIO-safe for viability)."""
    devices = Path("/sys/kernel/iommu_groups") / str(group) / "devices"
    return {dev.name: current_driver(dev.name) for dev in sorted(devices.iterdir())}


def _wait_for(node: Path) -> None:
    # devtmpfs creates the node from a kernel thread; there is no udev to wait on.
    deadline = time.monotonic() + NODE_WAIT_S
    while not node.exists():
        if time.monotonic() > deadline:
            raise VfioSetupError(f"{node} did not appear within {NODE_WAIT_S}s")
        time.sleep(0.05)

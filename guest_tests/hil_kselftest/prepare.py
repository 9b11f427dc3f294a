"""Prepare the guest as tools/testing/selftests/vfio/scripts/setup.sh does, plus what the binaries need
beyond it (hugepages, vfio-pci's enable_sriov). Returns what was done, for the records."""

from __future__ import annotations

from pathlib import Path

from hil_vfio import bind_to_vfio, resolve_bdf
from hil_vfio.sysfs import iommu_group_number

from harness.guest.plan import GuestPlan
from hil_kselftest.manifest import Selftest

HUGEPAGES = Path("/sys/kernel/mm/hugepages")


class NotRunnable(Exception):
    """The selftest cannot run in this guest; `outcome` says whether that is an environment limit
    (skipped) or a setup that should have worked (error)."""

    def __init__(self, message: str, outcome: str = "skipped") -> None:
        super().__init__(message)
        self.outcome = outcome


def prepare_selftest(selftest: Selftest, plan: GuestPlan) -> tuple[list[str], list[str]]:
    """(arguments every binary gets, what was done). Raises NotRunnable."""
    done: list[str] = []
    args: list[str] = []
    if selftest.device is not None:
        spec = plan.device(selftest.device)
        bdf = resolve_bdf(spec.sysfs_glob)
        if iommu_group_number(bdf) is None:
            # lib/vfio_pci_device.c:293-294 opens /dev/vfio/<iommu_group>; without an IOMMU vfio offers
            # only /dev/vfio/noiommu-N, and /dev/iommu cannot bind a device without a group.
            raise NotRunnable(
                f"{spec.id} ({bdf}) has no IOMMU group on topology {plan.topology} (no vIOMMU): the vfio "
                "selftest library opens /dev/vfio/<group> (lib/vfio_pci_device.c:293-294) or binds the "
                "device to iommufd, neither of which exists without an IOMMU"
            )
        bind_to_vfio(bdf)  # setup.sh: unbind, driver_override=vfio-pci, bind (here: drivers_probe)
        done.append(f"{spec.id} {bdf} bound to vfio-pci")
        args.append(bdf)  # lib/libvfio.c get_bdfs_cmdline(): trailing BDF arguments
    # The 1 GiB page first: it needs an aligned free GiB, which the 2 MiB pages could break up.
    for size, count, kb in (
        ("1 GiB", selftest.hugepages_1g, 1 << 20),
        ("2 MiB", selftest.hugepages_2m, 2048),
    ):
        if count:
            done.append(_reserve_hugepages(size, count, HUGEPAGES / f"hugepages-{kb}kB" / "nr_hugepages"))
    for param, value in selftest.module_params:
        done.append(_set_param(Path(param), value))
    return args, done


def _set_param(param: Path, value: str) -> str:
    """A module parameter, unless the kernel command line set it already (a bool reads back Y/N)."""
    want = {"1": "Y", "0": "N"}.get(value, value)
    try:
        if param.read_text().strip() in (value, want):
            return f"{param}={value} (already)"
        param.write_text(value)
        return f"{param}={value}"
    except OSError as exc:
        return f"{param} not set: {exc}"


def _reserve_hugepages(size: str, count: int, knob: Path) -> str:
    """What a binary that maps MAP_HUGETLB pages of `size` will find (it skips or fails without them)."""
    try:
        knob.write_text(str(count))
        return f"{size} hugepages: {knob.read_text().strip()} of {count} asked"
    except OSError as exc:
        return f"{size} hugepages not reserved: {exc}"

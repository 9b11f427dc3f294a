"""What each selftest directory needs from the guest. Read from the selftests' own setup scripts and
sources (tools/testing/selftests/<name>), 7.2.13 and 7.3.4:

- vfio: scripts/setup.sh binds each device under test to vfio-pci (driver_override + bind) and run.sh
  passes the BDFs as the last arguments (lib/libvfio.c: trailing BDFs, or $VFIO_SELFTESTS_BDF).
  vfio_pci_driver_test needs a device the library can drive (lib/drivers: ioat, dsa, nv_falcon, igb =
  82576): QEMU's igb. vfio_dma_mapping_test's anonymous_hugetlb_2mb variants map MAP_HUGETLB|MAP_HUGE_2MB
  and skip when mmap() fails (vfio_dma_mapping_test.c:144-148): 2 MiB hugepages are reserved.
  vfio_pci_sriov_uapi_test creates a VF (sysfs sriov_numvfs), which vfio-pci allows only with its
  enable_sriov parameter (drivers/vfio/pci/vfio_pci.c:53-56), written before the binaries run. Both the
  parameter and sriov_totalvfs exist only with CONFIG_PCI_IOV, which kernels/configs leave off: the test
  skips ("SR-IOV may not be supported by the PF"); `--fragment sriov` (kernels/configs/sriov.config)
  lets it run against igb's VFs (7.3.4: 45 subtests passed).
  vfio_pci_driver_test's memcpy_storm moves 4095 x 1 KiB through igb's loopback per IOMMU mode: 190-200 s
  of the binary under TCG, 300 s and more on a loaded machine (timed out once at 300 s).
  vfio_pci_driver_test's fixture maps 1 GiB of shared anonymous memory and pins it through the IOMMU
  (vfio_pci_driver_test.c:86, region_setup): in the topologies' 1 GiB guest every variant failed its
  mmap() with ENOMEM (7.3.4, all 35 subtests), so the guest gets 4 GiB. vfio_dma_mapping_test's
  anonymous_hugetlb_1gb variants map MAP_HUGE_1GB and skip without one (7.3.4: 5 skips): one 1 GiB page
  is reserved on the kernel command line (asked at run time, the 4 GiB guest found no free aligned GiB:
  "0 of 1"); the memory covers it, the region above and the 2 MiB pages of both directories.
- iommu: iommufd and iommufd_fail_nth drive the mock domain of CONFIG_IOMMUFD_TEST (iommu/config),
  iommufd_fail_nth also the fault-injection debugfs (FAULT_INJECTION_DEBUG_FS, FAILSLAB); no device.
  iommufd.c maps MAP_HUGETLB buffers (access_domain_destory: 2 hugepages, the *_hugepage mock domains,
  iommufd_dirty_tracking's domain_dirty128M_huge: 128 MiB at once): without reserved 2 MiB pages those
  fail with MAP_FAILED (seen on 7.2.13: 17 failures), so 2 MiB pages are reserved first.

Any other directory name builds and runs too, with no device and the default limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# kselftest's runner gives a binary 45 s (kselftest/runner.sh); TCG runs a guest 10-50x slower than
# hardware, so a binary gets this much here unless the catalog says otherwise.
DEFAULT_BINARY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Selftest:
    name: str
    device: str | None = None  # topology device kind the binaries get as their BDF argument
    hugepages_2m: int = 0
    hugepages_1g: int = 0
    min_memory: int = 0  # bytes of guest RAM the binaries need; the topology's is raised to it
    kernel_args: tuple[str, ...] = ()  # appended to the topology's kernel command line
    # (sysfs parameter file, value) written before the binaries run
    module_params: tuple[tuple[str, str], ...] = ()
    timeout_s: float = DEFAULT_BINARY_TIMEOUT_S
    binary_timeouts: dict[str, float] = field(default_factory=dict)
    # Debian packages whose headers/libraries the build links against (-luuid, -lcap)
    host_packages: tuple[str, ...] = ()

    def timeout_for(self, binary: str) -> float:
        return self.binary_timeouts.get(binary, self.timeout_s)


CATALOG: dict[str, Selftest] = {
    "vfio": Selftest(
        name="vfio",
        device="igb",
        hugepages_2m=16,
        hugepages_1g=1,
        min_memory=4 << 30,
        kernel_args=("hugepagesz=1G", "hugepages=1"),
        binary_timeouts={"vfio_pci_driver_test": 900.0},
        module_params=(("/sys/module/vfio_pci/parameters/enable_sriov", "Y"),),
        timeout_s=300.0,
        host_packages=("uuid-dev",),
    ),
    "iommu": Selftest(
        name="iommu",
        hugepages_2m=96,  # 192 MiB of the guest's 1 GiB: the 128 MiB dirty-tracking buffer plus slack
        timeout_s=600.0,
        host_packages=("libcap-dev",),
    ),
}


def selftest(name: str) -> Selftest:
    return CATALOG.get(name, Selftest(name=name))


def needed_memory(names: tuple[str, ...]) -> int:
    """Guest RAM the selftests need at least (0: no minimum)."""
    return max((selftest(n).min_memory for n in names), default=0)


def needed_kernel_args(names: tuple[str, ...]) -> tuple[str, ...]:
    """Kernel command line arguments the selftests need, each once, in order."""
    return tuple(dict.fromkeys(a for n in names for a in selftest(n).kernel_args))


def needed_devices(names: tuple[str, ...]) -> tuple[str, ...]:
    """Device kinds the selftests need, each once, in order."""
    return tuple(dict.fromkeys(k for n in names if (k := selftest(n).device) is not None))

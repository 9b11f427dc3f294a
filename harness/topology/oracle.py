"""Predict how a guest kernel 7.2 maps a VFIO dma-buf of one device for another: pure.

Follows drivers/pci/p2pdma.c (calc_map_type_and_dist) and drivers/dma-buf/dma-buf-mapping.c
(dma_buf_phys_vec_to_sgt):

- Walk up from the provider (exporter); the first bridge that is also above the client
  (importer) is the common upstream bridge. Ports with ACS redirect on the provider's
  side (including that bridge) and on the client's side below it are counted.
- Common bridge and no redirect: BUS_ADDR -> sg holds bus addresses, one entry per range.
- Otherwise through the host bridge, allowed when the CPU is AMD family >= 0x17 or the
  host bridge (first device of the root bus: q35's 8086:29c0) is whitelisted; if not,
  NOT_SUPPORTED -> the map fails with -EINVAL.
- THRU_HOST_BRIDGE with a translating IOMMU: one IOVA span for all ranges; with iommu=pt
  or no IOMMU: dma_map_phys per range, i.e. physical addresses.
- Entries split at MAX_SG_ENT_SZ = ALIGN_DOWN(UINT_MAX, PAGE_SIZE) = 4 GiB - 4 KiB.

iommufd (IOMMU_IOAS_MAP_FILE of the dma-buf, the importer's DMA through an IOAS) takes none of those
routes: see predict_iommufd().
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.sizes import format_size
from harness.topology.acs import IommuMode, guest_view
from harness.topology.cpus import CpuModel
from harness.topology.layout import DeviceLayout, Layout, lay_out
from harness.topology.model import Topology
from harness.topology.render import kernel_cmdline

Route = Literal["bus_addr", "host_bridge_iova", "host_bridge_direct", "refused"]
MapType = Literal["BUS_ADDR", "THRU_HOST_BRIDGE", "NOT_SUPPORTED"]
QemuDma = Literal["reaches_bar", "iommu_fault", "none"]
# What DMA by the importer through an iommufd IOAS mapping of the dma-buf does (predict_iommufd).
IommufdDma = Literal["reaches_bar", "no_cdev", "noiommu_cdev"]

PAGE_SIZE = 4096
UINT_MAX = (1 << 32) - 1
MAX_SG_ENT_SZ = UINT_MAX & ~(PAGE_SIZE - 1)

Q35_HOST_BRIDGE = (0x8086, 0x29C0)
_INTEL, _GOOGLE = 0x8086, 0x1AE0
# pci_p2pdma_whitelist[]: (vendor, device or None for any, needs the same host bridge).
P2PDMA_WHITELIST: tuple[tuple[int, int | None, bool], ...] = (
    (_INTEL, 0x3C00, True),
    (_INTEL, 0x3C01, True),
    (_INTEL, 0x2F00, True),
    (_INTEL, 0x2F01, True),
    *((_INTEL, dev, False) for dev in (0x2030, 0x2031, 0x2032, 0x2033, 0x2020, 0x09A2)),
    *((_INTEL, dev, False) for dev in (0x0B25, 0x0CFE, 0x11FB, 0x1212, 0x1216)),  # DSA/IAX/IAA
    *((_INTEL, dev, False) for dev in (0x4940, 0x4942, 0x4944, 0x4946, 0x4948)),  # QAT
    (_GOOGLE, None, False),
)


@dataclass(frozen=True)
class Prediction:
    exporter: str
    importer: str
    map_type: MapType
    route: Route
    distance: int
    common_bridge: str | None
    acs_redirect: tuple[str, ...]  # ports on the path whose ACS redirects p2p upstream
    # What a real DMA by the importer to the mapped addresses does in QEMU 10.0 (FACTS.md:
    # QEMU does not model switch-local p2p, every DMA goes through the vIOMMU).
    qemu_dma: QemuDma
    why: str
    # The same BAR imported by iommufd for the importer instead (predict_iommufd).
    iommufd_dma: IommufdDma
    iommufd_why: str


def host_bridge_whitelisted(host_bridge: tuple[int, int] = Q35_HOST_BRIDGE) -> bool:
    """__host_bridge_whitelist() for the single host bridge of q35 (so always the same one)."""
    vendor, device = host_bridge
    for w_vendor, w_device, _same_bridge_needed in P2PDMA_WHITELIST:
        if w_vendor == vendor and w_device in (None, device):
            return True
    return False


@dataclass(frozen=True)
class KernelTraits:
    """What the kernel's build changes in a prediction. Unknown (a kernel without its .config): the
    defaults, which are 7.2's."""

    # CONFIG_IOMMUFD_NOIOMMU (7.3: selected by VFIO_NOIOMMU with VFIO_DEVICE_CDEV): a no-IOMMU device
    # gets a cdev, noiommu-vfioN, that binds to an iommufd (drivers/vfio/vfio_main.c:326-340, 369).
    iommufd_noiommu: bool = False

    @classmethod
    def from_config(cls, text: str) -> KernelTraits:
        """From a kernel .config's text (pure)."""
        return cls(iommufd_noiommu="\nCONFIG_IOMMUFD_NOIOMMU=y" in f"\n{text}")


UNKNOWN_KERNEL = KernelTraits()


def predict(
    layout: Layout,
    exporter: str,
    importer: str,
    cmdline: list[str] | None = None,
    traits: KernelTraits = UNKNOWN_KERNEL,
) -> Prediction:
    """The kernel's decision for mapping `exporter`'s BAR for `importer` (cmdline: the guest's)."""
    topo = layout.topology
    view = guest_view(layout, kernel_cmdline(topo) if cmdline is None else cmdline)
    return decide(
        exporter=_chain(layout.device(exporter)),
        importer=_chain(layout.device(importer)),
        redirecting=frozenset(port for port, state in view.acs.items() if state.redirects),
        cpu=topo.machine.cpu_model,
        iommu=view.iommu,
        traits=traits,
    )


def decide(
    exporter: list[str],
    importer: list[str],
    redirecting: frozenset[str],
    cpu: CpuModel,
    iommu: IommuMode,
    traits: KernelTraits = UNKNOWN_KERNEL,
) -> Prediction:
    """calc_map_type_and_dist() + dma_buf_phys_vec_to_sgt() on two upward chains of node ids.

    Each chain is a device followed by what pci_upstream_bridge() returns, repeatedly.
    """
    redirect: list[str] = []
    common = None
    dist_a = 0
    for a in exporter:
        if a in redirecting:
            redirect.append(a)
        if a in importer:
            common = a
            break
        dist_a += 1
    if common is None:
        # The kernel collected the provider side's redirecting ports only for a warning it
        # prints when a common bridge exists: here they change nothing.
        redirect = []
        distance = len(exporter) + len(importer)
        path = "no common upstream bridge"
    else:
        dist_b = importer.index(common)
        redirect += [b for b in importer[:dist_b] if b in redirecting]
        distance = dist_a + dist_b
        path = f"common upstream bridge {common}" if common != exporter[0] else "same function"
    if common is not None and not redirect:
        map_type: MapType = "BUS_ADDR"
        rule = f"{path}, no ACS redirect"
    else:
        if redirect:
            path += f", ACS redirect on {', '.join(redirect)}"
        map_type, rule = _through_host_bridge(cpu, path)
    route = _route(map_type, iommu)
    iommufd_dma, iommufd_why = predict_iommufd(iommu, traits)
    return Prediction(
        exporter=exporter[0],
        importer=importer[0],
        map_type=map_type,
        route=route,
        distance=distance,
        common_bridge=common,
        acs_redirect=tuple(redirect),
        qemu_dma=_qemu_dma(route, iommu),
        why=f"{rule} -> {map_type}; {_mapping_rule(route)}",
        iommufd_dma=iommufd_dma,
        iommufd_why=iommufd_why,
    )


def predict_iommufd(iommu: IommuMode, traits: KernelTraits = UNKNOWN_KERNEL) -> tuple[IommufdDma, str]:
    """What iommufd does with the exporter's dma-buf for an importer that DMAs through an IOAS (v7.2).

    - No IOMMU: vfio-pci registers the importer as a no-IOMMU device, which gets no cdev
      (drivers/vfio/vfio.h:361-363 vfio_device_add), so it cannot be bound to an iommufd at all; on a
      kernel with IOMMUFD_NOIOMMU (7.3) it gets one named noiommu-vfioN instead, which binds to an
      iommufd without a translating domain (user space asks IOMMU_IOAS_NOIOMMU_GET_PA for the
      physical address to program: p2p-hil checks the cdev, not yet that flow's DMA).
    - Otherwise (translated or iommu=pt alike: attaching to an IOAS replaces the default domain with an
      iommufd paging domain): IOMMU_IOAS_MAP_FILE takes the BAR's CPU physical range from
      vfio_pci_dma_buf_iommufd_map() (drivers/vfio/pci/vfio_pci_dmabuf.c:121-140) and maps it at the
      IOVA (drivers/iommu/iommufd/pages.c pfn_reader_fill_dmabuf). No p2pdma routing decision is made
      (calc_map_type_and_dist is never called): the CPU vendor, the host bridge whitelist and ACS do
      not enter, so iommufd maps even where the p2pdma route is refused. QEMU's vIOMMU translates the
      importer's DMA to that physical address, which is the BAR: the DMA reaches it.
    """
    if iommu == "none" and traits.iommufd_noiommu:
        return "noiommu_cdev", (
            "no IOMMU, IOMMUFD_NOIOMMU built in: VFIO gives the no-IOMMU device a cdev named noiommu-vfioN "
            "(drivers/vfio/vfio_main.c:326-340) that binds to an iommufd without translation"
        )
    if iommu == "none":
        return "no_cdev", (
            "no IOMMU: VFIO gives a no-IOMMU device no cdev (drivers/vfio/vfio.h:361-363), so it cannot "
            "be bound to an iommufd (a kernel built with IOMMUFD_NOIOMMU, as 7.3 is, gives it one)"
        )
    domain = "translated" if iommu == "translated" else "iommu=pt (identity default domain)"
    return "reaches_bar", (
        f"IOMMU {domain}: attaching to the IOAS gives the importer an iommufd paging domain; "
        "IOMMU_IOAS_MAP_FILE maps the BAR's CPU physical range from vfio_pci_dma_buf_iommufd_map() at the "
        "IOVA, with no p2pdma routing decision (CPU vendor, host bridge whitelist and ACS do not enter); "
        "the vIOMMU translates the DMA to the BAR"
    )


def _chain(dev: DeviceLayout) -> list[str]:
    """The device, then pci_upstream_bridge() repeatedly: parent port ... root port."""
    return [dev.id, *reversed(dev.upstream)]


def _through_host_bridge(cpu: CpuModel, path: str) -> tuple[MapType, str]:
    cpu_text = f"{cpu.name} is {cpu.vendor} family {cpu.family:#x}"
    if cpu.p2pdma_through_host_bridge:
        return "THRU_HOST_BRIDGE", f"{path}; {cpu_text} (AMD >= 0x17 allows the host bridge)"
    if host_bridge_whitelisted():
        return "THRU_HOST_BRIDGE", f"{path}; host bridge whitelisted"
    bridge = "{:04x}:{:04x}".format(*Q35_HOST_BRIDGE)
    return (
        "NOT_SUPPORTED",
        f"{path}; {cpu_text} (not AMD >= 0x17) and host bridge {bridge} is not whitelisted",
    )


def _route(map_type: MapType, iommu: IommuMode) -> Route:
    if map_type == "BUS_ADDR":
        return "bus_addr"
    if map_type == "NOT_SUPPORTED":
        return "refused"
    return "host_bridge_iova" if iommu == "translated" else "host_bridge_direct"


def _mapping_rule(route: Route) -> str:
    return {
        "bus_addr": "sg holds bus addresses, one entry per range",
        "host_bridge_iova": "translating IOMMU: one contiguous IOVA span",
        "host_bridge_direct": "no translation (iommu=pt or none): dma_map_phys per range, physical addresses",
        "refused": "dma_buf_phys_vec_to_sgt fails with -EINVAL",
    }[route]


def _qemu_dma(route: Route, iommu: IommuMode) -> QemuDma:
    if route == "refused":
        return "none"
    if route == "bus_addr" and iommu == "translated":
        return "iommu_fault"  # the vIOMMU has no mapping for a BAR's bus address
    return "reaches_bar"


def sg_entries(route: Route, lengths: list[int]) -> int | None:
    """calc_sg_nents(): entries of the sg table for ranges of these lengths; None if the map fails."""
    if route == "refused" or not lengths:
        return None  # -EINVAL (nents 0 makes sg_alloc_table fail too)
    if any(n <= 0 for n in lengths):
        raise ValueError(f"range lengths must be positive: {lengths}")
    if route == "host_bridge_iova":
        return -(-sum(lengths) // MAX_SG_ENT_SZ)
    return sum(-(-n // MAX_SG_ENT_SZ) for n in lengths)


def predict_pairs(
    topo: Topology, cmdline: list[str] | None = None, traits: KernelTraits = UNKNOWN_KERNEL
) -> list[Prediction]:
    """Every exporter against every other device that imports (role importer or dma)."""
    layout = lay_out(topo)
    exporters = [d.id for d in layout.devices if d.role == "exporter"]
    importers = [d.id for d in layout.devices if d.role in ("importer", "dma")]
    return [predict(layout, e, i, cmdline, traits) for e in exporters for i in importers if i != e]


def explain_table(topo: Topology) -> str:
    """Text for `hil topology explain`: the machine as the kernel sees it, then one row per pair."""
    layout = lay_out(topo)
    cmdline = kernel_cmdline(topo)
    view = guest_view(layout, cmdline)
    cpu = topo.machine.cpu_model
    redirecting = [p for p, s in view.acs.items() if s.redirects]
    lines = [
        f"topology {topo.name}: cpu {cpu.name} ({cpu.vendor} family {cpu.family:#x}), "
        f"IOMMU {view.iommu}, kernel args: {' '.join(cmdline) or '(none)'}",
        f"ports with ACS redirect: {', '.join(redirecting) or 'none'}",
    ]
    rows = [("exporter", "importer", "route", "dist", "sg(BAR)", "qemu dma", "iommufd dma", "why")]
    for p in predict_pairs(topo, cmdline):
        size = layout.device(p.exporter).size
        sg = sg_entries(p.route, [size]) if size else None
        sg_text = "-" if sg is None else f"{sg} ({format_size(size or 0)})"
        rows.append(
            (p.exporter, p.importer, p.route, str(p.distance), sg_text, p.qemu_dma, p.iommufd_dma, p.why)
        )
    if len(rows) == 1:
        lines.append("no exporter/importer pairs (roles exporter and importer or dma)")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)

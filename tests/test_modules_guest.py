"""guest_tests/hil_importer, its pure parts: expected DMA lists, trace parsing, bufinfo, PCI parsing,
and the modules.json contract between harness/kernels/modules.py (host) and hil_importer.loader (guest).
"""

from __future__ import annotations

import importlib
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.guest.build_plan import pair_expectations
from harness.guest.shapes import export_shapes
from harness.kernels import modules as host_modules
from harness.kernels.kimage import KernelImage
from harness.topology import list_topologies, load_topology
from harness.topology.layout import lay_out
from harness.topology.oracle import predict_pairs, sg_entries

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"
GIB = 1 << 30


def _load(name: str) -> ModuleType:
    if str(GUEST_TESTS) not in sys.path:
        sys.path.insert(0, str(GUEST_TESTS))
    return importlib.import_module(name)


expect = _load("hil_importer.expect")
kprobes = _load("hil_importer.kprobes")
bufinfo = _load("hil_importer.bufinfo")
pci = _load("hil_importer.pci")
loader = _load("hil_importer.loader")
sg = _load("hil_importer.sg")
edu = _load("hil_importer.edu")


# --- expect: the mapping code restated ---------------------------------------------------------


def test_max_entry_is_uint_max_page_aligned() -> None:
    assert expect.MAX_SG_ENT_SZ == 0xFFFFF000


@pytest.mark.parametrize(
    ("length", "pieces"),
    [
        (4096, [4096]),
        (0xFFFFF000, [0xFFFFF000]),
        (4 * GIB, [0xFFFFF000, 0x1000]),  # the reviewers' 4 GiB case: one page spills over
        (4 * GIB + 4096, [0xFFFFF000, 0x2000]),
        (8 * GIB, [0xFFFFF000, 0xFFFFF000, 0x2000]),
    ],
)
def test_split_span(length: int, pieces: list[int]) -> None:
    spans = expect.split_span(0x1000_0000_0000, length)
    assert [s.length for s in spans] == pieces
    assert spans[0].dma_addr == 0x1000_0000_0000
    assert all(b.dma_addr == a.dma_addr + a.length for a, b in itertools.pairwise(spans))


def test_expected_bus_addr_per_range() -> None:
    got = expect.expected_list("bus_addr", [(0, 4096), (0x10000, 8192)], 0xF4000000)
    assert [(e.dma_addr, e.length) for e in got.entries] == [(0xF4000000, 4096), (0xF4010000, 8192)]
    assert not got.iova


def test_expected_iova_is_one_span_of_the_total() -> None:
    got = expect.expected_list("host_bridge_iova", [(0, 4 * GIB + 8192), (5 * GIB, 2 * GIB)], 0x38_0000_0000)
    assert got.iova
    assert got.lengths == [0xFFFFF000, 6 * GIB + 8192 - 0xFFFFF000]  # 2 GiB + 12 KiB left
    assert expect.expected_list("refused", [(0, 4096)], 0).entries == ()
    with pytest.raises(ValueError, match="unknown route"):
        expect.expected_list("p2p", [(0, 4096)], 0)


def _dma(pairs: list[tuple[int, int]], orig: int = 0) -> object:
    return sg.DmaList(tuple(sg.SgEntry(a, n) for a, n in pairs), orig)


def test_mismatches_bus_addr() -> None:
    want = expect.expected_list("bus_addr", [(0, 8 * GIB)], 0x38_0000_0000)
    good = _dma([(e.dma_addr, e.length) for e in want.entries])
    assert expect.mismatches(want, good, 0x38_0000_0000, 8 * GIB) == []
    # What a kernel splitting at UINT_MAX (v8 of the series) instead of 4 GiB - 4 KiB would give.
    bad = _dma([(0x38_0000_0000, 0xFFFFFFFF), (0x38_FFFF_FFFF, 0xFFFFFFFF), (0x39_FFFF_FFFE, 2)])
    problems = expect.mismatches(want, bad, 0x38_0000_0000, 8 * GIB)
    assert any("lengths" in p for p in problems) and any("addresses" in p for p in problems)


def test_mismatches_iova() -> None:
    want = expect.expected_list("host_bridge_iova", [(0, 4096), (8192, 4096)], 0xF4000000)
    assert expect.mismatches(want, _dma([(0xFFFE0000, 8192)]), 0xF4000000, 0x4000000) == []
    untranslated = expect.mismatches(want, _dma([(0xF4000000, 8192)]), 0xF4000000, 0x4000000)
    assert any("not translated" in p for p in untranslated)
    split = expect.mismatches(want, _dma([(0xFFFE0000, 4096), (0xFFFF0000, 4096)]), 0xF4000000, 0x4000000)
    assert any("lengths" in p for p in split)
    assert any("orig_nents" in p for p in expect.mismatches(want, _dma([(0xFFFE0000, 8192)], 1), 0, 1))


def test_trim_like_ib_umem_dmabuf_map_pages() -> None:
    whole = expect.expected_list("bus_addr", [(0, 8 * GIB)], 0x38_0000_0000)
    mr = expect.trim(whole, 4096, 8 * GIB - 8192)
    assert [(e.dma_addr, e.length) for e in mr.entries] == [
        (0x38_0000_1000, 0xFFFFE000),
        (0x38_FFFF_F000, 0xFFFFF000),
        (0x39_FFFF_E000, 0x1000),
    ]
    inner = expect.trim(whole, 5 * GIB, 4096)  # wholly inside the second entry
    assert [(e.dma_addr, e.length) for e in inner.entries] == [(0x38_0000_0000 + 5 * GIB, 4096)]
    iova = expect.trim(expect.expected_list("host_bridge_iova", [(0, 1 << 26)], 0), 4096, (1 << 26) - 8192)
    assert iova.iova and iova.lengths == [(1 << 26) - 8192]


def test_export_shapes_fit_the_bar() -> None:
    for size in (16 << 20, 64 << 20, 8 * GIB):
        for name, ranges in export_shapes(size).items():
            assert all(o % 4096 == 0 and n % 4096 == 0 and n > 0 and o + n <= size for o, n in ranges), name
    assert set(export_shapes(64 << 20)) == {"whole", "slice", "multi"}
    assert {"4g", "4g_plus_page", "max_entry", "multi_4g"} <= set(export_shapes(8 * GIB))


@pytest.mark.parametrize(
    "topology", ["switch-p2p", "switch-p2p-amd", "switch-p2p-pt", "rootports-acs", "bar-4g", "bar-4g-pt"]
)
def test_restatement_agrees_with_the_oracle_counts(topology: str) -> None:
    """The guest's expected lists and the host oracle's sg_entries() count the same entries."""
    topo = load_topology(topology)
    sizes = {d.id: d.size for d in topo.devices}
    for p in predict_pairs(topo):
        size = sizes[p.exporter]
        assert size is not None  # exporters are ivshmem devices, which have a size
        for name, ranges in export_shapes(size).items():
            ours = expect.expected_list(p.route, ranges, 0)
            theirs = sg_entries(p.route, [n for _, n in ranges])
            assert (None if p.route == "refused" else len(ours.entries)) == theirs, (p.importer, name)


@pytest.mark.parametrize("topology", [t.name for t in list_topologies()])
def test_plan_expectations_agree_with_the_restatement(topology: str) -> None:
    """What the guest's routing tests compare (PairExpectation.sg_entries_for, from the plan the host
    writes) against their own expected list: every shape counted, and the counts agree."""
    topo = load_topology(topology)
    layout = lay_out(topo)
    bars = {d.id: d.bars[2] for d in layout.devices if 2 in d.bars}
    expectations = pair_expectations(topo, layout)
    assert [(e.exporter, e.importer) for e in expectations] == [
        (p.exporter, p.importer) for p in predict_pairs(topo)
    ]
    for exp in expectations:
        shapes = export_shapes(bars[exp.exporter])
        assert set(exp.sg_entries_for) == set(shapes), exp
        for name, ranges in shapes.items():
            ours = expect.expected_list(exp.route, ranges, 0)
            want = None if exp.route == "refused" else len(ours.entries)
            assert exp.sg_entries_for[name] == want, (exp.importer, name)


# --- kprobes: tracefs text ---------------------------------------------------------------------

TRACE = """\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
          python-212     [001] ..... 36.811: map_type: (pci_p2pdma_map_type+0x0/0xd0) \
provider="0000:03:00.0" client="0000:06:00.0"
          python-212     [001] ..... 36.812: calc_ret: (pci_p2pdma_map_type+0x9e/0xd0 <- \
calc_map_type_and_dist) ret=4
          python-212     [001] ..... 36.812: map_type_ret: (dma_buf_phys_vec_to_sgt+0x5c/0x3a0 <- \
pci_p2pdma_map_type) ret=4
          python-212     [001] ..... 36.813: iova_alloc_ret: (dma_buf_phys_vec_to_sgt+0xd1/0x3a0 <- \
dma_iova_try_alloc) ret=0x1
"""


def test_parse_trace_and_fold() -> None:
    events = kprobes.parse_trace(TRACE)
    assert [e.event for e in events] == ["map_type", "calc_ret", "map_type_ret", "iova_alloc_ret"]
    assert events[0].args == {"provider": "0000:03:00.0", "client": "0000:06:00.0"}
    seen = kprobes.decision(events)
    assert (seen.provider, seen.client, seen.map_type, seen.iova, seen.calc_map_type) == (
        "0000:03:00.0", "0000:06:00.0", "THRU_HOST_BRIDGE", True, "THRU_HOST_BRIDGE")  # fmt: skip


def test_iova_links_pair_calls_with_returns() -> None:
    text = (
        "  p-1 [000] ..... 1.0: iova_link: (dma_iova_link+0x0/0x1c0) phys=0xf4000000 offset=0 size=4096\n"
        "  p-1 [000] ..... 1.1: iova_link_ret: (x+0x1/0x2 <- dma_iova_link) ret=0\n"
        "  p-1 [000] ..... 1.2: iova_link: (dma_iova_link+0x0/0x1c0) phys=0xf6000000 offset=0 size=65536\n"
        "  p-1 [000] ..... 1.3: iova_link_ret: (x+0x1/0x2 <- dma_iova_link) ret=-98\n"
    )
    links = kprobes.decision(kprobes.parse_trace(text)).links
    assert [(x.offset, x.size, x.ret) for x in links] == [(0, 4096, 0), (0, 65536, -98)]
    assert str(links[1]) == "+0x0 len 0x10000 -> -98"


def test_decision_without_iova_call() -> None:
    events = kprobes.parse_trace(TRACE.split("iova_alloc_ret", maxsplit=1)[0].rsplit("\n", 1)[0])
    assert kprobes.decision(events).iova is None


def test_kallsyms_lookup() -> None:
    text = (
        "ffffffff9bb60180 t calc_map_type_and_dist.isra.0\n"
        "ffffffff9bb60d70 T pci_p2pdma_map_type\n"
        "ffffffff9bb60d70 d pci_p2pdma_whitelist\n"
        "ffffffffc0a01000 t rxe_reg_user_mr.cold\t[rdma_rxe]\n"
        "ffffffffc0a02000 t rxe_reg_user_mr\t[rdma_rxe]\n"
        "ffffffffc0a03000 T rxe_reg_user_mr_extra\t[rdma_rxe]\n"
        "ffffffffc0a04000 t ib_umem_get.cold\t[ib_uverbs]\n"
        "ffffffffc0a05000 t ib_umem_get.part.0\t[ib_uverbs]\n"
    )
    assert kprobes.kallsyms_has(text, "pci_p2pdma_map_type") == "pci_p2pdma_map_type"
    assert kprobes.kallsyms_has(text, "calc_map_type_and_dist") == "calc_map_type_and_dist.isra.0"
    assert kprobes.kallsyms_has(text, "pci_p2pdma_whitelist") is None  # data, not code
    assert kprobes.kallsyms_has(text, "dma_iova_try_alloc") is None
    # A module's symbol (tab, [module]): the exact name wins over a clone listed before it, never a
    # longer name that only starts with it; without the exact name, the first clone.
    assert kprobes.kallsyms_has(text, "rxe_reg_user_mr") == "rxe_reg_user_mr"
    assert kprobes.kallsyms_has(text, "ib_umem_get") == "ib_umem_get.cold"
    assert kprobes.kallsyms_has(text, "rxe_reg") is None
    assert kprobes.kallsyms_has(text, "pci_p2pdma_map") is None


@pytest.mark.parametrize(
    ("line", "fault"),
    [
        ("DMAR: [DMA Write NO_PASID] Request device [00:03.0] fault addr 0xf4000000 [fault reason 0x05] "
         "PTE Write access is not set", True),
        ("DMAR: DRHD: handling fault status reg 2", True),
        ("iommu ivhd0: AMD-Vi: Event logged [IO_PAGE_FAULT domain=0x0002 address=0xf4000000 flags=0x0020]",
         True),
        ("DMAR: IOMMU enabled", False),
        ("AMD-Vi: Interrupt remapping enabled", False),
        ("vfio-pci 0000:03:00.0: enabling device (0000 -> 0002)", False),
    ],
)  # fmt: skip
def test_iommu_fault_lines(line: str, fault: bool) -> None:
    assert edu.is_iommu_fault(line) is fault


def test_probe_definitions() -> None:
    lines = kprobes.probe_definitions("calc_map_type_and_dist")
    assert lines[0].startswith("p:hil/map_type pci_p2pdma_map_type ")
    assert "client=+0(+0($arg2)):string" in lines[0]
    assert "r:hil/calc_ret calc_map_type_and_dist ret=$retval:s32" in lines
    assert len(kprobes.probe_definitions(None, iova_link=False)) == 3
    assert "offset=$arg4:u64" in kprobes.probe_definitions(None)[3]
    assert set(kprobes.ROUTE_MAP_TYPE) == set(expect.ROUTES)


# --- bufinfo, pci ------------------------------------------------------------------------------

BUFINFO = """
Dma-buf Objects:
size    \tflags   \tmode    \tcount   \texp_name\tino     \tname
67108864\t00000002\t00080007\t00000003\tvfio_pci_core\t00000012\t<none>
\tAttached Devices:
\t0000:04:00.0
\t0000:05:00.0
Total 2 devices attached

00004096\t00000002\t00080007\t00000001\tvfio_pci_core\t00000013\t<none>
\tkernel fence: foo
\tAttached Devices:
Total 0 devices attached


Total 2 objects, 67112960 bytes
"""


def test_bufinfo_attachments() -> None:
    assert bufinfo.parse_attachments(BUFINFO) == {12: ["0000:04:00.0", "0000:05:00.0"], 13: []}


def test_parse_bdf() -> None:
    fn = pci.parse_bdf("0000:05:1f.7")
    assert (fn.domain, fn.bus, fn.devfn, fn.bdf) == (0, 5, 0xFF, "0000:05:1f.7")
    for bad in ("05:00.0", "0000:05:20.0", "0000:05:00.8"):
        with pytest.raises(ValueError):
            pci.parse_bdf(bad)


def test_parse_resource() -> None:
    text = (
        "0x00000000fea00000 0x00000000fea000ff 0x0000000000040200\n"
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
        "0x0000003800000000 0x00000039ffffffff 0x000000000014220c\n"
    )
    bars = pci.parse_resource(text)
    assert (bars[2].start, bars[2].size) == (0x38_0000_0000, 8 * GIB)
    assert bars[1].size == 0


# --- modules.json: host writes, guest reads ----------------------------------------------------


def test_manifest_contract(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    built = host_modules.ModuleSet(
        out_dir=entry,
        paths={host_modules.P2P_MODULE: entry / "build" / "hil_p2p_importer.ko"},
        features={"invalidate_mappings": True, "revoke_callback": True, "move_notify": False},
        skipped={"move_notify": "no move_notify", host_modules.RDMA_MODULE: "no INFINIBAND"},
    )
    kernel = KernelImage(spec="src:debian-7.2", version="7.2.13-hil", image=tmp_path / "bzImage")
    entry.mkdir()
    (entry / host_modules.MANIFEST).write_text(json.dumps(host_modules.manifest_dict(kernel, "k", built)))
    got = loader.read_manifest(entry)
    assert got.kernel_version == "7.2.13-hil"
    assert got.modules == {loader.P2P_MODULE: entry / "build" / "hil_p2p_importer.ko"}
    assert got.unavailable(loader.P2P_MODULE) is None
    assert got.unavailable(loader.RDMA_MODULE) == "no INFINIBAND"
    assert got.unavailable("revoke_callback") is None
    assert got.unavailable("move_notify") == "no move_notify"
    assert "no reason recorded" in got.unavailable("umem_revocable")
    assert (host_modules.P2P_MODULE, host_modules.RDMA_MODULE) == (loader.P2P_MODULE, loader.RDMA_MODULE)

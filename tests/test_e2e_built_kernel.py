"""The built-kernel path on a real VM: Debian's 7.2 source built with the project's config, test modules
built against it, and the whole default in-guest suite on switch-p2p-amd, which has a bus-address pair,
an IOVA pair (hitting the known multi-range bug), the edu DMA engine (also through iommufd) and hotplug
slots. Then the same cell with the fix series applied (git am), where the known issue must come out as an
unexpected pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hil_live import hil

from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.vm, pytest.mark.build]

KERNEL = "src:debian-7.2"
TOPOLOGY = "switch-p2p-amd"
FIX = REPO_ROOT / "kernels" / "series" / "fix-iova-multirange.mbox"
# The tests kernels/known-issues.yaml excuses on 7.2 for switch-p2p-amd (multi-range IOVA, EADDRINUSE).
KNOWN_ISSUE_TESTS = {
    "test_routing.py::test_dma_list_matches_route[exporter-dma-multi]",
    "test_routing.py::test_iova_ranges_linked_at_their_offsets[exporter-dma]",
}


def _cell(out: Path, *extra: str) -> tuple[int, str, dict[str, Any], dict[str, dict[str, Any]]]:
    proc = hil("run", "--topology", TOPOLOGY, "--kernel", KERNEL, "--out", str(out), "--timeout", "900",
               *extra, timeout=3000)  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    records = {r["name"]: r for r in results["records"]}
    summary = "\n".join(f"{r['outcome']:8} {n} {r['message'][:120]}" for n, r in records.items())
    return proc.returncode, f"{proc.stderr[-3000:]}\n{summary}", results, records


@pytest.mark.kernel(KERNEL)
def test_whole_suite_matches_the_oracle_on_a_built_kernel(tmp_path: Path) -> None:
    code, summary, results, records = _cell(tmp_path / "cell")
    assert code == 0, summary
    assert results["verdict"] == "passed"
    # The modules were built and loaded: nothing skipped for want of them.
    assert not [n for n, r in records.items() if "modules_dir" in r["message"]], summary
    outcome = {n: r["outcome"] for n, r in records.items()}
    for name in (
        "test_routing.py::test_dma_list_matches_route[exporter-importer-multi]",  # bus address
        "test_routing.py::test_dma_list_matches_route[exporter-dma-whole]",  # IOVA
        "test_routing.py::test_kernel_decision_matches_route[exporter-dma]",  # kprobe on the decision
        "test_importers.py::test_rdma_umem_maps[revocable-dma]",
        "test_importers.py::test_rxe_reg_dmabuf_mr_unsupported",
        "test_revocation.py::test_revoke_by_device_reset",
        "test_revocation.py::test_revoke_by_hot_unplug",  # QMP device_del through the host agent
        "test_data_dma.py::test_edu_copies_through_mapping[whole-bar]",
        # the iommufd importer: edu on its VFIO cdev DMAs through an IOAS mapping of the dma-buf
        "test_iommufd.py::test_iommufd_dma_through_map_file[offset]",
        "test_iommufd.py::test_iommufd_refused_requests",
        "test_iommufd.py::test_iommufd_revocation_cuts_mapping[unplug]",
    ):
        assert outcome.get(name) == "passed", f"{name}: {outcome.get(name)}\n{summary}"
    for name in KNOWN_ISSUE_TESTS:
        assert outcome[name] == "xfailed", summary
    # Real bytes moved by DMA, checked by the host in the ivshmem backing file after the VM stopped.
    data = records["test_data_dma.py::test_edu_copies_through_mapping[whole-bar]"]["details"]
    checked = data["host_check_results"]
    assert len(checked) == len(data["host_checks"]) >= 1 and all(c["ok"] for c in checked), data
    hotplug = records["test_revocation.py::test_revoke_by_hot_unplug"]["details"]
    assert hotplug["after_unplug_errnos"] == {"map": "ENODEV", "attach": "ENODEV"}, hotplug


@pytest.mark.kernel(KERNEL, series=FIX)
def test_fix_series_turns_the_known_issue_into_an_unexpected_pass(tmp_path: Path) -> None:
    out = tmp_path / "cell"
    code, summary, results, records = _cell(out, "--series", str(FIX), "-k", "routing")
    assert code == 1, summary
    assert results["verdict"] == "failed"
    assert results["meta"]["kernel"] == f"{KERNEL}+{FIX.name}"
    failing = {n for n, r in records.items() if r["outcome"] not in ("passed", "skipped")}
    assert failing == KNOWN_ISSUE_TESTS, summary
    for name in KNOWN_ISSUE_TESTS:
        assert records[name]["outcome"] == "xpassed"
        assert records[name]["message"].startswith("UNEXPECTED PASS"), records[name]
    # The cell reproduces with the series: reproduce.sh names it by absolute path.
    assert f"--series {FIX}" in (out / "reproduce.sh").read_text()

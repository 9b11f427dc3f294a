"""The debug kernel variant on a real VM (CI's representative part of the error-path work): src:debian-7.2
built with `--fragment debug` (lockdep, KASAN, kmemleak, DMA-API debug, fault injection), the fail-nth
sweep of the map operation on switch-p2p-amd's two routes, and the kmemleak scans that bracket the suite.
The two dma-buf-mapping.c leaks the sweep found are known issues: the IOVA span lost after a failed map
on the IOVA route, and the scatterlist every unmap leaks, which only kmemleak shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hil_live import hil

pytestmark = [pytest.mark.vm, pytest.mark.build]

KERNEL = "src:debian-7.2"
SELECT = "fault_injection_map or kmemleak"


@pytest.mark.kernel(KERNEL, fragments=("debug",))
def test_map_sweep_on_the_debug_kernel_finds_the_analysed_leaks_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "cell"
    proc = hil("run", "--topology", "switch-p2p-amd", "--kernel", KERNEL, "--fragment", "debug", "-k", SELECT,
               "--out", str(out), timeout=1800)  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    records = {r["name"]: r for r in results["records"]}
    summary = "\n".join(f"{r['outcome']:8} {n} {r['message'][:300]}" for n, r in records.items())
    assert results["meta"]["kernel"] == f"{KERNEL}+debug", summary
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{summary}"
    assert results["verdict"] == "passed"
    # No detector fired outside what the tests judge: no lockdep, KASAN, DMA-API or WARN report.
    assert [e for e in results["evidence"] if e["kind"] not in ("note", "kmemleak")] == [], results[
        "evidence"
    ]

    # The bus-address route: every injected failure left the system as it was. The scatterlists that
    # every unmap leaks (known issue, 2/2) are reported by whichever scan first finds no pointer left to
    # them, which varies between runs: this sweep may be xfailed by them, never by anything else.
    clean = records["test_fault_injection.py::test_fault_injection_map[importer]"]
    (sweep,) = clean["details"]["fault_sweeps"]
    assert sweep["route"] == "bus_addr" and sweep["sites"] >= 3, sweep
    assert [b for b in sweep["broken"] if not b["invariant"].startswith("kmemleak")] == [], sweep
    assert clean["outcome"] in ("passed", "xfailed"), summary
    if clean["outcome"] == "xfailed":
        assert "fix-dma-buf-leaks.mbox (2/2)" in clean["message"], summary

    # The IOVA route: the span of a failed map is lost (known issue, fix-dma-buf-leaks.mbox 1/2).
    leaking = records["test_fault_injection.py::test_fault_injection_map[dma]"]
    assert leaking["outcome"] == "xfailed", summary
    assert "fix-dma-buf-leaks.mbox (1/2)" in leaking["message"]
    (sweep,) = leaking["details"]["fault_sweeps"]
    assert sweep["route"] == "host_bridge_iova" and sweep["sites"] >= 5 and sweep["broken"], sweep
    # Which of the two analysed bugs breaks this sweep varies between runs: when one injected failure
    # moves the device off 32-bit IOVAs (dma-iommu.c:797) in the same sweep, the IOVA check has missed
    # the lost span (seen once in CI; an open item of issue 10). xfailed already means every broken
    # invariant is one of the analysed bugs' (known issues' broken_invariants).

    # kmemleak after the suite: the scatterlists the unmaps leaked (known issue, 2/2), nothing else.
    final = records["test_races.py::test_fault_injection_and_race_kmemleak_final"]
    assert final["outcome"] == "xfailed", summary
    assert "fix-dma-buf-leaks.mbox (2/2)" in final["message"]
    assert final["details"]["leaks"] and all(
        "dma_buf_phys_vec_to_sgt" in leak for leak in final["details"]["leaks"]
    )

"""hang_demo on a real VM: a revoking process stuck in the kernel is reported `hung` with its stack.

Runs on the project-built 7.2 kernel (HIL_TEST_KERNEL overrides it); with a
stock image the demo skips for want of modules, and so does this test.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_e2e_vm import hil, qemu_processes_with

pytestmark = [pytest.mark.vm, pytest.mark.build]

KERNEL = os.environ.get("HIL_TEST_KERNEL", "src:debian-7.2")


def test_hang_demo_is_reported_hung_with_the_blocked_stack(tmp_path: Path) -> None:
    out = tmp_path / "cell"
    started = time.monotonic()
    proc = hil("run", "--topology", "switch-p2p", "--kernel", KERNEL, "-k", "hang_demo", "--timeout", "60",
               "--out", str(out), timeout=300)  # fmt: skip
    wall = time.monotonic() - started
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    if proc.returncode == 0 and records and all(r["outcome"] == "skipped" for r in records):
        pytest.skip(f"hang_demo skipped on {KERNEL}: {records[0]['message']}")
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert results["verdict"] == "hung"
    blocked = [e for e in results["evidence"] if e["kind"] == "blocked_tasks"]
    assert any("vfio_pci_dma_buf_move" in e["excerpt"] for e in blocked), results["evidence"]
    # The test the guest hung in has a record naming it (the guest itself never wrote one).
    [hung] = [r for r in records if r["name"].endswith("::test_hang_demo")]
    assert hung["outcome"] == "error" and "hung while this test ran" in hung["message"], hung
    assert wall < 120, f"the hang took {wall:.0f} s to report with --timeout 60"
    assert not qemu_processes_with(str(out)), "QEMU outlived the run"

"""hang_demo on a real VM: a revoking process stuck in the kernel is reported `hung` with its stack.

Runs on the project-built 7.2 kernel (HIL_TEST_KERNEL overrides it); with a
stock image the demo skips for want of modules, and so does this test.

The hang is called by the test's own limit, counted from its begin (the guest plugin tells the entry's
watchdog), so however slowly the machine boots and Python starts over 9p it is the test that is named,
not start-up: the cell's budget only needs to be generous.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hil_live import hil
from test_e2e_vm import qemu_processes_with

from harness.console.events import Marker, scan

KERNEL = os.environ.get("HIL_TEST_KERNEL", "src:debian-7.2")

# kernel: prepared (built, with progress) by conftest before the first test runs.
pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.kernel(KERNEL)]

# The cell's budget: room for a slow machine's boot and start-up. The silence detector gets the same,
# so that the guest's watchdog, not the host, is what reports the hang.
CELL_TIMEOUT_S = 300


def done_frame(run_dir: Path) -> dict[str, object]:
    token = json.loads((run_dir / "plan.json").read_text())["token"]
    console = (run_dir / "console.log").read_text(errors="replace")
    frames = [e.payload for e in scan(console, token) if isinstance(e, Marker) and e.kind == "done"]
    assert len(frames) == 1, frames
    return dict(frames[0])


def test_hang_demo_is_reported_hung_with_the_blocked_stack(tmp_path: Path) -> None:
    out = tmp_path / "cell"
    started = time.monotonic()
    proc = hil("run", "--topology", "switch-p2p", "--kernel", KERNEL, "-k", "hang_demo",
               "--timeout", str(CELL_TIMEOUT_S), "--idle-timeout", str(CELL_TIMEOUT_S),
               "--out", str(out), timeout=CELL_TIMEOUT_S + 120)  # fmt: skip
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
    # The guest's watchdog named the test and called it hung at its own limit, after start-up.
    done = done_frame(out)
    assert done["status"] == "hung" and done["phase"] == "test", done
    assert str(done["test"]).endswith("::test_hang_demo"), done
    limit, ran = float(str(done["test_timeout_s"])), float(str(done["test_elapsed"]))
    assert limit <= ran < limit + 10, done
    assert wall < CELL_TIMEOUT_S, f"the guest's watchdog did not end the run ({wall:.0f} s): the host did"
    assert not qemu_processes_with(str(out)), "QEMU outlived the run"

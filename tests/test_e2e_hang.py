"""hang_demo on a real VM: a revoking process stuck in the kernel is reported `hung` with its stack.

Runs on the project-built 7.2 kernel (HIL_TEST_KERNEL overrides it); with a
stock image the demo skips for want of modules, and so does this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.vm, pytest.mark.build]

KERNEL = os.environ.get("HIL_TEST_KERNEL", "src:debian-7.2")


def _qemu_with(fragment: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmdline and fragment in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_hang_demo_is_reported_hung_with_the_blocked_stack(tmp_path: Path) -> None:
    out = tmp_path / "cell"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--topology", "switch-p2p", "--kernel", KERNEL,
         "-k", "hang_demo", "--timeout", "60", "--out", str(out)],
        cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    if proc.returncode == 0 and records and all(r["outcome"] == "skipped" for r in records):
        pytest.skip(f"hang_demo skipped on {KERNEL}: {records[0]['message']}")
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert results["verdict"] == "hung"
    blocked = [e for e in results["evidence"] if e["kind"] == "blocked_tasks"]
    assert any("vfio_pci_dma_buf_move" in e["excerpt"] for e in blocked), results["evidence"]
    assert wall < 120, f"the hang took {wall:.0f} s to report with --timeout 60"
    assert not _qemu_with(str(out)), "QEMU outlived the run"

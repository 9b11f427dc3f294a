"""The whole path on real VMs (TCG here, KVM where it works): CLI -> kernel -> QEMU -> guest -> results.

Each test boots at least one VM through `python -m harness run`, exactly as a user's `./hil run`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hil_live import hil

from harness.paths import REPO_ROOT

KERNEL = os.environ.get("HIL_TEST_KERNEL", "debian:7.2")
pytestmark = [pytest.mark.vm, pytest.mark.kernel(KERNEL)]


def qemu_processes_with(fragment: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and fragment in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def export_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("run") / "cell"
    proc = hil("run", "--topology", "switch-p2p", "--kernel", KERNEL, "--out", str(out), "--timeout", "600")
    return proc, out


def test_switch_p2p_export_tests_pass_and_leave_every_result_file(
    export_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, out = export_run
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for name in ("results.json", "junit.xml", "console.log", "reproduce.sh", "plan.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "passed"
    meta = results["meta"]
    assert meta["topology"] == "switch-p2p" and meta["kernel"] == KERNEL
    assert meta["kernel_version"].startswith("7.2")
    assert meta["accelerator"] in ("kvm", "tcg")
    names = {r["name"]: r["outcome"] for r in results["records"]}
    export_tests = [n for n in names if "test_export" in n]
    assert len(export_tests) >= 10, names
    assert all(names[n] == "passed" for n in export_tests), names
    suite = ET.parse(out / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    assert int(suite.get("tests", "0")) == len(results["records"])
    assert int(suite.get("failures", "0")) == 0
    assert os.access(out / "reproduce.sh", os.X_OK)
    assert "vng" in (out / "reproduce.sh").read_text()
    assert "Linux version" in (out / "console.log").read_text()


def test_summary_table_is_printed(export_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _out = export_run
    assert "passed" in proc.stdout
    assert "test_export" in proc.stdout


def test_a_crashing_guest_is_reported_as_crashed_with_the_excerpt(tmp_path: Path) -> None:
    out = tmp_path / "cell"
    proc = hil(
        "run",
        "--topology",
        "switch-p2p",
        "--kernel",
        KERNEL,
        "--out",
        str(out),
        "-k",
        "crash_demo",
        "--timeout",
        "300",
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "crashed"
    assert any("Kernel panic" in json.dumps(e) for e in results["evidence"]), results["evidence"]
    # The panic took the test with it; the host's record names the test and the panic.
    [lost] = [r for r in results["records"] if "crash_demo" in r["name"]]
    assert lost["outcome"] == "error", lost
    assert lost["message"].startswith("the guest crashed while this test ran: kernel panic: Kernel panic"), (
        lost
    )
    assert not qemu_processes_with(str(out))


def test_sigkill_of_hil_run_leaves_no_qemu_and_no_scratch(tmp_path: Path) -> None:
    out = tmp_path / "cell"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            "--topology",
            "switch-p2p",
            "--kernel",
            KERNEL,
            "--out",
            str(out),
            "--timeout",
            "300",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not qemu_processes_with(str(out)):
            time.sleep(0.2)
        running = qemu_processes_with(str(out))
        assert running, "QEMU never started"
        scratch = json.loads((out / "plan.json").read_text())["devices"][0]["backing"]
        time.sleep(2)  # let the guest get going
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        end = time.monotonic() + 10
        while time.monotonic() < end and qemu_processes_with(str(out)):
            time.sleep(0.1)
        assert not qemu_processes_with(str(out)), running
        # The guardian removes the scratch directory right after killing the group.
        end = time.monotonic() + 10
        while time.monotonic() < end and Path(scratch).parent.exists():
            time.sleep(0.1)
        assert not Path(scratch).parent.exists(), "per-run scratch directory left behind"
    finally:
        proc.kill()


def test_a_broken_topology_is_refused_before_any_vm(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ndescription: x\nmachine: {cpu: Skylake-Server, memory: 1G, smp: 1}\niommu: intel\n"
        "root_ports: [{id: rp1}]\nswitches: []\n"
        "devices: [{id: e, kind: ivshmem, parent: rp9, size: 64M, role: exporter}]\n"
    )
    proc = hil("run", "--topology", str(bad), "--kernel", KERNEL, "--out", str(tmp_path / "cell"))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "rp9" in proc.stderr and "parent" in proc.stderr
    assert not (tmp_path / "cell").exists()

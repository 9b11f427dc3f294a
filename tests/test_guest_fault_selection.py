"""guest_tests/conftest.py selection: the debug_kernel tests (fault injection, races) are in the default
selection only when the plan's kernel has the "debug" fragment, otherwise only when -k names them; the
kmemleak scans run first and last. Collected by the real in-guest pytest config, without a VM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.guest.plan import GuestPlan, dump_plan

ROOT = Path(__file__).resolve().parents[1]
GUEST_TESTS = ROOT / "guest_tests"


def _collect(tmp_path: Path, fragments: tuple[str, ...], *args: str) -> list[str]:
    plan = GuestPlan(
        token="t0",
        run_dir=tmp_path,
        results_path=tmp_path / "r.jsonl",
        topology="x",
        kernel="src:debian-7.2",
        devices=(),
        tests_dir=GUEST_TESTS,
        fragments=fragments,
    )
    dump_plan(plan, tmp_path / "plan.json")
    env = dict(os.environ, HIL_PLAN=str(tmp_path / "plan.json"), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=GUEST_TESTS,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def _debug_tests(ids: list[str]) -> list[str]:
    return [i for i in ids if "fault_injection" in i or "race" in i]


@pytest.mark.parametrize("fragments", [(), ("dwarf",)])
def test_not_selected_by_default_on_other_kernels(tmp_path: Path, fragments: tuple[str, ...]) -> None:
    ids = _collect(tmp_path, fragments)
    assert ids, "nothing collected"
    assert _debug_tests(ids) == []


def test_selected_by_default_on_the_debug_kernel_with_kmemleak_scans_around(tmp_path: Path) -> None:
    ids = _collect(tmp_path, ("debug",))
    assert "test_fault_injection.py::test_fault_injection_export" in ids
    assert "test_races.py::test_race_importers_vs_revocation" in ids
    assert ids[0] == "test_races.py::test_fault_injection_and_race_kmemleak_boot"
    assert ids[-1] == "test_races.py::test_fault_injection_and_race_kmemleak_final"
    assert not any("hang_demo" in i or "crash_demo" in i for i in ids)  # opt_in still needs -k


def test_named_by_k_on_other_kernels(tmp_path: Path) -> None:
    ids = _collect(tmp_path, (), "-k", "fault_injection and map")
    assert ids and all("fault_injection_" in i and "map" in i for i in ids)
    assert any("test_fault_injection_map" in i for i in ids)

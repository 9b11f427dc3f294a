"""`topology check`: compare() on a recorded query-pci answer, and a live run marked qemu.

tests/golden/switch-p2p.query-pci.json is QEMU 10.0's real answer for switch-p2p after
SeaBIOS numbered the buses and placed the BARs, recorded by run_check; re-record it with
HIL_REGEN_GOLDEN=1 .venv/bin/pytest -m qemu tests/test_topology_check.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from harness.errors import LaunchError
from harness.topology import Topology, lay_out, load_topology
from harness.topology.check import ACS_NOTE, check_topology, compare, flatten, notes, run_check

GOLDEN = Path(__file__).parent / "golden" / "switch-p2p.query-pci.json"


@pytest.fixture(scope="module")
def answer() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(GOLDEN.read_text())
    return data


def moved(topo: Topology, **parents: str) -> Topology:
    devices = [d.model_copy(update={"parent": parents.get(d.id, d.parent)}) for d in topo.devices]
    return topo.model_copy(update={"devices": devices})


def test_flatten_sees_the_tree(answer: list[dict[str, Any]]) -> None:
    seen = flatten(answer)
    assert {k: v.parent for k, v in seen.items()} == {
        "rp1": "pcie.0", "sw1": "rp1", "dp1": "sw1", "exporter": "dp1",
        "dp2": "sw1", "importer": "dp2", "rp2": "pcie.0", "dma": "rp2",
    }  # fmt: skip
    assert seen["exporter"].bars[2]["size"] == 64 << 20


@pytest.mark.parametrize("name", ["switch-p2p", "switch-p2p-amd", "switch-p2p-pt", "switch-p2p-noiommu"])
def test_same_tree_matches(answer: list[dict[str, Any]], name: str) -> None:
    layout = lay_out(load_topology(name))
    assert compare(layout, answer) == []
    # Firmware placed every BAR; ACS is reported as not checked rather than as fine.
    assert notes(layout, answer) == [ACS_NOTE]


def test_swapped_devices_are_reported(answer: list[dict[str, Any]]) -> None:
    layout = lay_out(moved(load_topology("switch-p2p"), exporter="dp2", importer="dp1"))
    # Reported in plug order: dp1 now expects the importer first.
    assert compare(layout, answer) == [
        "importer: under dp2, expected under dp1",
        "exporter: under dp1, expected under dp2",
    ]


def test_wrong_bar_size_is_reported(answer: list[dict[str, Any]]) -> None:
    assert compare(lay_out(load_topology("bar-4g")), answer) == ["exporter: BAR2 is 64M, expected 8G"]


def test_other_tree_is_reported(answer: list[dict[str, Any]]) -> None:
    problems = compare(lay_out(load_topology("rootports-acs")), answer)
    assert "exporter: under dp1, expected under rp1" in problems
    assert "rp3: pcie-root-port expected under pcie.0, not found" in problems
    assert "dma: under rp2, expected under rp3" in problems
    assert "sw1: unexpected device under rp1" in problems


def test_wrong_ids_and_slots_are_reported(answer: list[dict[str, Any]]) -> None:
    doctored = json.loads(json.dumps(answer))
    rp2 = next(d for d in doctored[0]["devices"] if d.get("qdev_id") == "rp2")
    rp2["slot"] = 0x12
    rp2["pci_bridge"]["devices"][0]["id"]["device"] = 0x1111
    assert compare(lay_out(load_topology("switch-p2p")), doctored) == [
        "rp2: at 12.0, expected 11.0",
        "dma: id 1234:1111, expected 1234:11e8",
    ]


def test_unassigned_bar_is_a_note(answer: list[dict[str, Any]]) -> None:
    doctored = json.loads(json.dumps(answer))
    exporter = doctored[0]["devices"][1]["pci_bridge"]["devices"][0]["pci_bridge"]["devices"][0]
    exporter = exporter["pci_bridge"]["devices"][0]
    assert exporter["qdev_id"] == "exporter"
    next(r for r in exporter["regions"] if r["bar"] == 2)["address"] = -1
    layout = lay_out(load_topology("switch-p2p"))
    assert compare(layout, doctored) == []
    assert "exporter: firmware left BAR2 unassigned (the guest kernel may still place it)" in notes(
        layout, doctored
    )


def our_scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("hil-check-*")}


def test_missing_qemu_is_a_launch_error_and_cleans_up() -> None:
    before = our_scratch_dirs()
    with pytest.raises(LaunchError, match="cannot start /nonexistent/qemu"):
        run_check(lay_out(load_topology("switch-p2p")), qemu="/nonexistent/qemu")
    assert our_scratch_dirs() == before


def test_qemu_that_exits_is_a_launch_error_and_cleans_up() -> None:
    before = our_scratch_dirs()
    with pytest.raises(LaunchError, match="exited with status 1 before QMP was up") as info:
        run_check(lay_out(load_topology("switch-p2p")), qemu=shutil.which("false") or "/bin/false", timeout=5)
    assert "-qmp unix:" in info.value.command
    assert our_scratch_dirs() == before


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
@pytest.mark.parametrize("name", ["switch-p2p", "bar-4g"])
def test_live_check(name: str) -> None:
    before = our_scratch_dirs()
    report = run_check(lay_out(load_topology(name)))
    if name == "switch-p2p" and os.environ.get("HIL_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(report.query_pci, indent=1) + "\n")
    assert report.ok, report.mismatches
    # bar-4g's 8G BAR is placed by the firmware: no "unassigned" note.
    assert report.notes == (ACS_NOTE,)
    assert our_scratch_dirs() == before


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_check_topology_lists_mismatches_only() -> None:
    assert check_topology(load_topology("rootports-acs")) == []

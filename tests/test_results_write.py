"""results.json, junit.xml (golden) and reproduce.sh."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.console.events import KernelProblem, scan, tail
from harness.results.model import RunMeta, TestRecord, Verdict
from harness.results.write import (
    details_text,
    junit_xml,
    reproduce_sh,
    results_json,
    split_nodeid,
    write_junit,
    write_reproduce,
    write_results_json,
    write_text,
)

GOLDEN = Path(__file__).parent / "golden" / "results"
CONSOLES = Path(__file__).parent / "data" / "consoles"

META = RunMeta(
    topology="switch-p2p",
    kernel="debian:7.2",
    kernel_version="7.2.13+deb14-amd64",
    qemu_version="10.1.2",
    accelerator="tcg",
    started_at="2026-11-24T07:31:00+00:00",
    durations={"setup": 1.5, "boot": 5.25, "tests": 4.0, "total": 11.0},
    host="ci-runner-3",
    harness_version="0.1.0",
    command=["./hil", "run", "--topology", "switch-p2p", "--kernel", "debian:7.2"],
)

RECORDS = [
    TestRecord("test_p2p.py::test_probe", "passed", 0.41),
    TestRecord(
        "test_p2p.py::test_map_dmabuf[exporter-importer]",
        "failed",
        0.87,
        "assert mapped == 4096",
        {"mapped": 0, "expected": 4096, "dmesg": "vfio-pci: \x1b[31mred\x1b[0m \u00e9"},
    ),
    TestRecord(
        "test_p2p.py::TestBars::test_bar2",
        "error",
        0.02,
        "fixture 'vfio' failed",
        {"text": "OSError: [Errno 16]\x1b[0m\x00"},
    ),
    TestRecord("test_p2p.py::test_rdma", "skipped", 0.0, "no rdma device in topology"),
    TestRecord(
        "dir/test_iommu.py::test_pt",
        "xfailed",
        1.2,
        "known issue: p2pdma rejects iommu=pt [https://lore.kernel.org/x]",
        {
            "known_issue": {
                "test": "dir/test_iommu.py::*",
                "kernels": ["7.2"],
                "reason": "p2pdma rejects iommu=pt",
            }
        },
    ),
    TestRecord("test_p2p.py::test_fixed", "xpassed", 0.3, "UNEXPECTED PASS: known issue did not reproduce"),
]


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HIL_REGEN_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with HIL_REGEN_GOLDEN=1 to create it"
    assert actual == path.read_text(encoding="utf-8"), f"{path} differs (HIL_REGEN_GOLDEN=1 to update)"


# -- junit ---------------------------------------------------------------------------------------


def test_junit_golden() -> None:
    check_golden("junit-all-outcomes.xml", junit_xml(META, RECORDS))


def test_junit_parses_with_the_right_counts() -> None:
    root = ET.fromstring(junit_xml(META, RECORDS).encode())
    suite = root.find("testsuite")
    assert suite is not None
    for element in (root, suite):
        assert element.get("tests") == "6"
        assert element.get("failures") == "2"  # failed + xpassed
        assert element.get("errors") == "1"
        assert element.get("skipped") == "2"  # skipped + xfailed
        assert element.get("time") == "4.000"
    assert suite.get("name") == "switch-p2p/debian:7.2"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["topology"] == "switch-p2p"
    assert properties["kernel"] == "debian:7.2"
    assert properties["kernel_version"] == "7.2.13+deb14-amd64"
    assert properties["accelerator"] == "tcg"
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("test_p2p", "test_probe"),
        ("test_p2p", "test_map_dmabuf[exporter-importer]"),
        ("test_p2p.TestBars", "test_bar2"),
        ("test_p2p", "test_rdma"),
        ("dir.test_iommu", "test_pt"),
        ("test_p2p", "test_fixed"),
    ]
    children = [[(child.tag, child.get("type")) for child in case] for case in cases]
    assert children == [
        [],
        [("failure", "failure")],
        [("error", "error")],
        [("skipped", "pytest.skip")],
        [("skipped", "pytest.xfail")],
        [("failure", "xpassed")],
    ]
    failure = cases[1][0]
    assert failure.get("message") == "assert mapped == 4096"
    assert failure.text is not None and '"expected": 4096' in failure.text
    assert "\\u001b[31mred" in failure.text
    assert "\u00e9" in failure.text
    # XML 1.0 cannot carry these control characters at all, not even as references.
    assert cases[2][0].text == "OSError: [Errno 16]\\x1b[0m\\x00"
    assert cases[5][0].get("message") == "UNEXPECTED PASS: known issue did not reproduce"


def test_junit_without_records() -> None:
    suite = ET.fromstring(junit_xml(META, []).encode()).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.findall("testcase")) == ("0", "0", [])


def test_junit_xpassed_without_message_is_still_loud() -> None:
    case = ET.fromstring(junit_xml(META, [TestRecord("t.py::x", "xpassed")]).encode()).find(".//testcase")
    assert case is not None
    assert case[0].get("message") == "UNEXPECTED PASS: "


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        ("test_a.py::test_x", ("test_a", "test_x")),
        ("sub/dir/test_a.py::TestC::test_x[a::b/c]", ("sub.dir.test_a.TestC", "test_x[a::b/c]")),
        ("test_a.py", ("test_a", "test_a.py")),
    ],
)
def test_split_nodeid(nodeid: str, expected: tuple[str, str]) -> None:
    assert split_nodeid(nodeid) == expected


def test_details_text() -> None:
    assert details_text({}) == ""
    assert details_text({"text": "tb"}) == "tb"
    assert details_text({"b": 1, "a": [2]}) == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}'


# -- results.json --------------------------------------------------------------------------------


def test_results_json_carries_everything() -> None:
    console = (CONSOLES / "oops.log").read_text(encoding="utf-8")
    problems = [e for e in scan(console, "5e1f0c2a9b7d4e36") if isinstance(e, KernelProblem)]
    text = results_json(
        META,
        RECORDS[:2],
        Verdict.CRASHED,
        [*problems, "console tail:\n" + tail(console, 5), "last results line was cut off"],
    )
    doc = json.loads(text)
    assert doc["schema"] == 1
    assert doc["verdict"] == "crashed"
    assert doc["exit_code"] == 3
    assert doc["meta"]["command"] == META.command
    assert doc["meta"]["kernel"] == "debian:7.2"
    assert doc["meta"]["durations"] == {"setup": 1.5, "boot": 5.25, "tests": 4.0, "total": 11.0}
    assert doc["counts"]["failed"] == 1
    assert doc["records"][1]["details"] == RECORDS[1].details
    assert [(e["kind"], e.get("complete")) for e in doc["evidence"]] == [
        ("oops", True),
        ("panic", False),
        ("note", None),
        ("note", None),
    ]
    assert doc["evidence"][0]["excerpt"] == problems[0].excerpt
    assert doc["evidence"][1]["first_line"] == "Kernel panic - not syncing: Fatal exception in interrupt"
    assert doc["evidence"][3] == {"kind": "note", "text": "last results line was cut off"}


def test_writers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = write_results_json(run / "results.json", META, RECORDS, Verdict.FAILED, ["note"])
    junit = write_junit(run / "junit.xml", META, RECORDS)
    assert json.loads(results.read_text(encoding="utf-8"))["verdict"] == "failed"
    assert junit.read_text(encoding="utf-8") == junit_xml(META, RECORDS)
    assert sorted(p.name for p in run.iterdir()) == ["junit.xml", "results.json"]


# -- reproduce.sh --------------------------------------------------------------------------------

HARNESS = ["./hil", "run", "--topology", "switch-p2p", "--kernel", "debian:7.2", "-k", "export and not slice"]
RAW = [
    ["truncate", "-s", "64M", "/tmp/run dir/exporter.shm"],
    ["vng", "--run", "/cache/kernels/debian-7.2/vmlinuz", "--qemu-opts", "-device pcie-root-port,id=rp1"],
    ["sh", "-c", "echo 'quoted' $HOME; rm -rf /"],
]


def test_reproduce_script_quotes_every_argument() -> None:
    script = reproduce_sh(
        HARNESS, RAW, header=["topology: switch-p2p", "kernel: debian:7.2"], cwd="/repo dir"
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "# topology: switch-p2p" in lines and "# kernel: debian:7.2" in lines
    assert "set -eu" in lines
    assert "cd '/repo dir'" in lines
    assert shlex.split(lines[-1]) == ["exec", *HARNESS]
    raw_start = lines.index('if [ "${1:-}" = --raw ]; then')
    assert [shlex.split(c) for c in lines[raw_start + 1 : raw_start + 4]] == RAW
    assert lines[raw_start + 4 : raw_start + 6] == ["  exit", "fi"]
    assert script.endswith("\n")


def test_reproduce_runs_the_harness_by_default_and_the_raw_steps_on_request(tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = reproduce_sh(["sh", "-c", f"echo harness >> {log}"], [["sh", "-c", f"echo raw >> {log}"]])
    path = tmp_path / "reproduce.sh"
    path.write_text(script)
    subprocess.run(["sh", str(path)], check=True)
    subprocess.run(["sh", str(path), "--raw"], check=True)
    assert log.read_text().split() == ["harness", "raw"]


def test_reproduce_header_cannot_be_broken_by_newlines() -> None:
    script = reproduce_sh(["true"], header=["topology: t\nrm -rf /"])
    assert "\nrm -rf /" not in script
    assert "# topology: t rm -rf /" in script.splitlines()
    assert script.splitlines()[-1] == "exec true"


def test_write_reproduce_is_executable(tmp_path: Path) -> None:
    path = write_reproduce(tmp_path / "reproduce.sh", HARNESS, RAW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert path.read_text(encoding="utf-8") == reproduce_sh(HARNESS, RAW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reproduce.sh"]


def test_write_text_replaces_and_creates_directories(tmp_path: Path) -> None:
    path = tmp_path / "run" / "junit.xml"
    write_text(path, "old")
    write_text(path, "new")
    assert path.read_text(encoding="utf-8") == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["junit.xml"]

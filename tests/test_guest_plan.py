"""harness.guest.plan: the host -> guest plan's JSON round trip and validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import InfraError
from harness.guest.plan import (
    DeviceSpec,
    GuestPlan,
    PlanError,
    dump_plan,
    load_plan,
    plan_from_dict,
    plan_to_dict,
    plan_to_json,
)

GLOB = "/sys/devices/pci0000:00/0000:00:10.0/0000:*:00.0/0000:*:00.0/0000:*:00.0"


def make_plan(tmp: Path = Path("/run/hil")) -> GuestPlan:
    return GuestPlan(
        token="0123abcd",
        run_dir=tmp,
        results_path=tmp / "guest-results.jsonl",
        topology="switch-p2p",
        kernel="debian:7.2",
        devices=(
            DeviceSpec("exporter", "ivshmem", "exporter", GLOB, {2: 64 << 20}, tmp / "exporter.shm"),
            DeviceSpec("dma", "edu", "dma", GLOB.replace("10.0", "11.0"), {0: 1 << 20}, None),
            DeviceSpec("spare", "ivshmem", None, GLOB.replace("10.0", "12.0")),
        ),
        tests_dir=Path("/work/main/guest_tests"),
        pytest_args=("-k", "export and not slow"),
        modules_dir=None,
        guest_deadline_s=120.5,
    )


def test_round_trip_through_json(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    path = tmp_path / "plan.json"
    dump_plan(plan, path)
    assert load_plan(path) == plan
    assert plan_from_dict(json.loads(plan_to_json(plan))) == plan
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"], "no temporary file left behind"


def test_json_shape_matches_design() -> None:
    raw = plan_to_dict(make_plan())
    assert raw["devices"][0] == {
        "id": "exporter",
        "kind": "ivshmem",
        "role": "exporter",
        "sysfs_glob": GLOB,
        "bars": {"2": 67108864},
        "backing": "/run/hil/exporter.shm",
    }
    assert raw["pytest_args"] == ["-k", "export and not slow"]
    assert raw["modules_dir"] is None
    assert raw["guest_deadline_s"] == 120.5


def test_design_example_loads_with_defaults() -> None:
    raw = {
        "token": "ab12",
        "run_dir": "/r",
        "results_path": "/r/guest-results.jsonl",
        "topology": "switch-p2p",
        "kernel": "debian:7.2",
        "devices": [
            {
                "id": "exporter",
                "kind": "ivshmem",
                "role": "exporter",
                "sysfs_glob": GLOB,
                "bars": {"2": 67108864},
                "backing": "/r/exporter.shm",
            }
        ],
        "tests_dir": "/t",
        "pytest_args": ["-k", "x"],
        "modules_dir": None,
    }
    plan = plan_from_dict(raw)
    assert plan.guest_deadline_s is None
    assert plan.devices[0].bars == {2: 67108864}
    assert plan.device("exporter").backing == Path("/r/exporter.shm")
    assert plan.devices_with_role("exporter") == [plan.devices[0]]
    assert plan.devices_with_role("importer") == []
    with pytest.raises(KeyError):
        plan.device("nope")


def _broken(**changes: Any) -> dict[str, Any]:
    raw = plan_to_dict(make_plan())
    for key, value in changes.items():
        if value is _DELETE:
            del raw[key]
        else:
            raw[key] = value
    return raw


_DELETE = object()


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (_broken(token="ab:cd"), "token"),
        (_broken(token=""), "token"),
        (_broken(run_dir=_DELETE), "run_dir: missing"),
        (_broken(results_path=3), "results_path"),
        (_broken(devices={}), "devices"),
        (_broken(pytest_args="-k x"), "pytest_args"),
        (_broken(guest_deadline_s="soon"), "guest_deadline_s"),
        (_broken(guest_deadline_s=True), "guest_deadline_s"),
        (_broken(modules_dir=7), "modules_dir"),
        ([], "expected an object"),
    ],
)
def test_invalid_plans_name_the_field(raw: object, where: str) -> None:
    with pytest.raises(PlanError, match=where):
        plan_from_dict(raw)


@pytest.mark.parametrize(
    ("bars", "where"),
    [
        ({"6": 4096}, "devices\\[0\\].bars: key '6'"),
        ({"x": 4096}, "devices\\[0\\].bars: key 'x'"),
        ({"2": 0}, "devices\\[0\\].bars.2"),
        ({"2": True}, "devices\\[0\\].bars.2"),
        ([4096], "devices\\[0\\].bars"),
    ],
)
def test_invalid_bars(bars: object, where: str) -> None:
    raw = plan_to_dict(make_plan())
    raw["devices"][0]["bars"] = bars
    with pytest.raises(PlanError, match=where):
        plan_from_dict(raw)


def test_device_without_sysfs_glob() -> None:
    raw = plan_to_dict(make_plan())
    del raw["devices"][1]["sysfs_glob"]
    with pytest.raises(PlanError, match=r"devices\[1\]: sysfs_glob: missing"):
        plan_from_dict(raw)


def test_unreadable_plan_is_an_infra_error(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="cannot read plan"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "bad.json")

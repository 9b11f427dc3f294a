"""harness.guest.plan: the host -> guest plan's JSON round trip and validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest

from harness.errors import InfraError
from harness.guest.build_plan import make_plan as build_plan
from harness.guest.plan import (
    IOMMUFD_DMA,
    QEMU_DMA,
    ROUTES,
    DeviceSpec,
    GuestPlan,
    MissingExpectationError,
    PairExpectation,
    PlanError,
    dump_plan,
    load_plan,
    plan_from_dict,
    plan_to_dict,
    plan_to_json,
)
from harness.topology import load_topology
from harness.topology.layout import lay_out
from harness.topology.oracle import IommufdDma, QemuDma, Route

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
        expectations=(
            PairExpectation(
                "exporter",
                "dma",
                "host_bridge_iova",
                "AMD host bridge",
                "reaches_bar",
                {"whole": 1, "multi": 1},
                "reaches_bar",
                "iommufd maps the BAR's physical range",
            ),
            PairExpectation(
                "exporter", "spare", "refused", "no common bridge, Intel host bridge", None, {"whole": None}
            ),
            PairExpectation("spare", "dma", "bus_addr", "same switch"),
        ),
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
    assert raw["expectations"][1] == {
        "exporter": "exporter",
        "importer": "spare",
        "route": "refused",
        "why": "no common bridge, Intel host bridge",
        "qemu_dma": None,
        "sg_entries_for": {"whole": None},
        "iommufd_dma": None,
        "iommufd_why": None,
    }
    assert raw["expectations"][2]["sg_entries_for"] == {}


def test_round_trip_keeps_every_expectation_field(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    dump_plan(plan, tmp_path / "plan.json")
    loaded = load_plan(tmp_path / "plan.json")
    assert loaded.expectations == plan.expectations
    assert all(isinstance(e, PairExpectation) for e in loaded.expectations)
    assert loaded.expectation("exporter", "dma").sg_entries_for == {"whole": 1, "multi": 1}
    assert loaded.expectation("exporter", "spare").qemu_dma is None
    assert loaded.expectation("exporter", "dma").iommufd_dma == "reaches_bar"
    assert loaded.expectation("exporter", "dma").iommufd_why == "iommufd maps the BAR's physical range"
    assert loaded.expectation("exporter", "spare").iommufd_dma is None


@pytest.mark.parametrize("topology", ["switch-p2p", "switch-p2p-amd", "rootports-acs", "bar-4g"])
def test_the_hosts_plan_round_trips(topology: str, tmp_path: Path) -> None:
    """build_plan's typed predictions, through JSON, as the guest reads them."""
    topo = load_topology(topology)
    plan = build_plan(topo, lay_out(topo), "src:debian-7.2", tmp_path, tmp_path / "scratch", "t0k",
                      None, 300.0, None)  # fmt: skip
    assert plan.expectations, "the oracle predicts every pair of a shipped topology"
    assert all(e.sg_entries_for for e in plan.expectations), "every exporter has a BAR2: counts per shape"
    assert plan_from_dict(json.loads(plan_to_json(plan))) == plan
    assert {(e.exporter, e.importer) for e in plan.expectations} == set(plan.pairs())


def test_plan_restates_the_oracles_vocabulary() -> None:
    """The guest cannot import harness.topology: plan.py restates Route and QemuDma; they must agree."""
    assert get_args(Route) == ROUTES
    assert get_args(QemuDma) == QEMU_DMA
    assert get_args(IommufdDma) == IOMMUFD_DMA


@pytest.mark.parametrize(
    ("topology", "iommufd_dma"),
    [("switch-p2p", "reaches_bar"), ("switch-p2p-amd", "reaches_bar"), ("rootports-acs", "reaches_bar"),
     ("switch-p2p-pt", "reaches_bar"), ("switch-p2p-noiommu", "no_cdev")],
)  # fmt: skip
def test_the_hosts_plan_carries_the_iommufd_prediction(
    topology: str, iommufd_dma: str, tmp_path: Path
) -> None:
    """Every pair of the host's plan says what iommufd does, with the oracle's reasoning, through JSON."""
    topo = load_topology(topology)
    plan = build_plan(topo, lay_out(topo), "src:debian-7.2", tmp_path, tmp_path / "scratch", "t0k",
                      None, 300.0, None)  # fmt: skip
    loaded = plan_from_dict(json.loads(plan_to_json(plan)))
    assert {e.iommufd_dma for e in loaded.expectations} == {iommufd_dma}
    assert all(e.iommufd_why for e in loaded.expectations)


def test_pairs_and_expectation_lookup() -> None:
    plan = make_plan()
    # Devices first (exporter x importer|dma: only dma here), then pairs only the expectations name.
    assert plan.pairs() == [("exporter", "dma"), ("exporter", "spare"), ("spare", "dma")]
    assert plan.expectation("spare", "dma").route == "bus_addr"
    with pytest.raises(MissingExpectationError) as info:
        plan.expectation("dma", "exporter")
    assert str(info.value) == (
        "the plan has no routing expectation for the pair dma -> exporter (the oracle's predictions in "
        "the plan: exporter -> dma, exporter -> spare, spare -> dma)"
    )
    assert isinstance(info.value, LookupError)


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


def _bad_expectation(index: int, **changes: Any) -> dict[str, Any]:
    raw = plan_to_dict(make_plan())
    for key, value in changes.items():
        if value is _DELETE:
            del raw["expectations"][index][key]
        else:
            raw["expectations"][index][key] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_bad_expectation(1, route="p2p"), "plan: expectations[1].route: expected one of bus_addr, "),
        (_bad_expectation(1, route=_DELETE), "plan: expectations[1].route: expected one of "),
        (_bad_expectation(0, exporter=_DELETE), "plan: expectations[0].exporter: expected a non-empty"),
        (_bad_expectation(2, importer=""), "plan: expectations[2].importer: expected a non-empty string"),
        (_bad_expectation(1, why=3), "plan: expectations[1].why: expected a non-empty string, got 3"),
        (_bad_expectation(0, qemu_dma="maybe"), "plan: expectations[0].qemu_dma: expected one of reach"),
        (_bad_expectation(0, iommufd_dma="maps"),
         "plan: expectations[0].iommufd_dma: expected one of reaches_bar, no_cdev, noiommu_cdev or null, "
         "got 'maps'"),
        (_bad_expectation(0, iommufd_why=5), "plan: expectations[0].iommufd_why: expected a string or null"),
        (_bad_expectation(0, sg_entries_for=[1]), "plan: expectations[0].sg_entries_for: expected an object"),
        (_bad_expectation(0, sg_entries_for={"multi": 0}), "plan: expectations[0].sg_entries_for.multi: "),
        (_bad_expectation(0, sg_entries_for={"whole": True}), "plan: expectations[0].sg_entries_for.whole: "),
        (_bad_expectation(0, sg_entries_for={"whole": "1"}), "plan: expectations[0].sg_entries_for.whole: "),
        (_bad_expectation(2, exporter="exporter", importer="dma"),
         "plan: expectations[2]: a second prediction for exporter -> dma (first: expectations[0])"),
        (_broken(expectations={}), "plan: expectations: expected a list"),
        (_broken(expectations=["exporter -> dma"]), "plan: expectations[0]: expected an object, got str"),
    ],
)  # fmt: skip
def test_invalid_expectations_name_the_field(raw: object, message: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_from_dict(raw)
    assert str(info.value).startswith(message), str(info.value)

"""guest_tests/test_routing.py and hil_importer.expect on the host: a pair of the topology that the plan
carries no oracle prediction for FAILS, naming the pair; it is never skipped nor left uncollected.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness.guest.plan import (
    DeviceSpec,
    GuestPlan,
    MissingExpectationError,
    PairExpectation,
    PlanError,
    dump_plan,
    load_plan,
    plan_from_dict,
    plan_to_dict,
)
from harness.paths import GUEST_TESTS_DIR
from harness.topology import load_topology
from harness.topology.layout import lay_out
from harness.topology.oracle import predict_pairs

TOPOLOGIES = ["switch-p2p", "switch-p2p-amd", "rootports-acs", "bar-4g"]


def _load(name: str) -> ModuleType:
    if str(GUEST_TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(GUEST_TESTS_DIR))
    return importlib.import_module(name)


expect = _load("hil_importer.expect")
case_module = _load("hil_importer.case")
routing = _load("test_routing")  # the guest test module itself: its helpers run on the host


def _plan(topology: str, tmp: Path, drop: set[tuple[str, str]] | None = None) -> GuestPlan:
    """The plan the host writes for `topology`, minus the oracle's predictions for the `drop` pairs
    (None: every prediction dropped, as an oracle that predicts nothing)."""
    topo = load_topology(topology)
    layout = lay_out(topo)
    devices = tuple(
        DeviceSpec(id=d.id, kind=d.kind, role=d.role, sysfs_glob=f"/sys/bus/pci/devices/*{d.id}", bars=d.bars)
        for d in layout.devices
    )
    predictions = (
        [] if drop is None else [p for p in predict_pairs(topo) if (p.exporter, p.importer) not in drop]
    )
    expectations = tuple(PairExpectation(p.exporter, p.importer, p.route, p.why) for p in predictions)
    return GuestPlan(
        token="abc1",
        run_dir=tmp,
        results_path=tmp / "guest-results.jsonl",
        topology=topology,
        kernel="k",
        devices=devices,
        tests_dir=GUEST_TESTS_DIR,
        expectations=expectations,
    )


def _loaded(plan: GuestPlan) -> GuestPlan:
    """The plan as the guest sees it: written by the host, read back from the file."""
    path = plan.run_dir / "plan.json"
    dump_plan(plan, path)
    return load_plan(path)


def _oracle_pairs(topology: str) -> list[tuple[str, str]]:
    return [(p.exporter, p.importer) for p in predict_pairs(load_topology(topology))]


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_pair_of_the_topology_is_collected_predicted_or_not(topology: str, tmp_path: Path) -> None:
    pairs = _oracle_pairs(topology)
    assert len(pairs) >= 2
    assert expect.topology_pairs(_loaded(_plan(topology, tmp_path))) == pairs
    assert expect.topology_pairs(_loaded(_plan(topology, tmp_path, drop=set()))) == pairs
    assert expect.topology_pairs(_loaded(_plan(topology, tmp_path, drop={pairs[1]}))) == pairs
    assert expect.topology_pairs(None) == []


def test_pairs_named_only_by_an_expectation_are_kept(tmp_path: Path) -> None:
    plan = _plan("switch-p2p", tmp_path, drop=set())
    extra = PairExpectation("importer", "dma", "refused", "made up: the importer as exporter")
    plan = _loaded(dataclasses.replace(plan, expectations=(*plan.expectations, extra)))
    assert plan.pairs() == [*_oracle_pairs("switch-p2p"), ("importer", "dma")]
    assert plan.expectation("importer", "dma") == extra


def test_the_route_is_the_oracles(tmp_path: Path) -> None:
    plan = _loaded(_plan("switch-p2p-amd", tmp_path, drop=set()))
    for p in predict_pairs(load_topology("switch-p2p-amd")):
        assert expect.predicted_route(plan, p.exporter, p.importer) == p.route
        assert expect.pair_expectation(plan, p.exporter, p.importer).route == p.route
        assert plan.expectation(p.exporter, p.importer).why == p.why


@pytest.mark.parametrize("none_at_all", [True, False])
def test_a_missing_prediction_is_an_error_naming_the_pair(none_at_all: bool, tmp_path: Path) -> None:
    exporter, importer = _oracle_pairs("switch-p2p-amd")[1]
    plan = _plan("switch-p2p-amd", tmp_path, drop=None if none_at_all else {(exporter, importer)})
    with pytest.raises(expect.MissingExpectationError) as info:
        expect.predicted_route(_loaded(plan), exporter, importer)
    assert f"no routing expectation for the pair {exporter} -> {importer} " in str(info.value)
    assert str(info.value).endswith("(the oracle's predictions in the plan: none)") is none_at_all
    if not none_at_all:
        others = [f"{e} -> {i}" for e, i in _oracle_pairs("switch-p2p-amd") if (e, i) != (exporter, importer)]
        assert str(info.value).endswith(f"(the oracle's predictions in the plan: {', '.join(others)})")


def test_missing_expectation_error_is_the_plans() -> None:
    # hil_importer.expect re-exports it: the test modules that catch it there catch the plan's.
    assert expect.MissingExpectationError is MissingExpectationError
    assert issubclass(MissingExpectationError, LookupError)


def test_an_expectation_without_a_route_does_not_load(tmp_path: Path) -> None:
    """It used to reach the guest and be reported missing there; the plan refuses it at load now."""
    raw = plan_to_dict(_plan("switch-p2p-amd", tmp_path, drop=set()))
    del raw["expectations"][1]["route"]
    with pytest.raises(PlanError, match=r"^plan: expectations\[1\]\.route: expected one of "):
        plan_from_dict(raw)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_routing_tests_are_collected_for_a_pair_the_oracle_left_out(topology: str, tmp_path: Path) -> None:
    pairs = _oracle_pairs(topology)
    assert routing._pairs(_loaded(_plan(topology, tmp_path, drop={pairs[1]}))) == pairs
    assert routing._pairs(_loaded(_plan(topology, tmp_path))) == pairs
    assert routing._pairs(None) == [("exporter", "importer")]  # collection outside a guest run


def test_a_routing_test_fails_for_a_pair_without_prediction(tmp_path: Path) -> None:
    (exporter, importer), other = _oracle_pairs("switch-p2p-amd")[:2]
    plan = _plan("switch-p2p-amd", tmp_path, drop={(exporter, importer)})
    case = case_module.ImportCase(_loaded(plan), None, plan.device(exporter), {})
    # A skip must not escape the test (it would pass the test run): catch both and insist on the failure.
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as info:
        routing._route(case, (exporter, importer))
    assert info.type is pytest.fail.Exception, f"not a failure: {info.value}"
    assert f"no routing expectation for the pair {exporter} -> {importer} " in str(info.value)
    routes = {(p.exporter, p.importer): p.route for p in predict_pairs(load_topology("switch-p2p-amd"))}
    assert routing._route(case, other) == routes[other]


@pytest.mark.parametrize("none_at_all", [True, False])
def test_case_expectation_fails_not_skips_for_a_missing_pair(none_at_all: bool, tmp_path: Path) -> None:
    """hil_importer.case.expectation() (data and importer tests ask through it) used to SKIP when the
    plan had no prediction for the pair, or none at all: an oracle that predicts nothing turned those
    suites into skips."""
    (exporter, importer), other = _oracle_pairs("switch-p2p-amd")[:2]
    plan = _loaded(_plan("switch-p2p-amd", tmp_path, drop=None if none_at_all else {(exporter, importer)}))
    case = case_module.ImportCase(plan, None, plan.device(exporter), {})
    calls: dict[str, Callable[[], object]] = {
        "expectation()": lambda: case_module.expectation(plan, exporter, importer),
        "ImportCase.expectation": lambda: case.expectation(importer),
        "ImportCase.route": lambda: case.route(importer),
    }
    for what, call in calls.items():
        # Catch both: a skip escaping here would pass this test, which must insist on the failure.
        with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as info:
            call()
        assert info.type is pytest.fail.Exception, f"{what}: not a failure: {info.value}"
        assert f"no routing expectation for the pair {exporter} -> {importer} " in str(info.value), what
    if not none_at_all:
        route = {(p.exporter, p.importer): p.route for p in predict_pairs(load_topology("switch-p2p-amd"))}
        assert case.expectation(other[1]) == plan.expectation(*other)
        assert case.route(other[1]) == route[other]


def _run_routing_suite(plan: GuestPlan, select: str) -> dict[str, dict[str, Any]]:
    """guest_tests/test_routing.py through pytest and the results plugin, as harness.guest.entry runs it
    in the guest (the tests selected must need no device)."""
    plan_path = plan.run_dir / "plan.json"
    dump_plan(plan, plan_path)
    tests = str(GUEST_TESTS_DIR)
    env = {**os.environ, "HIL_PLAN": str(plan_path), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("HIL_CONSOLE_FD", None)
    command = [sys.executable, "-m", "pytest", str(GUEST_TESTS_DIR / "test_routing.py"), "-p",
               "harness.guest.plugin", "-p", "no:cacheprovider", "-q", "--color=no", f"--rootdir={tests}",
               f"--confcutdir={tests}", "-k", select]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = plan.results_path.read_text().splitlines() if plan.results_path.exists() else []
    records = {r["name"]: r for r in map(json.loads, lines)}
    assert records, proc.stdout + proc.stderr
    return records


@pytest.mark.parametrize("drop_all", [True, False])
def test_routing_suite_fails_a_pair_the_oracle_did_not_predict(drop_all: bool, tmp_path: Path) -> None:
    pairs = _oracle_pairs("switch-p2p-amd")
    missing = set(pairs) if drop_all else {pairs[0]}
    records = _run_routing_suite(
        _plan("switch-p2p-amd", tmp_path, drop=None if drop_all else missing), "test_oracle_predicts_pair"
    )
    routes = {(p.exporter, p.importer): p.route for p in predict_pairs(load_topology("switch-p2p-amd"))}
    assert len(records) == len(pairs)
    for exporter, importer in pairs:
        record = records[f"test_routing.py::test_oracle_predicts_pair[{exporter}-{importer}]"]
        if (exporter, importer) in missing:
            assert record["outcome"] == "failed", record
            assert f"no routing expectation for the pair {exporter} -> {importer}" in record["message"]
        else:
            assert record["outcome"] == "passed", record
            assert record["details"] == {"route": routes[exporter, importer]}

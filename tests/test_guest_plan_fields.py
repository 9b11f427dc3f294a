"""The plan's fields for a raw reproduction (host_agent) and the prepared byte-code (pycache_prefix)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.guest.plan import GuestPlan, PlanError, plan_from_dict, plan_to_dict


def _plan() -> GuestPlan:
    return GuestPlan(
        token="ab12",
        run_dir=Path("/run/x"),
        results_path=Path("/run/x/guest-results.jsonl"),
        topology="t",
        kernel="k",
        devices=(),
        tests_dir=Path("/tests"),
    )


def test_defaults_are_the_harness_cell() -> None:
    plan = _plan()
    assert plan.host_agent is True and plan.pycache_prefix is None
    raw = plan_to_dict(plan)
    assert raw["host_agent"] is True and raw["pycache_prefix"] is None
    # A plan written before these fields existed still loads, as a harness cell.
    del raw["host_agent"], raw["pycache_prefix"]
    assert plan_from_dict(raw) == plan


def test_round_trip_of_a_raw_plan_with_a_prefix() -> None:
    plan = dataclasses.replace(_plan(), host_agent=False, pycache_prefix=Path("/cache/pycache"))
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan


@pytest.mark.parametrize(("key", "value"), [("host_agent", "no"), ("host_agent", 0), ("pycache_prefix", 3)])
def test_bad_values_name_the_field(key: str, value: object) -> None:
    raw = {**plan_to_dict(_plan()), key: value}
    with pytest.raises(PlanError, match=key):
        plan_from_dict(raw)

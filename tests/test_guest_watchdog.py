"""The guest watchdog's phases (harness.guest.phases), the per-test limit in the plan, and the plugin's
side of the phase pipe. The watchdog run end to end (entry.run on the host) is in test_guest_entry.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.guest import entry
from harness.guest.phases import PHASE_FD_ENV, PhaseState, encode_step
from harness.guest.plan import GuestPlan, PlanError, dump_plan, plan_from_dict, plan_to_dict

T0 = 1000.0  # the watchdog's clock when the entry started


def _state(*steps: tuple[float, bytes]) -> PhaseState:
    state = PhaseState(T0)
    for at, line in steps:
        state.feed(line, T0 + at)
    return state


COLLECTED = (30.0, encode_step("collected", count=4))


def test_startup_has_only_the_overall_deadline() -> None:
    state = _state()
    assert state.phase == "startup"
    assert state.next_expiry(60.0) == T0 + 60.0
    assert state.next_expiry(None) is None
    assert state.expired(T0 + 59.9, 60.0) is None
    assert state.expired(T0 + 60.0, 60.0) == {
        "status": "timeout",
        "phase": "startup",
        "deadline_s": 60.0,
        "elapsed": 60.0,
    }


def test_a_test_is_hung_after_its_own_limit_counted_from_its_begin() -> None:
    state = _state(COLLECTED, (31.0, encode_step("begin", name="t.py::test_x", timeout_s=10)))
    assert state.phase == "test" and state.test == "t.py::test_x"
    assert state.next_expiry(100.0) == T0 + 41.0
    assert state.expired(T0 + 40.9, 100.0) is None
    assert state.expired(T0 + 41.5, 100.0) == {
        "status": "hung",
        "phase": "test",
        "startup_s": 30.0,
        "collected": 4,
        "test": "t.py::test_x",
        "test_started": 31.0,
        "test_elapsed": 10.5,
        "test_timeout_s": 10.0,
        "deadline_s": 100.0,
        "elapsed": 41.5,
    }


def test_past_both_limits_the_test_is_named_hung() -> None:
    state = _state(COLLECTED, (31.0, encode_step("begin", name="t.py::test_x", timeout_s=10)))
    done = state.expired(T0 + 45.0, 40.0)
    assert done is not None and done["status"] == "hung" and done["test"] == "t.py::test_x"


def test_overall_deadline_within_the_test_limit_is_a_timeout_naming_the_test() -> None:
    state = _state(COLLECTED, (31.0, encode_step("begin", name="t.py::test_x", timeout_s=None)))
    assert state.next_expiry(40.0) == T0 + 40.0
    done = state.expired(T0 + 40.0, 40.0)
    assert done is not None
    assert (done["status"], done["phase"], done["test"], done["test_elapsed"]) == (
        "timeout",
        "test",
        "t.py::test_x",
        9.0,
    )
    assert done["test_timeout_s"] is None


@pytest.mark.parametrize(
    ("last", "phase"),
    [(encode_step("end", name="t.py::test_x"), "between"), (encode_step("finish"), "finish")],
)
def test_after_a_test_only_the_overall_deadline_applies(last: bytes, phase: str) -> None:
    state = _state(
        COLLECTED,
        (31.0, encode_step("begin", name="t.py::test_x", timeout_s=1)),
        (31.5, encode_step("end", name="t.py::test_x")),
        (31.6, last),
    )
    assert state.phase == phase
    assert state.expired(T0 + 50.0, 60.0) is None, "the ended test's limit no longer applies"
    done = state.expired(T0 + 60.0, 60.0)
    assert done is not None and done["status"] == "timeout" and done["phase"] == phase
    assert done["last_test"] == "t.py::test_x" and "test" not in done


def test_collected_but_nothing_begun_is_between() -> None:
    done = _state(COLLECTED).expired(T0 + 60.0, 60.0)
    assert done == {
        "status": "timeout",
        "phase": "between",
        "startup_s": 30.0,
        "collected": 4,
        "deadline_s": 60.0,
        "elapsed": 60.0,
    }


@pytest.mark.parametrize(
    "line", [b"", b"not json", b"[1]", b'{"step": "bogus"}', encode_step("begin", name="x", timeout_s=True)]
)
def test_lines_that_say_nothing_change_nothing_dangerous(line: bytes) -> None:
    state = _state((1.0, line))
    assert state.phase in ("startup", "test")
    assert state.test_timeout_s is None, "a limit that is not a positive number is no limit"


# --- the plan's per-test limit --------------------------------------------------------------------


def _plan(tmp_path: Path, **fields: Any) -> GuestPlan:
    return GuestPlan(
        token="ab12",
        run_dir=tmp_path,
        results_path=tmp_path / "guest-results.jsonl",
        topology="t",
        kernel="k",
        devices=(),
        tests_dir=tmp_path / "tests",
        **fields,
    )


def test_test_limit_defaults_to_half_the_guest_deadline(tmp_path: Path) -> None:
    assert _plan(tmp_path, guest_deadline_s=100.0).test_limit_s() == 50.0
    assert _plan(tmp_path, guest_deadline_s=100.0, test_timeout_s=7.0).test_limit_s() == 7.0
    assert _plan(tmp_path).test_limit_s() is None


def test_test_timeout_round_trips_and_is_validated(tmp_path: Path) -> None:
    plan = _plan(tmp_path, guest_deadline_s=100.0, test_timeout_s=7.5)
    raw = plan_to_dict(plan)
    assert raw["test_timeout_s"] == 7.5
    assert plan_from_dict(raw) == plan
    del raw["test_timeout_s"]  # plans written before the field existed
    assert plan_from_dict(raw).test_timeout_s is None
    for bad in ("soon", True, 0, -1):
        with pytest.raises(PlanError, match="test_timeout_s"):
            plan_from_dict({**raw, "test_timeout_s": bad})


# --- the plugin's side of the pipe ------------------------------------------------------------------

SUITE = """
import pytest

def test_default():
    pass

@pytest.mark.hil_timeout(2.5)
def test_marked():
    pass

@pytest.mark.hil_timeout(seconds=4)
def test_marked_kw():
    pass

def test_deselected():
    pass
"""


def _run_plugin(tmp_path: Path, source: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_s.py").write_text(source)
    plan = _plan(tmp_path, guest_deadline_s=100.0, pytest_args=("-k", "not deselected"))
    dump_plan(plan, tmp_path / "plan.json")
    read, write = os.pipe()
    env = entry.pytest_env(os.environ, str(tmp_path / "plan.json"), 1)
    env[PHASE_FD_ENV] = str(write)
    try:
        proc = subprocess.run(
            entry.pytest_command(plan, sys.executable),
            env=env,
            pass_fds=(write,),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    with os.fdopen(read, "rb") as pipe:
        steps = [json.loads(line) for line in pipe.read().splitlines()]
    return proc, steps


def test_plugin_reports_collection_each_test_with_its_limit_and_the_finish(tmp_path: Path) -> None:
    proc, steps = _run_plugin(tmp_path, SUITE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PytestUnknownMarkWarning" not in proc.stdout, "the plugin registers hil_timeout"
    assert steps == [
        {"step": "collected", "count": 3},
        {"step": "begin", "name": "test_s.py::test_default", "timeout_s": 50.0},
        {"step": "end", "name": "test_s.py::test_default"},
        {"step": "begin", "name": "test_s.py::test_marked", "timeout_s": 2.5},
        {"step": "end", "name": "test_s.py::test_marked"},
        {"step": "begin", "name": "test_s.py::test_marked_kw", "timeout_s": 4.0},
        {"step": "end", "name": "test_s.py::test_marked_kw"},
        {"step": "finish"},
    ]


def test_a_bad_hil_timeout_stops_the_run_before_any_test(tmp_path: Path) -> None:
    proc, steps = _run_plugin(
        tmp_path, "import pytest\n\n@pytest.mark.hil_timeout(0)\ndef test_x():\n    pass\n"
    )
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "test_s.py::test_x: hil_timeout(seconds) must be positive, got 0" in proc.stderr
    assert not any(s["step"] == "begin" for s in steps)

"""harness.guest.plugin: one durable JSONL record per test, and a console frame, in a real pytest run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.console.events import Marker, scan
from harness.guest.plan import GuestPlan, dump_plan
from harness.results.model import parse_records

pytest_plugins = ["pytester"]

TOKEN = "feed42"

OUTCOMES_SUITE = """
import pytest

def test_pass(hil_details):
    hil_details["size"] = 4096
    hil_details["errno"] = "EINVAL"

def test_fail():
    assert 1 + 1 == 3

def test_skip():
    pytest.skip("no exporter in this topology")

@pytest.mark.skipif(True, reason="marker skip")
def test_skipif():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_setup_error(broken):
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_teardown_error(bad_teardown, hil_details):
    hil_details["ran"] = True

def test_fail_and_teardown_error(bad_teardown):
    assert False, "body failed"

@pytest.mark.xfail(reason="known kernel bug")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="maybe fixed", strict=False)
def test_xpass():
    pass

@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpass_strict():
    pass

def test_unjsonable_detail(hil_details):
    hil_details["obj"] = object()
"""


def _plan(path: Path) -> Path:
    plan = GuestPlan(
        token=TOKEN,
        run_dir=path,
        results_path=path / "guest-results.jsonl",
        topology="t",
        kernel="k",
        devices=(),
        tests_dir=path,
    )
    dump_plan(plan, path / "plan.json")
    return path / "plan.json"


@pytest.fixture
def guest_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$HIL_PLAN for the pytest under test; returns the results file."""
    monkeypatch.setenv("HIL_PLAN", str(_plan(pytester.path)))
    monkeypatch.delenv("HIL_CONSOLE_FD", raising=False)
    return pytester.path / "guest-results.jsonl"


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    # A subprocess: the plugin keeps per-process state (its copy of stdout) from import time.
    return pytester.runpytest_subprocess("-p", "harness.guest.plugin", "-p", "no:cacheprovider", "-q")


def _records(results: Path) -> dict[str, dict[str, Any]]:
    lines = results.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    by_name = {r["name"].split("::")[-1]: r for r in records}
    assert len(by_name) == len(records), "one record per test"
    return by_name


def test_outcomes_messages_and_details(pytester: pytest.Pytester, guest_env: Path) -> None:
    pytester.makepyfile(test_suite=OUTCOMES_SUITE)
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    records = _records(guest_env)
    outcome = {name: r["outcome"] for name, r in records.items()}
    assert outcome == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_skip": "skipped",
        "test_skipif": "skipped",
        "test_setup_error": "error",
        "test_teardown_error": "error",
        "test_fail_and_teardown_error": "failed",
        "test_xfail": "xfailed",
        "test_xpass": "xpassed",
        "test_xpass_strict": "failed",
        "test_unjsonable_detail": "passed",
    }
    message = {name: r["message"] for name, r in records.items()}
    assert message["test_pass"] == ""
    assert message["test_fail"] == "assert (1 + 1) == 3"
    assert message["test_skip"] == "no exporter in this topology"
    assert message["test_skipif"] == "marker skip"
    assert "RuntimeError: setup broke" in message["test_setup_error"]
    assert message["test_teardown_error"].startswith("teardown: RuntimeError: teardown broke")
    assert "body failed" in message["test_fail_and_teardown_error"]
    assert "teardown: RuntimeError: teardown broke" in message["test_fail_and_teardown_error"]
    assert message["test_xfail"] == "known kernel bug"
    assert message["test_xpass"] == "maybe fixed"
    assert "XPASS(strict)" in message["test_xpass_strict"]
    assert records["test_pass"]["details"] == {"size": 4096, "errno": "EINVAL"}
    assert records["test_teardown_error"]["details"] == {"ran": True}
    assert records["test_fail"]["details"] == {}
    assert records["test_unjsonable_detail"]["details"]["obj"].startswith("<object object")
    assert all(isinstance(r["duration"], float) and r["duration"] >= 0 for r in records.values())


def test_records_load_into_the_host_results_model(pytester: pytest.Pytester, guest_env: Path) -> None:
    pytester.makepyfile(test_suite=OUTCOMES_SUITE)
    _run(pytester)
    loaded = parse_records(guest_env.read_text(), str(guest_env))
    assert loaded.truncated_tail is None
    assert len(loaded.records) == 11
    [passed] = [r for r in loaded.records if r.name.endswith("::test_pass")]
    assert passed.details == {"size": 4096, "errno": "EINVAL"}


def test_console_frames_follow_the_records(pytester: pytest.Pytester, guest_env: Path) -> None:
    pytester.makepyfile(test_suite=OUTCOMES_SUITE)
    result = _run(pytester)
    frames = [e for e in scan(result.stdout.str(), TOKEN) if isinstance(e, Marker)]
    records = [json.loads(line) for line in guest_env.read_text().splitlines()]
    # Collection's end first (the host's timeline), then each test is announced (begin) before its
    # record's frame (test), in run order.
    assert frames[0].kind == "collected" and frames[0].payload["count"] == len(records)
    frames = frames[1:]
    assert [f.kind for f in frames] == ["begin", "test"] * len(records)
    assert [f.payload["name"] for f in frames[::2]] == [r["name"] for r in records]
    assert [{k: f.payload[k] for k in ("name", "outcome")} for f in frames[1::2]] == [
        {"name": r["name"], "outcome": r["outcome"]} for r in records
    ]


def test_each_record_is_on_disk_before_the_next_test(pytester: pytest.Pytester, guest_env: Path) -> None:
    pytester.makepyfile(
        test_order=f"""
        import json
        RESULTS = {str(guest_env)!r}

        def test_first():
            pass

        def test_second():
            with open(RESULTS) as f:
                names = [json.loads(line)["name"] for line in f]
            assert names == ["test_order.py::test_first"]
        """
    )
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_collection_error_is_recorded(pytester: pytest.Pytester, guest_env: Path) -> None:
    pytester.makepyfile(test_broken="import no_such_module_here\n\ndef test_x():\n    pass\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    [record] = [json.loads(line) for line in guest_env.read_text().splitlines()]
    assert record["name"] == "test_broken.py"
    assert record["outcome"] == "error"
    assert "no_such_module_here" in record["message"]


def test_without_plan_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIL_PLAN", raising=False)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "HIL_PLAN" in result.stderr.str()


def test_collected_frame_carries_the_count_and_guest_times(
    pytester: pytest.Pytester, guest_env: Path
) -> None:
    pytester.makepyfile(
        test_few="import pytest\n\n@pytest.mark.parametrize('n', range(3))\ndef test_n(n):\n    pass\n",
        test_deselected="def test_other():\n    pass\n",
    )
    result = pytester.runpytest_subprocess(
        "-p", "harness.guest.plugin", "-p", "no:cacheprovider", "-q", "-k", "test_n"
    )
    frames = [e for e in scan(result.stdout.str(), TOKEN) if isinstance(e, Marker)]
    collected = [f.payload for f in frames if f.kind == "collected"]
    assert len(collected) == 1
    assert collected[0]["count"] == 3  # what will run, after -k
    # Seconds since boot (this host's, here) and since the parent (the guest entry, here pytester's
    # runner) was started: both positive, and the parent started after boot.
    assert 0 < collected[0]["t"] < collected[0]["uptime"]
    assert frames.index(next(f for f in frames if f.kind == "collected")) == 0

"""harness.guest.entry, on the host: the pytest command, the frames, and the deadline path with every
sysrq/power-off action replaced (run for real, they would act on the host)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.console.events import Marker, scan
from harness.guest import entry
from harness.guest.plan import GuestPlan, dump_plan

TOKEN = "c0ffee"
REPO = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path, test_source: str, deadline: float | None = None) -> tuple[GuestPlan, Path]:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_one.py").write_text(test_source)
    plan = GuestPlan(
        token=TOKEN,
        run_dir=tmp_path,
        results_path=tmp_path / "guest-results.jsonl",
        topology="t",
        kernel="k",
        devices=(),
        tests_dir=tests,
        pytest_args=("-k", "not excluded"),
        guest_deadline_s=deadline,
    )
    dump_plan(plan, tmp_path / "plan.json")
    return plan, tmp_path / "plan.json"


def _frames(text: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.kind, e.payload) for e in scan(text, TOKEN) if isinstance(e, Marker)]


def test_pytest_command(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, "")
    cmd = entry.pytest_command(plan, "/py")
    tests = str(plan.tests_dir)
    assert cmd[:4] == ["/py", "-m", "pytest", tests]
    assert cmd[-2:] == ["-k", "not excluded"]
    for arg in (
        "-p",
        "harness.guest.plugin",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--rootdir={tests}",
        f"--confcutdir={tests}",
    ):
        assert arg in cmd


def test_pytest_env() -> None:
    env = entry.pytest_env({"PATH": "/bin", "PYTHONPATH": "/x"}, "/run/plan.json", 9)
    assert env["HIL_PLAN"] == "/run/plan.json"
    assert env["HIL_CONSOLE_FD"] == "9"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONPATH"] == f"{REPO}:/x"
    assert env["PATH"] == "/bin"
    assert entry.pytest_env({}, "/p", 3)["PYTHONPATH"] == str(REPO)
    # No scan of every installed distribution's entry points over 9p: the guest needs no
    # third-party plugin, and the ones it uses are named with -p.
    assert env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] == "1"


def test_pytest_command_points_python_at_the_prepared_byte_code(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, "")
    prepared = dataclasses.replace(plan, pycache_prefix=tmp_path / "pyc")
    cmd = entry.pytest_command(prepared, "/py")
    assert cmd[:5] == ["/py", "-X", f"pycache_prefix={tmp_path / 'pyc'}", "-m", "pytest"]
    assert cmd[5:] == entry.pytest_command(plan, "/py")[3:]  # the rest as without a prefix


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("console=ttyS0 virtme_hostname=virtme-ng init=/x/virtme-ng-init", True),
        ("console=ttyS0 hil_guest", True),
        ("console=ttyS0 quiet panic=1", False),
    ],
)
def test_is_guest(tmp_path: Path, cmdline: str, expected: bool) -> None:
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    assert entry.is_guest(tmp_path / "cmdline") is expected
    assert entry.is_guest(tmp_path / "missing") is False


def test_whole_run_in_a_subprocess(tmp_path: Path) -> None:
    _, plan_path = _plan(tmp_path, "def test_ok():\n    pass\n\ndef test_bad():\n    assert 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.guest.entry", str(plan_path)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    frames = _frames(proc.stdout)
    assert [kind for kind, _ in frames[:2]] == ["start", "collected"]
    assert frames[1][1]["count"] == 2
    assert frames[0][1]["python"] == ".".join(map(str, sys.version_info[:3]))
    frames = [frames[0], *frames[2:]]
    assert [kind for kind, _ in frames] == ["start", "begin", "test", "begin", "test", "done"]
    assert [p["name"] for _, p in frames[1:5:2]] == [p["name"] for _, p in frames[2:5:2]]
    assert [p["outcome"] for _, p in frames[2:5:2]] == ["passed", "failed"]
    assert frames[5][1]["status"] == "finished" and frames[5][1]["exit_code"] == 1
    records = [json.loads(line) for line in (tmp_path / "guest-results.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["passed", "failed"]
    assert "assert 0" in proc.stdout, "pytest's own output reaches the console"


def test_bad_plan_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plan.json").write_text("{}")
    assert entry.main([str(tmp_path / "plan.json")]) == entry.EXIT_INFRA
    assert "token: missing" in capsys.readouterr().err
    assert entry.main([]) == 2


class _Recorder:
    def __init__(self) -> None:
        self.sysrq: list[str] = []
        self.powered_off = False
        self.procs: list[subprocess.Popen[bytes]] = []


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Recorder]:
    rec = _Recorder()
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        rec.procs.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen)  # entry calls subprocess.Popen
    monkeypatch.setattr(entry, "_sysrq", rec.sysrq.append)
    monkeypatch.setattr(entry, "_power_off", lambda: setattr(rec, "powered_off", True))
    monkeypatch.setattr(entry, "SYSRQ_ENABLE", tmp_path / "sysrq")
    monkeypatch.setattr(entry, "CONSOLE_SETTLE_S", 0.0)
    monkeypatch.chdir(tmp_path)  # run() changes directory
    yield rec
    for proc in rec.procs:
        proc.kill()
        proc.wait()


HANGING = "import time\n\ndef test_hang():\n    time.sleep(60)\n"


def test_deadline_in_guest_dumps_tasks_and_powers_off(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "is_guest", lambda: True)
    plan, plan_path = _plan(tmp_path, HANGING, deadline=6.0)
    assert entry.run(plan, str(plan_path)) == entry.EXIT_INFRA
    assert recorder.sysrq == ["w", "l"]
    assert recorder.powered_off
    assert (tmp_path / "sysrq").read_text() == "1"
    kind, done = _frames(capfd.readouterr().out)[-1]
    assert kind == "done" and done["status"] == "hung" and done["deadline_s"] == 6.0
    # Not before its limit: with no plan.test_timeout_s nor marker, half the overall deadline.
    assert done["test_timeout_s"] == 3.0 and done["test_elapsed"] >= 3.0
    assert done["test"] == "test_one.py::test_hang" and done["phase"] == "test"


def test_deadline_outside_a_guest_kills_pytest_instead(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "is_guest", lambda: False)
    plan, plan_path = _plan(tmp_path, HANGING, deadline=6.0)
    assert entry.run(plan, str(plan_path)) == entry.EXIT_INFRA
    assert recorder.sysrq == [] and not recorder.powered_off
    assert recorder.procs[0].wait(timeout=10) != 0
    assert _frames(capfd.readouterr().out)[-1][1]["status"] == "hung"


# --- the watchdog tells slow start-up, a hung test and a suite out of time apart (issue 7) -------------


def _plan_with(
    tmp_path: Path, source: str, deadline: float, test_timeout: float | None = None
) -> tuple[GuestPlan, Path]:
    plan, plan_path = _plan(tmp_path, source, deadline=deadline)
    plan = dataclasses.replace(plan, test_timeout_s=test_timeout)
    dump_plan(plan, plan_path)
    return plan, plan_path


# Module-level sleeps stand for Python and pytest starting over 9p on a slow machine: they happen
# while pytest collects, before any test begins.
SLOW_START = "import time\n\nimport pytest\n\ntime.sleep({startup})\n\n"


def test_slow_startup_past_the_test_limit_is_not_hung(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "is_guest", lambda: True)
    source = SLOW_START.format(startup=5.0) + "def test_quick():\n    pass\n"
    plan, plan_path = _plan_with(tmp_path, source, deadline=60.0, test_timeout=2.5)
    assert entry.run(plan, str(plan_path)) == 0
    assert recorder.sysrq == [] and not recorder.powered_off
    kind, done = _frames(capfd.readouterr().out)[-1]
    assert kind == "done" and done["status"] == "finished" and done["exit_code"] == 0, done
    assert done["elapsed"] >= 5.0, "start-up really took longer than the per-test limit"


def test_a_test_blocked_past_its_limit_is_hung_and_named(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "is_guest", lambda: True)
    source = SLOW_START.format(startup=2.0) + (
        "def test_quick():\n    pass\n\n"
        "@pytest.mark.hil_timeout(1.5)\ndef test_blocks():\n    time.sleep(60)\n\n"
        "def test_never_reached():\n    pass\n"
    )
    plan, plan_path = _plan_with(tmp_path, source, deadline=60.0)
    started = time.monotonic()
    assert entry.run(plan, str(plan_path)) == entry.EXIT_INFRA
    assert time.monotonic() - started < 30.0, "the per-test limit fired, not the overall deadline"
    assert recorder.sysrq == ["w", "l"] and recorder.powered_off
    frames = _frames(capfd.readouterr().out)
    kind, done = frames[-1]
    assert kind == "done" and done["status"] == "hung" and done["phase"] == "test", done
    assert done["test"] == "test_one.py::test_blocks"
    assert done["test_timeout_s"] == 1.5 and 1.5 <= done["test_elapsed"] < 10.0, done
    assert done["deadline_s"] == 60.0
    # The limit counts from the test's begin, not from the entry's start (start-up took 2 s).
    assert done["test_started"] >= 2.0
    assert done["elapsed"] >= done["test_started"] + done["test_elapsed"] - 0.1
    assert done["startup_s"] >= 2.0 and done["collected"] == 3
    assert ("begin", {"name": "test_one.py::test_blocks"}) in frames


def test_overall_deadline_during_startup_is_a_timeout_not_a_hang(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "is_guest", lambda: False)
    source = SLOW_START.format(startup=60.0) + "def test_never_collected():\n    pass\n"
    plan, plan_path = _plan_with(tmp_path, source, deadline=2.0, test_timeout=1.0)
    assert entry.run(plan, str(plan_path)) == entry.EXIT_INFRA
    assert recorder.procs[0].wait(timeout=10) != 0, "pytest was killed"
    kind, done = _frames(capfd.readouterr().out)[-1]
    assert kind == "done" and done["status"] == "timeout" and done["phase"] == "startup", done
    assert done["deadline_s"] == 2.0 and done["elapsed"] >= 2.0
    assert "test" not in done and "collected" not in done


def test_overall_deadline_inside_a_test_within_its_limit_is_a_timeout_naming_it(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "is_guest", lambda: False)
    source = "import time\n\nimport pytest\n\n" + (
        "@pytest.mark.hil_timeout(100)\ndef test_slow():\n    time.sleep(60)\n"
    )
    plan, plan_path = _plan_with(tmp_path, source, deadline=8.0)
    assert entry.run(plan, str(plan_path)) == entry.EXIT_INFRA
    kind, done = _frames(capfd.readouterr().out)[-1]
    assert kind == "done" and done["status"] == "timeout" and done["phase"] == "test", done
    assert done["test"] == "test_one.py::test_slow" and done["test_timeout_s"] == 100
    assert 0 < done["test_elapsed"] < 100 and done["elapsed"] >= 8.0

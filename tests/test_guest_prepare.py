"""harness.guest.prepare: byte-code and pytest's assertion rewrites compiled on the host under a pycache
prefix, where the guest's interpreters (pointed at it by the entry's command line) find them."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from _pytest.assertion import rewrite

from harness.guest import prepare
from harness.guest.entry import pytest_command, pytest_env
from harness.guest.plan import GuestPlan, dump_plan

REPO = Path(__file__).resolve().parents[1]
TEST_SOURCE = "import helper\n\ndef test_sum():\n    assert helper.VALUE + 1 == 3\n"


def _plan(tmp_path: Path, pytest_args: tuple[str, ...] = ()) -> GuestPlan:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text("import pytest\n\n@pytest.fixture\ndef answer():\n    return 42\n")
    (tests / "helper.py").write_text("VALUE = 2\n")
    (tests / "test_one.py").write_text(TEST_SOURCE)
    run = tmp_path / "run"
    run.mkdir()
    return GuestPlan(
        token="c0ffee",
        run_dir=run,
        results_path=run / "guest-results.jsonl",
        topology="t",
        kernel="k",
        devices=(),
        tests_dir=tests,
        pytest_args=pytest_args,
    )


def _pyc(prefix: Path, source: Path, rewritten: bool = False) -> Path:
    """Where Python (or pytest, for a rewritten module) looks for the byte-code of `source` under `prefix`."""
    tail = rewrite.PYC_TAIL if rewritten else f".{sys.implementation.cache_tag}.pyc"
    return prefix.joinpath(*source.parts[1:-1], source.stem + tail)


def test_python_options_point_the_interpreter_at_the_prefix(tmp_path: Path) -> None:
    assert prepare.python_options(None) == []
    options = prepare.python_options(tmp_path / "pyc")
    assert options == ["-X", f"pycache_prefix={tmp_path / 'pyc'}"]
    out = subprocess.run(
        [sys.executable, *options, "-c", "import sys; print(sys.pycache_prefix)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == str(tmp_path / "pyc")


def test_fingerprint_follows_the_sources(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "notes.txt").write_text("not python")
    first = prepare.fingerprint(sys.executable, [root])
    assert prepare.fingerprint(sys.executable, [root]) == first
    (root / "notes.txt").write_text("still not python, and not a reason to prepare again")
    assert prepare.fingerprint(sys.executable, [root]) == first
    (root / "pkg" / "__pycache__").mkdir()  # what Python writes is not a source
    (root / "pkg" / "__pycache__" / "a.py").write_text("")
    assert prepare.fingerprint(sys.executable, [root]) == first
    (root / "pkg" / "a.py").write_text("A = 22\n")  # a changed size and mtime
    second = prepare.fingerprint(sys.executable, [root])
    assert second != first
    (root / "pkg" / "b.py").write_text("")
    assert prepare.fingerprint(sys.executable, [root]) != second
    assert prepare.fingerprint("/other/python", [root]) != prepare.fingerprint(sys.executable, [root])
    extra = tmp_path / "site"
    extra.mkdir()
    with_extra = prepare.fingerprint(sys.executable, [root], [extra])
    os.utime(extra, ns=(1, 1))  # a package installed or removed changes its directory
    assert prepare.fingerprint(sys.executable, [root], [extra]) != with_extra


def test_prepare_compiles_what_the_guest_imports_and_rewrites(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    prefix = tmp_path / "pyc"
    done = prepare.prepare(plan, prefix)
    assert done.error is None and done.fresh
    tests = plan.tests_dir
    # pytest's rewrites of the test module and conftest.py, named the way pytest looks them up.
    for source in (tests / "test_one.py", tests / "conftest.py"):
        cached = _pyc(prefix, source, rewritten=True)
        assert cached.is_file(), cached
    # plain byte-code of a module the test imports, of the guest entry, of pytest itself
    assert _pyc(prefix, tests / "helper.py").is_file()
    assert _pyc(prefix, REPO / "harness" / "guest" / "entry.py").is_file()
    spec = importlib.util.find_spec("_pytest.main")
    assert spec is not None and spec.origin is not None
    assert _pyc(prefix, Path(spec.origin)).is_file()
    # Nothing of the cell's own: no results file, nothing in the run directory or next to the tests.
    assert list(plan.run_dir.iterdir()) == []
    assert not (tests / "__pycache__").exists()
    again = prepare.prepare(plan, prefix)
    assert again.error is None and not again.fresh


def test_the_guest_command_uses_the_prepared_rewrite(tmp_path: Path) -> None:
    """Run as the guest runs it (read-only habits: PYTHONDONTWRITEBYTECODE) and check from pytest's own
    trace that it found the rewritten module instead of rewriting it again."""
    plan = _plan(tmp_path)
    prefix = tmp_path / "pyc"
    assert prepare.prepare(plan, prefix).error is None
    guest_plan = dataclasses.replace(plan, pycache_prefix=prefix)
    plan_path = plan.run_dir / "plan.json"
    dump_plan(guest_plan, plan_path)
    env = pytest_env(os.environ, str(plan_path), 1)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    proc = subprocess.run(
        [*pytest_command(guest_plan, sys.executable), "--debug=" + str(tmp_path / "trace.log")],
        env=env, cwd=plan.run_dir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trace = (tmp_path / "trace.log").read_text()
    test_file = plan.tests_dir / "test_one.py"
    assert f"found cached rewritten pyc for {test_file}" in trace
    assert f"rewriting {test_file!r}" not in trace


def test_a_changed_test_is_not_run_from_a_stale_rewrite(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    prefix = tmp_path / "pyc"
    assert prepare.prepare(plan, prefix).error is None
    test_file = plan.tests_dir / "test_one.py"
    test_file.write_text(TEST_SOURCE.replace("== 3", "== 4"))  # now fails
    guest_plan = dataclasses.replace(plan, pycache_prefix=prefix)
    dump_plan(guest_plan, plan.run_dir / "plan.json")
    proc = subprocess.run(
        pytest_command(guest_plan, sys.executable),
        env=pytest_env(os.environ, str(plan.run_dir / "plan.json"), 1),
        cwd=plan.run_dir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert "assert (2 + 1) == 4" in proc.stdout  # rewritten from the new source


def test_a_failed_preparation_says_why_and_leaves_no_stamp(tmp_path: Path) -> None:
    plan = _plan(tmp_path, pytest_args=("--no-such-option",))
    prefix = tmp_path / "pyc"
    done = prepare.prepare(plan, prefix)
    assert done.error is not None and "--no-such-option" in done.error
    assert list((prefix / prepare.STAMPS).glob("*")) == []


def test_a_plan_whose_tests_are_missing_is_an_error_not_a_crash(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    gone = dataclasses.replace(plan, tests_dir=tmp_path / "nowhere")
    done = prepare.prepare(gone, tmp_path / "pyc")
    assert done.error is not None

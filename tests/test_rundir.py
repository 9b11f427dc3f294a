"""Run directories are unique even for runs started in the same second with the same arguments."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import datetime
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.rundir import allocate_run_dir, check_out_dir, claim_out_dir, run_dir_name

NOW = datetime(2026, 11, 24, 10, 5, 12)
RACERS = 8


def test_name_is_time_topology_kernel() -> None:
    assert run_dir_name("switch-p2p", "src:debian-7.2+fix.mbox", NOW) == (
        "20261124-100512-switch-p2p-src-debian-7.2+fix.mbox"
    )
    third = run_dir_name("switch-p2p", "debian:7.2", NOW, attempt=3)
    assert third == "20261124-100512-switch-p2p-debian-7.2_3"


def test_second_allocation_in_the_same_second_gets_its_own_directory(tmp_path: Path) -> None:
    first = allocate_run_dir(tmp_path / "runs", "switch-p2p", "debian:7.2", NOW)
    (first / "plan.json").write_text("{}")
    second = allocate_run_dir(tmp_path / "runs", "switch-p2p", "debian:7.2", NOW)
    assert first.name == "20261124-100512-switch-p2p-debian-7.2"
    assert second.name == "20261124-100512-switch-p2p-debian-7.2_2"
    assert second.is_dir() and not any(second.iterdir())
    assert (first / "plan.json").read_text() == "{}"  # the first run's files are untouched


def test_threads_racing_for_the_same_name_never_share(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    barrier = threading.Barrier(RACERS)
    got: list[Path] = []
    lock = threading.Lock()

    def racer() -> None:
        barrier.wait()
        path = allocate_run_dir(root, "switch-p2p", "debian:7.2", NOW)
        with lock:
            got.append(path)

    threads = [threading.Thread(target=racer) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == RACERS
    assert len(set(got)) == RACERS
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in got)


def _allocate_in_child(
    root: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue[str]
) -> None:
    start.wait()
    out.put(str(allocate_run_dir(Path(root), "switch-p2p", "src:debian-7.2", NOW)))


def test_processes_racing_for_the_same_name_never_share(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_allocate_in_child, args=(str(root), start, out)) for _ in range(RACERS)]
    for proc in procs:
        proc.start()
    start.set()  # all released at once: they contend for the same name
    got = [out.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert len(set(got)) == RACERS
    expected = {run_dir_name("switch-p2p", "src:debian-7.2", NOW, n) for n in range(1, RACERS + 1)}
    assert {Path(p).name for p in got} == expected


def test_out_dir_is_created_or_accepted_when_empty(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "b"
    assert claim_out_dir(fresh) == fresh and fresh.is_dir()
    assert claim_out_dir(fresh) == fresh  # still empty: accepted


def test_out_dir_with_files_is_refused_naming_out(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"^--out: results directory .* exists and is not empty$"):
        claim_out_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--out: "):
        check_out_dir(tmp_path)
    assert (tmp_path / "results.json").read_text() == "{}"


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "x"
    file.write_text("")
    with pytest.raises(ConfigError, match=r"--out: .* exists and is not a directory"):
        claim_out_dir(file)
    with pytest.raises(ConfigError, match=r"--out: .* exists and is not a directory"):
        check_out_dir(file)


def test_check_out_dir_creates_nothing(tmp_path: Path) -> None:
    check_out_dir(tmp_path / "new")
    assert not (tmp_path / "new").exists()

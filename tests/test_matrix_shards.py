"""Shard assignment and the matrix progress line (pure)."""

from __future__ import annotations

import pytest

from harness.matrix.document import Shard, parse_shard
from harness.matrix.runner import MatrixProgress, default_jobs
from harness.matrix.shards import assign, shard_cells

IDS = [f"topo{i}__src-debian-7.2" for i in range(7)]


def test_every_cell_is_in_exactly_one_shard_and_the_split_is_stable() -> None:
    for total in (1, 2, 3, 4, 7, 9):
        shards = assign(IDS, total)
        flat = [c for s in shards for c in s]
        assert sorted(flat) == sorted(IDS) and len(flat) == len(IDS)
        assert assign(list(reversed(IDS)), total) == shards, "the order cells are given in must not matter"
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_durations_balance_the_shards() -> None:
    durations = dict.fromkeys(IDS, 10.0) | {IDS[0]: 60.0}
    shards = assign(IDS, 2, durations)
    loads = sorted(sum(durations[c] for c in s) for s in shards)
    assert loads == [60.0, 60.0], "the long cell alone on one shard, the six short ones on the other"
    assert assign(IDS, 2) != shards, "without durations it is a plain deal"


def test_a_cell_the_baseline_did_not_have_weighs_a_typical_cell() -> None:
    durations = {IDS[0]: 30.0, IDS[1]: 30.0}  # the other five are new tonight
    shards = assign(IDS, 2, durations)
    assert sorted(len(s) for s in shards) == [3, 4]


def test_shard_cells_picks_the_kth() -> None:
    assert shard_cells(IDS, Shard(2, 2)) == set(assign(IDS, 2)[1])


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2"])
def test_bad_shard_texts_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard(text)


def test_progress_says_done_running_left_and_an_estimate() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = MatrixProgress(4, 2, lines.append, clock=lambda: now[0])
    progress.start(0)
    progress.start(1)
    now[0] = 30.0
    progress.finish(0, "a", "passed")
    # one cell took 30 s; 2 left and 1 running (half done) on 2 at a time: 30 * 2.5 / 2
    assert lines[-1] == "cell a: passed; cells: 1 done, 1 running, 2 left, about 38 s to go"
    progress.start(2)
    progress.start(3)
    for key in (1, 2, 3):
        progress.finish(key, "x", "passed")
    assert lines[-1].endswith("cells: 4 done, 0 running, 0 left")


def test_default_jobs_one_tcg_vm_per_core_one_kvm_vm_per_its_vcpus() -> None:
    assert default_jobs(2, "tcg", 2) == 2
    assert default_jobs(8, "kvm", 2) == 4
    assert default_jobs(1, "kvm", 4) == 1


def test_an_interrupt_leaves_without_waiting_for_the_running_cells() -> None:
    """Ctrl-C during a -j 2 matrix: the pool must not be joined (a cell can take minutes); the process's
    end then takes the VMs down through their guardians."""
    import threading
    import time
    from pathlib import Path

    from harness.cell.request import CellResult
    from harness.matrix.runner import run_jobs
    from harness.results.model import RunMeta, Verdict

    release = threading.Event()
    said: list[str] = []

    def execute(job: str) -> CellResult:
        if job == "slow":
            release.wait(30)
        meta = RunMeta(job, "k", None, None, "tcg", "2026-11-30T00:00:00+00:00")
        return CellResult(Path(job), meta, [], Verdict.PASSED)

    def report(_job: str, _result: CellResult) -> None:
        raise KeyboardInterrupt  # the user pressed Ctrl-C while "slow" still runs

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(
            ["slow", "fast", "never"], execute, parallel=2, label=str, report=report, progress=said.append
        )
    assert time.monotonic() - t0 < 10, "run_jobs waited for the running cell"
    assert said[-1] == "stopped with 1 cell(s) running: they have no results; --resume runs them"
    release.set()

"""Cells run side by side (`-j N`), with the matrix's progress said as they end.

The runner knows nothing of VMs: it runs `execute(job)` for each job on a pool of N threads (a cell
spends its time waiting on its QEMU process, so threads are enough), hands each result to `report` in
the order they finish, and tells done/running/left with an estimate of the time left.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from harness.cell.request import CellResult

Job = TypeVar("Job")
Progress = Callable[[str], None]


def default_jobs(cores: int | None, accel: str, vcpus: int) -> int:
    """Cells at once when the user does not say. Under TCG a VM is one emulation thread whatever its vCPUs
    (harness.vm.command.TCG_ARGS): one VM per core. With KVM each vCPU is a thread that runs: one VM per
    `vcpus` cores. bench/bench_matrix.py measures what -j 2 gives on two cores."""
    cores = cores or 1
    if accel == "tcg":
        return cores
    return max(1, cores // max(1, vcpus))


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class MatrixProgress:
    """done/running/left and an estimate: the mean time of the cells done so far, times the cells not
    done, over the cells that run at once (running cells counted as half done)."""

    def __init__(self, total: int, parallel: int, say: Progress, clock: Callable[[], float] = time.monotonic):
        self.total, self.parallel, self._say, self._clock = total, parallel, say, clock
        self.done = self.running = 0
        self._spent = 0.0
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()

    def start(self, key: int) -> None:
        with self._lock:
            self.running += 1
            self._started[key] = self._clock()

    def finish(self, key: int, label: str, verdict: str) -> str:
        with self._lock:
            self.running -= 1
            self.done += 1
            self._spent += self._clock() - self._started.pop(key)
            line = f"cell {label}: {verdict}; cells: {self.status()}"
        self._say(line)
        return line

    def status(self) -> str:
        left = self.total - self.done - self.running
        text = f"{self.done} done, {self.running} running, {left} left"
        if self.done and (left or self.running):
            mean = self._spent / self.done
            remaining = mean * (left + self.running / 2) / max(1, min(self.parallel, left + self.running))
            text += f", about {_duration(remaining)} to go"
        return text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def run_jobs(
    jobs: Sequence[Job],
    execute: Callable[[Job], CellResult],
    *,
    parallel: int,
    label: Callable[[Job], str],
    report: Callable[[Job, CellResult], None],
    progress: Progress,
) -> list[CellResult]:
    """Every job's result, in the order of `jobs`. At most `parallel` run at once; `report` is called
    from this thread as each finishes (so reports never interleave)."""
    tracker = MatrixProgress(len(jobs), parallel, progress)
    results: dict[int, CellResult] = {}
    pending = list(enumerate(jobs))
    # Not a `with` block: leaving one waits for the running cells, and Ctrl-C must not wait minutes.
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="hil-cell")
    running: dict[Future[CellResult], int] = {}
    try:
        while pending or running:
            while pending and len(running) < parallel:
                index, job = pending.pop(0)
                tracker.start(index)
                running[pool.submit(execute, job)] = index
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                result = future.result()  # execute() records infra errors itself; anything else is a bug
                results[index] = result
                report(jobs[index], result)
                tracker.finish(index, label(jobs[index]), result.verdict.value)
    except BaseException:
        # Interrupted (or a bug): start nothing more and leave the running cells to the process's end,
        # where each VM's guardian kills QEMU and removes its scratch (harness.cli.main).
        pool.shutdown(wait=False, cancel_futures=True)
        progress(f"stopped with {len(running)} cell(s) running: they have no results; --resume runs them")
        raise
    pool.shutdown(wait=True)
    return [results[i] for i in range(len(jobs))]

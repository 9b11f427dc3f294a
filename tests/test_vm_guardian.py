"""The guardian's promise: nothing it started outlives the harness, even after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness.vm.guardian import group_members

HARNESS_STAND_IN = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from harness.vm.command import guarded_argv
    scratch, pidfile = sys.argv[1], sys.argv[2]
    # like vng: a shell that forks a grandchild which keeps running
    cmd = ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"]
    subprocess.Popen(guarded_argv(cmd, os.getpid(), __import__("pathlib").Path(scratch)))
    time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate: object, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_sigkill_of_the_harness_kills_grandchildren_and_removes_scratch(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "exporter.shm").write_bytes(b"x")
    pidfile = tmp_path / "grandchild.pid"
    harness = subprocess.Popen([sys.executable, "-c", HARNESS_STAND_IN, str(scratch), str(pidfile)])
    try:
        assert _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
        grandchild = int(pidfile.read_text())
        assert _alive(grandchild)
        harness.send_signal(signal.SIGKILL)
        harness.wait()
        assert _wait_for(lambda: not _alive(grandchild), 5), "grandchild survived the harness"
        assert _wait_for(lambda: not scratch.exists(), 5), "scratch directory left behind"
    finally:
        harness.kill()


def test_normal_exit_passes_the_status_and_keeps_scratch(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.vm.guardian",
            "--parent",
            str(os.getpid()),
            "--scratch",
            str(scratch),
            "--",
            "sh",
            "-c",
            "exit 7",
        ],
        check=False,
        start_new_session=True,
    )
    assert proc.returncode == 7
    assert scratch.exists()  # the harness still wants the backing files; it removes them itself


def test_wrong_parent_means_the_parent_is_already_gone(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.vm.guardian",
            "--parent",
            "1",
            "--scratch",
            str(scratch),
            "--",
            "touch",
            str(marker),
        ],
        check=False,
        start_new_session=True,
    )
    assert proc.returncode == 128 + signal.SIGTERM
    assert not marker.exists()
    assert not scratch.exists()


def test_group_members_reads_proc() -> None:
    assert os.getpid() in group_members(os.getpgrp())


def test_a_host_kill_leaves_scratch_for_the_host_checks(tmp_path: Path) -> None:
    """The harness kills a hung guest (GuestVM.shutdown -> SIGTERM to the guardian); the host checks then
    read the exporters' backing files in scratch. The guardian must not remove scratch while its parent,
    the scratch's owner, is alive: that turned passed DMA tests into `error` after every host kill."""
    from harness.deadline import Deadline
    from harness.vm.command import guarded_argv
    from harness.vm.machine import GuestVM

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "exporter.shm").write_bytes(b"seeded")
    argv = guarded_argv(["sh", "-c", "echo up; sleep 300"], os.getpid(), scratch)
    vm = GuestVM(argv, console_log=tmp_path / "console.log", token="ab12")
    seen_by_checks: list[bool] = []
    vm.launch()
    try:
        for _event in vm.watch(Deadline(1.5), idle_timeout=60):
            pass
    except Exception:
        pass
    vm.shutdown(before_cleanup=lambda: seen_by_checks.append((scratch / "exporter.shm").exists()))
    assert seen_by_checks == [True], "scratch was removed before the host checks ran"
    assert scratch.exists(), "the guardian removed scratch although its owner is alive"

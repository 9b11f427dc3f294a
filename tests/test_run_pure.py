from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.cell.request import CellRequest
from harness.cell.setup import harness_command
from harness.console.events import scan
from harness.console.watch import ConsoleWatch as _Watch
from harness.console.watch import first_cause as _first_cause
from harness.console.watch import guest_end_of, qemu_abort_line
from harness.console.watch import observe as _observe
from harness.guest.protocol import encode_frame
from harness.results.known_issues import ExpectedFailure, KnownIssue
from harness.results.model import GuestEnd, TestRecord, interrupted_record
from harness.run import known_issue_judge

ABORT = (
    "[   43.782058] vfio-pci 0000:03:00.0: resetting\n"
    "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
    "`section_index < d->map.sections_nb' failed.\n"
)


def test_qemu_abort_is_recognised_from_the_recorded_console() -> None:
    line = qemu_abort_line(ABORT)
    assert line is not None and "iotlb_to_section" in line


def test_guest_text_mentioning_assertions_is_not_a_qemu_abort() -> None:
    assert qemu_abort_line("[ 1.0] test: Assertion `x' failed.\nKernel panic - not syncing\n") is None
    assert qemu_abort_line("") is None


def _watch(console: str) -> _Watch:
    seen = _Watch()
    for event in scan(console, "ab12"):
        _observe(event, seen, 0.0, lambda _line: None)
    return seen


def _frame(kind: str, **payload: object) -> str:
    return encode_frame("ab12", kind, payload)


FIRST_DONE = (
    _frame("start", kernel="7.2.13-hil")
    + _frame("begin", name="t.py::first")
    + _frame("test", name="t.py::first", outcome="passed", duration=0.1)
)
FIRST_RECORD = TestRecord("t.py::first", "passed", 0.1)


def test_a_test_the_kernel_died_in_gets_a_record_naming_the_panic() -> None:
    console = (
        FIRST_DONE
        + _frame("begin", name="t.py::crash_demo")
        + "[   30.100000] sysrq: Trigger a crash\n"
        + "[   30.100100] Kernel panic - not syncing: sysrq triggered crash\n"
    )
    seen = _watch(console)
    end = guest_end_of(seen)
    assert end is GuestEnd.CRASHED
    lost = interrupted_record(seen.running, [FIRST_RECORD], end, _first_cause(seen, end))
    assert lost is not None
    assert (lost.name, lost.outcome) == ("t.py::crash_demo", "error")
    assert lost.message == (
        "the guest crashed while this test ran: "
        "kernel panic: Kernel panic - not syncing: sysrq triggered crash"
    )


def test_the_watchdogs_hung_report_names_the_blocked_test() -> None:
    console = (
        FIRST_DONE
        + _frame("begin", name="t.py::hang_demo")
        + _frame("done", status="hung", deadline_s=25, elapsed=25.2)
    )
    seen = _watch(console)
    end = guest_end_of(seen)
    lost = interrupted_record(seen.running, [FIRST_RECORD], end, _first_cause(seen, end))
    assert lost is not None and lost.name == "t.py::hang_demo"
    assert lost.message == (
        "the guest hung while this test ran: "
        "in-guest watchdog: the tests were not done within their 25 s deadline"
    )


def test_no_invented_record_when_every_announced_test_finished() -> None:
    seen = _watch(FIRST_DONE + "[   31.000000] Kernel panic - not syncing: after the tests\n")
    end = guest_end_of(seen)
    assert end is GuestEnd.CRASHED and seen.running is None
    assert interrupted_record(seen.running, [FIRST_RECORD], end, "x") is None
    # A record that reached the disk while its frame was lost is not duplicated either.
    assert interrupted_record("t.py::first", [FIRST_RECORD], end, "x") is None
    assert interrupted_record("t.py::first", [], GuestEnd.DONE, "x") is None


def test_a_patched_kernel_is_named_with_its_series_and_reproduced_with_it() -> None:
    req = CellRequest(
        topology="switch-p2p-amd",
        kernel_spec="src:debian-7.2",
        select="routing",
        timeout=900,
        idle_timeout=300,
        series=Path("/work/kernels/series/fix.mbox"),
    )
    assert req.kernel_label == "src:debian-7.2+fix.mbox"
    assert harness_command(req) == [
        "./hil", "run", "--topology", "switch-p2p-amd", "--kernel", "src:debian-7.2",
        "--series", "/work/kernels/series/fix.mbox", "-k", "routing", "--timeout", "900",
    ]  # fmt: skip
    assert replace(req, series=None).kernel_label == "src:debian-7.2"


def test_a_hang_names_the_watchdog_and_the_first_blocked_task() -> None:
    console = (
        FIRST_DONE
        + _frame("begin", name="t.py::hang_demo")
        + "[   30.662063] task:python          state:D stack:13160 pid:64    tgid:64    ppid:63\n"
        + "[   30.662482] Call Trace:\n"
        + "[   30.664490]  vfio_pci_dma_buf_move+0xa0/0x180\n"
        + _frame("done", status="hung", deadline_s=25, elapsed=25.2)
    )
    seen = _watch(console)
    end = guest_end_of(seen)
    assert end is GuestEnd.HUNG
    assert _first_cause(seen, end) == (
        "in-guest watchdog: the tests were not done within their 25 s deadline; blocked: task:python state:D"
    )


def test_live_progress_shows_a_known_issue_as_the_report_will() -> None:
    entry = KnownIssue(
        test="t.py::multi",
        kernels=["7.2"],
        topologies=["switch-p2p-amd"],
        reason="r",
        reference="ref",
        analysis="a",
        expected_failure=ExpectedFailure(errno="EADDRINUSE"),
    )
    judge = known_issue_judge([entry], "7.2.13-hil", "switch-p2p-amd")

    def frame(name: str, outcome: str, errno: str | None = None) -> dict[str, object]:
        return {"name": name, "outcome": outcome, "details": {"map_errno": errno} if errno else {}}

    assert judge(frame("t.py::multi", "failed", "EADDRINUSE")) == "xfailed"
    assert judge(frame("t.py::multi", "failed", "EINVAL")) == "failed", "not the analysed failure"
    assert judge(frame("t.py::multi", "passed")) == "xpassed"
    assert judge(frame("t.py::other", "failed", "EADDRINUSE")) == "failed"
    other_kernel = known_issue_judge([entry], "7.4.1", "switch-p2p-amd")
    assert other_kernel(frame("t.py::multi", "failed", "EADDRINUSE")) == "failed"
    assert judge(frame("t.py::multi", "?")) == "?"


def test_the_raw_reproduction_removes_its_scratch_directory(tmp_path: Path) -> None:
    """`sh reproduce.sh --raw` makes the backing files itself; it must not leave them behind (64 MiB and
    more per run in /tmp), whatever the VM did."""
    import subprocess

    from harness.cell.setup import raw_commands
    from harness.results.write import reproduce_sh
    from harness.topology import lay_out, load_topology

    scratch = tmp_path / "scratch"
    (tmp_path / "run").mkdir()
    vm_stand_in = ["sh", "-c", f"test -d {scratch}; exit 7"]
    raw = raw_commands(lay_out(load_topology("switch-p2p")), scratch, vm_stand_in)
    script = tmp_path / "reproduce.sh"
    script.write_text(reproduce_sh(["false"], raw))
    proc = subprocess.run(["sh", str(script), "--raw"], capture_output=True, text=True, check=False)
    assert proc.returncode == 7, proc.stderr  # the VM stand-in ran with scratch in place
    assert not scratch.exists()

"""run_cell end to end without QEMU: a ReplayVM (harness/vm/fake.py) replays what a guest printed and wrote,
and everything above the console (watching, records, byte checks, known issues, verdict, files) is real."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from harness.cell.request import CellRequest, CellResult, HostFacts
from harness.guest.checks import check_spec
from harness.guest.plan import GuestPlan
from harness.guest.protocol import encode_frame
from harness.kernels.kimage import KernelImage
from harness.results.model import Verdict
from harness.run import run_cell
from harness.topology import load_topology
from harness.vm.fake import Recording, ReplayVM, replay

DATA = Path(__file__).parent / "data" / "consoles"
TOKEN = "5e1f0c2a9b7d4e36"  # the token of the recorded consoles in tests/data/consoles
BOOT = (
    "[    0.000000] Linux version 7.2.13-hil (builder@p2p-hil) #1 SMP PREEMPT_DYNAMIC\n"
    "[    3.530393] Run /init as init process\n"
    "[    5.605915] virtme-ng-init: starting script (console fallback)\n"
)
FACTS = HostFacts(
    qemu="qemu-system-x86_64", qemu_version="10.0.2", accel="tcg", accel_reason="test", vng="vng"
)


@pytest.fixture(autouse=True, scope="module")
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """run_cell prepares the guest's byte-code under the cache: a cache of this module's, not the user's."""
    import os

    saved = os.environ.get("P2P_HIL_CACHE")
    os.environ["P2P_HIL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        del os.environ["P2P_HIL_CACHE"]
    else:
        os.environ["P2P_HIL_CACHE"] = saved


def frame(kind: str, **payload: object) -> str:
    return encode_frame(TOKEN, kind, payload)


def kernel(tmp_path: Path) -> KernelImage:
    image = tmp_path / "bzImage"
    image.write_bytes(b"not a kernel: the replayed VM never boots it")
    return KernelImage(spec="src:debian-7.2", version="7.2.13-hil", image=image)


def write_records(*records: Mapping[str, object]) -> Callable[[GuestPlan], None]:
    def guest(plan: GuestPlan) -> None:
        with plan.results_path.open("a") as out:
            for record in records:
                out.write(json.dumps({"duration": 0.1, "message": "", "details": {}, **record}) + "\n")

    return guest


def cell(
    tmp_path: Path, recording: Recording, *, select: str | None = None, timeout: float = 300
) -> tuple[CellResult, ReplayVM]:
    made: list[ReplayVM] = []
    req = CellRequest(
        topology="switch-p2p", kernel_spec="src:debian-7.2", select=select, timeout=timeout, idle_timeout=60,
        out=tmp_path / "run",
    )  # fmt: skip
    result = run_cell(
        req, load_topology("switch-p2p"), kernel(tmp_path), FACTS, tmp_path / "run", lambda _m: None,
        vm_factory=replay(recording, made),
    )  # fmt: skip
    return result, made[0]


PASSED = {"name": "test_export.py::test_a", "outcome": "passed"}
SUITE = (
    BOOT
    + frame("start", kernel="7.2.13-hil")
    + frame("collected", count=1)
    + frame("begin", name=PASSED["name"])
    + frame("test", name=PASSED["name"], outcome="passed", duration=0.1)
    + frame("done", status="finished", exit_code=0, elapsed=1.0)
    + "[    9.000000] reboot: Power down\n"
)


def test_a_passing_guest_gives_a_passed_cell_with_its_files_and_timeline(tmp_path: Path) -> None:
    result, vm = cell(tmp_path, Recording(SUITE, TOKEN, write_records(PASSED)))
    assert result.verdict is Verdict.PASSED
    assert [(r.name, r.outcome) for r in result.records] == [(PASSED["name"], "passed")]
    stored = json.loads((result.run_dir / "results.json").read_text())
    marks = [m["mark"] for m in stored["meta"]["timeline"]]
    from harness.results.timeline import MARKS

    for mark in (*MARKS, "test_begin", "test_end"):
        assert mark in marks
    assert (result.run_dir / "junit.xml").exists() and (result.run_dir / "console.log").read_text() != ""
    plans = [json.loads((result.run_dir / name).read_text()) for name in ("plan.json", "plan-raw.json")]
    assert [p["host_agent"] for p in plans] == [True, False]
    assert plans[0]["pycache_prefix"] and plans[0]["pycache_prefix"] == plans[1]["pycache_prefix"]
    reproduce = (result.run_dir / "reproduce.sh").read_text()
    assert "plan-raw.json" in reproduce and "--raw has no host agent" in reproduce
    assert vm.shut_down


def test_a_failed_test_fails_the_cell(tmp_path: Path) -> None:
    failed = {"name": "test_export.py::test_b", "outcome": "failed", "message": "assert 22 == 0"}
    console = SUITE.replace('"outcome":"passed"', '"outcome":"failed"')
    result, _vm = cell(tmp_path, Recording(console, TOKEN, write_records(failed)))
    assert result.verdict is Verdict.FAILED
    assert result.records[0].message == "assert 22 == 0"


@pytest.mark.parametrize(
    ("log", "kind"),
    [
        ("panic.log", "panic"),
        ("oops.log", "oops"),
        ("warning.log", "warning"),
        ("kasan.log", "kasan"),
        ("ubsan.log", "ubsan"),
        ("lockdep.log", "lockdep"),
        ("bug.log", "bug"),
        ("hung-task.log", "hung_task"),
        ("rcu-stall.log", "rcu_stall"),
    ],
)
def test_every_kernel_report_makes_the_cell_crashed(tmp_path: Path, log: str, kind: str) -> None:
    """The README promises it; a UBSAN report used to leave the run `passed`."""
    console = (DATA / log).read_text()
    result, _vm = cell(tmp_path, Recording(console, TOKEN, write_records(PASSED)))
    assert result.verdict is Verdict.CRASHED, (log, result.verdict)
    assert kind in [p.kind for p in result.problems()]


def test_a_kmemleak_count_is_evidence_and_the_tests_that_scanned_judge_the_leaks(tmp_path: Path) -> None:
    """The console only says how many; the guest test that asked for the scan reads the backtraces."""
    leak = "[   31.552107] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)\n"
    console = SUITE.replace(frame("done", status="finished", exit_code=0, elapsed=1.0), leak + frame(
        "done", status="finished", exit_code=0, elapsed=1.0))  # fmt: skip
    assert leak in console
    result, _vm = cell(tmp_path, Recording(console, TOKEN, write_records(PASSED)))
    assert result.verdict is Verdict.PASSED
    (problem,) = result.problems()
    assert problem.kind == "kmemleak"
    assert problem.first_line.startswith("kmemleak: 2 new suspected memory leaks")


def test_a_guest_watchdog_hang_names_the_test_and_keeps_the_stacks(tmp_path: Path) -> None:
    blocked = (DATA / "blocked-tasks.log").read_text()
    stuck = "test_revocation.py::test_hang_demo"
    console = (
        BOOT + frame("start", kernel="7.2.13-hil") + frame("collected", count=2)
        + frame("begin", name=PASSED["name"])
        + frame("test", name=PASSED["name"], outcome="passed", duration=0.1)
        + frame("begin", name=stuck) + blocked
        + frame("done", status="hung", test=stuck, test_elapsed=31.0, test_timeout_s=30, deadline_s=500)
    )  # fmt: skip
    result, _vm = cell(tmp_path, Recording(console, TOKEN, write_records(PASSED)))
    assert result.verdict is Verdict.HUNG
    lost = [r for r in result.records if r.name == stuck]
    assert lost and lost[0].outcome == "error"
    assert f"test {stuck} ran 31.0 s, over its 30 s limit" in lost[0].message
    assert "blocked: task:python" in lost[0].message
    assert "blocked_tasks" in [p.kind for p in result.problems()]


def test_a_start_up_timeout_is_not_a_hang(tmp_path: Path) -> None:
    """A slow machine: the guest's deadline passes before pytest has collected anything."""
    console = BOOT + frame("start", kernel="7.2.13-hil") + frame("done", status="timeout", phase="startup",
                                                                  deadline_s=25.0, elapsed=25.1)  # fmt: skip
    result, _vm = cell(tmp_path, Recording(console, TOKEN))
    assert result.verdict is Verdict.INFRA_ERROR
    text = "\n".join(str(e) for e in result.evidence)
    assert "passed during startup" in text and "no test stuck" in text


def test_a_host_side_timeout_says_which_test_was_running(tmp_path: Path) -> None:
    stuck = "test_revocation.py::test_close_waits"
    console = BOOT + frame("start", kernel="7.2.13-hil") + frame("begin", name=stuck)
    result, _vm = cell(tmp_path, Recording(console, TOKEN, ending="silent"))
    assert result.verdict is Verdict.HUNG
    text = "\n".join(str(e) for e in result.evidence)
    assert f"test {stuck} had been running for" in text
    assert [r.name for r in result.records] == [stuck]


def test_a_host_side_timeout_during_start_up_says_so(tmp_path: Path) -> None:
    result, _vm = cell(tmp_path, Recording(BOOT, TOKEN, ending="silent"))
    text = "\n".join(str(e) for e in result.evidence)
    assert "while the guest entry was starting (Python start-up)" in text


def test_host_byte_checks_still_run_after_the_host_kills_a_hung_guest(tmp_path: Path) -> None:
    """A passed DMA test's bytes are checked on the host even when a later test hangs the guest and the
    host kills it: the checks read scratch after the VM is stopped and before scratch goes."""
    payload = b"\xa5" * 4096
    copied = check_spec("exporter", 0, payload, "edu copied into the BAR")
    never = check_spec("exporter", 8192, payload, "never written")
    good = {"name": "test_data_dma.py::test_dma", "outcome": "passed", "details": {"host_checks": [copied]}}
    bad = {"name": "test_data_dma.py::test_wrong", "outcome": "passed", "details": {"host_checks": [never]}}

    def guest(plan: GuestPlan) -> None:
        backing = plan.device("exporter").backing
        assert backing is not None
        with backing.open("r+b") as f:
            f.write(payload)
        write_records(good, bad)(plan)

    console = BOOT + frame("start", kernel="7.2.13-hil") + frame("begin", name="test_revocation.py::test_x")
    result, _vm = cell(tmp_path, Recording(console, TOKEN, guest, ending="silent"))
    outcomes = {r.name: r.outcome for r in result.records}
    assert outcomes["test_data_dma.py::test_dma"] == "passed"
    assert outcomes["test_data_dma.py::test_wrong"] == "failed"
    assert result.verdict is Verdict.HUNG


def test_scratch_is_removed_after_the_cell(tmp_path: Path) -> None:
    result, vm = cell(tmp_path, Recording(SUITE, TOKEN, write_records(PASSED)))
    backing = vm.launch_spec.plan.device("exporter").backing
    assert backing is not None and not backing.parent.exists()
    assert result.verdict is Verdict.PASSED


def test_a_broken_known_issues_file_leaks_no_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from harness import run as run_module
    from harness.errors import ConfigError

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))

    def broken(_path: Path) -> list[object]:
        raise ConfigError("kernels/known-issues.yaml: [0].test: field required")

    monkeypatch.setattr(run_module, "load_known_issues", broken)
    with pytest.raises(ConfigError):
        cell(tmp_path, Recording(SUITE, TOKEN, write_records(PASSED)))
    assert list(scratch_root.iterdir()) == []


def test_a_launch_failure_is_an_infra_error_not_a_verdict_of_the_kernel(tmp_path: Path) -> None:
    from harness.errors import LaunchError

    with pytest.raises(LaunchError):
        cell(tmp_path, Recording("", TOKEN, ending="launch-error"))


def test_the_real_guest_entry_and_plugin_on_the_host(tmp_path: Path) -> None:
    """host_entry_vm runs harness.guest.entry as the guest would (frames, plugin, results file), on a
    tests directory of our own: the whole contract between guest and host without a VM."""
    from harness.vm.fake import host_entry_vm

    tests = tmp_path / "guest_tests"
    tests.mkdir()
    (tests / "test_tiny.py").write_text(
        "def test_ok(hil_details):\n    hil_details['seen'] = 1\n\ndef test_bad():\n    assert 1 + 1 == 3\n"
    )
    req = CellRequest(
        topology="switch-p2p", kernel_spec="src:debian-7.2", select=None, timeout=120, idle_timeout=60,
        out=tmp_path / "run",
    )  # fmt: skip
    result = run_cell(
        req, load_topology("switch-p2p"), kernel(tmp_path), FACTS, tmp_path / "run", lambda _m: None,
        vm_factory=host_entry_vm, tests_dir=tests,
    )  # fmt: skip
    outcomes = {r.name: r.outcome for r in result.records}
    assert outcomes == {"test_tiny.py::test_ok": "passed", "test_tiny.py::test_bad": "failed"}
    assert result.verdict is Verdict.FAILED
    marks = {m["mark"] for m in result.meta.timeline}
    assert {"python_up", "tests_collected", "tests_done", "vm_stopped"} <= marks


def test_the_report_says_where_the_time_went(tmp_path: Path) -> None:
    from harness.run import print_cell

    result, _vm = cell(tmp_path, Recording(SUITE, TOKEN, write_records(PASSED)))
    lines: list[str] = []
    print_cell(result, lines.append)
    time_line = next(line for line in lines if line.startswith("time: "))
    for phase in ("launch", "firmware+kernel", "python", "collect", "tests", "power-off", "host"):
        assert f"{phase} " in time_line
    assert "not reached" not in time_line


def test_silence_while_python_starts_is_left_to_the_guest_deadline() -> None:
    """A slow machine: Python and pytest starting over 9p print nothing for a minute. The host's
    silence detector must not call that a hang; the guest's own deadline covers start-up."""
    from harness.console.watch import ConsoleWatch
    from harness.run import idle_limit, test_limit_s

    seen = ConsoleWatch()
    assert idle_limit(seen, 120, 500) == 120  # booting: the kernel talks
    seen.timeline.mark("guest_command", 5.0)
    assert idle_limit(seen, 120, 500) >= 500  # Python starting: the guest will say if it is too slow
    seen.collected = 80
    assert idle_limit(seen, 120, 500) == 120  # tests running: a silent test is the watchdog's to catch
    assert test_limit_s(500, 120) < 120, "the guest watchdog must fire before the host's silence detector"


def test_a_matrix_through_the_fake_vm_records_an_infra_error_cell_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hil run` over every topology with the real run_cell; QEMU cannot start for one cell."""
    import functools

    import harness.kernels.modules
    import harness.run
    from harness import commands
    from harness.cli import main
    from harness.kernels import image as kernel_image
    from harness.topology import list_topologies
    from harness.vm.interface import CellVM, VmLaunch

    class NoModules:
        out_dir = None

    monkeypatch.setattr(commands, "RUNS_ROOT", tmp_path / "runs")
    monkeypatch.setattr(kernel_image, "resolve_kernel", lambda spec, **_kw: kernel(tmp_path))
    monkeypatch.setattr(commands, "_host_facts", lambda image, accel: FACTS)
    monkeypatch.setattr(harness.kernels.modules, "build_test_modules", lambda *_a: NoModules())
    passing, broken = (
        replay(Recording(SUITE, TOKEN, write_records(PASSED))),
        replay(Recording("", TOKEN, ending="launch-error")),
    )

    def factory(launch: VmLaunch) -> CellVM:
        return (broken if launch.plan.topology == "rootports-acs" else passing)(launch)

    monkeypatch.setattr(harness.run, "run_cell", functools.partial(harness.run.run_cell, vm_factory=factory))
    code = main(["run"])
    out = capsys.readouterr().out
    assert code == 3
    verdicts = {}
    for path in (tmp_path / "runs").glob("*-matrix/*/results.json"):  # one matrix directory, a cell each
        data = json.loads(path.read_text())
        verdicts[data["meta"]["topology"]] = data["verdict"]
    names = {t.name for t in list_topologies()}
    assert verdicts == {name: "infra-error" if name == "rootports-acs" else "passed" for name in names}
    assert f"{len(names)} runs: {len(names) - 1} passed, 1 infra-error" in out


def test_pytest_breaking_in_the_guest_is_an_infra_error_not_an_empty_selection(tmp_path: Path) -> None:
    """pytest's INTERNALERROR (exit 3) left no records; that once read as "-k matched no test"."""
    console = (
        BOOT
        + frame("start", kernel="7.2.13-hil")
        + "INTERNALERROR> FileNotFoundError: [Errno 2] No such file or directory: 'x/guest-results.jsonl'\n"
        + frame("done", status="finished", exit_code=3, elapsed=1.0)
    )
    result, _vm = cell(tmp_path, Recording(console, TOKEN), select="test_routing and whole")
    assert result.verdict is Verdict.INFRA_ERROR
    notes = [e for e in result.evidence if isinstance(e, str)]
    assert any("exit status 3" in n and "INTERNALERROR" in n for n in notes), notes
    assert not any("matched no test" in n for n in notes)


DMA_WARNING = (
    "[   12.418306] ------------[ cut here ]------------\n"
    "[   12.418571] WARNING: kernel/dma/debug.c:1014 at check_unmap+0xdf7/0x2ea0, CPU#0: python/68\n"
    "[   12.418688] Modules linked in: hil_p2p_importer(O)\n"
    "[   12.420187] RIP: 0010:check_unmap+0xdf7/0x2ea0\n"
    "[   12.421000] ---[ end trace 0000000000000000 ]---\n"
)
UNMAP_ENTRY = """
- test: test_data_dma.py::test_edu_copies_through_mapping[whole-bar]
  kernels: [">=7.2"]
  topologies: [switch-p2p]
  reason: a range over 4 GiB without an IOVA is unmapped in pieces of another size
  reference: docs/bugs/dma-buf-direct-unmap-size.md
  analysis: constructed for this test
  expected_failure: {kernel_report: 'WARNING: kernel/dma/debug\\.c:\\d+ at check_unmap'}
"""


def _suite_with(name: str, kernel_log: str) -> str:
    return (
        BOOT + frame("start", kernel="7.2.13-hil") + frame("collected", count=1) + frame("begin", name=name)
        + kernel_log + frame("test", name=name, outcome="passed", duration=0.1)
        + frame("done", status="finished", exit_code=0, elapsed=1.0) + "[    9.000000] reboot: Power down\n"
    )  # fmt: skip


WHOLE_BAR = "test_data_dma.py::test_edu_copies_through_mapping[whole-bar]"


def _passed_with_log(tmp_path: Path, name: str, kernel_log: str) -> CellResult:
    """A cell whose one test, `name`, passed while the kernel printed `kernel_log`."""
    record = {"name": name, "outcome": "passed"}
    result, _vm = cell(tmp_path, Recording(_suite_with(name, kernel_log), TOKEN, write_records(record)))
    return result


@pytest.fixture
def unmap_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import run as run_module
    from harness.results.known_issues import parse_known_issues

    monkeypatch.setattr(run_module, "load_known_issues", lambda _path: parse_known_issues(UNMAP_ENTRY))


@pytest.mark.usefixtures("unmap_entry")
def test_a_kernel_report_a_known_issue_names_is_xfailed_not_crashed(tmp_path: Path) -> None:
    result = _passed_with_log(tmp_path, WHOLE_BAR, DMA_WARNING)
    assert result.verdict is Verdict.PASSED
    (judged,) = result.records
    assert judged.outcome == "xfailed"
    assert judged.message.startswith("known issue: a range over 4 GiB without an IOVA")
    assert "kernel report while it ran: WARNING: kernel/dma/debug.c:1014 at check_unmap" in judged.message
    (problem,) = result.problems()
    assert problem.during == WHOLE_BAR and problem.known_issue is not None
    stored = json.loads((result.run_dir / "results.json").read_text())["evidence"][0]
    assert stored["during"] == WHOLE_BAR and stored["known_issue"].endswith(
        "[docs/bugs/dma-buf-direct-unmap-size.md]"
    )


@pytest.mark.usefixtures("unmap_entry")
def test_a_known_kernel_report_in_another_test_still_crashes_the_cell(tmp_path: Path) -> None:
    result = _passed_with_log(
        tmp_path, "test_data_dma.py::test_edu_copies_through_mapping[window]", DMA_WARNING
    )
    assert result.verdict is Verdict.CRASHED
    assert result.problems()[0].known_issue is None and result.records[0].outcome == "passed"


@pytest.mark.usefixtures("unmap_entry")
def test_a_known_kernel_report_that_stops_showing_is_an_unexpected_pass(tmp_path: Path) -> None:
    result = _passed_with_log(tmp_path, WHOLE_BAR, "")
    assert result.verdict is Verdict.FAILED
    assert result.records[0].outcome == "xpassed"
    assert result.records[0].message.startswith("UNEXPECTED PASS: known issue did not reproduce (no kernel")


@pytest.mark.usefixtures("unmap_entry")
def test_a_known_kernel_report_is_not_excused_in_a_guest_that_did_not_finish(tmp_path: Path) -> None:
    passed = frame("test", name=WHOLE_BAR, outcome="passed", duration=0.1)
    console = _suite_with(WHOLE_BAR, DMA_WARNING).split(passed)[0]
    result, _vm = cell(tmp_path, Recording(console, TOKEN, write_records()), timeout=30)
    assert result.verdict is Verdict.CRASHED
    assert result.problems()[0].known_issue is None

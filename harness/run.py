"""One cell: a topology booted with a kernel, the in-guest tests run, the results written.

run_cell() is a short sequencer: the steps that decide anything (paths, argv, plan, verdict) are pure
functions in harness.cell.setup, harness.guest.build_plan, harness.console.watch and harness.results;
the side effects have one owner each (the VM from `vm_factory`, the scratch directory, the run
directory).
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from harness import __version__
from harness.cell.request import CellRequest, CellResult, HostFacts
from harness.cell.scratch import Scratch
from harness.cell.setup import (
    create_backing_files,
    guest_command,
    harness_command,
    host_agent,
    make_vng_spec,
    raw_commands,
    seed_targets,
)
from harness.console.events import KernelProblem
from harness.console.watch import (
    PYTEST_BROKEN,
    ConsoleWatch,
    Judge,
    finished,
    first_cause,
    guest_end_of,
    observe,
    phase_of,
    qemu_abort_line,
    wedged,
)
from harness.deadline import Deadline
from harness.errors import GuestHang
from harness.guest.build_plan import make_plan
from harness.guest.plan import GuestPlan, dump_plan
from harness.guest.prepare import prepare, pycache_prefix
from harness.hostcheck import RunByteChecks
from harness.kernels.image import KernelImage
from harness.kselftest.cell import kselftest_records, prepare_kselftests
from harness.kselftest.devices import with_selftest_devices
from harness.matrix.cells import TOPOLOGY_FILE
from harness.paths import GUEST_TESTS_DIR, KERNELS_DIR, REPO_ROOT, cache_dir
from harness.results.faults import summary_lines as fault_summary
from harness.results.known_issues import (
    KnownIssue,
    apply_known_issues,
    apply_known_reports,
    explain_reports,
    judge_test_frame,
    load_known_issues,
)
from harness.results.model import (
    GuestEnd,
    RunMeta,
    TestRecord,
    interrupted_record,
    load_records,
    verdict,
)
from harness.results.report import summary_table
from harness.results.timeline import breakdown_line, marks_from_json
from harness.results.write import Evidence, write_junit, write_reproduce, write_results_json, write_text
from harness.rundir import claim_out_dir
from harness.topology import Layout, Topology, backing_files, lay_out, topology_json, topology_sha256
from harness.topology.oracle import UNKNOWN_KERNEL, KernelTraits
from harness.vm.command import guarded_argv, vng_argv
from harness.vm.interface import CellVM, VmFactory, VmLaunch, real_vm

__all__ = [
    "CellRequest",
    "CellResult",
    "HostFacts",
    "known_issue_judge",
    "make_vng_spec",
    "print_cell",
    "qemu_abort_line",
    "raw_commands",
    "run_cell",
]

Progress = Callable[[str], None]

# Time the guest needs before its test entry starts (TCG boot of a stock kernel, measured ~5 s); only
# the first guess: when the entry really starts, the host deadline moves to that time plus the guest's
# own deadline plus the margin, so a slow boot never lets the host kill the guest before its watchdog.
GUEST_BOOT_ALLOWANCE_S = 20.0
RAW_PLAN = "plan-raw.json"  # the plan of `reproduce.sh --raw`
# The guest-side watchdog fires this much before the host would give up, so the blocked stacks get out.
GUEST_WATCHDOG_MARGIN_S = 15.0


def test_limit_s(guest_deadline_s: float, idle_timeout_s: float) -> float:
    """How long one test may run before the guest watchdog calls it hung: below the host's silence
    detector (a hung test prints nothing, and the host's kill would come without the stacks), and
    at most half the guest's budget."""
    return max(5.0, min(guest_deadline_s / 2, idle_timeout_s - GUEST_WATCHDOG_MARGIN_S))


def idle_limit(seen: ConsoleWatch, idle_timeout_s: float, guest_deadline_s: float) -> float:
    """How much console silence is normal now. Python and pytest starting over 9p print nothing for
    a long while on a slow machine; the guest's own deadline covers that phase (it reports a start-up
    timeout itself), so the host waits for it rather than calling slowness a hang."""
    starting = "guest_command" in seen.timeline.names() and seen.collected is None and seen.done is None
    return max(idle_timeout_s, guest_deadline_s + GUEST_WATCHDOG_MARGIN_S) if starting else idle_timeout_s


def kernel_traits(kernel: KernelImage) -> KernelTraits:
    """What the kernel's .config changes in the oracle's predictions (7.2's defaults when unknown)."""
    if kernel.config is None:
        return UNKNOWN_KERNEL
    try:
        return KernelTraits.from_config(kernel.config.read_text(errors="replace"))
    except OSError:
        return UNKNOWN_KERNEL


def known_issue_judge(
    entries: Sequence[KnownIssue], kernel_version: str, topology: str, fragments: Sequence[str] = ()
) -> Judge:
    """A test's live outcome after the known issues (a failure they excuse shows as xfailed at once)."""
    return functools.partial(
        judge_test_frame,
        entries=entries,
        kernel_version=kernel_version,
        topology=topology,
        fragments=fragments,
    )


def _final_records(
    results_path: Path,
    byte_checks: RunByteChecks,
    known: Sequence[KnownIssue],
    kernel: KernelImage,
    topo: Topology,
    seen: ConsoleWatch,
    end: GuestEnd,
    now: float,
    progress: Progress,
    fragments: Sequence[str] = (),
) -> tuple[list[TestRecord], str | None]:
    """The guest's records, judged by the host's byte checks and the known issues, plus the record of
    a test the guest died in (never excused by a known issue: a crash is not the failure it describes)."""
    records, truncated = load_records(results_path)
    # The selftests' raw outputs sit beside the guest's results (the run directory).
    records = kselftest_records(records, results_path.parent)
    records = byte_checks.apply(records)
    records = apply_known_issues(records, known, kernel.version, topo.name, fragments)
    records = apply_known_reports(records, seen.problems, known, kernel.version, topo.name, fragments)
    ran_for = now - seen.running_since
    lost = interrupted_record(seen.running, records, end, first_cause(seen, end), duration=ran_for)
    if lost is not None:
        progress(f"  {lost.outcome:8} {lost.name} ({lost.message})")
        records = [*records, lost]
    return records, truncated


def run_cell(
    req: CellRequest,
    topo: Topology,
    kernel: KernelImage,
    facts: HostFacts,
    run_dir: Path,
    progress: Progress,
    modules_dir: Path | None = None,
    *,
    vm_factory: VmFactory = real_vm,
    tests_dir: Path = GUEST_TESTS_DIR,
) -> CellResult:
    """Boot `topo` with `kernel` in `run_dir` (claimed by the caller), run the selected in-guest tests,
    judge and write the results. Raises ConfigError/InfraError only for what prevents a cell at all
    (the caller records those); everything the guest did is in the result."""
    deadline = Deadline(req.timeout)
    t0 = deadline.start
    # The guest runs with its own working directory: every path it is given must be absolute
    # (`--out shards/1` from a CI job once sent the guest's results to a path it could not open).
    run_dir = run_dir.absolute()

    def now() -> float:
        return time.monotonic() - t0

    known = load_known_issues(KERNELS_DIR / "known-issues.yaml")  # a broken file costs nothing, leaks nothing
    judge = known_issue_judge(known, kernel.version, topo.name, req.fragments)
    topo = with_selftest_devices(topo, req.kselftests)  # an igb on a free root port for --kselftest vfio
    layout = lay_out(topo)
    started_at = datetime.now(UTC)
    claim_out_dir(run_dir)  # normally claimed by the caller already (harness.rundir): then a no-op
    prepare_kselftests(req.kselftests, kernel, topo, run_dir, progress)  # built on the host, cached
    seen = ConsoleWatch()
    seen.timeline.mark("host_start", 0.0)
    with Scratch() as scratch:
        token = secrets.token_hex(8)
        guest_deadline = max(10.0, req.timeout - GUEST_BOOT_ALLOWANCE_S - GUEST_WATCHDOG_MARGIN_S)
        plan = make_plan(
            topo, layout, req.kernel_label, run_dir, scratch, token, req.select, guest_deadline, modules_dir,
            tests_dir, test_limit_s(guest_deadline, req.idle_timeout), req.only, kernel_traits(kernel),
        )  # fmt: skip
        plan = replace(
            plan, fragments=req.fragments, race_seconds=req.race_seconds, kselftests=req.kselftests
        )
        plan = _prepared(plan, seen, now, progress)
        plan_path = run_dir / "plan.json"
        argv = _write_cell_files(req, topo, layout, kernel, facts, run_dir, scratch, plan, plan_path)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        progress(f"booting {topo.name} with {kernel.version} ({facts.accel}) -> {run_dir}")
        byte_checks = RunByteChecks(
            run_dir,
            Path(plan.results_path),
            {dev: path for dev, path, _size in backing_files(layout, scratch)},
            seed_targets(layout, scratch),
        )
        vm = vm_factory(
            VmLaunch(
                guarded_argv(argv, os.getpid(), scratch),
                console_log=run_dir / "console.log",
                plan=plan,
                plan_path=plan_path,
                env=env,
                helpers=(host_agent(layout, run_dir, scratch, progress),),
            )
        )

        def after_stop() -> None:
            seen.timeline.mark("vm_stopped", now())
            byte_checks.observe_now()  # reads the backing files: scratch is still there
            seen.timeline.mark("host_checks", now())

        create_backing_files(layout, scratch)
        byte_checks.seed()
        try:
            vm.launch()
            seen.timeline.mark("qemu_start", now())
            _watch_guest(vm, seen, deadline, req.idle_timeout, guest_deadline, progress, judge)
        finally:
            vm.shutdown(before_cleanup=after_stop)

    # A report a known issue explains does not make the cell crashed: judged before the guest's end.
    seen.problems = explain_reports(
        seen.problems, known, kernel.version, topo.name, req.fragments, finished=finished(seen)
    )
    end = guest_end_of(seen)
    records, truncated = _final_records(
        Path(plan.results_path), byte_checks, known, kernel, topo, seen, end, now(), progress, req.fragments
    )
    evidence = _evidence(seen, end, req, records, truncated, vm.console_tail(), now())
    seen.timeline.mark("results_written", now())
    meta = _meta(req, topo, kernel, facts, started_at, seen, deadline)
    result_verdict = verdict(records, end, selected=req.select is not None)
    write_results_json(run_dir / "results.json", meta, records, result_verdict, evidence)
    write_junit(run_dir / "junit.xml", meta, records)
    return CellResult(run_dir, meta, records, result_verdict, evidence)


def _write_cell_files(
    req: CellRequest,
    topo: Topology,
    layout: Layout,
    kernel: KernelImage,
    facts: HostFacts,
    run_dir: Path,
    scratch: Path,
    plan: GuestPlan,
    plan_path: Path,
) -> list[str]:
    """plan.json, plan-raw.json and reproduce.sh; returns the vng argv the cell runs."""
    raw_plan_path = run_dir / RAW_PLAN
    write_text(run_dir / TOPOLOGY_FILE, topology_json(topo))
    dump_plan(plan, plan_path)
    # A reproduction without the harness has no host agent: its plan says so, and the tests that
    # need one skip with that reason instead of waiting for an answer that never comes.
    dump_plan(replace(plan, host_agent=False), raw_plan_path)
    spec = make_vng_spec(topo, layout, kernel, facts, run_dir, scratch, plan_path, plan.pycache_prefix)
    raw_argv = vng_argv(replace(spec, guest_command=guest_command(raw_plan_path, plan.pycache_prefix)))
    write_reproduce(
        run_dir / "reproduce.sh",
        harness_command(req),
        raw_commands(layout, scratch, raw_argv, run_dir),
        header=[
            f"topology: {topo.name}",
            f"kernel: {req.kernel_label} ({kernel.version})",
            f"--raw has no host agent: tests that need one (QMP hot-unplug) skip and say so ({RAW_PLAN})",
        ],
        cwd=str(REPO_ROOT),
    )
    return vng_argv(spec)


def _meta(
    req: CellRequest,
    topo: Topology,
    kernel: KernelImage,
    facts: HostFacts,
    started_at: datetime,
    seen: ConsoleWatch,
    deadline: Deadline,
) -> RunMeta:
    vm_s = (seen.timeline.at("vm_stopped") or deadline.elapsed()) - (seen.timeline.at("qemu_start") or 0.0)
    return RunMeta(
        topology=topo.name,
        kernel=req.kernel_label,
        kernel_version=kernel.version,
        qemu_version=facts.qemu_version,
        accelerator=facts.accel,
        started_at=started_at.isoformat(),
        durations={
            "boot": round(seen.boot_s or 0.0, 2),
            "vm": round(vm_s, 2),
            "total": round(deadline.elapsed(), 2),
        },
        host=socket.gethostname(),
        harness_version=__version__,
        command=list(req.invocation),
        timeline=seen.timeline.to_json(),
        axes=dict(req.axes),
        topology_sha256=topology_sha256(topo),
    )


def _prepared(plan: GuestPlan, seen: ConsoleWatch, now: Callable[[], float], progress: Progress) -> GuestPlan:
    """The plan pointing the guest at byte-code the host compiled (harness.guest.prepare): the guest
    would otherwise compile everything again over 9p on every boot. Costs milliseconds when nothing
    changed; when it fails the guest compiles as before."""
    prefix = pycache_prefix(cache_dir())
    plan = replace(plan, pycache_prefix=prefix)
    done = prepare(plan, prefix)
    seen.timeline.mark("host_prepared", now())
    if done.error:
        progress(f"guest byte-code not prepared ({done.error}); the guest compiles it")
    elif done.fresh:
        progress(f"guest byte-code prepared in {done.seconds:.1f} s")
    return plan


def _watch_guest(
    vm: CellVM,
    seen: ConsoleWatch,
    deadline: Deadline,
    idle_timeout_s: float,
    guest_deadline_s: float,
    progress: Progress,
    judge: Judge,
) -> None:
    """Fold the console into `seen` until the guest ends, or the host gives up on it (seen.hang)."""

    def now() -> float:
        return time.monotonic() - deadline.start

    idle = functools.partial(idle_limit, seen, idle_timeout_s, guest_deadline_s)
    try:
        for event in vm.watch(deadline, idle):
            was_started = seen.started
            observe(event, seen, now(), progress, judge)
            if seen.started and not was_started:
                # The guest's deadline counts from here: the host's must not end first.
                deadline.seconds = max(deadline.seconds, now() + guest_deadline_s + GUEST_WATCHDOG_MARGIN_S)
            seen.stopped = wedged(seen, now(), idle_timeout_s)
            if seen.stopped is not None:
                progress(f"stopping the guest: {seen.stopped}")
                break  # the VM is stopped by the caller's shutdown; the verdict is the report's: crashed
    except GuestHang as exc:
        seen.hang = f"{exc} ({phase_of(seen, now())})"
        progress(f"guest hung: {seen.hang}")


def _evidence(
    seen: ConsoleWatch,
    end: GuestEnd,
    req: CellRequest,
    records: Sequence[TestRecord],
    truncated: str | None,
    console_tail: str,
    now: float,
) -> list[Evidence]:
    """What the report shows besides the records: kernel reports, why the guest ended badly, notes."""
    evidence: list[Evidence] = list(seen.problems)
    if seen.hang is not None or end in (GuestEnd.HUNG, GuestEnd.BOOT_FAILURE, GuestEnd.INFRA_ERROR):
        why = seen.hang or _done_reason(seen) or f"{end.value} ({phase_of(seen, now)})"
        evidence.append(f"{why}; console tail:\n{console_tail}")
    if seen.stopped is not None:
        evidence.append(f"the host stopped the guest: {seen.stopped}")
    if req.earlier_attempt:
        evidence.append(req.earlier_attempt)
    if not records and req.select and end is GuestEnd.DONE:
        evidence.append(f"the selection -k {req.select!r} matched no test")
    if truncated:
        evidence.append(f"last results line was cut off (guest died while writing): {truncated!r}")
    return evidence


def _done_reason(seen: ConsoleWatch) -> str | None:
    """The guest entry's own account of an abnormal end (a start-up timeout, pytest not starting)."""
    done = seen.done or {}
    status = done.get("status")
    if status == "timeout":
        limit, phase = done.get("deadline_s", "?"), done.get("phase", "?")
        if done.get("test"):
            phase = f"{phase} {done['test']} (running {done.get('test_elapsed', '?')} s, within its limit)"
        return f"the guest's {limit} s deadline passed during {phase}: slow, no test stuck (raise --timeout)"
    if status == "error":
        return f"guest entry error: {done.get('message', '?')}"
    code = done.get("exit_code")
    if isinstance(code, int) and code in PYTEST_BROKEN:
        return f"pytest in the guest ended with exit status {code} ({PYTEST_BROKEN[code]})"
    return None


def print_cell(result: CellResult, out: Callable[[str], None], *, passed_rows: bool = True) -> None:
    out(summary_table(result.meta, result.records, result.verdict, passed_rows=passed_rows))
    sweeps = fault_summary(result.records)  # per operation and route: fault sites reached, what broke
    if sweeps:
        out("fault injection and races:\n" + "\n".join(f"  {line}" for line in sweeps))
    out(f"time: {breakdown_line(marks_from_json(result.meta.timeline))}")
    for item in result.evidence:
        if isinstance(item, KernelProblem):
            known = f" (known issue: {item.known_issue})" if item.known_issue else ""
            during = f" during {item.during}" if item.during else ""
            out(f"{item.kind}{during}{known}:\n{item.excerpt}")
        else:
            out(item)
    out(f"results: {result.run_dir}")

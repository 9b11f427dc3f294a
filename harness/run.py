"""One cell: a topology booted with a kernel, the in-guest tests run, the results written.

The steps that decide anything (paths, argv, plan, verdict) are pure functions of their inputs;
run_cell() only sequences them around the one side-effecting owner, GuestVM.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__
from harness.console.events import BootMilestone, Event, KernelProblem, Marker
from harness.deadline import Deadline
from harness.errors import ConfigError, GuestHang
from harness.guest.plan import DeviceSpec, GuestPlan, dump_plan
from harness.guest.shapes import export_shapes
from harness.hostcheck import RunByteChecks, seed_commands
from harness.kernels.image import KernelImage
from harness.paths import GUEST_TESTS_DIR, KERNELS_DIR, REPO_ROOT
from harness.results.known_issues import KnownIssue, apply_known_issues, load_known_issues
from harness.results.model import (
    OUTCOMES,
    GuestEnd,
    RunMeta,
    TestRecord,
    Verdict,
    interrupted_record,
    load_records,
    verdict,
)
from harness.results.report import summary_table
from harness.results.write import Evidence, write_junit, write_reproduce, write_results_json
from harness.topology import Layout, Topology, backing_files, kernel_cmdline, lay_out, qemu_topology_args
from harness.topology.oracle import predict_pairs, sg_entries
from harness.vm.command import VngSpec, guarded_argv, vng_argv
from harness.vm.host_agent import HostAgent, device_table, object_table, qmp_args, unix_qmp
from harness.vm.machine import GuestVM

Progress = Callable[[str], None]

# Time the guest needs before its test entry starts (TCG boot of a stock kernel, measured ~5 s);
# the guest-side watchdog fires this much before the host deadline so the blocked stacks get out.
GUEST_BOOT_ALLOWANCE_S = 20.0
GUEST_WATCHDOG_MARGIN_S = 15.0
QMP_SOCKET = "qmp.sock"  # in the scratch directory; the host agent's way to QEMU (hot-unplug)


@dataclass(frozen=True)
class HostFacts:
    """Probed once per invocation and passed down."""

    qemu: str
    qemu_version: str
    accel: str
    accel_reason: str
    vng: str


@dataclass(frozen=True)
class CellRequest:
    topology: str
    kernel_spec: str
    select: str | None
    timeout: float
    idle_timeout: float
    out: Path | None = None
    invocation: tuple[str, ...] = ()
    # Said in the report when this cell is a rerun (why, and where the earlier attempt is kept).
    earlier_attempt: str | None = None
    series: Path | None = None  # absolute: reproduce.sh must find it from any directory

    @property
    def kernel_label(self) -> str:
        """The kernel as reports name it: the spec, plus the patch series applied on top."""
        return f"{self.kernel_spec}+{self.series.name}" if self.series else self.kernel_spec


@dataclass
class CellResult:
    run_dir: Path
    meta: RunMeta
    records: list[TestRecord]
    verdict: Verdict
    evidence: list[Evidence] = field(default_factory=list)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")


def default_run_dir(root: Path, topology: str, kernel_spec: str, now: datetime) -> Path:
    return root / f"{now:%Y%m%d-%H%M%S}-{slug(topology)}-{slug(kernel_spec)}"


def guest_command(plan_path: Path) -> str:
    # The guest sees the host's root file system, so the host's interpreter and venv run there too.
    return shlex.join([sys.executable, "-m", "harness.guest.entry", str(plan_path)])


def pair_expectations(topo: Topology, layout: Layout) -> tuple[dict[str, Any], ...]:
    """The oracle's prediction per exporter/importer pair, with sg entry counts per export shape."""
    bars = {d.id: d.bars.get(2, 0) for d in layout.devices}
    out = []
    for p in predict_pairs(topo):
        shapes = export_shapes(bars[p.exporter]) if bars[p.exporter] else {}
        counts = {name: sg_entries(p.route, [n for _, n in ranges]) for name, ranges in shapes.items()}
        out.append({"exporter": p.exporter, "importer": p.importer, "route": p.route, "why": p.why,
                    "qemu_dma": p.qemu_dma, "sg_entries_for": counts})  # fmt: skip
    return tuple(out)


def make_plan(
    topo: Topology,
    layout: Layout,
    kernel: KernelImage,
    run_dir: Path,
    scratch: Path,
    token: str,
    select: str | None,
    guest_deadline_s: float | None,
    modules_dir: Path | None,
) -> GuestPlan:
    backing = {dev_id: path for dev_id, path, _size in backing_files(layout, scratch)}
    devices = tuple(
        DeviceSpec(
            id=d.id,
            kind=d.kind,
            role=d.role,
            sysfs_glob=d.sysfs_glob,
            bars=dict(d.bars),
            backing=backing.get(d.id),
        )
        for d in layout.devices
    )
    return GuestPlan(
        token=token,
        run_dir=run_dir,
        results_path=run_dir / "guest-results.jsonl",
        topology=topo.name,
        kernel=kernel.spec,
        devices=devices,
        tests_dir=GUEST_TESTS_DIR,
        pytest_args=("-k", select) if select else (),
        modules_dir=modules_dir,
        guest_deadline_s=guest_deadline_s,
        expectations=pair_expectations(topo, layout),
    )


def make_vng_spec(
    topo: Topology,
    layout: Layout,
    kernel: KernelImage,
    facts: HostFacts,
    run_dir: Path,
    scratch: Path,
    plan_path: Path,
) -> VngSpec:
    return VngSpec(
        vng=facts.vng,
        kernel=kernel.image,
        accel=facts.accel,
        memory=f"{topo.machine.memory >> 20}M",
        cpus=topo.machine.smp,
        append=tuple(kernel_cmdline(topo)),
        # The topology, plus a QMP socket for the host agent (harness/vm/host_agent.py): guest tests
        # ask the host for device_del/device_add through the run directory.
        qemu_args=(*qemu_topology_args(layout, scratch), *qmp_args(scratch / QMP_SOCKET)),
        guest_command=guest_command(plan_path),
        rwdirs=(run_dir,),
        cwd=REPO_ROOT,
    )


def harness_command(req: CellRequest) -> list[str]:
    hil = ["./hil", "run", "--topology", req.topology, "--kernel", req.kernel_spec]
    if req.series:
        hil += ["--series", str(req.series)]
    if req.select:
        hil += ["-k", req.select]
    return [*hil, "--timeout", f"{req.timeout:g}"]


def raw_commands(
    layout: Layout, scratch: Path, vng: list[str], run_dir: Path | None = None
) -> list[list[str]]:
    """What the harness runs underneath, for re-running the cell by hand without it."""
    raw: list[list[str]] = [["mkdir", "-p", str(scratch)]]
    raw += [["truncate", "-s", str(size), str(path)] for _id, path, size in backing_files(layout, scratch)]
    if run_dir is not None:  # the host's seed bytes, kept in the run directory
        raw += seed_commands(seed_targets(layout, scratch), run_dir)
    return [*raw, vng]


def host_agent(layout: Layout, run_dir: Path, scratch: Path, progress: Progress) -> HostAgent:
    """The guest's way to QMP (hot-unplug): requests in the run directory, QEMU's QMP socket."""
    args = qemu_topology_args(layout, scratch)
    qmp = unix_qmp(scratch / QMP_SOCKET)
    return HostAgent(run_dir, qmp, device_table(args), progress, objects=object_table(args))


def seed_targets(layout: Layout, scratch: Path) -> list[tuple[str, Path]]:
    """(device, backing file) of every exporter: the host seeds random bytes there (harness/hostcheck.py)."""
    roles = {d.id: d.role for d in layout.devices}
    return [(dev, path) for dev, path, _size in backing_files(layout, scratch) if roles[dev] == "exporter"]


def create_backing_files(layout: Layout, scratch: Path) -> None:
    for _dev, path, size in backing_files(layout, scratch):
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: an 8 GiB BAR costs no disk until written


def _prepare_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"results directory {run_dir} exists and is not empty", "--out")
    run_dir.mkdir(parents=True, exist_ok=True)


@dataclass
class _Watch:
    """What the console told us while the guest ran."""

    started: bool = False
    done: dict[str, object] | None = None
    problems: list[KernelProblem] = field(default_factory=list)
    milestones: list[str] = field(default_factory=list)
    hang: str | None = None
    boot_s: float | None = None
    running: str | None = None  # announced by a begin frame, not yet finished
    running_since: float = 0.0  # time.monotonic() of that begin frame


# What the live progress line shows for a finished test: the outcome as the report will judge it.
Judge = Callable[[str, str], str]


def _as_reported(name: str, outcome: str) -> str:
    return outcome


def known_issue_judge(entries: Sequence[KnownIssue], kernel_version: str, topology: str) -> Judge:
    """A test's live outcome after the known issues (a failure they excuse shows as xfailed at once)."""

    def judge(name: str, outcome: str) -> str:
        if outcome not in OUTCOMES:
            return outcome
        record = TestRecord(name, outcome)
        return apply_known_issues([record], entries, kernel_version, topology)[0].outcome

    return judge


def _observe(event: Event, seen: _Watch, t0: float, progress: Progress, judge: Judge = _as_reported) -> None:
    if isinstance(event, Marker):
        if event.kind == "start":
            seen.started = True
            seen.boot_s = time.monotonic() - t0
            progress(f"guest up after {seen.boot_s:.1f} s (kernel {event.payload.get('kernel', '?')})")
        elif event.kind == "begin":
            seen.running = str(event.payload.get("name", "?"))
            seen.running_since = time.monotonic()
        elif event.kind == "test":
            p = event.payload
            if p.get("name") == seen.running:
                seen.running = None
            shown = judge(str(p.get("name", "?")), str(p.get("outcome", "?")))
            progress(f"  {shown:8} {p.get('name', '?')} ({float(str(p.get('duration', 0))):.2f} s)")
        elif event.kind == "done":
            seen.done = dict(event.payload)
    elif isinstance(event, KernelProblem):
        seen.problems.append(event)
        progress(f"kernel {event.kind}: {event.first_line.strip()}")
    elif isinstance(event, BootMilestone):
        seen.milestones.append(event.kind)


# QEMU's own assert()/abort() message, e.g. "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section:
# Assertion `section_index < d->map.sections_nb' failed." (TCG, seen during a VFIO bus reset).
_QEMU_ABORT = re.compile(r"^qemu-system-\S+: .*(?:Assertion .* failed|Aborted)", re.MULTILINE)


def qemu_abort_line(console: str) -> str | None:
    """Pure: QEMU's own abort message on the console, if QEMU (not the guest) died."""
    match = _QEMU_ABORT.search(console)
    return match.group(0).strip() if match else None


def guest_end_of(seen: _Watch, exit_status: int | None) -> GuestEnd:
    """Pure: how the guest ended, from what the console showed."""
    if seen.hang is not None or (seen.done is not None and seen.done.get("status") == "hung"):
        return GuestEnd.HUNG
    if any(p.kind in ("panic", "oops", "bug", "kasan") for p in seen.problems):
        return GuestEnd.CRASHED
    if any(p.kind in ("warning", "hung_task", "rcu_stall", "lockdep") for p in seen.problems):
        return GuestEnd.CRASHED
    if not seen.started:
        return GuestEnd.BOOT_FAILURE
    if seen.done is None:
        return GuestEnd.INFRA_ERROR
    return GuestEnd.DONE


def _first_cause(seen: _Watch, end: GuestEnd) -> str:
    """Pure: one line saying why the guest went away, for the interrupted test's message."""
    crashes = [p for p in seen.problems if p.kind != "blocked_tasks"]
    if end is GuestEnd.CRASHED and crashes:
        return f"kernel {crashes[0].kind}: {crashes[0].first_line.strip()}"
    if seen.done is not None and seen.done.get("status") == "hung":
        limit = seen.done.get("deadline_s", "?")
        cause = f"in-guest watchdog: the tests were not done within their {limit} s deadline"
    elif seen.hang is not None:
        cause = seen.hang.splitlines()[0] if seen.hang else "no progress before the deadline"
    else:
        cause = end.value
    blocked = [p for p in seen.problems if p.kind == "blocked_tasks"]
    if blocked:  # the watchdog's sysrq-w: the first blocked task, its stack is in the evidence
        cause += f"; blocked: {' '.join(blocked[0].first_line.split()[:2])}"
    return cause


def _final_records(
    results_path: Path,
    byte_checks: RunByteChecks,
    known: Sequence[KnownIssue],
    kernel: KernelImage,
    topo: Topology,
    seen: _Watch,
    end: GuestEnd,
    progress: Progress,
) -> tuple[list[TestRecord], str | None]:
    """The guest's records, judged by the host's byte checks and the known issues, plus the record of
    a test the guest died in (never excused by a known issue: a crash is not the failure it describes)."""
    records, truncated = load_records(results_path)
    records = byte_checks.apply(records)
    records = apply_known_issues(records, known, kernel.version, topo.name)
    ran_for = time.monotonic() - seen.running_since
    lost = interrupted_record(seen.running, records, end, _first_cause(seen, end), duration=ran_for)
    if lost is not None:
        progress(f"  {lost.outcome:8} {lost.name} ({lost.message})")
        records = [*records, lost]
    return records, truncated


def run_cell(
    req: CellRequest,
    topo: Topology,
    kernel: KernelImage,
    facts: HostFacts,
    runs_root: Path,
    progress: Progress,
    modules_dir: Path | None = None,
) -> CellResult:
    deadline = Deadline(req.timeout)
    layout = lay_out(topo)
    started_at = datetime.now(UTC)
    run_dir = req.out or default_run_dir(runs_root, topo.name, req.kernel_label, started_at.astimezone())
    _prepare_run_dir(run_dir)
    scratch = Path(tempfile.mkdtemp(prefix="p2p-hil-"))
    token = secrets.token_hex(8)
    guest_deadline = max(10.0, req.timeout - GUEST_BOOT_ALLOWANCE_S - GUEST_WATCHDOG_MARGIN_S)
    plan = make_plan(topo, layout, kernel, run_dir, scratch, token, req.select, guest_deadline, modules_dir)
    plan_path = run_dir / "plan.json"
    dump_plan(plan, plan_path)
    argv = vng_argv(make_vng_spec(topo, layout, kernel, facts, run_dir, scratch, plan_path))
    write_reproduce(
        run_dir / "reproduce.sh",
        harness_command(req),
        raw_commands(layout, scratch, argv, run_dir),
        header=[f"topology: {topo.name}", f"kernel: {req.kernel_label} ({kernel.version})"],
        cwd=str(REPO_ROOT),
    )

    seen = _Watch()
    known = load_known_issues(KERNELS_DIR / "known-issues.yaml")  # a broken file costs no VM time
    judge = known_issue_judge(known, kernel.version, topo.name)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    t0 = time.monotonic()
    progress(f"booting {topo.name} with {kernel.version} ({facts.accel}) -> {run_dir}")
    byte_checks = RunByteChecks(
        run_dir,
        Path(plan.results_path),
        {dev: path for dev, path, _size in backing_files(layout, scratch)},
        seed_targets(layout, scratch),
    )
    vm = GuestVM(
        guarded_argv(argv, os.getpid(), scratch),
        console_log=run_dir / "console.log",
        scratch=scratch,
        token=token,
        env=env,
        helpers=(host_agent(layout, run_dir, scratch, progress),),
    )
    try:
        create_backing_files(layout, scratch)
        byte_checks.seed()
        vm.launch()
        try:
            for event in vm.watch(deadline, req.idle_timeout):
                _observe(event, seen, t0, progress, judge)
        except GuestHang as exc:
            seen.hang = str(exc)
            progress(f"guest hung: {exc}")
    finally:
        vm.shutdown(before_cleanup=byte_checks.observe_now)  # host checks read the backing files
    vm_s = time.monotonic() - t0

    end = guest_end_of(seen, vm.exit_status)
    records, truncated = _final_records(
        Path(plan.results_path), byte_checks, known, kernel, topo, seen, end, progress
    )
    evidence: list[Evidence] = list(seen.problems)
    if seen.hang is not None or end in (GuestEnd.HUNG, GuestEnd.BOOT_FAILURE, GuestEnd.INFRA_ERROR):
        evidence.append(f"{seen.hang or end.value}; console tail:\n{vm.console_tail()}")
    if req.earlier_attempt:
        evidence.append(req.earlier_attempt)
    if not records and req.select and end is GuestEnd.DONE:
        evidence.append(f"the selection -k {req.select!r} matched no test")
    if truncated:
        evidence.append(f"last results line was cut off (guest died while writing): {truncated!r}")
    meta = RunMeta(
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
    )
    result_verdict = verdict(records, end, selected=req.select is not None)
    write_results_json(run_dir / "results.json", meta, records, result_verdict, evidence)
    write_junit(run_dir / "junit.xml", meta, records)
    return CellResult(run_dir, meta, records, result_verdict, evidence)


def print_cell(result: CellResult, out: Callable[[str], None]) -> None:
    out(summary_table(result.meta, result.records, result.verdict))
    for item in result.evidence:
        out(f"{item.kind}:\n{item.excerpt}" if isinstance(item, KernelProblem) else item)
    out(f"results: {result.run_dir}")

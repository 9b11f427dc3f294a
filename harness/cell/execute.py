"""One cell as a matrix runs it: the cell, with an infrastructure error turned into that cell's result,
one rerun when QEMU itself aborted, and `--retries` of the tests that failed.

Whatever happens, the cell's directory ends with a results.json: a broken cell must not cost the
others their runs, nor itself its record.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from harness import __version__
from harness.cell.request import CellRequest, CellResult, HostFacts
from harness.errors import InfraError
from harness.kernels.image import KernelImage
from harness.matrix.retry import merge_attempt, to_retry
from harness.results.model import GuestEnd, RunMeta, Verdict, combine_verdicts, verdict
from harness.results.write import write_junit, write_results_json
from harness.topology import Topology, topology_sha256

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CellRun:
    """Everything a cell needs besides its request: what the kernel's preparation produced."""

    topo: Topology
    kernel: KernelImage
    facts: HostFacts
    modules_dir: Path | None


@dataclass(frozen=True)
class PreparedKernel:
    """A kernel with what its cells need (host facts, test modules), or why its cells cannot run."""

    spec: str
    image: KernelImage
    facts: HostFacts | None = None
    modules_dir: Path | None = None
    error: InfraError | None = None


def run_prepared(
    req: CellRequest, topo: Topology, kernel: PreparedKernel, run_dir: Path, retries: int, progress: Progress
) -> CellResult:
    """The cell in `run_dir` (claimed by the caller), retries included; an infra-error cell when its
    kernel's preparation failed."""
    if kernel.facts is None:
        assert kernel.error is not None, "a kernel without facts failed its preparation"
        stage = f"preparing kernel {kernel.spec} for its cells"
        return infra_error_cell(
            req, topo, kernel.image, None, run_dir, stage, kernel.error, datetime.now(UTC)
        )
    run = CellRun(topo, kernel.image, kernel.facts, kernel.modules_dir)
    return with_retries(run_safely(req, run, run_dir, progress), req, run, retries, progress)


def run_safely(req: CellRequest, run: CellRun, run_dir: Path, progress: Progress) -> CellResult:
    """run_cell, with an InfraError recorded as this cell's infra-error, and QEMU's own abort rerun once."""
    from harness import run as cell  # at call time: tests swap harness.run.run_cell for a fake VM's

    started_at = datetime.now(UTC)
    req = replace(req, out=run_dir)
    try:
        result = cell.run_cell(req, run.topo, run.kernel, run.facts, run_dir, progress, run.modules_dir)
        return _rerun_if_qemu_aborted(result, req, run, progress)
    except InfraError as exc:
        progress(f"{run.topo.name} x {req.kernel_label}: infrastructure error, going on with the next cell")
        return infra_error_cell(req, run.topo, run.kernel, run.facts, run_dir, "the cell", exc, started_at)


def infra_error_cell(
    req: CellRequest,
    topo: Topology,
    kernel: KernelImage,
    facts: HostFacts | None,
    run_dir: Path,
    stage: str,
    exc: InfraError,
    started_at: datetime,
) -> CellResult:
    """Record a cell that could not run as `infra-error`, the error text as its evidence, in its own
    results directory (results.json and junit.xml, like any other cell)."""
    meta = RunMeta(
        topology=topo.name,
        kernel=req.kernel_label,
        kernel_version=kernel.version,
        qemu_version=facts.qemu_version if facts else None,
        accelerator=facts.accel if facts else "none",
        started_at=started_at.isoformat(),
        durations={"total": round((datetime.now(UTC) - started_at).total_seconds(), 2)},
        host=socket.gethostname(),
        harness_version=__version__,
        command=list(req.invocation),
        axes=dict(req.axes),
        topology_sha256=topology_sha256(topo),
    )
    evidence = [f"infrastructure error in {stage} ({type(exc).__name__}): {exc}"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_results_json(run_dir / "results.json", meta, [], Verdict.INFRA_ERROR, evidence)
    write_junit(run_dir / "junit.xml", meta, [])
    return CellResult(run_dir, meta, [], Verdict.INFRA_ERROR, list(evidence))


def _rerun_if_qemu_aborted(
    result: CellResult, req: CellRequest, run: CellRun, progress: Progress
) -> CellResult:
    """QEMU's TCG has rare internal asserts (not the kernel's fault): rerun such a cell once, keeping
    the first attempt's directory next to it and saying so in the second attempt's report."""
    from harness import run as cell
    from harness.console.watch import qemu_abort_line

    if result.verdict is not Verdict.INFRA_ERROR:
        return result
    console = result.run_dir / "console.log"
    line = qemu_abort_line(console.read_text(errors="replace")) if console.exists() else None
    if line is None:
        return result
    kept = result.run_dir.with_name(result.run_dir.name + "-qemu-abort")
    result.run_dir.rename(kept)
    progress(f"QEMU itself aborted ({line}); rerunning the cell once, first attempt kept in {kept}")
    again = replace(req, out=result.run_dir, earlier_attempt=f"first attempt: QEMU aborted: {line} ({kept})")
    return cell.run_cell(again, run.topo, run.kernel, run.facts, result.run_dir, progress, run.modules_dir)


def with_retries(
    result: CellResult, req: CellRequest, run: CellRun, retries: int, progress: Progress
) -> CellResult:
    """Rerun the cell's failed tests, each retry in a fresh VM in <cell>/retry-<n>, up to `retries`
    times or until none fails; then rewrite the cell's results.json and junit.xml with the merged
    records (flaky where a retry passed) and the verdict they give."""
    if retries < 1 or result.verdict is not Verdict.FAILED:
        return result
    records, evidence = list(result.records), list(result.evidence)
    retry_verdicts: list[Verdict] = []
    spent = 0.0
    for attempt in range(1, retries + 1):
        failing = to_retry(records)
        if not failing:
            break
        where = f"retry-{attempt}"
        progress(
            f"retry {attempt} of {len(failing)} failed test(s) in a fresh VM -> {result.run_dir / where}"
        )
        again = run_safely(replace(req, only=failing, select=None), run, result.run_dir / where, progress)
        spent += again.meta.durations.get("total", 0.0)
        records = merge_attempt(records, again.records, attempt, where)
        if again.verdict in (Verdict.CRASHED, Verdict.HUNG, Verdict.INFRA_ERROR):
            retry_verdicts.append(again.verdict)
            first = next((str(e) for e in again.evidence), "see its results.json")
            evidence.append(f"retry {attempt} ({where}) ended {again.verdict.value}: {first.splitlines()[0]}")
            if again.verdict is not Verdict.INFRA_ERROR:  # what the kernel did in a retry is a result
                evidence.extend(again.problems())
    # A crash or hang in a retry is the kernel's answer too; a retry that could not start is not.
    final = combine_verdicts(
        [verdict(records, GuestEnd.DONE), *(v for v in retry_verdicts if v is not Verdict.INFRA_ERROR)]
    )
    meta = replace(result.meta, durations={**result.meta.durations, "retries": round(spent, 2)})
    write_results_json(result.run_dir / "results.json", meta, records, final, evidence)
    write_junit(result.run_dir / "junit.xml", meta, records)
    return CellResult(result.run_dir, meta, records, final, evidence)

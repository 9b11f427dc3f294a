"""What one cell is asked to do, the host facts it runs with, and what it produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.console.events import KernelProblem
from harness.results.model import RunMeta, TestRecord, Verdict
from harness.results.write import Evidence


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
    # The --axis values that made this cell's topology a variant of `topology` (harness/topology/axes.py).
    axes: tuple[tuple[str, str], ...] = ()
    # Run only these tests (node ids): a retry of the ones that failed (harness/matrix/retry.py).
    only: tuple[str, ...] = ()
    # Extra config fragments of the kernel variant (`--fragment debug`): part of the kernel's identity.
    fragments: tuple[str, ...] = ()
    race_seconds: float | None = None  # `--race-seconds`: how long each bounded race test runs
    kselftests: tuple[str, ...] = ()  # `--kselftest NAME`: upstream selftest directories to run

    @property
    def kernel_label(self) -> str:
        return kernel_label(self.kernel_spec, self.fragments, self.series)


def kernel_label(spec: str, fragments: tuple[str, ...], series: Path | None) -> str:
    """The kernel as reports name it: the spec, its variant's fragments, the patch series on top
    (src:debian-7.2+debug+fix.mbox)."""
    label = "+".join((spec, *(Path(f).stem for f in fragments)))
    return f"{label}+{series.name}" if series else label


@dataclass
class CellResult:
    run_dir: Path
    meta: RunMeta
    records: list[TestRecord]
    verdict: Verdict
    evidence: list[Evidence] = field(default_factory=list)

    def problems(self) -> list[KernelProblem]:
        return [e for e in self.evidence if isinstance(e, KernelProblem)]

"""Matrix directories for tests, written the way `hil run` writes them (results.json per cell, then
matrix.json), from records made up in the test: no VM, no clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.matrix.cells import TOPOLOGY_FILE, cell_id
from harness.matrix.document import MATRIX_FILE, Matrix, Shard, collect, matrix_json, read_matrix
from harness.paths import TOPOLOGY_DIR
from harness.results.model import Outcome, RunMeta, TestRecord, Verdict
from harness.results.write import Evidence, write_results_json, write_text
from harness.topology import load_topology


@dataclass
class FakeCell:
    topology: str
    kernel: str = "src:debian-7.2"
    records: Sequence[TestRecord] = ()
    verdict: Verdict = Verdict.PASSED
    evidence: Sequence[Evidence] = ()
    kernel_version: str = "7.2.13-hil"
    axes: dict[str, str] = field(default_factory=dict)
    topology_sha256: str = "0" * 64
    total_s: float = 30.0

    @property
    def id(self) -> str:
        return cell_id(self.topology, self.kernel)

    def meta(self) -> RunMeta:
        return RunMeta(
            topology=self.topology,
            kernel=self.kernel,
            kernel_version=self.kernel_version,
            qemu_version="10.0.2",
            accelerator="tcg",
            started_at="2026-11-30T01:00:00+00:00",
            durations={"boot": 4.0, "tests": 10.0, "total": self.total_s},
            host="test-host",
            harness_version="0.test",
            command=["./hil", "run"],
            axes=dict(self.axes),
            topology_sha256=self.topology_sha256,
        )


def record(name: str, outcome: Outcome, message: str = "", **details: Any) -> TestRecord:
    return TestRecord(name=name, outcome=outcome, duration=0.25, message=message, details=details)


def write_matrix(
    matrix_dir: Path,
    cells: Sequence[FakeCell],
    *,
    planned_extra: Sequence[FakeCell] = (),
    shard: Shard | None = None,
) -> Matrix:
    """`cells` ran (each gets its directory and results.json); `planned_extra` were planned and did
    not run (missing). Returns the matrix as read back from disk."""
    planned = [
        {"id": c.id, "topology": c.topology, "given": c.topology, "kernel": c.kernel, "axes": c.axes}
        for c in [*cells, *planned_extra]
    ]
    axes: dict[str, list[str]] = {"topology": [], "kernel": []}
    for c in [*cells, *planned_extra]:
        for key, value in {"topology": c.topology, "kernel": c.kernel, **c.axes}.items():
            if value not in axes.setdefault(key, []):
                axes[key].append(value)
    for c in cells:
        write_results_json(matrix_dir / c.id / "results.json", c.meta(), c.records, c.verdict, c.evidence)
        (matrix_dir / c.id / "console.log").write_text(f"console of {c.id}\n")
        base = c.topology.split("[")[0]
        if (TOPOLOGY_DIR / f"{base}.yaml").exists():  # as run_cell keeps it: the machine the cell booted
            topo = load_topology(base).model_dump(mode="json") | {"name": c.topology}
            write_text(matrix_dir / c.id / TOPOLOGY_FILE, json.dumps(topo, indent=1))
    skeleton = collect(matrix_dir, planned, axes, shard)
    text = matrix_json(
        skeleton, created_at="2026-11-30T02:00:00+00:00", command=["./hil"], harness_version="t"
    )
    write_text(matrix_dir / MATRIX_FILE, text)
    return read_matrix(matrix_dir)

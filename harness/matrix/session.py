"""One `hil run` over a matrix directory: which cells it owes (all, a shard's, or what a resume still
lacks), running them, and the files that describe the whole at the end."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.cell.execute import PreparedKernel, run_prepared
from harness.cell.request import CellRequest, CellResult
from harness.errors import ConfigError, InfraError
from harness.matrix.aggregate import write_aggregate, write_matrix_json
from harness.matrix.cells import CellSpec, axes_columns
from harness.matrix.compare import Comparison
from harness.matrix.document import (
    RESULTS_FILE,
    Matrix,
    Shard,
    collect,
    durations_by_cell,
    read_matrix,
)
from harness.matrix.runner import run_jobs
from harness.matrix.shards import shard_cells
from harness.results.model import Verdict
from harness.results.read import CellDocument, read_results_json
from harness.rundir import claim_out_dir

Progress = Callable[[str], None]
# Where an earlier attempt of a cell goes when --resume runs it again (its infra-error, or a run that
# was interrupted before its results.json): kept, beside the cells, never read as one.
EARLIER = ".earlier-"


@dataclass
class MatrixSession:
    dir: Path
    cells: list[CellSpec]  # the cells this directory owes: the whole matrix, or one shard of it
    command: list[str]
    shard: Shard | None = None
    whole: list[str] | None = None
    baseline: Matrix | None = None
    # The cells' parsed results.json, read once when the session opens and then one cell at a time as it
    # ends: matrix.json is rewritten after every cell, which must not re-read every cell each time.
    docs: dict[str, CellDocument] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        cells: Sequence[CellSpec],
        out: Path | None,
        shard: Shard | None,
        *,
        resume: bool,
        baseline: Matrix | None,
        runs_root: Path,
    ) -> MatrixSession:
        """Claim (or, resuming, check) the matrix directory and write its plan before any cell runs."""
        ids = [c.id for c in cells]
        if shard is not None:
            # Balanced on what each cell took in the baseline, when there is one: all shards of a night
            # must be given the same --baseline to agree on the split.
            mine = shard_cells(ids, shard, durations_by_cell(baseline) if baseline else None)
            owed = [c for c in cells if c.id in mine]
        else:
            owed = list(cells)
        directory = out or runs_root / f"{datetime.now().astimezone():%Y%m%d-%H%M%S}-matrix"
        if resume:
            _check_resumable(directory, [c.id for c in owed])
        else:
            claim_out_dir(directory)
        session = cls(
            directory,
            owed,
            ["./hil", *sys.argv[1:]],
            shard,
            ids if shard else None,
            baseline,
        )
        session.docs = collect(session.dir, session.planned(), {}).cells
        write_matrix_json(session.matrix(), session.command)
        return session

    def planned(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.cells]

    def matrix(self) -> Matrix:
        """The matrix as far as it has run (no file is read here)."""
        cells = {p["id"]: self.docs[p["id"]] for p in self.planned() if p["id"] in self.docs}
        return Matrix(
            self.dir, self.planned(), axes_columns(self.cells), self.shard, cells, list(self.whole or [])
        )

    def pending(self) -> list[CellSpec]:
        """The cells without a result, or whose result is an infra-error; an earlier attempt's directory
        is moved aside (kept) so the cell starts in a directory of its own."""
        todo = []
        for cell in self.cells:
            doc = self.docs.get(cell.id)
            if doc is not None and doc.verdict is not Verdict.INFRA_ERROR:
                continue
            todo.append(cell)
            self.docs.pop(cell.id, None)
            path = self.dir / cell.id
            if path.exists():
                n = 1 + sum(1 for _ in self.dir.glob(f"{cell.id}{EARLIER}*"))
                path.rename(self.dir / f"{cell.id}{EARLIER}{n}")
        return todo

    def run(
        self,
        jobs: Sequence[CellSpec],
        kernels: dict[str, PreparedKernel],
        make_request: Callable[[CellSpec], CellRequest],
        *,
        parallel: int,
        retries: int,
        progress: Progress,
        report: Callable[[CellResult], None],
    ) -> tuple[Matrix, Comparison | None]:
        """Run `jobs`, `report` each cell as it ends, then write the aggregate files. Returns the matrix as
        its directory now holds it, and its comparison with the baseline."""
        skipped = len(self.cells) - len(jobs)
        if skipped:
            progress(f"{self.dir}: {skipped} cell(s) already have results; running {len(jobs)}")
        progress(f"matrix {self.dir}: {len(jobs)} cell(s), {parallel} at a time")

        def execute(cell: CellSpec) -> CellResult:
            say = progress if parallel == 1 else (lambda text: progress(f"{cell.topology.name}: {text}"))
            run_dir = claim_out_dir(self.dir / cell.id)
            req = make_request(cell)
            return run_prepared(req, cell.topology, kernels[cell.kernel_spec], run_dir, retries, say)

        def on_done(cell: CellSpec, result: CellResult) -> None:
            report(result)
            self.docs[cell.id] = read_results_json(self.dir / cell.id / RESULTS_FILE)
            write_matrix_json(self.matrix(), self.command)

        run_jobs(jobs, execute, parallel=parallel, label=lambda c: c.id, report=on_done, progress=progress)
        matrix = self.matrix()
        return matrix, write_aggregate(matrix, self.command, self.baseline)


def _check_resumable(directory: Path, owed: list[str]) -> None:
    """--resume completes the matrix these arguments describe, in a directory an earlier run of the same
    arguments wrote; anything else would mix two matrices in one directory."""
    try:
        earlier = read_matrix(directory)
    except InfraError as exc:  # for the user, a wrong --resume
        raise ConfigError(str(exc), "--resume") from None
    planned = [p["id"] for p in earlier.planned]
    if sorted(planned) != sorted(owed):
        only_there = sorted(set(planned) - set(owed))
        only_here = sorted(set(owed) - set(planned))
        raise ConfigError(
            f"{directory} holds another matrix: cells only there {only_there or 'none'}, only in these "
            f"arguments {only_here or 'none'}; give the arguments of the run that made it",
            "--resume",
        )

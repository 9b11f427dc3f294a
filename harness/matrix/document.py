"""matrix.json: what one matrix directory holds, cell by cell (pure builders, plus the one reader).

Every fact in it comes from the cells' own results.json, so a matrix written by one run and one
merged from shards are the same file for the same cells (but for `created_at`, `command`, `shard`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InfraError
from harness.jsonfile import read_document
from harness.results.model import Outcome, Verdict, combine_verdicts, count_outcomes, exit_code
from harness.results.read import CellDocument, read_results_json
from harness.results.routes import RouteRow, route_rows

MATRIX_SCHEMA = 1
MATRIX_FILE = "matrix.json"
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as `--shard 2/4` says it
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


@dataclass(frozen=True)
class MatrixEntry:
    """One cell that ran, as matrix.json lists it."""

    id: str
    dir: str  # relative to the matrix directory
    topology: str
    kernel: str
    kernel_version: str | None
    axes: dict[str, str]
    verdict: Verdict
    counts: dict[Outcome, int]
    durations: dict[str, float]
    topology_sha256: str
    started_at: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


def entry_of(cell_id: str, doc: CellDocument, matrix_dir: Path) -> MatrixEntry:
    meta = doc.meta
    return MatrixEntry(
        id=cell_id,
        dir=str(doc.path.parent.relative_to(matrix_dir)),
        topology=meta.topology,
        kernel=meta.kernel,
        kernel_version=meta.kernel_version,
        axes=dict(meta.axes),
        verdict=doc.verdict,
        counts=count_outcomes(doc.records),
        durations=dict(meta.durations),
        topology_sha256=meta.topology_sha256,
        started_at=meta.started_at,
    )


@dataclass(frozen=True)
class Matrix:
    """A matrix directory: the cells planned, the ones that ran (id -> parsed results.json)."""

    dir: Path
    planned: list[dict[str, Any]]  # CellSpec.to_json() of every cell of the whole matrix
    axes: dict[str, list[str]]
    shard: Shard | None = None
    cells: dict[str, CellDocument] = field(default_factory=dict)
    # A shard's directory plans its part of the cells; `whole` lists the ids of every cell of the matrix
    # it is a part of, so that a merge can tell when a shard is missing.
    whole: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [p["id"] for p in self.planned if p["id"] not in self.cells]

    def entries(self) -> list[MatrixEntry]:
        return [entry_of(cell_id, doc, self.dir) for cell_id, doc in self.cells.items()]

    def routes(self) -> list[RouteRow]:
        return [row for doc in self.cells.values() for row in route_rows(doc.meta, doc.records)]

    @property
    def verdict(self) -> Verdict:
        """The worst cell's; a planned cell that never ran makes the matrix an infra-error."""
        verdicts = [doc.verdict for doc in self.cells.values()]
        return combine_verdicts([*verdicts, *([Verdict.INFRA_ERROR] if self.missing else [])])


def matrix_json(matrix: Matrix, *, created_at: str, command: Sequence[str], harness_version: str) -> str:
    verdict = matrix.verdict
    document = {
        "schema": MATRIX_SCHEMA,
        "created_at": created_at,
        "harness_version": harness_version,
        "command": list(command),
        "shard": str(matrix.shard) if matrix.shard else None,
        "whole": matrix.whole,
        "axes": matrix.axes,
        "planned": matrix.planned,
        "verdict": verdict.value,
        "exit_code": exit_code(verdict),
        "cells": [e.to_json() for e in matrix.entries()],
        "missing": matrix.missing,
        "routes": [asdict(row) for row in matrix.routes()],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def parse_shard(text: str) -> Shard:
    index, sep, total = text.partition("/")
    if not (sep and index.isdigit() and total.isdigit() and 1 <= int(index) <= int(total)):
        raise ValueError(f"{text!r} is not K/N with 1 <= K <= N (e.g. 2/4)")
    return Shard(int(index), int(total))


def read_matrix(matrix_dir: Path) -> Matrix:
    """A matrix directory as written by `hil run` or `hil merge`: matrix.json for what was planned,
    every planned cell's results.json that exists for what ran."""
    path = matrix_dir / MATRIX_FILE
    data = read_document(path, "no matrix.json (not a matrix directory of hil run or hil merge)")
    if not isinstance(data, dict) or data.get("schema") != MATRIX_SCHEMA:
        raise InfraError(f"{path}: not a p2p-hil matrix of schema {MATRIX_SCHEMA}")
    planned = data.get("planned")
    axes = data.get("axes")
    if not isinstance(planned, list) or not all(isinstance(p, dict) and "id" in p for p in planned):
        raise InfraError(f"{path}: 'planned' must be a list of cells with an 'id'")
    if not isinstance(axes, dict):
        raise InfraError(f"{path}: 'axes' must be an object")
    shard = parse_shard(data["shard"]) if data.get("shard") else None
    whole = data.get("whole") or []
    if not isinstance(whole, list) or not all(isinstance(w, str) for w in whole):
        raise InfraError(f"{path}: 'whole' must be a list of cell ids")
    return collect(matrix_dir, planned, axes, shard, whole)


def collect(
    matrix_dir: Path,
    planned: list[dict[str, Any]],
    axes: dict[str, list[str]],
    shard: Shard | None = None,
    whole: list[str] | None = None,
) -> Matrix:
    """The matrix as its directory holds it now: every planned cell whose results.json exists."""
    cells = {
        p["id"]: read_results_json(matrix_dir / p["id"] / RESULTS_FILE)
        for p in planned
        if (matrix_dir / p["id"] / RESULTS_FILE).exists()
    }
    return Matrix(matrix_dir, planned, axes, shard, cells, list(whole or []))


def durations_by_cell(matrix: Matrix) -> Mapping[str, float]:
    """What each cell took last time ('total' of its results.json): the weights shards balance on."""
    return {cell_id: doc.meta.durations.get("total", 0.0) for cell_id, doc in matrix.cells.items()}

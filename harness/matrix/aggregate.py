"""The files that describe a whole matrix directory, written from its cells' results.json alone (so a
run, a resumed run and a merge of shards write the same files for the same cells)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from harness import __version__
from harness.matrix.compare import COMPARISON_FILE, Comparison, compare, comparison_json
from harness.matrix.document import MATRIX_FILE, Matrix, matrix_json
from harness.matrix.html import index_html
from harness.matrix.kcidb import kcidb_text
from harness.results.write import merged_junit_xml, write_text

AGGREGATE_FILES = (MATRIX_FILE, "junit.xml", "kcidb.json", "index.html")


def write_matrix_json(matrix: Matrix, command: Sequence[str]) -> Path:
    """matrix.json alone: written when the run starts (what is planned) and after every cell, so that an
    interrupted run can be resumed and looked at."""
    text = matrix_json(
        matrix,
        created_at=datetime.now().astimezone().isoformat(),
        command=command,
        harness_version=__version__,
    )
    return write_text(matrix.dir / MATRIX_FILE, text)


def write_aggregate(
    matrix: Matrix, command: Sequence[str], baseline: Matrix | None = None
) -> Comparison | None:
    """matrix.json, junit.xml, kcidb.json, index.html and, against a baseline, comparison.json."""
    write_matrix_json(matrix, command)
    docs = [matrix.cells[p["id"]] for p in matrix.planned if p["id"] in matrix.cells]
    write_text(matrix.dir / "junit.xml", merged_junit_xml([(d.meta, d.records) for d in docs]))
    write_text(matrix.dir / "kcidb.json", kcidb_text(matrix))
    comparison = compare(baseline, matrix) if baseline is not None else None
    comparison_doc = None
    if comparison is not None:
        text = comparison_json(comparison)
        write_text(matrix.dir / COMPARISON_FILE, text)
        comparison_doc = json.loads(text)
    write_text(matrix.dir / "index.html", index_html(matrix, comparison_doc))
    return comparison

"""results.json -> the cell it describes: what a matrix, a comparison or a merge reads back.

The writer is harness.results.write; a file another version wrote, or a half-copied one, is an
InfraError naming the file, never a silently empty cell.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.errors import InfraError
from harness.jsonfile import read_document
from harness.results.model import RunMeta, TestRecord, Verdict, record_from_json
from harness.results.write import RESULTS_SCHEMA


@dataclass(frozen=True)
class CellDocument:
    """One cell's results.json, parsed. `evidence` stays JSON (harness.results.write.evidence_json)."""

    path: Path
    meta: RunMeta
    records: list[TestRecord]
    verdict: Verdict
    evidence: list[dict[str, Any]]


_META_FIELDS = {f.name for f in fields(RunMeta)}


def read_results_json(path: Path) -> CellDocument:
    data = read_document(path, "no results.json (the cell never ran, or its directory is not a cell)")
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else None
        raise InfraError(f"{path}: schema {schema!r}, this p2p-hil reads schema {RESULTS_SCHEMA}")
    try:
        meta_json = data["meta"]
        meta = RunMeta(**{k: v for k, v in meta_json.items() if k in _META_FIELDS})
        records = [record_from_json(r, f"{path}: records[{i}]") for i, r in enumerate(data["records"])]
        verdict = Verdict(data["verdict"])
        evidence = list(data.get("evidence", []))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InfraError(f"{path}: not a p2p-hil results file: {type(exc).__name__}: {exc}") from None
    return CellDocument(path, meta, records, verdict, evidence)

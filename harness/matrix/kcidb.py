"""kcidb.json: a matrix in the KCIDB I/O schema (v5.3), what a lab submits to KernelCI with `kcidb-submit`.
Pure: reads the Matrix (and whether each cell kept a console.log), writes nothing.

Objects and ids (every id is "<origin>:<16 hex digits of a sha256>", so it is the same on every machine):
- one checkout and one build per kernel: the kernel label as given (src:debian-7.2) and the version it
  booted. Both ids come from label and version only, so every night that tests the same kernel names the
  same checkout and build. A cell that never booted (no version) joins its label's checkout when the
  label booted exactly one version elsewhere. Every kernel in a matrix was built or fetched before its
  first cell (a kernel build failure stops a run before any cell), so its build status is PASS.
- one test per (cell, test record), and one per cell for the cell itself (CELL_TEST_PATH). Test ids hash
  the cell id, the cell's start time and the record's node id: a matrix rewritten from the same cell
  directories (--resume, merge) keeps its ids, another night's run of the cell gets new ones, so KCIDB
  keeps both nights instead of overwriting one with the other.

Test paths (KCIDB allows dot-separated segments of [A-Za-z0-9_-]): SUITE, then the node id's file
without ".py" with its directories as segments, then each "::" part, then the parametrization id as
its own segment. Any other character becomes "_", so the exact node id is kept in misc["node_id"]:
"test_routing.py::test_dma_list_matches_route[exporter-dma-whole]" ->
"p2phil.test_routing.test_dma_list_matches_route.exporter-dma-whole".

Statuses: see STATUS. KCIDB has no expected failure. An xfailed test did what KCIDB calls FAIL ("the
test completed and reported the tested code as faulty"): the kernel still has the analysed bug. KCIDB's
own word for "this failure is a known bug" is an incident linking the test to an issue, so the known
issue becomes an issue (culprit: the code) and the test an incident of it; PASS would hide a kernel bug
from the kernel's dashboard, SKIP and DONE would say the test did not judge the kernel. An xpassed test
is an incident with present=false (the issue did not reproduce) and FAIL, as it fails a p2p-hil run.
A flaky test (failed, then passed on a retry) is DONE with misc.flaky: never PASS.

The cell test says what the records cannot: FAIL when the kernel took the machine down (crashed, hung),
ERROR on an infra-error (the kernel's state unknown), FAIL for a failed cell none of whose records
fails (e.g. a selection that matched nothing), else PASS, so a dashboard also sees the crash go away.

Relative paths (the cell directory, its console.log) are in misc: KCIDB's log_url and output_files must
be URLs, which only a `base_url` (where the matrix directory is published) can make.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from harness.matrix.document import Matrix
from harness.results.model import FAILING, Outcome, TestRecord, Verdict
from harness.results.read import CellDocument

KCIDB_VERSION = {"major": 5, "minor": 3}
SUITE = "p2phil"
CELL_TEST_PATH = f"{SUITE}.cell"
ARCHITECTURE = "x86_64"
ISSUE_VERSION = 1

STATUS: dict[Outcome, str] = {
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "SKIP",
    "xfailed": "FAIL",
    "xpassed": "FAIL",
    "flaky": "DONE",
}
CELL_STATUS: dict[Verdict, str] = {
    Verdict.PASSED: "PASS",
    Verdict.FAILED: "PASS",  # FAIL instead when no record fails (cell_status)
    Verdict.CRASHED: "FAIL",
    Verdict.HUNG: "FAIL",
    Verdict.INFRA_ERROR: "ERROR",
}

_ORIGIN = re.compile(r"[a-z0-9_]+")
_SEGMENT_CHAR = re.compile(r"[^A-Za-z0-9_-]")
# Conservative: schemes and characters every RFC 3986 parser accepts, so an output that is not validated
# at write time (kcidb-io is a dev dependency) still passes a strict "uri" format check.
_URL = re.compile(
    r"https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=-]*(%[0-9A-Fa-f]{2}[A-Za-z0-9._~:/?#@!$&'()*+,;=-]*)*"
)
_MAX_EXCERPT = 16384  # the schema's maxLength for log_excerpt
_ID_HEX = 16


def _id(origin: str, *parts: str) -> str:
    digest = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()
    return f"{origin}:{digest[:_ID_HEX]}"


def _text(text: str, limit: int | None = None) -> str:
    """The schema's strings may hold anything but NUL."""
    clean = text.replace("\0", "\\0")
    return clean[:limit] if limit is not None else clean


def _time(value: str) -> datetime | None:
    """An RFC 3339 time (with its offset), or None: the schema rejects a time without one."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _segment(text: str) -> str:
    return _SEGMENT_CHAR.sub("_", text) or "_"


def kcidb_path(node_id: str) -> str:
    """A pytest node id as a KCIDB test path (module docstring)."""
    base, bracket, params = node_id.partition("[")
    file, *names = base.split("::")
    file = re.sub(r"\.py$", "", file)
    segments = [SUITE, *(_segment(p) for p in re.split(r"[/\\]", file) if p), *map(_segment, names)]
    if bracket and params.removesuffix("]"):
        segments.append(_segment(params.removesuffix("]")))
    return ".".join(segments)


def is_url(text: str) -> bool:
    return _URL.fullmatch(text) is not None


# -- kernels ------------------------------------------------------------------------------------


def _kernel_keys(cells: Mapping[str, CellDocument]) -> dict[str, tuple[str, str | None]]:
    """cell id -> (label, version) of the kernel it tested (module docstring: a cell without a version
    joins its label's only version)."""
    versions: dict[str, set[str]] = {}
    for doc in cells.values():
        if doc.meta.kernel_version:
            versions.setdefault(doc.meta.kernel, set()).add(doc.meta.kernel_version)
    keys: dict[str, tuple[str, str | None]] = {}
    for cell_id, doc in cells.items():
        label, version = doc.meta.kernel, doc.meta.kernel_version
        known = versions.get(label, set())
        keys[cell_id] = (label, version or (next(iter(known)) if len(known) == 1 else None))
    return keys


def _checkout_id(origin: str, key: tuple[str, str | None]) -> str:
    return _id(origin, "checkout", key[0], key[1] or "")


def _build_id(origin: str, key: tuple[str, str | None]) -> str:
    return _id(origin, "build", key[0], key[1] or "", ARCHITECTURE)


def _kernel_objects(
    origin: str, keys: Mapping[str, tuple[str, str | None]], cells: Mapping[str, CellDocument]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    checkouts: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    for key in dict.fromkeys(keys.values()):
        label, version = key
        mine = [cells[c] for c, k in keys.items() if k == key]
        times = [t for t in (_time(d.meta.started_at) for d in mine) if t is not None]
        name = f"{label} ({version or 'version unknown: never booted'})"
        misc = {"kernel": label, "kernel_version": version, "cells": [c for c, k in keys.items() if k == key]}
        checkout: dict[str, Any] = {
            "id": _checkout_id(origin, key),
            "origin": origin,
            "comment": _text(name),
            "valid": True,
            "misc": misc,
        }
        if times:
            # KCIDB's dashboards list checkouts by start time: the first cell of this kernel in this matrix.
            checkout["start_time"] = min(times).isoformat()
        checkouts.append(checkout)
        builds.append(
            {
                "id": _build_id(origin, key),
                "checkout_id": checkout["id"],
                "origin": origin,
                "comment": _text(name),
                "architecture": ARCHITECTURE,
                # The label names what decides the config: Debian's own, or ours plus fragments and series.
                "config_name": _text(label),
                "status": "PASS",
                "misc": {"kernel": label, "kernel_version": version},
            }
        )
    return checkouts, builds


# -- tests --------------------------------------------------------------------------------------


def _environment(doc: CellDocument) -> dict[str, Any]:
    meta = doc.meta
    axes = "".join(f", {k}={v}" for k, v in sorted(meta.axes.items()))
    return {
        "comment": _text(
            f"QEMU {meta.qemu_version or '?'} ({meta.accelerator}), topology {meta.topology}{axes}"
        ),
        "misc": {
            "topology": meta.topology,
            "topology_sha256": meta.topology_sha256,
            "axes": dict(meta.axes),
            "accelerator": meta.accelerator,
            "qemu_version": meta.qemu_version,
            "host": meta.host,
        },
    }


def _test_starts(doc: CellDocument) -> dict[str, datetime]:
    """When each test began: the cell's start plus the test's begin mark on the cell's timeline."""
    start = _time(doc.meta.started_at)
    if start is None:
        return {}
    starts: dict[str, datetime] = {}
    for mark in doc.meta.timeline:
        detail, t = mark.get("detail"), mark.get("t")
        if mark.get("mark") == "test_begin" and isinstance(detail, str) and isinstance(t, int | float):
            starts.setdefault(detail, start + timedelta(seconds=float(t)))
    return starts


def _first_line(item: Mapping[str, Any]) -> str:
    text = item.get("first_line") if item.get("kind") != "note" else item.get("text")
    return str(text or "").strip().split("\n", 1)[0]


def _excerpt(evidence: Sequence[Mapping[str, Any]]) -> str:
    """The evidence a reader wants first: the first kernel report's excerpt, else the first note."""
    for item in evidence:
        if item.get("kind") != "note" and item.get("excerpt"):
            return str(item["excerpt"])
    return next((str(i.get("text") or "") for i in evidence if i.get("kind") == "note"), "")


def cell_status(doc: CellDocument) -> str:
    if doc.verdict is Verdict.FAILED and not any(r.outcome in FAILING for r in doc.records):
        return "FAIL"
    return CELL_STATUS[doc.verdict]


def _issue(origin: str, known: Mapping[str, Any]) -> dict[str, Any]:
    test, reference = str(known.get("test", "")), str(known.get("reference", ""))
    issue: dict[str, Any] = {
        "id": _id(origin, "issue", test, reference),
        "version": ISSUE_VERSION,
        "origin": origin,
        "comment": _text(str(known.get("reason", ""))),
        # Known issues are analysed kernel bugs (kernels/known-issues.yaml), not the harness's.
        "culprit": {"code": True, "tool": False, "harness": False},
        "misc": dict(known),
    }
    if is_url(reference):
        issue["report_url"] = reference
    return issue


class _Builder:
    def __init__(self, matrix: Matrix, origin: str, base_url: str | None) -> None:
        self.matrix = matrix
        self.origin = origin
        self.base_url = base_url.rstrip("/") if base_url else None
        self.tests: list[dict[str, Any]] = []
        self.issues: dict[str, dict[str, Any]] = {}
        self.incidents: list[dict[str, Any]] = []

    def _url(self, cell_dir: str, name: str) -> str:
        assert self.base_url is not None
        return f"{self.base_url}/{quote(cell_dir)}/{quote(name)}"

    def _files(self, cell_dir: str, test: dict[str, Any]) -> None:
        if self.base_url is None:
            return
        # A cell whose QEMU never started has no console.log; results.json and junit.xml always exist.
        if (self.matrix.dir / cell_dir / "console.log").exists():
            test["log_url"] = self._url(cell_dir, "console.log")
        test["output_files"] = [
            {"name": n, "url": self._url(cell_dir, n)} for n in ("results.json", "junit.xml")
        ]

    def cell(self, cell_id: str, doc: CellDocument, build_id: str) -> None:
        cell_dir = str(doc.path.parent.relative_to(self.matrix.dir))
        environment = _environment(doc)
        start = _time(doc.meta.started_at)
        starts = _test_starts(doc)
        common_misc = {
            "cell": cell_id,
            "cell_dir": cell_dir,
            "cell_verdict": doc.verdict.value,
            "console_log": f"{cell_dir}/console.log",
            "kernel": doc.meta.kernel,
        }

        lines = [line for line in (_first_line(e) for e in doc.evidence) if line]
        cell_test: dict[str, Any] = {
            "id": _id(self.origin, "cell", cell_id, doc.meta.started_at),
            "build_id": build_id,
            "origin": self.origin,
            "path": CELL_TEST_PATH,
            "status": cell_status(doc),
            "comment": _text(f"{cell_id}: {doc.verdict.value}" + (f": {lines[0]}" if lines else "")),
            "environment": environment,
            "misc": {**common_misc, "evidence": lines},
        }
        excerpt = _excerpt(doc.evidence)
        if excerpt:
            cell_test["log_excerpt"] = _text(excerpt, _MAX_EXCERPT)
        if start is not None:
            cell_test["start_time"] = start.isoformat()
        if "total" in doc.meta.durations:
            cell_test["duration"] = float(doc.meta.durations["total"])
        self._files(cell_dir, cell_test)
        self.tests.append(cell_test)

        seen: dict[str, int] = {}
        for record in doc.records:
            # A node id twice in one cell (a producer's bug) must still give two distinct test runs.
            occurrence = seen[record.name] = seen.get(record.name, 0) + 1
            test_id = _id(self.origin, "test", cell_id, doc.meta.started_at, record.name, str(occurrence))
            when = starts.get(record.name, start)
            self.tests.append(self._record(record, test_id, build_id, environment, when, common_misc))
            self._files(cell_dir, self.tests[-1])

    def _record(
        self,
        record: TestRecord,
        test_id: str,
        build_id: str,
        environment: dict[str, Any],
        start: datetime | None,
        common_misc: Mapping[str, Any],
    ) -> dict[str, Any]:
        misc: dict[str, Any] = {**common_misc, "node_id": record.name, "outcome": record.outcome}
        if record.details:
            misc["details"] = record.details
        test: dict[str, Any] = {
            "id": test_id,
            "build_id": build_id,
            "origin": self.origin,
            "path": kcidb_path(record.name),
            "status": STATUS[record.outcome],
            "duration": float(record.duration),
            "environment": environment,
            "misc": misc,
        }
        if start is not None:
            test["start_time"] = start.isoformat()
        comment: str = record.outcome
        if record.outcome == "flaky":
            misc["flaky"] = True
            if "attempts" in record.details:
                misc["attempts"] = record.details["attempts"]
            comment = "flaky: failed, then passed when run again"
        known = record.details.get("known_issue")
        if record.outcome in ("xfailed", "xpassed") and isinstance(known, Mapping):
            issue = _issue(self.origin, known)
            self.issues.setdefault(issue["id"], issue)
            misc["known_issue"] = {"id": issue["id"], "reference": known.get("reference")}
            present = record.outcome == "xfailed"
            self.incidents.append(
                {
                    "id": _id(self.origin, "incident", test_id, issue["id"]),
                    "origin": self.origin,
                    "issue_id": issue["id"],
                    "issue_version": ISSUE_VERSION,
                    "test_id": test_id,
                    "present": present,
                    "comment": _text(
                        "the known issue reproduced" if present else "the known issue did not reproduce"
                    ),
                }
            )
            comment = (
                f"{record.outcome}: known issue: {known.get('reason', '')} [{known.get('reference', '')}]"
            )
        test["comment"] = _text(comment)
        if record.message:
            test["log_excerpt"] = _text(record.message, _MAX_EXCERPT)
        return test


def kcidb_json(matrix: Matrix, *, origin: str = SUITE, base_url: str | None = None) -> dict[str, Any]:
    """The matrix's checkouts, builds, tests (plus the known issues its xfailed/xpassed tests hit, as
    issues and incidents) as one KCIDB I/O document. `base_url`: where the matrix directory is published
    (e.g. a CI job's artefacts), to give each test log_url and output_files."""
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(f"KCIDB origin {origin!r}: lower-case letters, digits and '_' only")
    if base_url is not None and not is_url(base_url):
        raise ValueError(f"base URL {base_url!r} is not an http(s) URL of plain characters")
    keys = _kernel_keys(matrix.cells)
    checkouts, builds = _kernel_objects(origin, keys, matrix.cells)
    builder = _Builder(matrix, origin, base_url)
    for cell_id, doc in matrix.cells.items():
        builder.cell(cell_id, doc, _build_id(origin, keys[cell_id]))
    document: dict[str, Any] = {
        "version": dict(KCIDB_VERSION),
        "checkouts": checkouts,
        "builds": builds,
        "tests": builder.tests,
    }
    if builder.issues:
        document["issues"] = list(builder.issues.values())
        document["incidents"] = builder.incidents
    return document


def kcidb_text(matrix: Matrix, *, origin: str = SUITE, base_url: str | None = None) -> str:
    """kcidb_json as the file's text (what `kcidb-submit` reads)."""
    return (
        json.dumps(kcidb_json(matrix, origin=origin, base_url=base_url), indent=1, ensure_ascii=False) + "\n"
    )

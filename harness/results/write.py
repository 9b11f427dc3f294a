"""Run artefacts: results.json, junit.xml, reproduce.sh.

Each artefact is a pure function to text; the write_* helpers only put that text on disk.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.console.events import KernelProblem
from harness.results.model import RunMeta, TestRecord, Verdict, count_outcomes, exit_code

RESULTS_SCHEMA = 1

# -- results.json --------------------------------------------------------------------------------

Evidence = KernelProblem | str
"""A kernel report seen on the console, or a sentence from the harness (console tail, a
truncated results line, a malformed marker)."""


def _problem_json(problem: KernelProblem) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": problem.kind, "first_line": problem.first_line,
                           "complete": problem.complete, "excerpt": problem.excerpt}  # fmt: skip
    if problem.during is not None:
        out["during"] = problem.during
    if problem.known_issue is not None:
        out["known_issue"] = problem.known_issue
    return out


def evidence_json(items: Sequence[Evidence]) -> list[dict[str, Any]]:
    return [_problem_json(i) if isinstance(i, KernelProblem) else {"kind": "note", "text": i} for i in items]


def results_json(
    meta: RunMeta, records: Sequence[TestRecord], verdict: Verdict, evidence: Sequence[Evidence] = ()
) -> str:
    """The machine-readable record of one run."""
    document = {
        "schema": RESULTS_SCHEMA,
        "meta": meta.to_json(),
        "verdict": verdict.value,
        "exit_code": exit_code(verdict),
        "counts": count_outcomes(records),
        "records": [r.to_json() for r in records],
        "evidence": evidence_json(evidence),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# -- junit.xml -----------------------------------------------------------------------------------

# XML 1.0 cannot carry most C0 controls even as character references; console text and
# tracebacks do contain them (ANSI escapes, NULs from a crashed console).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def split_nodeid(nodeid: str) -> tuple[str, str]:
    """pytest node id -> (classname, name) the way pytest's own junitxml does it:
    "dir/test_a.py::TestX::test_y[p]" -> ("dir.test_a.TestX", "test_y[p]")."""
    base, bracket, params = nodeid.partition("[")
    parts = base.split("::")
    module = re.sub(r"\.py$", "", parts[0]).replace("/", ".").replace("\\", ".")
    if len(parts) == 1:
        return module, nodeid
    return ".".join([module, *parts[1:-1]]), parts[-1] + bracket + params


_CHILD = {
    "failed": ("failure", "failure", ""),
    "error": ("error", "error", ""),
    "skipped": ("skipped", "pytest.skip", ""),
    "xfailed": ("skipped", "pytest.xfail", ""),
    "xpassed": ("failure", "xpassed", "UNEXPECTED PASS: "),
    # Maven Surefire's element for a test that failed and then passed on a rerun: Jenkins and GitLab
    # show it as flaky; a reader that does not know it still sees a testcase that was not simply passed.
    "flaky": ("flakyFailure", "flaky", "FLAKY: "),
}


def details_text(details: dict[str, Any]) -> str:
    """A record's details as readable text: a lone "text" entry as is, anything else as JSON."""
    if not details:
        return ""
    if set(details) == {"text"} and isinstance(details["text"], str):
        return details["text"]
    return json.dumps(details, indent=2, sort_keys=True, ensure_ascii=False, default=repr)


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _junit_totals(records: Sequence[TestRecord], tests_time: float) -> dict[str, str]:
    counts = count_outcomes(records)
    return {
        "tests": str(len(records)),
        "failures": str(counts["failed"] + counts["xpassed"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skipped"] + counts["xfailed"]),
        "time": _seconds(tests_time),
    }


def _tests_time(meta: RunMeta, records: Sequence[TestRecord]) -> float:
    return meta.durations.get("tests", sum(r.duration for r in records))


def _junit_suite(root: ET.Element, meta: RunMeta, records: Sequence[TestRecord]) -> None:
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _xml_text(f"{meta.topology}/{meta.kernel}"),
            **_junit_totals(records, _tests_time(meta, records)),
            "timestamp": _xml_text(meta.started_at),
            "hostname": _xml_text(meta.host),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("topology", meta.topology),
        ("kernel", meta.kernel),
        ("kernel_version", meta.kernel_version or ""),
        ("accelerator", meta.accelerator),
        ("qemu_version", meta.qemu_version or ""),
        ("harness_version", meta.harness_version),
        *sorted(meta.axes.items()),
    ):
        ET.SubElement(properties, "property", {"name": key, "value": _xml_text(value)})
    for record in records:
        classname, name = split_nodeid(record.name)
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": _xml_text(classname), "name": _xml_text(name), "time": _seconds(record.duration)},
        )
        if record.outcome in _CHILD:
            tag, kind, prefix = _CHILD[record.outcome]
            message = record.message if record.message.startswith(prefix) else prefix + record.message
            child = ET.SubElement(case, tag, {"type": kind, "message": _xml_text(message)})
            child.text = _xml_text(details_text(record.details)) or None


def junit_xml(meta: RunMeta, records: Sequence[TestRecord]) -> str:
    """JUnit XML for CI. xfailed counts as skipped and xpassed as a failure, so a CI system
    that only reads JUnit agrees with our exit code."""
    return merged_junit_xml([(meta, records)])


def merged_junit_xml(cells: Sequence[tuple[RunMeta, Sequence[TestRecord]]]) -> str:
    """One testsuite per cell (named topology/kernel) under one testsuites element: a matrix as one
    file for CI. The totals on testsuites are the sums of the suites'."""
    every = [r for _meta, records in cells for r in records]
    tests_time = sum(_tests_time(meta, records) for meta, records in cells)
    root = ET.Element("testsuites", {"name": "p2p-hil", **_junit_totals(every, tests_time)})
    for meta, records in cells:
        _junit_suite(root, meta, records)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -- reproduce.sh --------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def reproduce_sh(
    harness: Sequence[str],
    raw: Sequence[Sequence[str]] = (),
    *,
    header: Sequence[str] = (),
    cwd: str | None = None,
) -> str:
    """A POSIX shell script that re-runs the cell: by default through the harness (`harness`, run
    from `cwd`); with `--raw`, the exact steps the harness ran underneath (scratch files, vng), each
    argument shell-quoted, for bisecting without p2p-hil in the way. `header` lines become comments."""
    lines = [
        "#!/bin/sh",
        "# Reproduces a p2p-hil run. `sh reproduce.sh` re-runs it through the harness;",
        "# `sh reproduce.sh --raw` runs the same steps the harness ran, without it.",
        *(f"# {_one_line(line)}" for line in header),
        "",
        "set -eu",
    ]
    if raw:
        lines.append('if [ "${1:-}" = --raw ]; then')
        lines.extend("  " + shlex.join(list(argv)) for argv in raw)
        lines += ["  exit", "fi"]
    if cwd is not None:
        lines.append(f"cd {shlex.quote(cwd)}")
    lines.append("exec " + shlex.join(list(harness)))
    return "\n".join(lines) + "\n"


# -- files ---------------------------------------------------------------------------------------


def write_text(path: Path, text: str, *, mode: int = 0o644) -> Path:
    """Write via a temporary file and rename, so an interrupted run never leaves half a file
    that a CI system would then fail to parse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    tmp.replace(path)
    return path


def write_results_json(
    path: Path,
    meta: RunMeta,
    records: Sequence[TestRecord],
    verdict: Verdict,
    evidence: Sequence[Evidence] = (),
) -> Path:
    return write_text(path, results_json(meta, records, verdict, evidence))


def write_junit(path: Path, meta: RunMeta, records: Sequence[TestRecord]) -> Path:
    return write_text(path, junit_xml(meta, records))


def write_reproduce(
    path: Path,
    harness: Sequence[str],
    raw: Sequence[Sequence[str]] = (),
    *,
    header: Sequence[str] = (),
    cwd: str | None = None,
) -> Path:
    return write_text(path, reproduce_sh(harness, raw, header=header, cwd=cwd), mode=0o755)

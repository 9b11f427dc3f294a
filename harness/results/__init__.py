"""Results: test records, the run verdict, and the artefacts written for people and CI (pure)."""

from harness.results.known_issues import KnownIssue, apply_known_issues, load_known_issues
from harness.results.model import (
    GuestEnd,
    LoadedRecords,
    RunMeta,
    TestRecord,
    Verdict,
    combine_verdicts,
    exit_code,
    load_records,
    verdict,
)
from harness.results.report import MatrixCell, matrix_cell, matrix_table, summary_table
from harness.results.write import (
    junit_xml,
    reproduce_sh,
    results_json,
    write_junit,
    write_reproduce,
    write_results_json,
)

__all__ = [
    "GuestEnd",
    "KnownIssue",
    "LoadedRecords",
    "MatrixCell",
    "RunMeta",
    "TestRecord",
    "Verdict",
    "apply_known_issues",
    "combine_verdicts",
    "exit_code",
    "junit_xml",
    "load_known_issues",
    "load_records",
    "matrix_cell",
    "matrix_table",
    "reproduce_sh",
    "results_json",
    "summary_table",
    "verdict",
    "write_junit",
    "write_reproduce",
    "write_results_json",
]

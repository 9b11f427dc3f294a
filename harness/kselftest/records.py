"""A selftest binary's output and end -> TestRecords named kselftest/<dir>/<binary>/<subtest>. Pure.

Beside one record per KTAP result, a record named kselftest/<dir>/<binary> says what the results alone
do not: a timeout or a crash (outcome error, with the output's tail), an exit status that contradicts
the results, a plan not fulfilled, a bail out, a whole-binary skip. A directory that did not build has
one failed record kselftest/<dir>/build with the compiler's message.
"""

from __future__ import annotations

from pathlib import Path

from harness.kselftest.ktap import KtapDocument, KtapResult, failure_lines, parse_ktap
from harness.kselftest.manifest import BinaryStatus, ManifestEntry
from harness.results.model import Outcome, TestRecord

PREFIX = "kselftest"
KSFT_SKIP = 4  # kselftest.h: the exit status of a binary that skipped
TAIL_LINES = 30
MESSAGE_LIMIT = 2000


def record_name(selftest: str, binary: str, sub: str | None = None) -> str:
    return f"{PREFIX}/{selftest}/{binary}" + (f"/{sub}" if sub else "")


def build_record(entry: ManifestEntry, log: str | None = None) -> TestRecord:
    """A directory that did not build: failed (never skipped: the kernel's own tests do not build)."""
    details: dict[str, object] = {"kselftest": entry.name, "binaries_not_built": list(entry.binaries)}
    if log:
        details["build_log"] = log
    return TestRecord(
        name=record_name(entry.name, "build"),
        outcome="failed",
        message=f"tools/testing/selftests/{entry.name} does not build:\n{entry.build_message}"[
            :MESSAGE_LIMIT
        ],
        details=details,
    )


def _outcome(result: KtapResult) -> Outcome:
    d = result.directive
    if d == "SKIP":
        return "skipped"
    if d in ("XFAIL", "TODO"):
        return "xpassed" if result.ok and d == "TODO" else "xfailed"
    if d == "XPASS":
        return "xpassed"  # kselftest.h counts an xpass against ksft_finished()'s pass total
    if d in ("ERROR", "TIMEOUT"):
        return "error"
    return "passed" if result.ok else "failed"


def _message(result: KtapResult, outcome: Outcome) -> str:
    why = f"{result.directive}: {result.reason}".strip(": ") if result.directive else result.reason
    if outcome in ("passed",):
        return ""
    if outcome in ("skipped", "xfailed", "xpassed"):
        return (result.reason or why)[:MESSAGE_LIMIT]
    lines = failure_lines(result.diagnostics)
    text = "\n".join([*([why] if why else []), *lines]) or "not ok (the test printed no diagnostics)"
    return text[:MESSAGE_LIMIT]


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join([ln for ln in text.replace("\r", "").splitlines() if ln.strip()][-lines:])


def binary_records(
    selftest: str, binary: str, output: str, status: BinaryStatus, output_file: str = ""
) -> list[TestRecord]:
    """Every record of one binary's run."""
    base: dict[str, object] = {
        "kselftest": selftest,
        "binary": binary,
        **({"output": output_file} if output_file else {}),
    }
    if status.not_run is not None:
        outcome: Outcome = "error" if status.not_run_outcome == "error" else "skipped"
        return [TestRecord(record_name(selftest, binary), outcome, 0.0, status.not_run[:MESSAGE_LIMIT],
                           {**base, "setup": list(status.setup)})]  # fmt: skip
    doc = parse_ktap(output)
    records = _subtest_records(selftest, binary, doc, base, status)
    own = _binary_record(selftest, binary, doc, records, output, status, base)
    return records + ([own] if own is not None else [])


def _subtest_records(
    selftest: str, binary: str, doc: KtapDocument, base: dict[str, object], status: BinaryStatus
) -> list[TestRecord]:
    records: list[TestRecord] = []
    seen: dict[str, int] = {}
    for result in doc.results:
        if result.children and result.ok:
            continue  # a parent that passed: its subtests say everything
        outcome = _outcome(result)
        if result.children and outcome == "failed":
            failed_child = any(
                r.path[: len(result.path)] == result.path
                and r is not result
                and not r.ok
                and r.directive is None
                for r in doc.results
            )
            if failed_child:
                continue  # the failing subtest is its own record
        name = result.name
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        details = {**base, "ktap_number": result.number}
        if result.directive:
            details["directive"] = result.directive
        records.append(
            TestRecord(record_name(selftest, binary, name), outcome, 0.0, _message(result, outcome), details)
        )
    if records and status.duration:
        # The binary's wall time, spread evenly: KTAP carries no per-test time.
        each = round(status.duration / len(records), 3)
        records = [TestRecord(r.name, r.outcome, each, r.message, r.details) for r in records]
    return records


def _binary_record(
    selftest: str,
    binary: str,
    doc: KtapDocument,
    records: list[TestRecord],
    output: str,
    status: BinaryStatus,
    base: dict[str, object],
) -> TestRecord | None:
    """The binary's own record when its end says more than its results; None when it does not."""
    name = record_name(selftest, binary)
    details: dict[str, object] = {**base, "exit_code": status.exit_code, "argv": list(status.argv)}
    if status.setup:
        details["setup"] = list(status.setup)
    counted = f"{len(records)} result(s)" + (f" of {doc.plan} planned" if doc.plan is not None else "")
    last = tail(output)
    if status.timed_out:
        msg = f"timed out after {status.timeout_s:g} s with {counted}; output tail:\n{last}"
        return TestRecord(name, "error", status.duration, msg[-MESSAGE_LIMIT:], details)
    if status.signal is not None:
        msg = f"killed by {status.signal} with {counted}; output tail:\n{last}"
        return TestRecord(name, "error", status.duration, msg[-MESSAGE_LIMIT:], details)
    if doc.bail_out is not None:
        msg = f"Bail out! {doc.bail_out} ({counted}); output tail:\n{last}"
        return TestRecord(name, "error", status.duration, msg[-MESSAGE_LIMIT:], details)
    if doc.skip_all is not None and not records:
        return TestRecord(name, "skipped", status.duration, doc.skip_all[:MESSAGE_LIMIT], details)
    if status.exit_code == KSFT_SKIP and not records:
        return TestRecord(
            name, "skipped", status.duration, f"exit status 4 (KSFT_SKIP): {last}"[-MESSAGE_LIMIT:], details
        )
    if doc.unfinished:
        msg = f"{'; '.join(doc.unfinished)} (exit status {status.exit_code}); output tail:\n{last}"
        return TestRecord(name, "error", status.duration, msg[-MESSAGE_LIMIT:], details)
    failing = any(r.outcome in ("failed", "error", "xpassed") for r in records)
    if status.exit_code not in (0, KSFT_SKIP) and not failing:
        msg = f"exit status {status.exit_code} although no result failed ({counted}); output tail:\n{last}"
        return TestRecord(name, "failed", status.duration, msg[-MESSAGE_LIMIT:], details)
    if not records:
        # No KTAP at all and a clean exit: the binary is its one test.
        msg = "" if status.exit_code == 0 else f"exit status {status.exit_code}"
        details["no_ktap"] = True
        return TestRecord(
            name, "passed" if status.exit_code == 0 else "failed", status.duration, msg, details
        )
    return None


def selftest_records(
    entry: ManifestEntry, outputs: dict[str, tuple[str, BinaryStatus, str]]
) -> list[TestRecord]:
    """All records of one selftest directory: its build failure, or each binary the guest ran
    (`outputs`: binary -> (output text, status, output file)). A binary without an output was never
    reached (the guest died first); its wrapper test's record says so."""
    if not entry.built:
        return [build_record(entry)]
    records: list[TestRecord] = []
    for binary in entry.binaries:
        if binary in outputs:
            text, status, path = outputs[binary]
            records += binary_records(entry.name, binary, text, status, path)
    return records


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""

"""Known kernel issues: failures that have been analysed and are expected on given kernels.

A failure matching an entry, and failing the way the entry says (its `expected_failure`: the errno the
test recorded, a pattern in its message), becomes "xfailed" (the run can pass). A failure of the same
test that is not the analysed one stays "failed": the entry excuses one understood bug, not the test.
A matching *pass* becomes "xpassed", which fails the run, because an entry that no longer reproduces
is stale or too broad and would otherwise keep hiding regressions.

An entry can instead name a kernel report (`expected_failure.kernel_report`: a WARNING that DMA-API
debugging prints while a test passes, say). A report on the console makes the cell `crashed`; one that
such an entry explains - printed while its test ran, in a guest that went on to finish the suite - does
not, and the test that printed it becomes "xfailed" with the report as its evidence. A test the entry
names exactly that passes without the report is "xpassed", as above.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.console.events import KernelProblem
from harness.errors import ConfigError
from harness.guest.protocol import broken_invariants, is_errno_field
from harness.paths import KERNELS_DIR
from harness.results.model import OUTCOMES, Outcome, TestRecord

KNOWN_ISSUES_FILE = KERNELS_DIR / "known-issues.yaml"

# -- kernel version specs ------------------------------------------------------------------------

_VERSION = r"\d+\.\d+(?:\.\d+)?(?:-rc\d+)?"
_VERSION_PREFIX = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:-rc(\d+))?")
_CLAUSE = re.compile(rf"^(>=|<=|==|!=|>|<)?\s*({_VERSION})$")
# A release sorts after all of its release candidates.
_FINAL = 1 << 30

VersionKey = tuple[int, int, int, int]


def version_key(version: str) -> VersionKey | None:
    """'7.2.13+deb14-amd64' -> (7, 2, 13, FINAL); '7.3-rc2' -> (7, 3, 0, 2); None if unparsable."""
    m = _VERSION_PREFIX.match(version.strip())
    if not m:
        return None
    return (int(m[1]), int(m[2]), int(m[3] or 0), int(m[4]) if m[4] else _FINAL)


def _clause_matches(op: str, wanted: str, version: str) -> bool:
    key, want = version_key(version), version_key(wanted)
    if key is None or want is None:
        return False
    if not op:
        # A bare version names what people mean by it: "7.2" is the whole 7.2 series (rcs
        # included), "7.2.13" that stable release whatever the distribution suffix, "7.3-rc2"
        # that release candidate.
        if "-rc" in wanted:
            return key == want
        if wanted.count(".") == 1:
            return key[:2] == want[:2]
        return key == want
    if op == "<" and want[3] == _FINAL and key[:3] == want[:3]:
        # As in PEP 440: "<7.3" means before the 7.3 cycle, so ">=7.2,<7.3" is the 7.2 series
        # and does not reach into 7.3-rc1.
        return False
    return {
        ">=": key >= want,
        "<=": key <= want,
        ">": key > want,
        "<": key < want,
        "==": key == want,
        "!=": key != want,
    }[op]


def check_version_spec(spec: str) -> str:
    """Validate a spec such as ">=7.2,<7.3" or "7.2.13"; return it unchanged."""
    clauses = [c.strip() for c in spec.split(",")]
    for clause in clauses:
        if not _CLAUSE.match(clause):
            raise ValueError(
                f"{clause!r} is not a kernel version spec "
                "(examples: '7.2.13', '7.2', '>=7.2,<7.3', '<7.3-rc1')"
            )
    return spec


def version_matches(spec: str, version: str) -> bool:
    """Whether `version` (e.g. uname -r) satisfies every clause of `spec`."""
    for clause in spec.split(","):
        m = _CLAUSE.match(clause.strip())
        if not m or not _clause_matches(m[1] or "", m[2], version):
            return False
    return True


# -- the file ------------------------------------------------------------------------------------


def _errno_value(value: object) -> int | None:
    """A recorded errno (a symbol such as "EINVAL", as errname() writes it, or a number) as a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        number = getattr(errno, value, None) if value.startswith("E") else None
        return number if isinstance(number, int) else None
    return None


def recorded_errnos(details: Mapping[str, Any]) -> dict[str, str]:
    """The errnos a test recorded: its top-level `errno` and `*_errno` detail fields (field -> value)."""
    return {
        key: str(value)
        for key, value in details.items()
        if is_errno_field(key) and _errno_value(value) is not None
    }


class ExpectedFailure(BaseModel):
    """How the analysed failure shows in the test's record; every given field must match."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # An errno symbol; every errno the test recorded in its details must be this one (and there must be one).
    errno: str | None = Field(default=None, min_length=1)
    # A regular expression searched (re.search) in the record's message.
    message: str | None = Field(default=None, min_length=1)
    # Regular expressions over the broken invariants an error-path test recorded (fault-injection sweeps,
    # race tests: see broken_invariants()). The test must have broken at least one, and each one it broke
    # must match a pattern of this entry or of another entry for the same test, kernel and topology that
    # also names broken invariants: two analysed bugs can break one test, and neither may hide a third.
    broken_invariants: list[str] | None = Field(default=None, min_length=1)
    # A regular expression searched in the first line of a kernel report printed while the test ran
    # ("WARNING: kernel/dma/debug.c:\d+ at check_unmap"). Given alone: it says what the console shows,
    # not how the test's own record fails.
    kernel_report: str | None = Field(default=None, min_length=1)

    @field_validator("errno")
    @classmethod
    def _known_errno(cls, value: str | None) -> str | None:
        if value is not None and (value.isdigit() or _errno_value(value) is None):
            raise ValueError(f"{value!r} is not an errno symbol (examples: 'EINVAL', 'EADDRINUSE')")
        return value

    @field_validator("message", "kernel_report")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from exc
        return value

    @field_validator("broken_invariants")
    @classmethod
    def _regexes(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _says_something(self) -> ExpectedFailure:
        # An empty spec would excuse any failure of the test, which is what the spec exists to prevent.
        record_fields = (self.errno, self.message, self.broken_invariants)
        if self.kernel_report is not None:
            if any(f is not None for f in record_fields):
                raise ValueError(
                    "kernel_report names what the console shows while the test passes: give it alone"
                )
            return self
        if all(f is None for f in record_fields):
            raise ValueError(
                "name the analysed failure: errno, message (a regex), broken_invariants, "
                "kernel_report, or more"
            )
        return self

    def describe(self) -> str:
        if self.kernel_report:
            return f"a kernel report matching {self.kernel_report!r} while the test ran"
        parts = [f"errno {self.errno}"] if self.errno else []
        parts += [f"message matching {self.message!r}"] if self.message else []
        if self.broken_invariants:
            parts += [f"every broken invariant matching one of {self.broken_invariants!r}"]
        return " and ".join(parts)

    def mismatch(self, record: TestRecord, also: Sequence[str] = ()) -> str | None:
        """None when `record` failed the analysed way, else what differs. `also`: the broken-invariant
        patterns of the other entries that match the same test."""
        problems = []
        if self.broken_invariants is not None:
            broken = broken_invariants(record.details)
            patterns = [*self.broken_invariants, *also]
            unexplained = [b for b in broken if not any(re.search(p, b) for p in patterns)]
            if not broken:
                problems.append("the test recorded no broken invariant")
            elif unexplained:
                problems.append(
                    f"{len(unexplained)} broken invariant(s) no entry explains, first: {unexplained[0]}"
                )
        if self.errno is not None:
            seen = recorded_errnos(record.details)
            want = getattr(errno, self.errno)
            if not seen:
                problems.append("the test recorded no errno")
            elif any(_errno_value(v) != want for v in seen.values()):
                problems.append("it recorded " + ", ".join(f"{k}={v}" for k, v in seen.items()))
        if self.message is not None and not re.search(self.message, record.message):
            problems.append("its message does not match")
        return "; ".join(problems) or None


class KnownIssue(BaseModel):
    """One analysed issue. `test` is a pytest node id or an fnmatch glob over node ids."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    test: str = Field(min_length=1)
    kernels: list[str] = Field(min_length=1)
    topologies: list[str] | None = Field(default=None, min_length=1)
    # Only for kernel variants built with every one of these config fragments (`--fragment debug`): a
    # failure that only a detector shows (kmemleak) is absent, and a pass expected, on the plain kernel.
    variants: list[str] | None = Field(default=None, min_length=1)
    reason: str = Field(min_length=1)
    reference: str = Field(min_length=1)  # URL, commit id or mailing-list message
    analysis: str = Field(min_length=1)
    # Required: without it an entry would excuse any failure of its test, not the one analysed.
    expected_failure: ExpectedFailure

    @field_validator("kernels")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        return [check_version_spec(spec) for spec in value]

    def matches(self, name: str, kernel_version: str, topology: str, fragments: Sequence[str] = ()) -> bool:
        if name != self.test and not fnmatchcase(name, self.test):
            return False
        if self.variants is not None and not set(self.variants) <= set(fragments):
            return False
        if self.topologies is not None and not any(
            topology == t or fnmatchcase(topology, t) for t in self.topologies
        ):
            return False
        return any(version_matches(spec, kernel_version) for spec in self.kernels)


_ENTRIES = TypeAdapter(list[KnownIssue])


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def parse_known_issues(text: str, source: str = str(KNOWN_ISSUES_FILE)) -> list[KnownIssue]:
    """Parse and strictly validate the YAML text; ConfigError names file and field."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"not valid YAML: {exc}", where=where) from exc
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"must be a list of entries, got {type(data).__name__}", where=source)
    try:
        return _ENTRIES.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(first["msg"] + more, where=f"{source}: {_location(first['loc'])}") from exc


def load_known_issues(path: Path = KNOWN_ISSUES_FILE) -> list[KnownIssue]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(path)) from exc
    return parse_known_issues(text, str(path))


# -- applying ------------------------------------------------------------------------------------


def _passes_freely(entry: KnownIssue, record: TestRecord) -> bool:
    """A pass under a glob entry of broken invariants is no news: such an entry explains a bug wherever
    its breakage shows (a leak kmemleak attributes to whichever test scans next), not that every test it
    covers must break. The entries naming a test exactly are the ones that report a fix (xpassed)."""
    return (
        record.outcome == "passed"
        and entry.test != record.name
        and bool(entry.expected_failure.broken_invariants)
    )


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def apply_known_issues(
    records: Sequence[TestRecord],
    entries: Sequence[KnownIssue],
    kernel_version: str,
    topology: str,
    fragments: Sequence[str] = (),
) -> list[TestRecord]:
    """Failed -> xfailed and passed -> xpassed for records matching an entry (first match wins).

    Only "failed" is excused, and only when it failed as the entry's `expected_failure` says: any other
    failure of the test stays "failed", its message saying the known issue's failure was not what
    happened. An "error" happens in fixture setup/teardown, where a known kernel bug in the test body is
    not what went wrong, so it stays visible too.
    """
    result: list[TestRecord] = []
    entries = [e for e in entries if e.expected_failure.kernel_report is None]  # explain_reports' own
    for record in records:
        entry = next(
            (e for e in entries if e.matches(record.name, kernel_version, topology, fragments)), None
        )
        if entry is None or record.outcome not in ("failed", "passed") or _passes_freely(entry, record):
            result.append(record)
            continue
        outcome: Outcome
        was = _first_line(record.message)
        if record.outcome == "failed":
            also = [
                pattern
                for other in entries
                if other is not entry and other.matches(record.name, kernel_version, topology, fragments)
                for pattern in other.expected_failure.broken_invariants or ()
            ]
            mismatch = entry.expected_failure.mismatch(
                record, also if entry.expected_failure.broken_invariants else ()
            )
            if mismatch is not None:
                # The known issue's facts come last: what the test saw matters most to its reader.
                message = f"not the known issue's failure: expected {entry.expected_failure.describe()}, "
                message += f"but {mismatch}" + (f"; failure: {was}" if was else "")
                message += f"; known issue: {entry.reason} [{entry.reference}]"
                # Not under "known_issue": that key means the entry applied to the record.
                unmatched = {**entry.model_dump(), "mismatch": mismatch}
                details = {**record.details, "known_issue_not_matched": unmatched}
                result.append(replace(record, message=message, details=details))
                continue
            message = f"known issue: {entry.reason} [{entry.reference}]"
            message += f"; failure: {was}" if was else ""
            outcome = "xfailed"
        else:
            message = f"UNEXPECTED PASS: known issue did not reproduce: {entry.reason} [{entry.reference}]"
            outcome = "xpassed"
        details = {**record.details, "known_issue": entry.model_dump()}
        result.append(replace(record, outcome=outcome, message=message, details=details))
    return result


def _label(entry: KnownIssue) -> str:
    return f"{entry.reason} [{entry.reference}]"


def _explaining(
    problem: KernelProblem,
    entries: Sequence[KnownIssue],
    kernel_version: str,
    topology: str,
    fragments: Sequence[str],
) -> KnownIssue | None:
    if problem.during is None:
        return None
    return next(
        (
            e for e in entries
            if e.expected_failure.kernel_report is not None
            and re.search(e.expected_failure.kernel_report, problem.first_line)
            and e.matches(problem.during, kernel_version, topology, fragments)
        ),
        None,
    )  # fmt: skip


def explain_reports(
    problems: Sequence[KernelProblem],
    entries: Sequence[KnownIssue],
    kernel_version: str,
    topology: str,
    fragments: Sequence[str] = (),
    *,
    finished: bool,
) -> list[KernelProblem]:
    """`problems` with `known_issue` set on each that an entry's kernel_report explains. Only in a guest
    that `finished` the suite: a report the kernel did not survive is never excused."""
    if not finished:
        return list(problems)
    out = []
    for problem in problems:
        entry = _explaining(problem, entries, kernel_version, topology, fragments)
        out.append(problem if entry is None else replace(problem, known_issue=_label(entry)))
    return out


def apply_known_reports(
    records: Sequence[TestRecord],
    problems: Sequence[KernelProblem],
    entries: Sequence[KnownIssue],
    kernel_version: str,
    topology: str,
    fragments: Sequence[str] = (),
) -> list[TestRecord]:
    """The records as the kernel_report entries judge them: a test that passed while printing the
    report an entry names is "xfailed"; one the entry names exactly that passed without it, "xpassed".
    A glob entry names where the report may show, not that every test it covers must print it."""
    reporting = [e for e in entries if e.expected_failure.kernel_report is not None]
    result = []
    for record in records:
        matching = [e for e in reporting if e.matches(record.name, kernel_version, topology, fragments)]
        if not matching or record.outcome != "passed":
            result.append(record)
            continue
        during = [p for p in problems if p.during == record.name]
        # Every entry that applies is asked (an exact one and a glob may both name the test's report).
        explained = [(p, e) for p in during if (e := _explaining(p, matching, kernel_version, topology,
                                                                   fragments)) is not None]  # fmt: skip
        if explained:
            entry = explained[0][1]
            reports = "; ".join(dict.fromkeys(p.first_line.strip() for p, _e in explained))
            message = f"known issue: {_label(entry)}; kernel report while it ran: {reports}"
            details = {**record.details, "known_issue": entry.model_dump()}
            result.append(replace(record, outcome="xfailed", message=message, details=details))
        elif exact := next((e for e in matching if e.test == record.name), None):
            message = f"UNEXPECTED PASS: known issue did not reproduce (no kernel report): {_label(exact)}"
            details = {**record.details, "known_issue": exact.model_dump()}
            result.append(replace(record, outcome="xpassed", message=message, details=details))
        else:
            result.append(record)
    return result


def judge_test_frame(
    payload: Mapping[str, object],
    entries: Sequence[KnownIssue],
    kernel_version: str,
    topology: str,
    fragments: Sequence[str] = (),
) -> str:
    """The outcome the report will give the test a `test` console frame announces, for the live view.

    Whether a failure is the known one depends on its message and recorded errnos: with a frame that
    carries neither (name and outcome only), a failure a known issue excuses shows "failed" here and
    "xfailed" in the report.
    """
    name, outcome = str(payload.get("name", "?")), str(payload.get("outcome", "?"))
    if outcome not in OUTCOMES:
        return outcome
    details = payload.get("details")
    record = TestRecord(
        name,
        outcome,
        message=str(payload.get("message") or ""),
        details=dict(details) if isinstance(details, Mapping) else {},
    )
    return apply_known_issues([record], entries, kernel_version, topology, fragments)[0].outcome

"""Known kernel issues: failures that have been analysed and are expected on given kernels.

A matching failure becomes "xfailed" (the run can pass); a matching *pass* becomes "xpassed",
which fails the run, because an entry that no longer reproduces is stale or too broad and
would otherwise keep hiding regressions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from harness.errors import ConfigError
from harness.paths import KERNELS_DIR
from harness.results.model import Outcome, TestRecord

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


class KnownIssue(BaseModel):
    """One analysed issue. `test` is a pytest node id or an fnmatch glob over node ids."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    test: str = Field(min_length=1)
    kernels: list[str] = Field(min_length=1)
    topologies: list[str] | None = Field(default=None, min_length=1)
    reason: str = Field(min_length=1)
    reference: str = Field(min_length=1)  # URL, commit id or mailing-list message
    analysis: str = Field(min_length=1)

    @field_validator("kernels")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        return [check_version_spec(spec) for spec in value]

    def matches(self, name: str, kernel_version: str, topology: str) -> bool:
        if name != self.test and not fnmatchcase(name, self.test):
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


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def apply_known_issues(
    records: Sequence[TestRecord], entries: Sequence[KnownIssue], kernel_version: str, topology: str
) -> list[TestRecord]:
    """Failed -> xfailed and passed -> xpassed for records matching an entry (first match wins).

    Only "failed" is excused: an "error" happens in fixture setup/teardown, where a known kernel
    bug in the test body is not what went wrong, so it stays visible.
    """
    result: list[TestRecord] = []
    for record in records:
        entry = next((e for e in entries if e.matches(record.name, kernel_version, topology)), None)
        if entry is None or record.outcome not in ("failed", "passed"):
            result.append(record)
            continue
        outcome: Outcome
        if record.outcome == "failed":
            was = _first_line(record.message)
            message = f"known issue: {entry.reason} [{entry.reference}]"
            message += f"; failure: {was}" if was else ""
            outcome = "xfailed"
        else:
            message = f"UNEXPECTED PASS: known issue did not reproduce: {entry.reason} [{entry.reference}]"
            outcome = "xpassed"
        details = {**record.details, "known_issue": entry.model_dump()}
        result.append(replace(record, outcome=outcome, message=message, details=details))
    return result

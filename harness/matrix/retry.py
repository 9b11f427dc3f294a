"""`hil run --retries N`: the tests that failed, run again in a fresh VM; the records merged (pure).

A test that passes on a retry is `flaky`, never `passed`: its record keeps the first failure's message
and lists every attempt. Only a cell whose guest finished (verdict failed) is retried: a crash or a hang
is the kernel's answer, not noise, and is reported as it happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from harness.kselftest.cell import wrapper_name
from harness.results.model import Outcome, TestRecord

RETRIED: frozenset[Outcome] = frozenset({"failed", "error"})


def to_retry(records: Sequence[TestRecord]) -> tuple[str, ...]:
    """The node ids to run again. An upstream selftest's records (kselftest/<dir>/<binary>/...) come
    from one wrapper test per binary, which is what reruns; a selftest that did not build is not retried
    (the same source fails the same way)."""
    nodes: dict[str, None] = {}
    for record in records:
        if record.outcome not in RETRIED:
            continue
        parts = record.name.split("/")
        if parts[0] != "kselftest":
            nodes[record.name] = None
        elif len(parts) >= 3 and parts[2] != "build":
            nodes[wrapper_name(parts[1], parts[2])] = None
    return tuple(nodes)


def _attempt(record: TestRecord | None, attempt: int, where: str) -> dict[str, Any]:
    if record is None:
        return {"attempt": attempt, "outcome": "missing", "dir": where}
    return {
        "attempt": attempt,
        "outcome": record.outcome,
        "duration": record.duration,
        "message": record.message[:500],
        "dir": where,
    }


def merge_attempt(
    records: Sequence[TestRecord], again: Sequence[TestRecord], attempt: int, where: str
) -> list[TestRecord]:
    """`records` with each retried test's result of retry number `attempt` (run in `where`) folded in.

    A retried test that passed becomes flaky; one that failed again (or did not run: the retry VM died
    first) keeps its first outcome and message. Either way its details list every attempt."""
    by_name = {r.name: r for r in again}
    merged = []
    for record in records:
        if record.outcome not in RETRIED:
            merged.append(record)
            continue
        retried = by_name.get(record.name)
        attempts = list(record.details.get("attempts") or [_attempt(record, 0, ".")])
        attempts.append(_attempt(retried, attempt, where))
        details = {**record.details, "attempts": attempts}
        if retried is not None and retried.outcome == "passed":
            message = f"FLAKY: {record.outcome} first, passed on retry {attempt} ({where}): {record.message}"
            merged.append(replace(record, outcome="flaky", message=message[:2000], details=details))
        else:
            merged.append(replace(record, details=details))
    return merged

"""Verdict, exit codes and the guest's JSONL records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import InfraError
from harness.results.model import (
    GuestEnd,
    Outcome,
    TestRecord,
    Verdict,
    combine_verdicts,
    count_outcomes,
    exit_code,
    load_records,
    parse_records,
    verdict,
)


def records(*outcomes: Outcome) -> list[TestRecord]:
    return [TestRecord(f"test_p2p.py::test_{i}", o) for i, o in enumerate(outcomes)]


@pytest.mark.parametrize(
    ("outcomes", "end", "explicit", "expected"),
    [
        (("passed",), GuestEnd.DONE, False, Verdict.PASSED),
        (("passed", "skipped", "xfailed"), GuestEnd.DONE, False, Verdict.PASSED),
        (("skipped",), GuestEnd.DONE, False, Verdict.PASSED),
        (("passed", "failed"), GuestEnd.DONE, False, Verdict.FAILED),
        (("passed", "error"), GuestEnd.DONE, False, Verdict.FAILED),
        (("passed", "xpassed"), GuestEnd.DONE, False, Verdict.FAILED),
        ((), GuestEnd.DONE, False, Verdict.INFRA_ERROR),
        ((), GuestEnd.DONE, True, Verdict.FAILED),  # a -k that matched nothing is not green
        (("passed",), GuestEnd.CRASHED, False, Verdict.CRASHED),
        (("failed",), GuestEnd.CRASHED, False, Verdict.CRASHED),
        ((), GuestEnd.CRASHED, False, Verdict.CRASHED),
        (("passed",), GuestEnd.HUNG, False, Verdict.HUNG),
        ((), GuestEnd.BOOT_FAILURE, False, Verdict.INFRA_ERROR),
        ((), GuestEnd.BOOT_FAILURE, True, Verdict.INFRA_ERROR),
        (("passed",), GuestEnd.INFRA_ERROR, False, Verdict.INFRA_ERROR),
    ],
)
def test_verdict_table(
    outcomes: tuple[Outcome, ...], end: GuestEnd, explicit: bool, expected: Verdict
) -> None:
    assert verdict(records(*outcomes), end, selected=explicit) is expected


@pytest.mark.parametrize(
    ("v", "code"),
    [
        (Verdict.PASSED, 0),
        (Verdict.FAILED, 1),
        (Verdict.CRASHED, 3),
        (Verdict.HUNG, 3),
        (Verdict.INFRA_ERROR, 3),
    ],
)
def test_exit_codes(v: Verdict, code: int) -> None:
    assert exit_code(v) == code


def test_combine_verdicts() -> None:
    assert combine_verdicts([Verdict.PASSED, Verdict.PASSED]) is Verdict.PASSED
    assert combine_verdicts([Verdict.PASSED, Verdict.FAILED]) is Verdict.FAILED
    assert combine_verdicts([Verdict.FAILED, Verdict.HUNG, Verdict.PASSED]) is Verdict.HUNG
    assert combine_verdicts([Verdict.CRASHED, Verdict.INFRA_ERROR]) is Verdict.INFRA_ERROR
    assert combine_verdicts([]) is Verdict.INFRA_ERROR


def test_count_outcomes_lists_every_outcome() -> None:
    assert count_outcomes(records("passed", "passed", "xpassed")) == {
        "passed": 2,
        "failed": 0,
        "skipped": 0,
        "error": 0,
        "xfailed": 0,
        "xpassed": 1,
        "flaky": 0,
    }


# -- JSONL ---------------------------------------------------------------------------------------


def line(**fields: object) -> str:
    return json.dumps(fields) + "\n"


GOOD = line(name="test_p2p.py::test_a", outcome="passed", duration=0.5, message="", details={}) + line(
    name="test_p2p.py::test_b[exporter]",
    outcome="failed",
    duration=1,
    message="assert 1 == 2",
    details={"bar": 2, "mapped": 0},
)


def test_clean_file() -> None:
    loaded = parse_records(GOOD)
    assert loaded.truncated_tail is None
    assert loaded.records == [
        TestRecord("test_p2p.py::test_a", "passed", 0.5),
        TestRecord("test_p2p.py::test_b[exporter]", "failed", 1.0, "assert 1 == 2", {"bar": 2, "mapped": 0}),
    ]


def test_truncated_last_line_is_reported_not_fatal() -> None:
    cut = '{"name": "test_p2p.py::test_c", "outcome": "pas'
    loaded = parse_records(GOOD + cut)
    assert [r.name for r in loaded.records] == ["test_p2p.py::test_a", "test_p2p.py::test_b[exporter]"]
    assert loaded.truncated_tail == cut


def test_complete_last_record_without_newline_is_kept() -> None:
    loaded = parse_records(GOOD + line(name="t::c", outcome="skipped").rstrip("\n"))
    assert [r.outcome for r in loaded.records] == ["passed", "failed", "skipped"]
    assert loaded.truncated_tail is None


def test_broken_line_before_the_end_is_an_infra_error() -> None:
    with pytest.raises(InfraError, match=r"results.jsonl:2: not JSON"):
        parse_records(
            line(name="a", outcome="passed") + "{oops\n" + line(name="b", outcome="passed"), "results.jsonl"
        )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"outcome": "passed"}, "'name'"),
        ({"name": "a", "outcome": "PASS"}, "'outcome'"),
        ({"name": "a", "outcome": "passed", "duration": "1s"}, "'duration'"),
        ({"name": "a", "outcome": "passed", "duration": True}, "'duration'"),
        ({"name": "a", "outcome": "passed", "message": 3}, "'message'"),
    ],
)
def test_invalid_records(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(InfraError, match=problem):
        parse_records(json.dumps(fields) + "\n", "r.jsonl")


def test_non_object_record() -> None:
    with pytest.raises(InfraError, match=r"r\.jsonl:1: a record must be a JSON object"):
        parse_records("[1]\n", "r.jsonl")


def test_details_from_other_producers_are_kept_and_blank_lines_skipped() -> None:
    loaded = parse_records(
        "\n"
        + line(name="a", outcome="error", details="Traceback ...")
        + "\n"
        + line(name="b", outcome="passed", details=[1])
    )
    assert [r.details for r in loaded.records] == [{"text": "Traceback ..."}, {"text": "[1]"}]
    assert loaded.records[0].message == ""


def test_load_records_from_file(tmp_path: Path) -> None:
    path = tmp_path / "guest-results.jsonl"
    assert load_records(path) == ([], None)  # guest died before the first test finished
    path.write_text(GOOD + '{"name"', encoding="utf-8")
    records, truncated = load_records(path)
    assert len(records) == 2
    assert truncated == '{"name"'


def test_record_round_trips_through_json() -> None:
    record = TestRecord("a", "xfailed", 0.1, "m", {"known_issue": {"reason": "r"}})
    assert parse_records(json.dumps(record.to_json()) + "\n").records == [record]

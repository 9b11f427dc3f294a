"""Host-side byte checks (harness/hostcheck.py) on real files: seeding, observing, verdicts."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from harness.guest.checks import DETAILS_KEY, SEED_LENGTH, SEED_OFFSET, check_spec, load_seeds, seed_bytes
from harness.hostcheck import (
    RESULTS_KEY,
    HostCheckError,
    RunByteChecks,
    apply_host_checks,
    observe,
    parse_checks,
    seed_commands,
    write_seeds,
)
from harness.results.model import TestRecord

SIZE = 4 << 20


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    path = tmp_path / "exporter.shm"
    with open(path, "wb") as f:
        f.truncate(SIZE)
    return path


def _record(checks: list[dict[str, object]], outcome: str = "passed", name: str = "t::a") -> TestRecord:
    return TestRecord(name=name, outcome=outcome, details={DETAILS_KEY: checks})  # type: ignore[arg-type]


def test_seeds_are_written_recorded_and_readable(tmp_path: Path, backing: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ramp = bytes(range(256)) * (SEED_LENGTH // 256)
    seeds = write_seeds([("exporter", backing)], run_dir, random_bytes=lambda n: ramp[:n])
    assert len(seeds) == 1
    seed = seeds[0]
    data = backing.read_bytes()
    assert data[SEED_OFFSET : SEED_OFFSET + SEED_LENGTH] == ramp
    assert data[:SEED_OFFSET] == bytes(SEED_OFFSET)  # nothing else written
    assert len(data) == SIZE
    assert load_seeds(run_dir) == seeds
    assert hashlib.sha256(seed_bytes(run_dir, seed)).hexdigest() == seed.sha256
    assert json.loads((run_dir / "host-seeds.json").read_text())["format"] == 1


def test_seed_bytes_refuses_a_changed_file(tmp_path: Path, backing: Path) -> None:
    (seed,) = write_seeds([("exporter", backing)], tmp_path)
    (tmp_path / seed.file).write_bytes(b"\0" * SEED_LENGTH)
    with pytest.raises(ValueError, match="does not hold the recorded seed"):
        seed_bytes(tmp_path, seed)


def test_seed_commands_reproduce_the_seed(tmp_path: Path, backing: Path) -> None:
    """The dd lines of reproduce.sh --raw put the same bytes at the same offset of a fresh file."""
    write_seeds([("exporter", backing)], tmp_path)
    fresh = tmp_path / "fresh.shm"
    with open(fresh, "wb") as f:
        f.truncate(SIZE)
    for command in seed_commands([("exporter", fresh)], tmp_path):
        subprocess.run(command, check=True)
    assert fresh.read_bytes() == backing.read_bytes()


def test_matching_checks_keep_the_pass_and_record_results(tmp_path: Path, backing: Path) -> None:
    (seed,) = write_seeds([("exporter", backing)], tmp_path)
    pattern = seed_bytes(tmp_path, seed)
    record = _record([check_spec("exporter", SEED_OFFSET, pattern, "seed"),
                      check_spec("exporter", 0, bytes(4096), "zeros")])  # fmt: skip
    observed = observe([record], {"exporter": backing})
    (out,) = apply_host_checks([record], observed)
    assert out.outcome == "passed"
    assert [r["ok"] for r in out.details[RESULTS_KEY]] == [True, True]
    assert out.details[DETAILS_KEY] == record.details[DETAILS_KEY]


def test_mismatch_against_a_seed_fails_with_the_first_difference(tmp_path: Path, backing: Path) -> None:
    (seed,) = write_seeds([("exporter", backing)], tmp_path)
    pattern = seed_bytes(tmp_path, seed)
    dst = 0x200088
    # A DMA that moved all but the last 16 bytes, where something else stays. Not zeros: the seed is
    # random, and a zero byte in it would move the first difference (1 run in 256 did, in CI).
    stale = bytes(b ^ 0xFF for b in pattern[-16:])
    with open(backing, "r+b") as f:
        f.seek(dst)
        f.write(pattern[:-16] + stale)
    record = _record([check_spec("exporter", dst, pattern, "edu's copy")])
    observed = observe([record], {"exporter": backing}, {seed.sha256: pattern})
    (out,) = apply_host_checks([record], observed)
    assert out.outcome == "failed"
    result = out.details[RESULTS_KEY][0]
    first = SEED_LENGTH - 16
    assert result["first_difference"] == dst + first
    assert result["expected_is"] == "the host's seed"
    assert result["want_hex"] == pattern[first:].hex()
    assert result["got_hex"] == stale.hex()
    assert f"first at {dst + first:#x}" in out.message and "edu's copy" in out.message


def test_mismatch_against_zeros_and_unknown_bytes(backing: Path) -> None:
    with open(backing, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xfe")
    zeros = _record([check_spec("exporter", 0, bytes(256), "zeros")], name="t::zeros")
    other = _record([check_spec("exporter", 0, b"abc" * 40, "unknown")], name="t::other")
    observed = observe([zeros, other], {"exporter": backing})
    z, o = apply_host_checks([zeros, other], observed)
    assert z.outcome == o.outcome == "failed"
    assert z.details[RESULTS_KEY][0]["first_difference"] == 100
    assert z.details[RESULTS_KEY][0]["expected_is"] == "zeros"
    assert o.details[RESULTS_KEY][0]["nonzero_bytes"] == 2
    assert "actual_head_hex" in o.details[RESULTS_KEY][0]


def test_only_passed_records_change_outcome(backing: Path) -> None:
    bad = [check_spec("exporter", 0, b"\x01", "one")]
    records = [_record(bad, "failed", "t::f"), _record(bad, "error", "t::e"), _record(bad, "skipped", "t::s")]
    observed = observe(records, {"exporter": backing})
    assert "t::s" not in observed  # skipped tests are not looked at
    out = apply_host_checks(records, observed)
    assert [r.outcome for r in out] == ["failed", "error", "skipped"]
    assert "host check failed: one" in out[0].message


def test_unusable_checks_are_errors(backing: Path) -> None:
    records = [
        _record([check_spec("nosuch", 0, b"x", "gone")], name="t::device"),
        _record([check_spec("exporter", SIZE - 1, b"xy", "past the end")], name="t::range"),
        TestRecord(name="t::malformed", outcome="passed", details={DETAILS_KEY: [{"device": "exporter"}]}),
    ]
    out = apply_host_checks(records, observe(records, {"exporter": backing}))
    assert [r.outcome for r in out] == ["error", "error", "error"]
    assert "no backing file" in out[0].message
    assert "outside" in out[1].message
    assert "offset" in out[2].message


def test_records_without_checks_are_untouched(backing: Path) -> None:
    plain = TestRecord(name="t::plain", outcome="passed", details={"x": 1})
    observed = observe([plain], {"exporter": backing})
    assert observed == {}
    assert apply_host_checks([plain], observed) == [plain]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("not a list", "expected a list"),
        ([1], "expected an object"),
        ([{"device": "", "offset": 0, "length": 1, "sha256": "0" * 64}], "device"),
        ([{"device": "d", "offset": -1, "length": 1, "sha256": "0" * 64}], "offset"),
        ([{"device": "d", "offset": 0, "length": 0, "sha256": "0" * 64}], "length"),
        ([{"device": "d", "offset": 0, "length": True, "sha256": "0" * 64}], "length"),
        ([{"device": "d", "offset": 0, "length": 1, "sha256": "XYZ"}], "sha256"),
    ],
)
def test_parse_checks_names_the_problem(entry: object, problem: str) -> None:
    with pytest.raises(HostCheckError, match=problem):
        parse_checks({DETAILS_KEY: entry})


def test_run_byte_checks_reads_the_guest_results(tmp_path: Path, backing: Path) -> None:
    """The run's sequence: seed before boot, observe from the JSONL after the VM, apply to the records."""
    results = tmp_path / "guest-results.jsonl"
    checks = RunByteChecks(tmp_path, results, {"exporter": backing}, [("exporter", backing)])
    checks.seed()
    pattern = seed_bytes(tmp_path, checks.seeds[0])
    record = _record([check_spec("exporter", SEED_OFFSET + 8192, pattern, "copy that never happened")])
    results.write_text(json.dumps(record.to_json()) + "\n")
    checks.observe_now()
    (out,) = checks.apply([record])
    assert out.outcome == "failed"
    assert out.details[RESULTS_KEY][0]["expected_is"] == "the host's seed"

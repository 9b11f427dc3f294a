"""Host-side byte checks: a guest test names bytes that the host must find in a device's backing file.

The guest can only claim that a DMA moved bytes; the host can look. A test puts check specs in its
record's details (the `hil_details` fixture):

    details["host_checks"] = [check_spec("exporter", offset, expected_bytes, "what it proves"), ...]
    # each {"device", "offset", "length", "sha256", "what"}: device is a plan device id with a backing file

After the VM has stopped and before its scratch directory (where the backing files live) is removed,
the host reads each named region (`observe`, the only I/O); `apply_host_checks` (pure) then adds the
results to the record's details under "host_check_results" and turns a *passed* record into
"failed" when bytes differ, or into "error" when a check is malformed or unreadable, with the evidence
in the message: the actual hash, and where the host knows the expected bytes (a seed it wrote, or
zeros) the first differing offset and the bytes there. Records that did not pass keep their outcome.

Seeds: before boot the host writes random bytes at SEED_OFFSET of every exporter's backing file
(`write_seeds`) and records them in the run directory (SEEDS_FILE, plus the bytes in one .bin file
per device), where the guest reads them (`load_seeds`, `seed_bytes`).

The guest's half (seeds, check specs) is harness/guest/checks.py; this module is the host's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.guest.checks import (
    DETAILS_KEY,
    SEED_BLOCK,
    SEED_LENGTH,
    SEED_OFFSET,
    SEEDS_FILE,
    SEEDS_FORMAT,
    Seed,
    seed_bytes,
    seed_file_name,
)
from harness.results.model import TestRecord, load_records

RESULTS_KEY = "host_check_results"
MAX_CHECK_LENGTH = 1 << 30
_SHOWN_BYTES = 32
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HostCheckError(ValueError):
    """A check spec the host cannot evaluate (malformed, unknown device, outside the file)."""


# --- seeds ----------------------------------------------------------------------------------------


def write_seeds(
    targets: Sequence[tuple[str, Path]],
    run_dir: Path,
    random_bytes: Callable[[int], bytes] = os.urandom,
    offset: int = SEED_OFFSET,
    length: int = SEED_LENGTH,
) -> list[Seed]:
    """Write fresh random bytes into each (device, backing file); record them in `run_dir`."""
    seeds = []
    for device, path in targets:
        data = random_bytes(length)
        with open(path, "r+b") as backing:
            backing.seek(offset)
            backing.write(data)
        name = seed_file_name(device)
        (run_dir / name).write_bytes(data)
        seeds.append(Seed(device, offset, length, hashlib.sha256(data).hexdigest(), name))
    document = {"format": SEEDS_FORMAT, "seeds": [s.to_json() for s in seeds]}
    (run_dir / SEEDS_FILE).write_text(json.dumps(document, indent=1) + "\n")
    return seeds


def seed_commands(
    targets: Sequence[tuple[str, Path]], run_dir: Path, offset: int = SEED_OFFSET, length: int = SEED_LENGTH
) -> list[list[str]]:
    """dd commands that put the recorded seeds into fresh backing files (for reproduce.sh --raw)."""
    if offset % SEED_BLOCK or length % SEED_BLOCK:
        raise ValueError(f"seed offset {offset} and length {length} must be multiples of {SEED_BLOCK}")
    return [["dd", f"if={run_dir / seed_file_name(device)}", f"of={path}", f"bs={SEED_BLOCK}",
             f"seek={offset // SEED_BLOCK}", f"count={length // SEED_BLOCK}", "conv=notrunc", "status=none"]
            for device, path in targets]  # fmt: skip


# --- checks: specs (guest) ------------------------------------------------------------------------


@dataclass(frozen=True)
class HostCheck:
    device: str
    offset: int
    length: int
    sha256: str
    what: str

    def region(self) -> str:
        return f"{self.device} [{self.offset:#x}, +{self.length:#x})"


def parse_checks(details: Mapping[str, Any]) -> list[HostCheck]:
    """The checks of one record's details; HostCheckError naming the bad entry."""
    raw = details.get(DETAILS_KEY, [])
    if not isinstance(raw, list):
        raise HostCheckError(f"{DETAILS_KEY}: expected a list, got {type(raw).__name__}")
    checks = []
    for i, item in enumerate(raw):
        where = f"{DETAILS_KEY}[{i}]"
        if not isinstance(item, dict):
            raise HostCheckError(f"{where}: expected an object")
        device, what, sha = item.get("device"), item.get("what", ""), item.get("sha256")
        offset, length = item.get("offset"), item.get("length")
        if not isinstance(device, str) or not device:
            raise HostCheckError(f"{where}.device: expected a device id")
        for name, value in (("offset", offset), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise HostCheckError(f"{where}.{name}: expected a non-negative integer, got {value!r}")
        assert isinstance(offset, int) and isinstance(length, int)
        if not 0 < length <= MAX_CHECK_LENGTH:
            raise HostCheckError(f"{where}.length: {length} is not in 1..{MAX_CHECK_LENGTH}")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise HostCheckError(f"{where}.sha256: expected 64 lowercase hex digits")
        checks.append(HostCheck(device, offset, length, sha, str(what)))
    return checks


# --- observation (host, I/O) ----------------------------------------------------------------------


def _chunks(path: Path, offset: int, length: int) -> Iterable[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left:
            data = f.read(min(_CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


def _zeros_sha256(length: int) -> str:
    h = hashlib.sha256()
    block = bytes(min(_CHUNK, length))
    left = length
    while left:
        n = min(len(block), left)
        h.update(block[:n])
        left -= n
    return h.hexdigest()


def _expected_bytes(check: HostCheck, seeds: Mapping[str, bytes]) -> bytes | None:
    """The expected bytes when the host knows them: a seed it wrote, or zeros."""
    if check.sha256 in seeds and len(seeds[check.sha256]) == check.length:
        return seeds[check.sha256]
    if check.length <= _CHUNK * 64 and check.sha256 == _zeros_sha256(check.length):
        return bytes(check.length)
    return None


def _observe_one(check: HostCheck, path: Path, seeds: Mapping[str, bytes]) -> dict[str, Any]:
    result: dict[str, Any] = {"what": check.what, "device": check.device, "offset": check.offset,
                              "length": check.length, "expected_sha256": check.sha256}  # fmt: skip
    size = path.stat().st_size
    if check.offset + check.length > size:
        raise HostCheckError(f"{check.region()} is outside {path.name} ({size} bytes)")
    h = hashlib.sha256()
    head = b""
    nonzero = 0
    for chunk in _chunks(path, check.offset, check.length):
        h.update(chunk)
        if len(head) < _SHOWN_BYTES:
            head += chunk[: _SHOWN_BYTES - len(head)]
        nonzero += len(chunk) - chunk.count(0)
    result["actual_sha256"] = h.hexdigest()
    result["ok"] = result["actual_sha256"] == check.sha256
    if result["ok"]:
        return result
    result["nonzero_bytes"] = nonzero
    expected = _expected_bytes(check, seeds)
    if expected is None:
        result["actual_head_hex"] = head.hex()
        return result
    actual = b"".join(_chunks(path, check.offset, check.length))
    diffs = [i for i, (a, b) in enumerate(zip(actual, expected, strict=True)) if a != b]
    first = diffs[0]
    result.update(
        expected_is="zeros" if not any(expected) else "the host's seed",
        differing_bytes=len(diffs),
        first_difference=check.offset + first,
        got_hex=actual[first : first + _SHOWN_BYTES].hex(),
        want_hex=expected[first : first + _SHOWN_BYTES].hex(),
    )
    return result


def observe(
    records: Iterable[TestRecord], backing: Mapping[str, Path], seeds: Mapping[str, bytes] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Record name -> one result per host check, read from the backing files now.

    `seeds` maps sha256 -> bytes of seeds the host wrote (for pointing at the first difference).
    A check that cannot be made gives {"error": why}. Skipped records are not looked at.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if DETAILS_KEY not in record.details or record.outcome == "skipped":
            continue
        try:
            checks = parse_checks(record.details)
        except HostCheckError as exc:
            out[record.name] = [{"error": str(exc)}]
            continue
        results = []
        for check in checks:
            try:
                path = backing.get(check.device)
                if path is None:
                    raise HostCheckError(f"device {check.device!r} has no backing file in this run")
                results.append(_observe_one(check, path, seeds or {}))
            except (HostCheckError, OSError) as exc:
                results.append({"what": check.what, "device": check.device, "error": str(exc)})
        out[record.name] = results
    return out


# --- verdict (pure) -------------------------------------------------------------------------------


def describe_failure(result: Mapping[str, Any]) -> str:
    if "error" in result:
        return f"host check {result.get('what', '')!r} could not be made: {result['error']}"
    region = f"{result['device']} [{result['offset']:#x}, +{result['length']:#x})"
    text = (
        f"host check failed: {result['what']}: {region}: sha256 {result['actual_sha256'][:16]}... "
        f"!= expected {result['expected_sha256'][:16]}..."
    )
    if "first_difference" in result:
        text += (
            f"; {result['differing_bytes']} bytes differ from {result['expected_is']}, first at "
            f"{result['first_difference']:#x}: got {result['got_hex']} want {result['want_hex']}"
        )
    else:
        text += f"; {result['nonzero_bytes']} nonzero bytes, starts {result['actual_head_hex']}"
    return text


def apply_host_checks(
    records: Sequence[TestRecord], observed: Mapping[str, list[dict[str, Any]]]
) -> list[TestRecord]:
    """Records with their host-check results; a passed record whose bytes differ becomes failed."""
    out = []
    for record in records:
        results = observed.get(record.name)
        if results is None:
            out.append(record)
            continue
        details = {**record.details, RESULTS_KEY: results}
        errors = [describe_failure(r) for r in results if "error" in r]
        mismatches = [describe_failure(r) for r in results if "error" not in r and not r["ok"]]
        outcome, message = record.outcome, record.message
        if record.outcome == "passed" and mismatches:
            outcome, message = "failed", "; ".join(mismatches + errors)
        elif record.outcome == "passed" and errors:
            outcome, message = "error", "; ".join(errors)
        elif mismatches or errors:
            message = "; ".join([m for m in (record.message,) if m] + mismatches + errors)
        out.append(replace(record, outcome=outcome, message=message, details=details))
    return out


class RunByteChecks:
    """The host checks of one run: seed() before boot, observe_now() once the VM has stopped (before
    its scratch directory goes), then apply() to the records."""

    def __init__(
        self,
        run_dir: Path,
        results_path: Path,
        backing: Mapping[str, Path],
        targets: Sequence[tuple[str, Path]],
    ) -> None:
        self.run_dir = run_dir
        self.results_path = results_path
        self.backing = dict(backing)
        self.targets = list(targets)
        self.seeds: list[Seed] = []
        self.observed: dict[str, list[dict[str, Any]]] = {}

    def seed(self) -> None:
        self.seeds = write_seeds(self.targets, self.run_dir)

    def observe_now(self) -> None:
        known = {}
        for s in self.seeds:
            # The run directory is writable by the guest: a damaged seed file only costs the diff.
            with contextlib.suppress(OSError, ValueError):
                known[s.sha256] = seed_bytes(self.run_dir, s)
        self.observed = observe(load_records(self.results_path).records, self.backing, known)

    def apply(self, records: Sequence[TestRecord]) -> list[TestRecord]:
        return apply_host_checks(records, self.observed)

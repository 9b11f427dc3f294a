"""Results -> the fault-injection and race summary: per operation and route, the fault sites the sweep
reached and whether every step was clean, each broken invariant listed with its fault number and the
failed allocation's site; per race test, its seed, time and verdict. Pure.

The facts come from the `details` of the in-guest tests (guest_tests/test_fault_injection.py records
`fault_sweeps`, a list of hil_fault.sweep.SweepResult.summary() dicts; guest_tests/test_races.py
records `race` = {"seed", "seconds", "outcomes", "broken"}). Lines, not a table: the lead puts them
into report.txt and the README as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.results.model import TestRecord

SWEEPS_KEY = "fault_sweeps"
RACE_KEY = "race"
_STACK_SHOWN = 4
_BROKEN_SHOWN = 2  # per operation: the rest are in results.json


def _site(entry: Mapping[str, Any]) -> str:
    frames = [str(f).split(" ", 1)[0] for f in entry.get("stack") or []]
    # Skip the injection and allocator frames the way the guest does for its step log: the first
    # frame that names a caller is what a reader needs, the rest is context.
    callers = [f for f in frames if not _is_machinery(f)]
    return " < ".join(callers[:_STACK_SHOWN]) if callers else "no stack"


def _is_machinery(frame: str) -> bool:
    prefixes = ("dump_stack", "should_fail", "fail_dump", "__should_failslab", "should_failslab",
                "__alloc_", "alloc_pages", "__kmalloc", "kmalloc", "kmem_cache_alloc", "__kmem_cache",
                "slab_", "__slab", "___slab", "kzalloc", "kvmalloc", "__kvmalloc", "__do_kmalloc",
                "prepare_alloc_pages", "get_page_from_freelist", "iommu_alloc_pages", "folio_alloc",
                "__folio_alloc", "new_slab", "allocate_slab")  # fmt: skip
    return frame.startswith(prefixes)


def _sweep_line(test: str, outcome: str, sweep: Mapping[str, Any]) -> list[str]:
    route = f" [{sweep['route']}]" if sweep.get("route") else ""
    head = f"{sweep.get('operation', '?')}{route} {sweep.get('label', '')}".rstrip()
    sites = sweep.get("sites")
    if sweep.get("capped"):
        reached = f"cap of {sweep.get('steps', '?')} faults hit"
    elif sites is None:
        reached = "no sweep (the fault-free run failed)"
    else:
        reached = f"{sites} fault sites"
    broken = list(sweep.get("broken") or [])
    steps = int(sweep.get("steps") or 0)
    absorbed = len(sweep.get("absorbed") or [])
    extra = f", {absorbed} absorbed" if absorbed else ""
    if sweep.get("restarted"):
        first = len(sweep.get("first_pass_log") or [])
        when = str(sweep["restarted"]).split(":", 1)[0]  # "after fault N"; the reason is in results.json
        extra += f"; started over {when}, {first} steps before"
    if not broken:
        verdict = f"all clean ({steps} steps{extra})"
    else:
        faults = sorted({int(b["fault"]) for b in broken if b.get("fault") is not None})
        verdict = f"{len(broken)} broken ({len(faults)} of {steps} steps{extra})"
    lines = [f"  {head}: {reached}, {verdict}  [{test}: {outcome}, {sweep.get('duration_s', '?')} s]"]
    for entry in broken[:_BROKEN_SHOWN]:
        where = f"fault {entry['fault']}" if entry.get("fault") is not None else "no fault"
        lines.append(f"    - {where} at {_site(entry)}: {entry.get('invariant', '?')}")
    if len(broken) > _BROKEN_SHOWN:
        lines.append(f"    - ... and {len(broken) - _BROKEN_SHOWN} more (results.json: details.{SWEEPS_KEY})")
    return lines


def fault_lines(records: Sequence[TestRecord]) -> list[str]:
    """One line per swept operation (and route), in record order, with its broken invariants below it;
    [] when no record has sweeps (the tests were not selected or skipped)."""
    lines: list[str] = []
    for record in records:
        sweeps = record.details.get(SWEEPS_KEY)
        if not isinstance(sweeps, list):
            continue
        for sweep in sweeps:
            if isinstance(sweep, Mapping):
                lines += _sweep_line(record.name, record.outcome, sweep)
    return ["fault injection (per operation and route):", *lines] if lines else []


def race_lines(records: Sequence[TestRecord]) -> list[str]:
    """One line per race test: seed, seconds, successes of each action, and what broke."""
    lines: list[str] = []
    for record in records:
        race = record.details.get(RACE_KEY)
        if not isinstance(race, Mapping):
            continue
        outcomes = race.get("outcomes") or {}
        done = ", ".join(f"{action} {per.get('ok', 0)}" for action, per in sorted(outcomes.items()))
        broken = list(race.get("broken") or [])
        verdict = "clean" if not broken else f"{len(broken)} broken"
        lines.append(
            f"  {record.name}: seed {race.get('seed')}, {race.get('seconds')} s, {verdict}; ok: {done}"
        )
        lines += [f"    - {text}" for text in broken[:_BROKEN_SHOWN]]
    return ["races:", *lines] if lines else []


def summary_lines(records: Sequence[TestRecord]) -> list[str]:
    return fault_lines(records) + race_lines(records)

"""The fault-injection debugfs attributes a fail-nth sweep needs, set for the sweep and restored after.

lib/fault-inject.c should_fail_ex() counts a task's fail-nth only for allocations that pass the
attribute's own ignore checks first (mm/failslab.c should_failslab, mm/fail_page_alloc.c
should_fail_alloc_page). Their defaults exclude what the operations under test allocate:
- failslab and fail_page_alloc ignore-gfp-wait=Y skip every allocation that may sleep
  (__GFP_DIRECT_RECLAIM, i.e. all GFP_KERNEL ones): set N.
- fail_page_alloc min-order=1 skips order-0 pages, which page-table pages are: set 0.
- fail_page_alloc ignore-gfp-highmem stays Y: the Python process's own user pages (__GFP_HIGHMEM)
  must not be failed in the middle of a step.
- verbose=2 makes fail_dump() print "FAULT_INJECTION: forcing a failure." and dump_stack(), the
  stack each record names; its ratelimit (5 s, burst 10 by default) would drop stacks in a sweep, and
  an interval of 0 turns ratelimiting off (lib/ratelimit.c ___ratelimit).
Probability stays 0: only fail-nth injects (should_fail_ex returns before the random part).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

DEBUGFS = Path("/sys/kernel/debug")
ATTRS = ("failslab", "fail_page_alloc")

SWEEP_SETTINGS: Mapping[str, str] = {
    "failslab/ignore-gfp-wait": "N",
    "failslab/verbose": "2",
    "failslab/verbose_ratelimit_interval_ms": "0",
    "fail_page_alloc/ignore-gfp-wait": "N",
    "fail_page_alloc/ignore-gfp-highmem": "Y",
    "fail_page_alloc/min-order": "0",
    "fail_page_alloc/verbose": "2",
    "fail_page_alloc/verbose_ratelimit_interval_ms": "0",
}


class KnobError(RuntimeError):
    """A fault-injection attribute is missing or refused a value."""


def read_knobs(names: Mapping[str, str] | tuple[str, ...], root: Path = DEBUGFS) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = (root / name).read_text().strip()
        except OSError as exc:
            raise KnobError(f"cannot read {root / name}: {exc}") from exc
    return out


def write_knobs(values: Mapping[str, str], root: Path = DEBUGFS) -> None:
    for name, value in values.items():
        try:
            (root / name).write_text(value)
        except OSError as exc:
            raise KnobError(f"cannot write {value!r} to {root / name}: {exc}") from exc


@contextlib.contextmanager
def sweep_knobs(
    root: Path = DEBUGFS, settings: Mapping[str, str] = SWEEP_SETTINGS
) -> Iterator[dict[str, str]]:
    """Apply `settings` for the duration; yields the values found before, which are put back after."""
    before = read_knobs(tuple(settings), root)
    try:
        write_knobs(settings, root)
        yield before
    finally:
        write_knobs(before, root)

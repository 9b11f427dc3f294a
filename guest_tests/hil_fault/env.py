"""A test's fault-injection environment: its sweeps, the kmemleak scan after them, the verdict.

Apart from fixtures.py (a pytest plugin): test modules import these names, and importing a plugin
module before pytest registers it would cost it assertion rewriting."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hil_fault.failnth import FAIL_NTH, FailNth
from hil_fault.kconfig import missing_options, read_config
from hil_fault.kmsg import Kmsg
from hil_fault.leakscan import scan_after
from hil_fault.snapshot import dma_api_facts
from hil_fault.sweep import DEFAULT_CAP, Operation, SweepResult, sweep

DETAILS_KEY = "fault_sweeps"


def describe_broken(entry: dict[str, Any]) -> str:
    where = f"fault {entry['fault']}" if entry["fault"] is not None else "no fault"
    stack = " < ".join(f.split(" ", 1)[0] for f in entry["stack"][:8]) or "no stack"
    route = f" [{entry['route']}]" if entry["route"] else ""
    return f"{entry['operation']}{route} ({entry['label']}) {where}: {entry['invariant']} | stack: {stack}"


@dataclass
class FaultEnv:
    """One test's sweeps: this thread's fail-nth, a /dev/kmsg reader, kmemleak when the kernel has it."""

    fail: FailNth
    kmsg: Kmsg
    kmemleak: bool
    details: dict[str, Any]
    cpu: int
    hz: int | None = None  # CONFIG_HZ: kmemleak's allocation jiffies -> boot time
    results: list[SweepResult] = field(default_factory=list)
    last_step_at: float = 0.0

    def sweep(
        self,
        op: Operation,
        label: str,
        cap: int = DEFAULT_CAP,
        restart: Callable[[], str | None] | None = None,
    ) -> SweepResult:
        # What the DMA-API invariant starts from, so that a record shows it was measured (empty: no
        # DMA-API debugging in this kernel).
        self.details.setdefault("dma_api_at_start", dma_api_facts())
        result = sweep(op, self.fail, self.kmsg, label=label, cap=cap, restart=restart)
        self.results.append(result)
        self.last_step_at = time.monotonic()
        self.details[DETAILS_KEY] = [r.summary() for r in self.results]
        return result

    def conclude(self) -> None:
        """The kmemleak scan of everything swept (debug kernel), the record, and the verdict."""
        if self.kmemleak and self.results:
            scan_after(self.results, self.last_step_at, self.hz)
        self.details[DETAILS_KEY] = [r.summary() for r in self.results]
        self.details["kmsg_overruns"] = self.kmsg.lost
        broken = [entry for r in self.results for entry in r.broken()]
        if broken:
            pytest.fail(
                f"{len(broken)} broken invariant(s):\n" + "\n".join(describe_broken(b) for b in broken)
            )


def kernel_hz() -> int | None:
    value = (read_config() or {}).get("HZ", "")
    return int(value) if value.isdigit() else None


def sweep_unavailable() -> str | None:
    reason = missing_options(read_config())
    if reason is not None:
        return reason
    if not Path(FAIL_NTH).exists():
        return f"{FAIL_NTH} does not exist although the kernel has CONFIG_FAULT_INJECTION"
    return None

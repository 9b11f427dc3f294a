"""pytest fixtures of the fault-injection tests (loaded with pytest_plugins)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from typing import Any

import pytest

from hil_fault import kmemleak
from hil_fault.env import FaultEnv, kernel_hz, sweep_unavailable
from hil_fault.failnth import FailNth
from hil_fault.kmsg import Kmsg
from hil_fault.knobs import sweep_knobs
from hil_fault.leakscan import forget_earlier


@pytest.fixture
def faults(hil_details: dict[str, Any]) -> Iterator[FaultEnv]:
    """Fault-injection knobs set for the test (restored after), the test's thread pinned to one CPU
    (the IOVA allocator's per-CPU caches then behave the same for every step), the garbage collector
    off (it must not run between arming and the call), kmemleak's earlier reports forgotten."""
    reason = sweep_unavailable()
    if reason is not None:
        pytest.skip(f"no fault injection on this kernel: {reason}")
    affinity = os.sched_getaffinity(0)
    cpu = min(affinity)
    with sweep_knobs() as before, FailNth() as fail:
        kmsg = Kmsg()
        hil_details["fault_knobs_before"] = before
        has_kmemleak = kmemleak.available()
        if has_kmemleak:
            hil_details["kmemleak_before"] = forget_earlier()
        os.sched_setaffinity(0, {cpu})
        gc.collect()
        gc.disable()
        try:
            yield FaultEnv(fail, kmsg, has_kmemleak, hil_details, cpu, kernel_hz())
        finally:
            gc.enable()
            os.sched_setaffinity(0, affinity)
            kmsg.close()

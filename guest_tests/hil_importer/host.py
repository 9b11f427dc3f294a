"""Asking the host for what only it can do (hot-unplug through QMP): harness/vm/host_agent.py's files.

The request goes into the shared run directory; the host agent answers in the same directory. The run
directory is the host's, shared read-write with the guest (vng --rwdir), so both see the same files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.guest.agent import read_response, write_request

RESPONSE_TIMEOUT_S = 30.0
# A waiting test does nothing else: a short poll is latency saved (one stat over 9p is ~1 ms under TCG).
_POLL_S = 0.02


class HostRequestError(RuntimeError):
    """The host did not answer, or refused."""


def host_request(run_dir: Path, op: str, device: str, timeout: float = RESPONSE_TIMEOUT_S) -> dict[str, Any]:
    """Ask the host agent for `op` on `device` and wait for its answer (HostRequestError if not ok)."""
    name = f"{time.time_ns()}-{os.getpid()}-{op}-{device}"
    write_request(run_dir, name, op, device)
    deadline = time.monotonic() + timeout
    while (response := read_response(run_dir, name)) is None:
        if time.monotonic() > deadline:
            raise HostRequestError(f"the host did not answer {op} {device} within {timeout:.0f} s")
        time.sleep(_POLL_S)
    if not response.get("ok"):
        raise HostRequestError(f"the host could not {op} {device}: {response.get('error')}")
    return response


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = _POLL_S) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            return None
        time.sleep(poll)
    return time.monotonic() - started

"""Demonstrations that prove the harness's own crash handling on a real kernel (opt-in)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


@pytest.mark.opt_in
def test_crash_demo() -> None:
    """Panic the guest: the host must report verdict `crashed` with the panic excerpt, exit 3."""
    Path("/proc/sys/kernel/sysrq").write_text("1\n")
    Path("/proc/sysrq-trigger").write_text("c\n")
    time.sleep(30)
    pytest.fail("the kernel did not panic on sysrq-c")

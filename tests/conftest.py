"""Suite-wide hooks: kernels prepared before the first test, harness progress shown live.

Hooks live in kernel_prep.py and are imported here so that conftest stays the only place pytest
looks for them (and a test can load the same hooks into a throw-away pytest run).
"""

from __future__ import annotations

from kernel_prep import pytest_collection_finish, pytest_configure, pytest_runtest_setup

__all__ = ["pytest_collection_finish", "pytest_configure", "pytest_runtest_setup"]

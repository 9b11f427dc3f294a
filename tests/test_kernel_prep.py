"""Kernels named by @pytest.mark.kernel are prepared, with progress, before the first test runs.

Each case runs a throw-away pytest session (a subprocess, so its terminal output is real) whose
conftest loads the suite's hooks; the kernels are image files, so nothing is fetched or built.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_kernel_image import _fake_bzimage

TESTS_DIR = Path(__file__).resolve().parent

SUITE = """
import pytest

IMAGE = {image!r}
MISSING = {missing!r}

@pytest.mark.build
@pytest.mark.kernel(IMAGE)
def test_boots_the_image():
    pass

@pytest.mark.build
@pytest.mark.kernel(IMAGE)
def test_boots_the_image_again():
    pass

@pytest.mark.kernel(MISSING)
def test_boots_a_missing_kernel():
    pass

def test_needs_no_kernel():
    pass
"""


def _session(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    image = tmp_path / "o" / "arch" / "x86" / "boot" / "bzImage"
    _fake_bzimage(image, "7.2.13-prep")
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "pytest.ini").write_text("[pytest]\nmarkers =\n    build: builds a kernel\n")
    (suite / "conftest.py").write_text(
        "from kernel_prep import pytest_collection_finish, pytest_configure, pytest_runtest_setup\n"
    )
    missing = tmp_path / "no-such-bzImage"
    (suite / "test_suite.py").write_text(SUITE.format(image=str(image), missing=str(missing)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-v",
        "--rootdir",
        str(suite),
        str(suite),
    ]
    return subprocess.run(
        [*argv, *args], cwd=suite, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_each_kernel_is_prepared_once_with_progress_before_the_first_test(tmp_path: Path) -> None:
    proc = _session(tmp_path)
    out = proc.stdout
    lines = out.splitlines()
    image = tmp_path / "o" / "arch" / "x86" / "boot" / "bzImage"
    ready = [i for i, line in enumerate(lines) if line.startswith("[hil] kernels ready in ")]
    assert len(ready) == 1, out
    # Two tests boot the image: it is named once.
    assert lines[ready[0]].endswith(f": {image} (7.2.13-prep)"), out
    first_test = next(i for i, line in enumerate(lines) if "::test_" in line)
    assert ready[0] < first_test, out
    # The kernel that cannot be prepared fails its test at setup, with the reason, and nothing else.
    assert "ERROR" in next(line for line in lines if "::test_boots_a_missing_kernel" in line), out
    assert f"kernel {tmp_path / 'no-such-bzImage'} could not be prepared" in out
    assert "does not exist" in out
    for name in ("test_boots_the_image ", "test_boots_the_image_again", "test_needs_no_kernel"):
        assert "PASSED" in next(line for line in lines if f"::{name}" in line), out
    assert proc.returncode == 1, out


def test_deselected_tests_prepare_nothing(tmp_path: Path) -> None:
    proc = _session(tmp_path, "-m", "not build", "-k", "not missing")
    assert proc.returncode == 0, proc.stdout
    assert "[hil]" not in proc.stdout
    assert "test_needs_no_kernel PASSED" in proc.stdout


def test_collect_only_prepares_nothing(tmp_path: Path) -> None:
    proc = _session(tmp_path, "--collect-only")
    assert proc.returncode == 0, proc.stdout
    assert "[hil]" not in proc.stdout and "test_boots_the_image" in proc.stdout

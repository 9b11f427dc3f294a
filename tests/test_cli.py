"""harness.cli.main: usage errors are refused with exit 2 before anything is fetched, built or booted."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main


def test_out_with_a_kernel_matrix_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["run", "--kernel", "debian:7.2", "--kernel", "src:debian-7.2", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--out names one directory; use it with one topology and one kernel" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_series_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "fix.mbox"
    code = main(["run", "--kernel", "src:debian-7.2", "--series", str(missing)])
    assert code == 2
    assert capsys.readouterr().err == f"hil: error: --series: no such file: {missing}\n"
    code = main(["kernel", "build", "src:debian-7.2", "--series", str(missing)])
    assert code == 2

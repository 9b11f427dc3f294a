"""harness.cli.main: usage errors are refused with exit 2 before anything is fetched, built or booted."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main


def test_a_matrix_out_directory_that_holds_files_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--out of a matrix names the matrix directory: new or empty, like a cell's, checked before any work."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "last-night.txt").write_text("kept")
    code = main(["run", "--kernel", "debian:7.2", "--kernel", "src:debian-7.2", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["last-night.txt"]


def test_missing_series_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "fix.mbox"
    code = main(["run", "--kernel", "src:debian-7.2", "--series", str(missing)])
    assert code == 2
    assert capsys.readouterr().err == f"hil: error: --series: no such file: {missing}\n"
    code = main(["kernel", "build", "src:debian-7.2", "--series", str(missing)])
    assert code == 2


def test_a_bug_in_the_harness_exits_4_with_its_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run-directory race died with FileNotFoundError and exit 1, which CI reads as test failures."""
    from harness import cli

    def broken(_args: object) -> int:
        raise FileNotFoundError(2, "No such file or directory", "runs/x/.plan.json.tmp")

    monkeypatch.setattr(cli, "dispatch", broken)
    code = main(["topology", "list"])
    assert code == cli.EXIT_INTERNAL == 4
    assert code not in (0, 1, cli.EXIT_USAGE, cli.EXIT_INFRA)  # none of them a verdict
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert "in broken\n" in err  # the frame that raised
    assert err.endswith(
        "hil: internal error (a bug in p2p-hil): FileNotFoundError: "
        "[Errno 2] No such file or directory: 'runs/x/.plan.json.tmp'\n"
    )


def test_exit_statuses_are_documented_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "exit status:\n  0  passed\n  1  failed" in text
        assert "  4  internal error: a bug in p2p-hil itself (traceback on stderr), not a verdict" in text


def test_run_without_arguments_is_every_topology_on_the_built_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from harness import cli

    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(cli, "dispatch", record)
    assert main(["run"]) == 0
    assert (seen[0].topology, seen[0].kernel) == (["all"], ["src:debian-7.2"])
    assert main(["run", "--kernel", "debian:7.2"]) == 0  # the stock kernel replaces the default
    assert seen[1].kernel == ["debian:7.2"]

"""`--fragment`, `--race-seconds` and `--kselftest` on `hil run`: checked before anything starts, part of
the kernel's identity in every report, and carried into the reproduce command and the guest plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_run import _blocks, nothing_may_start

from harness.bundle.script import harness_options
from harness.cell.request import CellRequest, kernel_label
from harness.cell.setup import harness_command
from harness.cli import main

__all__ = ["nothing_may_start"]  # the fixture, imported so pytest finds it here


def test_kernel_label_names_the_variant_and_the_series() -> None:
    assert kernel_label("src:debian-7.2", (), None) == "src:debian-7.2"
    assert kernel_label("src:debian-7.2", ("debug",), None) == "src:debian-7.2+debug"
    assert kernel_label("src:debian-7.2", ("debug", "/x/y/extra.config"), Path("/s/fix.mbox")) == (
        "src:debian-7.2+debug+extra+fix.mbox"
    )


def test_dry_run_of_the_debug_variant_names_it_in_the_cell_and_the_reproduce_command(
    nothing_may_start: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "-t", "switch-p2p", "--kernel", "src:debian-7.2", "--fragment", "debug", "--dry-run"]
    assert main(argv) == 0
    (block,) = _blocks(capsys.readouterr().out)
    assert block.splitlines()[0] == "cell 1/1: switch-p2p x src:debian-7.2+debug"
    assert "./hil run --topology switch-p2p --kernel src:debian-7.2 --fragment debug --timeout 2700" in block


def test_dry_run_of_selftests_shows_the_machine_and_the_command_the_run_would_use(
    nothing_may_start: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "-t", "switch-p2p", "--kselftest", "vfio", "--race-seconds", "5", "--dry-run"]
    assert main(argv) == 0
    (block,) = _blocks(capsys.readouterr().out)
    assert "--kselftest vfio --race-seconds 5 --timeout 1800" in block  # the reproduce command
    assert "igb,id=ks-igb,bus=ks-rp-igb" in block and "--memory 4096M" in block  # the machine it boots
    assert "hugepagesz=1G hugepages=1" in block


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--kernel", "src:debian-7.2", "--fragment", "no-such-fragment"], "--fragment"),
        (["--kernel", "debian:7.2", "--fragment", "debug"], "debian:7.2"),
        (["--kernel", "src:debian-7.2", "--race-seconds", "0"], "--race-seconds"),
    ],
)
def test_a_bad_variant_or_race_time_is_a_usage_error_before_anything_starts(
    nothing_may_start: Path, capsys: pytest.CaptureFixture[str], extra: list[str], flag: str
) -> None:
    assert main(["run", "-t", "switch-p2p", *extra]) == 2
    err = capsys.readouterr().err
    assert flag in err
    assert not (nothing_may_start / "runs").exists()
    assert not (nothing_may_start / "cache").exists()


def test_the_reproduce_command_round_trips_every_cell_option() -> None:
    req = CellRequest(
        topology="switch-p2p-amd",
        kernel_spec="src:debian-7.2",
        select="fault_injection and map",
        timeout=900.0,
        idle_timeout=120.0,
        fragments=("debug",),
        race_seconds=20.0,
        kselftests=("vfio", "iommu"),
    )
    argv = harness_command(req)
    opts = harness_options(argv)
    assert (opts.topology, opts.kernel, opts.select) == ("switch-p2p-amd", "src:debian-7.2", req.select)
    assert opts.fragments == ("debug",)
    assert opts.kselftests == ("vfio", "iommu")
    assert opts.race_seconds == 20.0


def test_the_default_deadline_grows_for_the_debug_variant_and_per_selftest_directory() -> None:
    from argparse import Namespace

    from harness.commands import cell_timeout

    assert cell_timeout(Namespace(timeout=None, fragment=[], kselftest=[])) == 900
    assert cell_timeout(Namespace(timeout=None, fragment=["debug"], kselftest=[])) == 2700
    assert cell_timeout(Namespace(timeout=None, fragment=[], kselftest=["vfio", "iommu"])) == 2700
    assert cell_timeout(Namespace(timeout=120.0, fragment=["debug"], kselftest=["vfio"])) == 120

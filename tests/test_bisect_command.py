"""`hil bisect` as the command runs it: every bad input is a ConfigError naming its flag (exit 2 in
cli.main) before any build, and a whole series bisect through the real run_prepared and run_cell with
scripted fake VMs (no QEMU, no kernel build)."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_history import git

from harness.bisect.command import bisect_command
from harness.cell.execute import PreparedKernel
from harness.cell.request import HostFacts
from harness.errors import ConfigError
from harness.guest.plan import GuestPlan
from harness.kernels.kimage import KernelImage

FACTS = HostFacts(
    qemu="qemu-system-x86_64", qemu_version="10.0.2", accel="tcg", accel_reason="test", vng="vng"
)
TEST = "test_export.py::test_a"


@pytest.fixture
def kernel_tree(tmp_path: Path) -> Path:
    """A git tree that looks like a kernel from v3 on (v2 has a Makefile, no Kconfig): tags v1, v2, v3."""
    tree = tmp_path / "linux"
    tree.mkdir()
    git(tree, "init", "-q", "-b", "main")
    for i, files in enumerate([["state"], ["Makefile"], ["Kconfig"]], start=1):
        for name in files:
            (tree / name).write_text(f"{i}\n")
        git(tree, "add", "-A")
        git(tree, "commit", "-qm", f"commit {i}")
        git(tree, "tag", f"v{i}")
    return tree


@pytest.fixture
def builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Path | None]]]:
    """Every kernel the command asks for (spec, series prefix); each one 'built' instantly; cells run
    through the real run_cell with a scripted guest that fails its test when the applied series
    (the kernel label names the prefix mbox) contains BROKEN."""
    import harness.bisect.command
    import harness.run
    from harness import commands
    from harness.vm.fake import scripted

    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(commands, "RUNS_ROOT", tmp_path / "runs")
    image = tmp_path / "bzImage"
    image.write_bytes(b"never booted")
    asked: list[tuple[str, Path | None]] = []

    def prepared(specs: list[str], series: Path | None, _accel: str) -> dict[str, PreparedKernel]:
        asked.append((specs[0], series))
        kernel = KernelImage(spec=specs[0], version="7.2.13-hil", image=image)
        return {specs[0]: PreparedKernel(specs[0], kernel, FACTS, None)}

    monkeypatch.setattr(commands, "prepared_kernels", prepared)
    # The series is checked against the base's real source tree (harness/validate/series_input.py, tested
    # there); these made-up patches have no tree to apply to.
    checked: list[Path] = []
    monkeypatch.setattr(harness.bisect.command, "check_series", lambda _spec, mbox, _p: checked.append(mbox))

    def guest(plan: GuestPlan) -> list[dict[str, object]]:
        label = plan.kernel.split("+", 1)
        applied = next((tmp_path / "out").rglob(label[1])).read_text() if len(label) == 2 else ""
        return [{"name": TEST, "outcome": "failed" if "BROKEN" in applied else "passed"}]

    monkeypatch.setattr(
        harness.run, "run_cell", functools.partial(harness.run.run_cell, vm_factory=scripted(guest))
    )
    yield asked


def args(**given: object) -> argparse.Namespace:
    defaults: dict[str, object] = {
        "kernel": "src:debian-7.2",
        "good": None,
        "bad": None,
        "series": None,
        "topology": "switch-p2p",
        "select": "test_a",
        "bad_on": None,
        "out": None,
        "timeout": 900.0,
        "idle_timeout": 120.0,
        "accel": "tcg",
    }
    return argparse.Namespace(**{**defaults, **given})


def mbox(path: Path, bodies: list[str]) -> Path:
    path.write_text(
        "".join(
            f"From {i:040x} Mon Sep 17 00:00:00 2001\nFrom: a <a@b>\n"
            f"Subject: [PATCH {i}/{len(bodies)}] step {i}\n\nwhy\n---\n"
            f"diff --git a/state b/state\n--- a/state\n+++ b/state\n@@ -1 +1 @@\n-x\n+{body}\n"
            for i, body in enumerate(bodies, start=1)
        )
    )
    return path


def test_a_series_bisect_through_real_cells_names_patch_2(
    builds: list[tuple[str, Path | None]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = mbox(tmp_path / "mine.mbox", ["fine", "BROKEN", "still BROKEN"])
    out = tmp_path / "out"
    assert bisect_command(args(series=str(series), out=str(out))) == 0
    printed = capsys.readouterr().out
    assert "first bad patch: patch 2/3 'step 2' (after 4 steps)" in printed
    record = json.loads((out / "bisect.json").read_text())
    [culprit] = [s for s in record["steps"] if s["key"] == "patch-2"]
    cell = json.loads((Path(culprit["cell"]) / "results.json").read_text())
    assert cell["verdict"] == "failed" and cell["meta"]["kernel"] == "src:debian-7.2+mine-2of3.mbox"
    from harness.bundle.read import read_bundle

    with read_bundle(out / "first-bad.tar.gz") as bundle:  # the first bad step, ready to attach to a report
        assert bundle.manifest.kernel_label == "src:debian-7.2+mine-2of3.mbox"
    assert [s for s, _ in builds] == ["src:debian-7.2"] * 4
    assert [p.name if p else None for _, p in builds] == [
        "mine-3of3.mbox",
        None,
        "mine-1of3.mbox",
        "mine-2of3.mbox",
    ]
    assert bisect_command(args(series=str(series), out=str(out))) == 0, "a finished bisect answers again"
    assert len(builds) == 4, "from its record, without a build"


def test_a_range_bisect_checks_out_each_commit_in_a_clone_of_the_tree(
    builds: list[tuple[str, Path | None]],
    kernel_tree: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every commit passes here: the bad end is not bad, which is found after one cell.
    with pytest.raises(ConfigError, match="--bad: the cell at the bad end ended passed"):
        bisect_command(args(kernel=f"tree:{kernel_tree}", good="v2", bad="v3", out=str(tmp_path / "out")))
    [(spec, series)] = builds
    clone = Path(spec.removeprefix("tree:"))
    assert series is None and git(clone, "rev-parse", "HEAD") == git(kernel_tree, "rev-parse", "v3")
    assert (
        git(kernel_tree, "status", "--porcelain") == ""
        and git(kernel_tree, "branch", "--show-current") == "main"
    )


@pytest.mark.parametrize(
    ("given", "flag", "why"),
    [
        ({"kernel": "tree:{tmp}/nowhere"}, "--kernel", "no such directory"),
        ({"kernel": "tree:{tmp}"}, "--kernel", "not a git tree"),
        ({"kernel": "tree:{tree}/sub"}, "--kernel", "not the top of a git tree"),
        ({"good": "v9"}, "--good", "'v9' is not a commit"),
        ({"bad": "nope"}, "--bad", "'nope' is not a commit"),
        ({"good": "v3", "bad": "main"}, "--good", "are the same commit"),
        ({"good": "v3", "bad": "v2"}, "--good", "newer than --bad"),
        ({"good": "side", "bad": "v3"}, "--good", "not an ancestor of --bad"),
        ({"good": "v1", "bad": "v2"}, "--kernel", "not a kernel tree \\(no top-level Kconfig\\)"),
        ({"kernel": "src:debian-7.2"}, "--kernel", "name commits of a tree:PATH kernel"),
        ({"bad": None}, "--bad", "needs --good REV and --bad REV"),
        ({"series": "{tmp}/x.mbox"}, "--good", "drop it"),
        ({"bad_on": "flaky"}, "--bad-on", "one of failed, crashed, hung, any"),
        ({"topology": "all"}, "--topology", "pinned to one topology"),
        ({"topology": "no-such-topology"}, None, "no-such-topology"),
        ({"kernel": ["tree:{tree}", "tree:{tree}"]}, "--kernel", "exactly one"),
        ({"out": "{tmp}/full"}, "--out", "holds no bisect"),
    ],
)
def test_bad_range_input_is_refused_before_any_build(
    builds: list[tuple[str, Path | None]],
    kernel_tree: Path,
    tmp_path: Path,
    given: dict[str, object],
    flag: str | None,
    why: str,
) -> None:
    git(kernel_tree, "branch", "side", "v1")
    git(kernel_tree, "checkout", "-q", "side")
    (kernel_tree / "side").write_text("x\n")
    git(kernel_tree, "add", "side")
    git(kernel_tree, "commit", "-qm", "a side line")
    git(kernel_tree, "checkout", "-q", "main")
    (kernel_tree / "sub").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("")

    def fill(value: object) -> object:
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value.format(tmp=tmp_path, tree=kernel_tree) if isinstance(value, str) else value

    filled = {k: fill(v) for k, v in given.items()}
    with pytest.raises(ConfigError, match=why) as caught:
        bisect_command(args(**{"kernel": f"tree:{kernel_tree}", "good": "v1", "bad": "v3", **filled}))
    if flag is not None:
        assert caught.value.where == flag
    assert builds == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "No such file or directory"),
        ("", "no patches found"),
        ("just some notes, not an mbox\n", "no patches found"),
        ("one", "one patch only, nothing to bisect"),
    ],
)
def test_bad_series_input_is_refused_before_any_build(
    builds: list[tuple[str, Path | None]], tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / "mine.mbox"
    if content == "one":
        mbox(path, ["only"])
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=why) as caught:
        bisect_command(args(series=str(path)))
    assert caught.value.where == "--series"
    assert builds == [] and not (tmp_path / "runs").exists()


def test_a_series_on_a_stock_image_is_refused(builds: list[tuple[str, Path | None]], tmp_path: Path) -> None:
    series = mbox(tmp_path / "mine.mbox", ["a", "b"])
    with pytest.raises(ConfigError, match="need a kernel we build"):
        bisect_command(args(kernel="debian:7.2", series=str(series)))
    assert builds == []


def test_a_series_that_does_not_apply_is_refused_before_any_build(
    builds: list[tuple[str, Path | None]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.bisect.command

    def refuse(_spec: str, mbox: Path, _progress: object) -> None:
        raise ConfigError(f"patch series {mbox}: patch 2/3 'step 2' does not apply", "SERIES")

    monkeypatch.setattr(harness.bisect.command, "check_series", refuse)
    series = mbox(tmp_path / "mine.mbox", ["fine", "BROKEN", "still BROKEN"])
    with pytest.raises(ConfigError, match="does not apply"):
        bisect_command(args(series=str(series), out=str(tmp_path / "out")))
    assert builds == [], "nothing was built"

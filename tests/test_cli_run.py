"""`hil run` orchestration without QEMU: --dry-run starts nothing, a matrix survives an infrastructure
error in one cell, a kernel that cannot be built stops everything before any VM."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import commands
from harness import topology as t
from harness.cell.request import CellRequest, CellResult, HostFacts
from harness.cli import main
from harness.errors import BuildError, LaunchError
from harness.kernels import build, debian, debsrc
from harness.kernels import image as kernel_image
from harness.kernels.debsrc import SourceTree
from harness.kernels.kimage import KernelImage
from harness.results.model import RunMeta, TestRecord, Verdict
from harness.results.write import write_junit, write_results_json
from harness.topology import Topology

SHIPPED = [topo.name for topo in t.list_topologies()]


def _forbidden(what: str) -> Callable[..., Any]:
    def call(*_args: object, **_kwargs: object) -> Any:
        raise AssertionError(f"the dry run called {what}")

    return call


@pytest.fixture
def nothing_may_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty kernel cache, and every function that fetches, builds, probes or boots made to raise."""
    import harness.kernels.modules
    import harness.run
    import harness.vm.accel
    import harness.vm.machine

    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(commands, "RUNS_ROOT", tmp_path / "runs", raising=False)  # absent before the fix
    for owner, name in (
        (kernel_image, "resolve_kernel"),
        (debian, "apt_session"),
        (debian, "download"),
        (debian, "unpack_image"),
        (debsrc, "unpack_source"),
        (build, "build_kernel"),
        (build, "run_make"),
        (build, "configure"),
        (harness.kernels.modules, "build_test_modules"),
        (harness.vm.accel, "choose_accelerator"),
        (harness.vm.accel, "cached_accelerator"),
        (harness.run, "run_cell"),
        (harness.vm.machine.GuestVM, "launch"),
    ):
        monkeypatch.setattr(owner, name, _forbidden(f"{owner.__name__}.{name}"))
    # Asking gcc and virtme-ng for their identity changes nothing, but keep the test independent of them.
    monkeypatch.setattr(build, "vng_fragment", lambda: "CONFIG_VIRTIO=y\n")
    monkeypatch.setattr(build, "toolchain_identity", lambda: "gcc (test) 12")
    return tmp_path


def _blocks(out: str) -> list[str]:
    """The dry run's per-cell blocks: each starts with a line "cell <i>/<n>: ..." and ends before the next."""
    blocks: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("cell "):
            blocks.append([])
        if blocks and line.startswith(("cell ", "  ")):
            blocks[-1].append(line)
    return ["\n".join(b) for b in blocks]


def test_dry_run_of_uncached_kernels_starts_nothing_and_prints_a_block_per_cell(
    nothing_may_start: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--topology", "all", "--kernel", "src:debian-7.2", "--kernel", "debian:7.2", "--dry-run"]
    code = main(argv)
    out_text = capsys.readouterr().out
    assert code == 0
    expected = [(topo, k) for k in ("src:debian-7.2", "debian:7.2") for topo in SHIPPED]
    blocks = _blocks(out_text)
    assert len(blocks) == len(expected)
    for index, (block, (topo, kernel)) in enumerate(zip(blocks, expected, strict=True), start=1):
        lines = block.splitlines()
        assert lines[0] == f"cell {index}/{len(expected)}: {topo} x {kernel}"
        verb, done = ("build", "built") if kernel.startswith("src:") else ("fetch", "fetched")
        assert lines[1].startswith(f"  kernel:       would {verb}"), block
        assert f"    ./hil run --topology {topo} --kernel {kernel} --timeout 900" in lines
        (vng,) = [line for line in lines if " --run " in line]
        assert f" --run '<{kernel}: not {done} yet>' " in vng
        assert lines[2].startswith(("  accelerator:  tcg", "  accelerator:  kvm"))
    assert out_text.rstrip().endswith("nothing was fetched, built, probed or booted")
    assert not (nothing_may_start / "runs").exists()
    assert not (nothing_may_start / "cache").exists()


def test_dry_run_with_out_creates_no_directory(
    nothing_may_start: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = nothing_may_start / "results"
    code = main(["run", "-t", "switch-p2p", "--kernel", "debian:7.2", "--out", str(out), "--dry-run"])
    assert code == 0
    text = capsys.readouterr().out
    assert len(_blocks(text)) == 1
    assert f"--rwdir {out}" in text
    assert not out.exists()


def test_dry_run_shows_a_cached_build_as_cached(
    nothing_may_start: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = nothing_may_start / "bzImage"
    monkeypatch.setattr(
        debsrc, "fetch_source", lambda spec, progress, offline=False: SourceTree(nothing_may_start, "x", "x")
    )
    monkeypatch.setattr(build, "finished", lambda plan, spec: KernelImage(spec, "7.2.13-hil", image))
    assert main(["run", "-t", "switch-p2p", "--kernel", "src:debian-7.2", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"  kernel:       cached {image} (7.2.13-hil)" in text
    assert f"--run {image} " in text


def test_cached_build_lookup_computes_the_key_build_kernel_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dry run's lookup (build.lookup_build) and build_kernel must land on one plan."""
    from harness.kernels import kconfig

    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "vng_fragment", lambda: "CONFIG_VIRTIO=y\n")
    monkeypatch.setattr(build, "toolchain_identity", lambda: "gcc (test) 12")
    tree = SourceTree(tmp_path / "pristine", "linux-source-7.2=7.2.13-1", "linux-source-7.2=7.2.13-1")
    mbox = tmp_path / "fix.mbox"
    from test_kernel_series import MBOX

    mbox.write_bytes(MBOX)
    for series in (None, mbox):
        plans: list[build.BuildPlan] = []

        def record(plan: build.BuildPlan, spec: str, plans: list[build.BuildPlan] = plans) -> KernelImage:
            plans.append(plan)
            return KernelImage(spec, "v", Path("/x"))

        monkeypatch.setattr(build, "finished", record)
        build.build_kernel(
            tree, series=series, fragments=kconfig.fragment_names(()), progress=lambda _m: None, spec="s"
        )
        build.lookup_build(tree, series=series, fragments=kconfig.fragment_names(()), spec="s")
        assert len(plans) == 2 and plans[0] == plans[1]


# -- a matrix with an infrastructure error in one cell ------------------------------------------


def _kernel(spec: str) -> KernelImage:
    return KernelImage(spec=spec, version=f"{spec}-version", image=Path(f"/nonexistent/{spec}"))


FACTS = HostFacts(qemu="qemu", qemu_version="10.0.2", accel="tcg", accel_reason="test", vng="vng")


class FakeModules:
    out_dir = None


@pytest.fixture
def fake_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Kernels resolve at once, facts and modules are canned, run_cell writes a passed cell; the
    cell (switch-p2p-amd, debian:7.3) raises LaunchError as a broken QEMU would. Returns the calls."""
    import harness.kernels.modules
    import harness.run

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(commands, "RUNS_ROOT", tmp_path / "runs", raising=False)  # absent before the fix
    monkeypatch.setattr(commands, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(kernel_image, "resolve_kernel", lambda spec, **_kw: _kernel(spec))
    monkeypatch.setattr(commands, "_host_facts", lambda image, accel: FACTS)
    monkeypatch.setattr(harness.kernels.modules, "build_test_modules", lambda *_a: FakeModules())

    def run_cell(
        req: CellRequest,
        topo: Topology,
        kernel: KernelImage,
        facts: HostFacts,
        runs_root: Path,
        progress: Callable[[str], None],
        modules_dir: Path | None = None,
    ) -> CellResult:
        calls.append((topo.name, req.kernel_spec))
        if (topo.name, req.kernel_spec) == ("switch-p2p-amd", "debian:7.3"):
            raise LaunchError(
                "vng exited at once", command="vng --run ...", output="qemu: could not load ROM"
            )
        run_dir = req.out or runs_root / f"{topo.name}-{req.kernel_spec.replace(':', '-')}"
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = RunMeta(topo.name, req.kernel_label, kernel.version, "10.0.2", "tcg", "2026-11-24T10:00:00")
        records = [TestRecord("test_export.py::test_export_whole_bar", "passed", 0.1)]
        write_results_json(run_dir / "results.json", meta, records, Verdict.PASSED)
        write_junit(run_dir / "junit.xml", meta, records)
        return CellResult(run_dir, meta, records, Verdict.PASSED)

    monkeypatch.setattr(harness.run, "run_cell", run_cell)
    return calls


def _results(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(root.glob("runs/*-matrix/*/results.json")):
        data = json.loads(path.read_text())
        found[(data["meta"]["topology"], data["meta"]["kernel"])] = data
    return found


def test_an_infra_error_in_one_cell_is_recorded_and_the_matrix_goes_on(
    fake_cells: list[tuple[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--topology", "all", "--kernel", "debian:7.2", "--kernel", "debian:7.3"])
    out = capsys.readouterr().out
    assert code == 3  # the worst verdict: infra-error
    everything = [(topo, k) for k in ("debian:7.2", "debian:7.3") for topo in SHIPPED]
    assert sorted(fake_cells) == sorted(everything)  # the cells after the broken one still ran, each once
    results = _results(tmp_path)
    assert set(results) == set(everything)
    broken = results[("switch-p2p-amd", "debian:7.3")]
    assert broken["verdict"] == "infra-error" and broken["exit_code"] == 3
    assert broken["records"] == []
    (note,) = broken["evidence"]
    assert "LaunchError" in note["text"] and "vng exited at once" in note["text"]
    assert "qemu: could not load ROM" in note["text"]
    assert broken["meta"]["kernel_version"] == "debian:7.3-version"
    assert broken["meta"]["accelerator"] == "tcg"
    junits = list(tmp_path.glob("runs/*-matrix/switch-p2p-amd__debian-7.3/junit.xml"))
    assert len(junits) == 1
    others = [r for key, r in results.items() if key != ("switch-p2p-amd", "debian:7.3")]
    assert [r["verdict"] for r in others] == ["passed"] * (len(everything) - 1)
    matrix = out[out.index("topology \\ kernel") :]
    row = next(line for line in matrix.splitlines() if line.startswith("switch-p2p-amd "))
    assert row.split()[1:] == ["passed", "1/1", "INFRA-ERROR", "0/0"]
    assert f"{2 * len(SHIPPED)} runs: {2 * len(SHIPPED) - 1} passed, 1 infra-error" in matrix
    assert "overall: INFRA-ERROR (exit 3)" in matrix


def test_a_failed_accelerator_probe_or_module_build_loses_only_that_kernels_cells(
    fake_cells: list[tuple[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.kernels.modules

    def modules(kernel: KernelImage, *_a: object) -> FakeModules:
        if kernel.spec == "debian:7.2":
            raise BuildError("test modules: modpost failed", tail="ERROR: modpost: missing symbol")
        return FakeModules()

    monkeypatch.setattr(harness.kernels.modules, "build_test_modules", modules)
    code = main(["run", "--topology", "all", "--kernel", "debian:7.2", "--kernel", "debian:7.3"])
    assert code == 3
    assert sorted(fake_cells) == sorted((topo, "debian:7.3") for topo in SHIPPED)  # 7.2: none ran
    results = _results(tmp_path)
    for topo in SHIPPED:
        lost = results[(topo, "debian:7.2")]
        assert lost["verdict"] == "infra-error"
        assert "BuildError" in lost["evidence"][0]["text"] and "modpost" in lost["evidence"][0]["text"]
        assert lost["meta"]["qemu_version"] is None
    assert results[("switch-p2p", "debian:7.3")]["verdict"] == "passed"


def test_a_kernel_that_cannot_be_built_stops_before_any_vm_and_says_so(
    fake_cells: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def resolve(spec: str, **_kw: object) -> KernelImage:
        if spec == "src:debian-7.3":
            raise BuildError("make failed (exit 2)", tail="drivers/x.c:1: error: oops")
        return _kernel(spec)

    monkeypatch.setattr(kernel_image, "resolve_kernel", resolve)
    code = main(["run", "--topology", "all", "--kernel", "src:debian-7.2", "--kernel", "src:debian-7.3"])
    err = capsys.readouterr().err
    assert code == 3
    assert fake_cells == []
    assert "hil: infrastructure failure: make failed (exit 2)" in err
    assert "kernel src:debian-7.3: no VM was started: every kernel is fetched and built before" in err


class _SlowStream:
    """A stderr whose every write() lets other threads run: any line written in two pieces gets split."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def write(self, text: str) -> int:
        time.sleep(0.0005)
        self.pieces.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_lines_from_concurrent_cells_stay_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _SlowStream()
    monkeypatch.setattr(sys, "stderr", stream)

    def one_cell(n: int) -> None:
        for i in range(20):
            commands.progress(f"cell{n}: line {i}")

    threads = [threading.Thread(target=one_cell, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = "".join(stream.pieces).splitlines()
    assert len(lines) == 80
    assert all(re.fullmatch(r"\[hil\] cell\d: line \d+", line) for line in lines), lines[:5]

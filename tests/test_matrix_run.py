"""`hil run` over a matrix, end to end through the real run_cell with scripted fake VMs (no QEMU): the
matrix directory, -j, --resume, --retries, --shard + `hil merge`, --baseline, --axis."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from harness.cell.request import HostFacts
from harness.errors import LaunchError
from harness.guest.plan import GuestPlan
from harness.kernels.kimage import KernelImage
from harness.matrix.document import read_matrix

FACTS = HostFacts(
    qemu="qemu-system-x86_64", qemu_version="10.0.2", accel="tcg", accel_reason="test", vng="vng"
)
TWO = ["-t", "switch-p2p", "-t", "rootports-acs"]
A = "test_export.py::test_a"
B = "test_export.py::test_b"

Script = Callable[[GuestPlan], Sequence[Mapping[str, object]]]


@pytest.fixture
def hil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., int]]:
    """`hil(script, *argv)`: main() with every VM replaced by `script`'s guest, kernels and modules faked."""
    import harness.kernels.modules
    import harness.run
    from harness import commands
    from harness.cli import main
    from harness.kernels import image as kernel_image
    from harness.vm.fake import scripted

    image = tmp_path / "bzImage"
    image.write_bytes(b"never booted")

    class NoModules:
        out_dir = None

    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(commands, "RUNS_ROOT", tmp_path / "runs")
    monkeypatch.setattr(
        kernel_image,
        "resolve_kernel",
        lambda spec, **_kw: KernelImage(spec=spec, version="7.2.13-hil", image=image),
    )
    monkeypatch.setattr(commands, "_host_facts", lambda _image, _accel: FACTS)
    monkeypatch.setattr(harness.kernels.modules, "build_test_modules", lambda *_a: NoModules())
    real_run_cell = harness.run.run_cell

    def run(script: Script, *argv: str) -> int:
        monkeypatch.setattr(
            harness.run, "run_cell", functools.partial(real_run_cell, vm_factory=scripted(script))
        )
        return main(list(argv))

    yield run


def passing(plan: GuestPlan) -> list[dict[str, object]]:
    return [{"name": A, "outcome": "passed"}, {"name": B, "outcome": "passed"}]


def outcomes(matrix_dir: Path) -> dict[str, dict[str, str]]:
    """cell id -> test -> outcome, from the cells' results.json: what two equal matrices share."""
    matrix = read_matrix(matrix_dir)
    return {cell: {r.name: r.outcome for r in doc.records} for cell, doc in matrix.cells.items()}


def test_a_matrix_run_writes_one_directory_with_every_aggregate_file(
    hil: Callable[..., int], tmp_path: Path
) -> None:
    out = tmp_path / "night"
    assert hil(passing, "run", *TWO, "-j", "2", "--out", str(out)) == 0
    doc = json.loads((out / "matrix.json").read_text())
    assert [c["id"] for c in doc["cells"]] == ["switch-p2p__src-debian-7.2", "rootports-acs__src-debian-7.2"]
    assert {c["verdict"] for c in doc["cells"]} == {"passed"} and doc["missing"] == []
    assert all(len(c["topology_sha256"]) == 64 for c in doc["cells"])
    junit = (out / "junit.xml").read_text()
    assert junit.count("<testsuite ") == 2 and 'name="rootports-acs/src:debian-7.2"' in junit
    kcidb = json.loads((out / "kcidb.json").read_text())
    assert len(kcidb["tests"]) >= 4
    assert "switch-p2p" in (out / "index.html").read_text()
    for cell in doc["cells"]:
        assert (out / cell["dir"] / "topology.json").exists() and (out / cell["dir"] / "console.log").exists()


def test_an_infra_error_cell_costs_only_itself_and_resume_completes_the_matrix(
    hil: Callable[..., int], tmp_path: Path
) -> None:
    out = tmp_path / "night"

    def broken_acs(plan: GuestPlan) -> list[dict[str, object]]:
        if plan.topology == "rootports-acs":
            raise LaunchError("the scripted QEMU could not start")
        return passing(plan)

    assert hil(broken_acs, "run", *TWO, "--out", str(out)) == 3
    first = read_matrix(out)
    assert {c: d.verdict.value for c, d in first.cells.items()} == {
        "switch-p2p__src-debian-7.2": "passed",
        "rootports-acs__src-debian-7.2": "infra-error",
    }
    kept = (out / "switch-p2p__src-debian-7.2" / "results.json").read_text()
    assert hil(passing, "run", *TWO, "--resume", str(out)) == 0
    assert {c: d.verdict.value for c, d in read_matrix(out).cells.items()} == {
        "switch-p2p__src-debian-7.2": "passed",
        "rootports-acs__src-debian-7.2": "passed",
    }
    assert (out / "switch-p2p__src-debian-7.2" / "results.json").read_text() == kept, (
        "a done cell is not rerun"
    )
    earlier = out / "rootports-acs__src-debian-7.2.earlier-1" / "results.json"
    assert json.loads(earlier.read_text())["verdict"] == "infra-error", "the failed attempt is kept"


def test_resume_refuses_a_directory_of_another_matrix(hil: Callable[..., int], tmp_path: Path) -> None:
    out = tmp_path / "night"
    assert hil(passing, "run", *TWO, "--out", str(out)) == 0
    assert hil(passing, "run", "-t", "switch-p2p", "-t", "bar-4g", "--resume", str(out)) == 2


def test_a_test_that_passes_on_retry_is_flaky_everywhere_and_never_passed(
    hil: Callable[..., int], tmp_path: Path
) -> None:
    out = tmp_path / "night"

    def flaky_b(plan: GuestPlan) -> list[dict[str, object]]:
        if plan.only:  # the retry runs just the failed test, and this time it passes
            assert plan.only == (B,)
            return [{"name": B, "outcome": "passed"}]
        return [
            {"name": A, "outcome": "passed"},
            {"name": B, "outcome": "failed", "message": "assert 0 == 22"},
        ]

    assert hil(flaky_b, "run", *TWO, "--retries", "1", "--out", str(out)) == 0
    cell = out / "switch-p2p__src-debian-7.2"
    data = json.loads((cell / "results.json").read_text())
    by_name = {r["name"]: r for r in data["records"]}
    assert by_name[B]["outcome"] == "flaky" and "assert 0 == 22" in by_name[B]["message"]
    assert [a["outcome"] for a in by_name[B]["details"]["attempts"]] == ["failed", "passed"]
    assert data["counts"]["flaky"] == 1 and data["counts"]["passed"] == 1
    assert (cell / "retry-1" / "results.json").exists()
    assert "<flakyFailure" in (out / "junit.xml").read_text()
    statuses = {t["path"]: t["status"] for t in json.loads((out / "kcidb.json").read_text())["tests"]}
    assert "PASS" in statuses.values() and "DONE" in statuses.values()


def test_a_test_that_fails_its_retries_too_stays_failed(hil: Callable[..., int], tmp_path: Path) -> None:
    def always_b(plan: GuestPlan) -> list[dict[str, object]]:
        return [{"name": B, "outcome": "failed", "message": "assert 0 == 22"}]

    out = tmp_path / "night"
    assert hil(always_b, "run", "-t", "switch-p2p", "--retries", "2", "--out", str(out)) == 1
    record = json.loads((out / "results.json").read_text())["records"][0]
    assert record["outcome"] == "failed"
    assert [a["outcome"] for a in record["details"]["attempts"]] == ["failed", "failed", "failed"]


def test_shards_merged_equal_one_parallel_run(hil: Callable[..., int], tmp_path: Path) -> None:
    every = ["-t", "all"]
    assert hil(passing, "run", *every, "-j", "2", "--out", str(tmp_path / "single")) == 0
    for k in (1, 2):
        assert hil(passing, "run", *every, "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")) == 0
    parts = [set(read_matrix(tmp_path / f"s{k}").cells) for k in (1, 2)]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert (
        hil(passing, "merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "m")) == 0
    )
    assert outcomes(tmp_path / "m") == outcomes(tmp_path / "single")
    single, merged = (json.loads((tmp_path / d / "matrix.json").read_text()) for d in ("single", "m"))
    assert [c["id"] for c in merged["cells"]] == [c["id"] for c in single["cells"]]
    assert merged["planned"] == single["planned"] and merged["missing"] == []


def test_a_merge_with_a_shard_absent_lists_its_cells_missing(hil: Callable[..., int], tmp_path: Path) -> None:
    assert hil(passing, "run", *TWO, "--shard", "1/2", "--out", str(tmp_path / "s1")) == 0
    assert hil(passing, "merge", str(tmp_path / "s1"), "--out", str(tmp_path / "m")) == 3
    assert len(read_matrix(tmp_path / "m").missing) == 1


def test_a_regression_against_the_baseline_exits_1(hil: Callable[..., int], tmp_path: Path) -> None:
    assert hil(passing, "run", *TWO, "--out", str(tmp_path / "old")) == 0

    def b_broke(plan: GuestPlan) -> list[dict[str, object]]:
        return [{"name": A, "outcome": "passed"}, {"name": B, "outcome": "failed", "message": "boom"}]

    new = tmp_path / "new"
    assert hil(b_broke, "run", *TWO, "--out", str(new), "--baseline", str(tmp_path / "old")) == 1
    comparison = json.loads((new / "comparison.json").read_text())
    assert comparison["summary"]["regressions"] == 2
    assert hil(passing, "compare", str(tmp_path / "old"), str(new)) == 1
    assert hil(passing, "compare", str(tmp_path / "old"), str(tmp_path / "old")) == 0


def test_axes_expand_into_named_variant_cells_that_reproduce(hil: Callable[..., int], tmp_path: Path) -> None:
    out = tmp_path / "night"
    code = hil(passing, "run", "-t", "switch-p2p", "--axis", "iommu=intel,none", "--out", str(out))
    assert code == 0
    matrix = json.loads((out / "matrix.json").read_text())
    assert matrix["axes"]["iommu"] == ["intel", "none"]
    names = [c["topology"] for c in matrix["cells"]]
    assert names == ["switch-p2p[iommu=intel]", "switch-p2p[iommu=none]"]
    cell = out / matrix["cells"][1]["dir"]
    assert "--axis iommu=none" in (cell / "reproduce.sh").read_text()
    assert json.loads((cell / "results.json").read_text())["meta"]["axes"] == {"iommu": "none"}


@pytest.mark.parametrize(
    "argv",
    [
        ["run", *TWO, "--shard", "3/2"],
        ["run", *TWO, "-j", "0"],
        ["run", *TWO, "--retries", "-1"],
        ["run", *TWO, "--baseline", "/nonexistent/matrix"],
        ["run", "-t", "switch-p2p", "--axis", "iommu"],
        ["compare", "/nonexistent/a", "/nonexistent/b"],
    ],
)
def test_usage_errors_exit_2_and_start_nothing(
    hil: Callable[..., int], tmp_path: Path, argv: list[str]
) -> None:
    def no_vm(plan: GuestPlan) -> list[dict[str, object]]:
        raise AssertionError("a VM was started")

    assert hil(no_vm, *argv) == 2
    assert not (tmp_path / "runs").exists()


def test_merging_shards_of_different_matrices_or_the_same_shard_twice_is_refused(
    hil: Callable[..., int], tmp_path: Path
) -> None:
    assert hil(passing, "run", *TWO, "--shard", "1/2", "--out", str(tmp_path / "a1")) == 0
    assert (
        hil(
            passing,
            "run",
            "-t",
            "bar-4g",
            "-t",
            "rootports-acs",
            "--shard",
            "2/2",
            "--out",
            str(tmp_path / "b2"),
        )
        == 0
    )
    assert (
        hil(passing, "merge", str(tmp_path / "a1"), str(tmp_path / "b2"), "--out", str(tmp_path / "m")) == 2
    )
    assert (
        hil(passing, "merge", str(tmp_path / "a1"), str(tmp_path / "a1"), "--out", str(tmp_path / "m2")) == 2
    )
    assert not (tmp_path / "m").exists() and not (tmp_path / "m2").exists()


def test_a_relative_out_reaches_the_guest_as_an_absolute_path(
    hil: Callable[..., int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out shards/1` as a CI job writes it: the guest runs in another working directory."""
    monkeypatch.chdir(tmp_path)
    seen: list[GuestPlan] = []

    def record_plan(plan: GuestPlan) -> list[dict[str, object]]:
        seen.append(plan)
        return passing(plan)

    assert hil(record_plan, "run", *TWO, "--shard", "1/1", "--out", "shards/1") == 0
    assert seen and all(p.results_path.is_absolute() and p.run_dir.is_absolute() for p in seen)

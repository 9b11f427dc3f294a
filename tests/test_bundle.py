"""`hil bundle` and `hil reproduce` without QEMU: cells made by the real run_cell with scripted fake VMs
(as in test_matrix_run.py), bundled, read back, broken in every way a bundle can be, and reproduced in
another working directory with an empty run directory."""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from harness.bundle import manifest as m
from harness.bundle.command import (
    add_bundle_arguments,
    add_reproduce_arguments,
    bundle_command,
    reproduce_command,
)
from harness.bundle.make import make_bundle
from harness.bundle.read import read_bundle
from harness.bundle.reproduce import environment_differences, outcome_comparison
from harness.cell.request import HostFacts
from harness.errors import ConfigError, InfraError
from harness.guest.plan import GuestPlan, load_plan
from harness.kernels.kimage import KernelImage
from harness.results.model import TestRecord, Verdict
from harness.vm.interface import VmFactory

FACTS = HostFacts(
    qemu="qemu-system-x86_64", qemu_version="10.0.2", accel="tcg", accel_reason="test", vng="vng"
)
A = "test_export.py::test_a"
B = "test_export.py::test_b"
VERSION = "7.2.13-hil"
CONFIG = "CONFIG_PCI_P2PDMA=y\nCONFIG_VFIO_PCI_DMABUF=y\n"

Script = Callable[[GuestPlan], Sequence[Mapping[str, object]]]


def b_fails(plan: GuestPlan) -> list[dict[str, object]]:
    return [{"name": A, "outcome": "passed"}, {"name": B, "outcome": "failed", "message": "assert 0 == 22"}]


def all_pass(plan: GuestPlan) -> list[dict[str, object]]:
    return [{"name": A, "outcome": "passed"}, {"name": B, "outcome": "passed"}]


@dataclass
class Hil:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    image: Path
    facts: HostFacts = FACTS

    def use(self, script: Script) -> None:
        import harness.run

        self.monkeypatch.setattr(
            harness.run, "run_cell", functools.partial(REAL_RUN_CELL, vm_factory=_scripted(script))
        )

    def run(self, script: Script, *argv: str) -> int:
        from harness.cli import main

        self.use(script)
        return main(list(argv))

    def command(self, script: Script, *argv: str) -> int:
        """bundle/reproduce as the CLI will call them: ConfigError exit 2, InfraError exit 3."""
        self.use(script)
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command", required=True)
        add_bundle_arguments(sub.add_parser("bundle"))
        add_reproduce_arguments(sub.add_parser("reproduce"))
        args = parser.parse_args(list(argv))
        try:
            return (bundle_command if args.command == "bundle" else reproduce_command)(args)
        except ConfigError as exc:
            print(f"hil: error: {exc}", file=sys.stderr)
            return 2
        except InfraError as exc:
            print(f"hil: infrastructure failure: {exc}", file=sys.stderr)
            return 3


def _scripted(script: Script) -> VmFactory:
    from harness.vm.fake import scripted

    return scripted(script)


import harness.run  # noqa: E402  (the real run_cell, before any test swaps it)

REAL_RUN_CELL = harness.run.run_cell


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: the guest byte-code is prepared once, not per test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def hil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> Iterator[Hil]:
    import harness.kernels.modules
    from harness import commands
    from harness.kernels import image as kernel_image

    image = tmp_path / "bzImage"
    image.write_bytes(b"never booted")

    class NoModules:
        out_dir = None

    monkeypatch.setenv("P2P_HIL_CACHE", str(shared_cache))
    monkeypatch.setattr(commands, "RUNS_ROOT", tmp_path / "runs")
    monkeypatch.setattr(
        kernel_image,
        "resolve_kernel",
        lambda spec, **_kw: KernelImage(
            spec=spec, version=VERSION, image=image, source="linux-source-7.2=7.2.13-1"
        ),
    )
    hil = Hil(tmp_path, monkeypatch, image)
    monkeypatch.setattr(commands, "_host_facts", lambda _image, _accel: hil.facts)
    monkeypatch.setattr(harness.kernels.modules, "build_test_modules", lambda *_a: NoModules())
    yield hil


def config_lookup(tmp: Path) -> Callable[[str, Path | None, tuple[str, ...]], KernelImage | None]:
    config = tmp / "build" / ".config"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG)

    def lookup(spec: str, series: Path | None, fragments: tuple[str, ...]) -> KernelImage | None:
        return KernelImage(spec, VERSION, tmp / "bzImage", config=config, source="linux-source-7.2=7.2.13-1")

    return lookup


@pytest.fixture
def failing_bundle(hil: Hil) -> Path:
    """A failing cell (test_b fails) of switch-p2p with -k, bundled."""
    cell = hil.tmp / "cell"
    assert hil.run(b_fails, "run", "-t", "switch-p2p", "-k", "test_a or test_b", "--out", str(cell)) == 1
    return make_bundle(cell, hil.tmp / "report.tar.gz", kernel_lookup=config_lookup(hil.tmp))


# -- bundling and reading back --------------------------------------------------------------------


def test_a_bundle_holds_the_cell_its_inputs_and_the_facts_of_its_host(hil: Hil, failing_bundle: Path) -> None:
    cell = hil.tmp / "cell"
    with read_bundle(failing_bundle) as bundle:
        man = bundle.manifest
        assert man.schema == m.BUNDLE_SCHEMA and man.verdict == "failed"
        assert (man.topology, man.kernel_spec, man.kernel_label) == (
            "switch-p2p",
            "src:debian-7.2",
            "src:debian-7.2",
        )
        assert man.select == "test_a or test_b" and man.axes == {} and man.series is None
        assert man.environment.qemu_version == "10.0.2" and man.environment.accelerator == "tcg"
        assert man.environment.kernel_version == VERSION
        assert man.environment.kernel_source == "linux-source-7.2=7.2.13-1"
        assert man.environment.host_kernel == os.uname().release
        assert man.environment.harness_version and man.environment.guest_sources_sha256
        assert man.hil_command[:2] == ["./hil", "run"] and "-k" in man.hil_command
        assert man.vng_command[0] == "vng" and "--run" in man.vng_command
        assert "intel-iommu,intremap=on" in man.qemu_topology_args
        for name in ("results.json", "console.log", "junit.xml", "plan.json", "topology.json"):
            assert bundle.member(name).read_bytes() == (cell / name).read_bytes(), name
        assert bundle.member(m.KERNEL_CONFIG).read_text() == CONFIG and man.kernel_config == m.KERNEL_CONFIG
        shipped = Path(__file__).parents[1] / "qemu_configs" / "topologies" / "switch-p2p.yaml"
        assert man.topology_yaml == "topology/switch-p2p.yaml" and man.topology_yaml_matches is True
        assert bundle.member("topology/switch-p2p.yaml").read_bytes() == shipped.read_bytes()
        known = Path(__file__).parents[1] / "kernels" / "known-issues.yaml"
        assert bundle.member(m.KNOWN_ISSUES).read_bytes() == known.read_bytes()
        every = {p.relative_to(bundle.root).as_posix() for p in bundle.root.rglob("*") if p.is_file()}
        assert every == {*man.files, m.MANIFEST}
        assert all(m.sha256_bytes(bundle.member(n).read_bytes()) == s for n, s in man.files.items())
        assert {
            "raw/run.sh",
            "raw/rawtool.py",
            "raw/harness/guest/entry.py",
            "raw/guest_tests/conftest.py",
        } <= every
        assert bundle.original().verdict is Verdict.FAILED
        root = bundle.root
    assert not root.exists(), "the extracted bundle goes with the Bundle"


def test_what_cannot_be_found_is_said_in_the_manifest(hil: Hil) -> None:
    cell = hil.tmp / "cell"
    assert hil.run(all_pass, "run", "-t", "switch-p2p", "--out", str(cell)) == 0
    out = make_bundle(cell, hil.tmp / "b.tar.gz", kernel_lookup=lambda _s, _series, _f: None)
    with read_bundle(out) as bundle:
        assert bundle.manifest.kernel_config is None
        assert bundle.manifest.notes == [
            "kernel .config not bundled: no cached kernel for src:debian-7.2 here"
        ]
        assert "kernel .config not bundled" in bundle.member(m.README).read_text()

    def other_version(spec: str, series: Path | None, fragments: tuple[str, ...]) -> KernelImage:
        return KernelImage(spec, "7.2.14-hil", hil.image, config=hil.image)

    with read_bundle(make_bundle(cell, hil.tmp / "c.tar.gz", kernel_lookup=other_version)) as bundle:
        assert bundle.manifest.kernel_config is None
        assert (
            "the cache's src:debian-7.2 is 7.2.14-hil now, the cell ran 7.2.13-hil"
            in bundle.manifest.notes[0]
        )


def test_a_series_and_an_axis_variant_travel_with_the_bundle(hil: Hil) -> None:
    cell = hil.tmp / "cell"
    series = hil.tmp / "mine.mbox"
    series.write_bytes(b"From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n\n---\n")
    argv = ["run", "-t", "switch-p2p", "--axis", "cpu=EPYC-Rome", "--series", str(series), "--out", str(cell)]
    assert hil.run(all_pass, *argv) == 0
    with read_bundle(make_bundle(cell, hil.tmp / "b.tar.gz", kernel_lookup=config_lookup(hil.tmp))) as bundle:
        man = bundle.manifest
        assert (
            man.series == "series/mine.mbox" and bundle.member(man.series).read_bytes() == series.read_bytes()
        )
        assert man.kernel_label == "src:debian-7.2+mine.mbox" and man.axes == {"cpu": "EPYC-Rome"}
        assert man.topology == "switch-p2p[cpu=EPYC-Rome]" and man.topology_yaml_matches is True


def test_bundle_refuses_what_is_not_a_cell_and_an_existing_output(hil: Hil, failing_bundle: Path) -> None:
    empty = hil.tmp / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty: not a cell directory that ran \(no results.json"):
        make_bundle(empty, hil.tmp / "x.tar.gz")
    with pytest.raises(ConfigError, match=r"report\.tar\.gz exists"):
        make_bundle(hil.tmp / "cell", failing_bundle)
    assert hil.command(all_pass, "bundle", str(empty), "-o", str(hil.tmp / "y.tar.gz")) == 2
    assert not (hil.tmp / "x.tar.gz").exists() and not (hil.tmp / "y.tar.gz").exists()


# -- malformed bundles ----------------------------------------------------------------------------


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {i.name: tar.extractfile(i).read() for i in tar if i.isfile()}  # type: ignore[union-attr]


def write_tar(path: Path, members: Mapping[str, bytes], extra: Sequence[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def edit_manifest(members: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    data = json.loads(members[m.MANIFEST])
    data.update(changes)
    return {**members, m.MANIFEST: json.dumps(data).encode()}


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


MALFORMED: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "not a tar.gz": (lambda good, out: _write(out, b"just text\n"), "not a p2p-hil bundle"),
    "a tar without gzip": (
        lambda good, out: _write(out, _plain_tar(members_of(good))),
        "not a p2p-hil bundle",
    ),
    "truncated": (
        lambda good, out: _write(out, good.read_bytes()[: len(good.read_bytes()) // 2]),
        "truncated bundle",
    ),
    "no manifest": (
        lambda good, out: write_tar(out, {k: v for k, v in members_of(good).items() if k != m.MANIFEST}),
        "no manifest.json",
    ),
    "a newer schema": (
        lambda good, out: write_tar(out, edit_manifest(members_of(good), schema=m.BUNDLE_SCHEMA + 1)),
        f"bundle schema {m.BUNDLE_SCHEMA + 1} is newer than this p2p-hil reads",
    ),
    "a manifest that is not JSON": (
        lambda good, out: write_tar(out, {**members_of(good), m.MANIFEST: b"{"}),
        "manifest.json is not JSON",
    ),
    "a manifest missing fields": (
        lambda good, out: write_tar(out, {**members_of(good), m.MANIFEST: b'{"schema": 1}'}),
        "missing field",
    ),
    "a changed member": (
        lambda good, out: write_tar(out, {**members_of(good), "console.log": b"edited\n"}),
        "member 'console.log': sha256 mismatch",
    ),
    "a member not listed": (
        lambda good, out: write_tar(out, {**members_of(good), "extra.txt": b"x"}),
        "member 'extra.txt' is not listed",
    ),
    "a listed member missing": (
        lambda good, out: write_tar(out, {k: v for k, v in members_of(good).items() if k != "junit.xml"}),
        "member 'junit.xml' is listed in manifest.json but missing",
    ),
    "a member climbing out": (
        lambda good, out: write_tar(out, {"../escaped.txt": b"x", **members_of(good)}),
        "member '../escaped.txt' climbs out",
    ),
    "an absolute member": (
        lambda good, out: write_tar(out, members_of(good), [_file(str(out.parent / "absolute.txt"))]),
        "has an absolute path",
    ),
    "a symlink out": (
        lambda good, out: write_tar(
            out, members_of(good), [_link("raw/evil", "/etc/passwd", tarfile.SYMTYPE)]
        ),
        "member 'raw/evil' is a link",
    ),
    "a hard link": (
        lambda good, out: write_tar(
            out, members_of(good), [_link("raw/hard", "results.json", tarfile.LNKTYPE)]
        ),
        "member 'raw/hard' is a link",
    ),
    "a device": (
        lambda good, out: write_tar(out, members_of(good), [_link("raw/dev", "", tarfile.CHRTYPE)]),
        "is not a regular file",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _plain_tar(members: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_bundle_is_refused_naming_the_file_and_leaves_nothing(
    hil: Hil, failing_bundle: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    make, problem = MALFORMED[case]
    bad = make(failing_bundle, hil.tmp / "bad.tar.gz")
    temp = hil.tmp / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(ConfigError) as caught:
        read_bundle(bad)
    assert str(caught.value).startswith(f"{bad}: ") and problem in str(caught.value)
    assert list(temp.iterdir()) == [], "the temporary directory is removed on error"
    assert not (hil.tmp / "escaped.txt").exists() and not (hil.tmp / "absolute.txt").exists()
    runs = hil.tmp / "runs"
    assert hil.command(all_pass, "reproduce", str(bad)) == 2
    assert not runs.exists(), "a bad bundle costs no run directory"


# -- reproduce ------------------------------------------------------------------------------------


@pytest.fixture
def elsewhere(hil: Hil, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Another working directory, an empty run directory, and no shipped topologies: what the bundle
    carries is all a reproduction has."""
    from harness import commands, paths

    where = hil.tmp / "elsewhere"
    where.mkdir()
    monkeypatch.chdir(where)
    monkeypatch.setattr(commands, "RUNS_ROOT", where / "runs")
    monkeypatch.setattr(paths, "TOPOLOGY_DIR", where / "no-topologies")
    return where


def test_reproduce_reruns_the_cell_and_says_every_outcome_reproduced(
    hil: Hil, failing_bundle: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[GuestPlan] = []

    def again(plan: GuestPlan) -> list[dict[str, object]]:
        seen.append(plan)
        return b_fails(plan)

    assert hil.command(again, "reproduce", str(failing_bundle)) == 0
    out = capsys.readouterr().out
    assert f"{A}  reproduced (passed)" in out and f"{B}  reproduced (failed)" in out
    assert "2 of 2 outcomes reproduced, 0 differ, 0 missing, 0 new; verdict was failed, now failed" in out
    assert list(seen[0].pytest_args) == ["-k", "test_a or test_b"] and seen[0].topology == "switch-p2p"
    (made,) = (elsewhere / "runs").iterdir()
    assert made.name.endswith("-reproduce-switch-p2p-src-debian-7.2")
    cell = json.loads((made / "cell" / "results.json").read_text())
    original = json.loads((hil.tmp / "cell" / "results.json").read_text())
    assert cell["meta"]["topology_sha256"] == original["meta"]["topology_sha256"]
    assert (made / "comparison.txt").read_text().rstrip().endswith("\nreproduced")
    assert (
        "--topology " + str(made / "inputs" / "switch-p2p.yaml")
        in (made / "cell" / "reproduce.sh").read_text()
    )


def test_reproduce_exits_1_naming_each_outcome_that_differs(
    hil: Hil, failing_bundle: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = elsewhere / "again"
    assert hil.command(all_pass, "reproduce", str(failing_bundle), "--out", str(out_dir)) == 1
    out = capsys.readouterr().out
    assert f"{B}  differs (was failed, now passed)" in out and f"{A}  reproduced (passed)" in out
    assert "verdict was failed, now passed" in out and out.rstrip().splitlines()[-2] == "NOT reproduced"
    assert "differs (was failed, now passed)" in (out_dir / "comparison.txt").read_text()


def test_reproduce_warns_of_every_difference_of_environment(
    hil: Hil, failing_bundle: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hil.facts = replace(FACTS, qemu_version="10.1.0", accel="kvm")
    assert hil.command(b_fails, "reproduce", str(failing_bundle)) == 0
    err = capsys.readouterr().err
    assert "warning: environment differs: QEMU version: was 10.0.2, now 10.1.0" in err
    assert "warning: environment differs: accelerator: was tcg, now kvm" in err


def test_reproduce_exits_3_when_the_cell_cannot_run(hil: Hil, failing_bundle: Path, elsewhere: Path) -> None:
    from harness.errors import LaunchError

    def no_qemu(plan: GuestPlan) -> list[dict[str, object]]:
        raise LaunchError("the scripted QEMU could not start")

    assert hil.command(no_qemu, "reproduce", str(failing_bundle)) == 3


def test_reproduce_refuses_a_kernel_path_of_the_original_host(hil: Hil) -> None:
    cell = hil.tmp / "cell"
    image = hil.tmp / "vmlinuz"
    image.write_bytes(b"x")
    assert hil.run(all_pass, "run", "-t", "switch-p2p", "--kernel", str(image), "--out", str(cell)) == 0
    bundle = make_bundle(cell, hil.tmp / "b.tar.gz", kernel_lookup=lambda _s, _series, _f: None)
    image.unlink()
    with read_bundle(bundle) as b:
        from harness.bundle.reproduce import reproduction

        with pytest.raises(
            ConfigError, match=r"the kernel image .*vmlinuz is not on this host; give --kernel"
        ):
            reproduction(b, hil.tmp / "work")


# -- the pure pieces ------------------------------------------------------------------------------


def _env(**changes: object) -> m.Environment:
    base = m.Environment(
        harness_version="0.1.0",
        git_revision="a" * 40,
        git_dirty=False,
        guest_sources_sha256="g" * 64,
        known_issues_sha256="k" * 64,
        qemu_version="10.0.2",
        accelerator="tcg",
        host_kernel="6.1.0-18-amd64",
        host="ci-1",
        kernel_version=VERSION,
        kernel_source="linux-source-7.2=7.2.13-1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_environment_differences_name_each_fact_that_changed(failing_bundle: Path) -> None:
    with read_bundle(failing_bundle) as bundle:
        man = replace(bundle.manifest, environment=_env())
    assert environment_differences(man, _env(host="elsewhere")) == [], "another host name is the point"
    assert environment_differences(man, _env(qemu_version=None)) == [], "an unknown fact is not compared"
    here = _env(
        qemu_version="9.2.0",
        host_kernel="6.12.0",
        accelerator="kvm",
        git_revision="b" * 40,
        known_issues_sha256="l" * 64,
        guest_sources_sha256="h" * 64,
        kernel_source="linux-source-7.2=7.2.14-1",
    )
    assert environment_differences(man, here) == [
        f"p2p-hil revision: was {'a' * 40}, now {'b' * 40}",
        "guest test sources (harness/guest, guest_tests) differ from the original run's",
        "kernels/known-issues.yaml differ from the original run's",
        "QEMU version: was 10.0.2, now 9.2.0",
        "accelerator: was tcg, now kvm",
        "host kernel: was 6.1.0-18-amd64, now 6.12.0",
        "kernel source identity: was linux-source-7.2=7.2.13-1, now linux-source-7.2=7.2.14-1",
    ]


def _records(**outcomes: str) -> list[TestRecord]:
    return [TestRecord(name, outcome) for name, outcome in outcomes.items()]  # type: ignore[arg-type]


def test_outcome_comparison_test_by_test() -> None:
    text, ok = outcome_comparison(
        _records(a="passed", b="failed", c="xfailed", d="flaky"),
        _records(a="passed", b="passed", d="failed", e="skipped"),
    )
    lines = text.splitlines()
    assert lines[:5] == [
        "a  reproduced (passed)",
        "b  differs (was failed, now passed)",
        "c  missing (was xfailed)",
        "d  reproduced (failed)",
        "e  new (skipped)",
    ]
    assert lines[5] == "2 of 4 outcomes reproduced, 1 differ, 1 missing, 1 new" and not ok
    text, ok = outcome_comparison(_records(a="passed"), _records(a="passed", z="passed"))
    assert ok and text.endswith("\nreproduced"), "a new test alone does not break a reproduction"
    _, ok = outcome_comparison(
        _records(a="passed"), _records(a="passed"), verdicts=(Verdict.CRASHED, Verdict.PASSED)
    )
    assert not ok, "the same records with another verdict (a kernel report this time) did not reproduce"


# -- the raw script -------------------------------------------------------------------------------


def _extract(bundle: Path, into: Path) -> Path:
    with read_bundle(bundle) as b:
        import shutil

        shutil.copytree(b.root, into)
    return into


def test_the_bundled_guest_side_imports_without_the_checkout(failing_bundle: Path, tmp_path: Path) -> None:
    raw = _extract(failing_bundle, tmp_path / "x") / "raw"
    code = (
        "import sys; sys.path.insert(1, 'guest_tests');"
        "import harness.guest.entry, harness.guest.plugin, harness.guest.agent, harness.guest.checks;"
        "import conftest, hil_vfio, hil_importer;"
        "import glob, importlib;"
        "[importlib.import_module(p[12:-3]) for p in glob.glob('guest_tests/test_*.py')];"
        "print('\\n'.join(getattr(m, '__file__', None) or '' for n, m in sys.modules.items()"
        " if n.split('.')[0] in ('harness', 'hil_vfio', 'hil_importer', 'conftest')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=raw, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    files = proc.stdout.split()
    assert files and all(f.startswith(str(raw)) for f in files), [
        f for f in files if not f.startswith(str(raw))
    ]


FAKE_VNG = """#!/bin/sh
# records its arguments, what the scratch directory holds, and writes the guest's records
for a in "$@"; do printf '%s\\n' "$a"; done > "$FAKE_LOG"
scratch=$(printf '%s\\n' "$@" | sed -n 's/.*mem-path=\\([^,]*\\)\\/exporter.shm.*/\\1/p')
ls -l "$scratch" > "$FAKE_LOG.scratch"
out=$(printf '%s\\n' "$@" | sed -n '/^--rwdir$/{n;p}')
printf '%s\\n' '{"name": "t::a", "outcome": "passed"}' \\
  '{"name": "t::b", "outcome": "failed", "message": "no"}' > "$out/guest-results.jsonl"
echo "fake console"
exit 255
"""


def _fake_bin(where: Path, names: Sequence[str]) -> Path:
    where.mkdir()
    for name in names:
        tool = where / name
        tool.write_text(FAKE_VNG if name == "vng" else "#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    return where


def test_the_raw_script_runs_the_cells_steps_with_its_own_paths(hil: Hil, failing_bundle: Path) -> None:
    raw = _extract(failing_bundle, hil.tmp / "x") / "raw"
    fake = _fake_bin(hil.tmp / "bin", ["vng", "qemu-system-x86_64"])
    out = hil.tmp / "raw-out"
    log = hil.tmp / "vng.args"
    env = {
        "PATH": f"{fake}:/usr/bin:/bin",
        "PYTHON": sys.executable,
        "FAKE_LOG": str(log),
        "HOME": str(hil.tmp),
    }
    proc = subprocess.run(
        ["sh", str(raw / "run.sh"), str(hil.image), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout  # the summary's status: test_b failed
    assert "1 failed, 1 passed" in proc.stdout and "failed   t::b no" in proc.stdout
    assert (out / "console.log").read_text() == "fake console\n"
    argv = log.read_text().splitlines()
    assert argv[argv.index("--run") + 1] == str(hil.image)
    assert argv[argv.index("--rwdir") + 1] == str(out) and argv[argv.index("--cwd") + 1] == str(raw)
    assert argv[argv.index("--exec") + 1] == f"{sys.executable} -m harness.guest.entry {out}/plan.json"
    plan = load_plan(out / "plan.json")
    assert (
        str(plan.run_dir) == str(out)
        and str(plan.tests_dir) == str(raw / "guest_tests")
        and not plan.host_agent
    )
    backing = Path(str(plan.devices[0].backing))
    assert backing.parent.name.startswith("p2p-hil-raw-") and not backing.parent.exists(), (
        "scratch is removed"
    )
    sizes = log.with_name("vng.args.scratch").read_text()
    assert "67108864" in sizes and "16777216" in sizes and "exporter.shm" in sizes


def test_the_raw_script_names_what_the_host_lacks(hil: Hil, failing_bundle: Path) -> None:
    raw = _extract(failing_bundle, hil.tmp / "x") / "raw"
    fake = _fake_bin(hil.tmp / "bin", ["qemu-system-x86_64"])
    env = {"PATH": f"{fake}:/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(hil.tmp)}
    proc = subprocess.run(
        ["sh", str(raw / "run.sh"), str(hil.tmp / "no-such-bzImage"), str(hil.tmp / "o")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3
    assert (
        "vng (virtme-ng" in proc.stderr and f"the kernel image {hil.tmp / 'no-such-bzImage'}" in proc.stderr
    )
    assert not (hil.tmp / "o").exists()

"""--kselftest on the host: the igb added to the topology, the build from a kernel tree (a small fake
tree driven by the real make and gcc), the manifest both sides read, the guest's runner, and the
records that replace the wrapper tests'."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.errors import ConfigError
from harness.kernels.kimage import KernelImage
from harness.kselftest.build import build_selftest, error_message
from harness.kselftest.cell import kselftest_records, prepare_kselftests, wrapper_name
from harness.kselftest.devices import with_selftest_devices
from harness.kselftest.manifest import ManifestEntry, output_paths, read_manifest, write_manifest
from harness.paths import GUEST_TESTS_DIR
from harness.results.model import TestRecord
from harness.topology import (
    kernel_cmdline,
    lay_out,
    load_topology,
    qemu_topology_args,
    standalone_qemu_argv,
    topology_json,
)
from harness.topology.model import Topology


def _guest(name: str) -> ModuleType:
    if str(GUEST_TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(GUEST_TESTS_DIR))
    return importlib.import_module(name)


# -- the device ---------------------------------------------------------------------------------


def test_vfio_gets_an_igb_on_a_new_root_port_and_topology_json_says_so() -> None:
    base = load_topology("switch-p2p")
    topo = with_selftest_devices(base, ("vfio", "iommu"))
    igb = next(d for d in topo.devices if d.kind == "igb")
    assert (igb.id, igb.parent, igb.role) == ("ks-igb", "ks-rp-igb", "none")
    assert [rp.id for rp in topo.root_ports] == [*(rp.id for rp in base.root_ports), "ks-rp-igb"]
    layout = lay_out(topo)
    assert layout.device("ks-igb").pci_id == (0x8086, 0x10C9)
    assert "igb,id=ks-igb,bus=ks-rp-igb,addr=00.0" in qemu_topology_args(layout, "/tmp/r")
    assert '"kind": "igb"' in topology_json(topo)


def test_vfio_gets_the_memory_its_driver_test_pins() -> None:
    base = load_topology("switch-p2p")
    assert base.machine.memory == 1 << 30
    assert with_selftest_devices(base, ("iommu", "vfio")).machine.memory == 4 << 30
    data = base.model_dump()
    data["machine"]["memory"] = 6 << 30
    roomy = Topology.model_validate(data)
    assert with_selftest_devices(roomy, ("vfio",)).machine.memory == 6 << 30  # never lowered
    argv = standalone_qemu_argv(lay_out(with_selftest_devices(base, ("vfio",))), "/tmp/r")
    assert argv[argv.index("-m") + 1] == "4096M"
    # the 1 GiB hugepage is reserved at boot: at run time the guest found no free aligned GiB
    assert kernel_cmdline(with_selftest_devices(base, ("vfio", "iommu")))[-2:] == [
        "hugepagesz=1G",
        "hugepages=1",
    ]
    assert kernel_cmdline(with_selftest_devices(base, ("iommu",))) == kernel_cmdline(base)


def test_no_device_needed_leaves_the_topology_untouched() -> None:
    base = load_topology("rootports-acs")
    assert with_selftest_devices(base, ("iommu",)) is base
    assert with_selftest_devices(base, ()) is base


def test_an_axis_variant_keeps_its_name() -> None:
    base = load_topology("switch-p2p").model_copy(update={"name": "switch-p2p[cpu=EPYC-Rome]"})
    assert with_selftest_devices(base, ("vfio",)).name == "switch-p2p[cpu=EPYC-Rome]"


def test_no_free_root_port_is_a_config_error() -> None:
    data = load_topology("switch-p2p").model_dump()
    data["root_ports"] += [{"id": f"x{i}", "acs": True} for i in range(15 - len(data["root_ports"]))]
    with pytest.raises(ConfigError, match="no free one for igb"):
        with_selftest_devices(Topology.model_validate(data), ("vfio",))


def test_igb_takes_no_role_and_no_size() -> None:
    data = load_topology("switch-p2p").model_dump()
    data["root_ports"].append({"id": "rp9", "acs": True})
    data["devices"].append({"id": "nic", "kind": "igb", "parent": "rp9", "size": "64M", "role": "exporter"})
    with pytest.raises(ValueError) as err:
        Topology.model_validate(data)
    assert "an igb device has QEMU's fixed BARs" in str(err.value)
    assert "an igb device takes role none, not exporter" in str(err.value)


# -- the build ----------------------------------------------------------------------------------

TOP_MAKEFILE = """headers_install:
\tmkdir -p $(O)/usr/include/linux && echo '#define DEMO_VALUE 7' > $(O)/usr/include/linux/demo.h
"""
SELFTEST_MAKEFILE = """TEST_GEN_PROGS := good_test
emit_tests:
\t@for t in $(TEST_GEN_PROGS); do echo "$(COLLECTION):$$t"; done
all: $(OUTPUT)/good_test
$(OUTPUT)/good_test: good_test.c
\t$(CC) $(KHDR_INCLUDES) -Wall -Werror $< -o $@
.DEFAULT_GOAL := all
"""


def _tree(tmp_path: Path, source: str) -> KernelImage:
    tree = tmp_path / "linux"
    st = tree / "tools/testing/selftests/demo"
    st.mkdir(parents=True)
    (tree / "Makefile").write_text(TOP_MAKEFILE)
    (st / "Makefile").write_text(SELFTEST_MAKEFILE)
    (st / "good_test.c").write_text(source)
    objtree = tmp_path / "obj"
    objtree.mkdir()
    (objtree / "source").symlink_to(tree)
    return KernelImage(spec="src:demo", version="9.9.9-demo", image=objtree / "bzImage", build_dir=objtree,
                       source=f"demo {source!r}")  # fmt: skip


def test_build_from_the_kernel_tree_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    src = (
        "#include <linux/demo.h>\n#include <stdio.h>\n"
        'int main(void){printf("1..1\\nok 1 v%d\\n", DEMO_VALUE);}\n'
    )
    kernel = _tree(tmp_path, src)
    built = build_selftest(kernel, "demo", lambda _: None)
    assert built.ok and not built.cached and built.binaries == ("good_test",)
    assert (built.out_dir / "good_test").is_file()
    assert not list((tmp_path / "linux/tools/testing/selftests/demo").glob("good_test*.o"))
    again = build_selftest(kernel, "demo", lambda _: None)
    assert again.ok and again.cached and again.out_dir == built.out_dir


def test_build_failure_carries_the_compilers_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    kernel = _tree(tmp_path, "int main(void){ return calloc_assert(1); }\n")
    built = build_selftest(kernel, "demo", lambda _: None)
    assert not built.ok and built.binaries == ("good_test",)
    assert "good_test.c:1:" in built.message and "calloc_assert" in built.message and "error" in built.message
    entries = prepare_kselftests(
        ("demo",), kernel, load_topology("switch-p2p"), tmp_path / "run", lambda _: None
    )
    records = kselftest_records([], tmp_path / "run")
    assert entries[0].built is False
    assert [(r.name, r.outcome) for r in records] == [("kselftest/demo/build", "failed")]
    assert "calloc_assert" in records[0].message and records[0].details["binaries_not_built"] == ["good_test"]


def test_missing_directory_and_missing_tree_are_build_failures(tmp_path: Path) -> None:
    kernel = _tree(tmp_path, "int main(void){return 0;}\n")
    assert "has no directory 'nope'" in build_selftest(kernel, "nope", lambda _: None).message
    stock = KernelImage(spec="debian:7.2", version="7.2", image=tmp_path / "vmlinuz")
    assert "has no source tree" in build_selftest(stock, "vfio", lambda _: None).message


def test_error_message_picks_the_error_lines() -> None:
    log = (
        "gcc -c x.c -o x.o\nx.c:3:1: error: implicit declaration of function 'f'\n"
        "cc1: all warnings\nmake: *** [x.o] Error 1\n"
    )
    assert (
        error_message(log) == "x.c:3:1: error: implicit declaration of function 'f'\nmake: *** [x.o] Error 1"
    )


# -- manifest, guest side, records --------------------------------------------------------------


def _entry() -> ManifestEntry:
    return ManifestEntry(
        name="vfio", built=True, out_dir="/cache/out", binaries=("a_test", "b_test"), device="ks-igb",
        hugepages_2m=16, hugepages_1g=1,
        module_params=(("/sys/module/vfio_pci/parameters/enable_sriov", "Y"),),
        timeouts={"a_test": 300.0, "b_test": 60.0},
    )  # fmt: skip


def test_manifest_reads_the_same_on_both_sides(tmp_path: Path) -> None:
    write_manifest(tmp_path, [_entry()])
    assert read_manifest(tmp_path) == [_entry()]
    (guest,) = _guest("hil_kselftest.manifest").load_manifest(tmp_path)
    assert (guest.name, guest.built, str(guest.out_dir), guest.binaries) == (
        "vfio",
        True,
        "/cache/out",
        ("a_test", "b_test"),
    )
    assert (guest.device, guest.hugepages_2m, guest.hugepages_1g, guest.timeouts) == (
        "ks-igb",
        16,
        1,
        {"a_test": 300.0, "b_test": 60.0},
    )
    assert guest.module_params == _entry().module_params
    assert guest.outputs(tmp_path, "a_test") == output_paths(tmp_path, "vfio", "a_test")


def test_the_guest_reserves_the_gigantic_page_before_the_small_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare = _guest("hil_kselftest.prepare")
    manifest = _guest("hil_kselftest.manifest")
    for kb in (2048, 1 << 20):
        (tmp_path / f"hugepages-{kb}kB").mkdir()
        (tmp_path / f"hugepages-{kb}kB" / "nr_hugepages").write_text("0")
    monkeypatch.setattr(prepare, "HUGEPAGES", tmp_path)
    selftest = manifest.Selftest("vfio", True, tmp_path, ("a_test",), hugepages_2m=16, hugepages_1g=1)
    args, done = prepare.prepare_selftest(selftest, None)
    assert args == []
    assert done == ["1 GiB hugepages: 1 of 1 asked", "2 MiB hugepages: 16 of 16 asked"]
    param = tmp_path / "enable_sriov"
    param.write_text("Y\n")  # set already (the kernel command line): not written again
    param.chmod(0o444)
    selftest = manifest.Selftest("vfio", True, tmp_path, ("a_test",), module_params=((str(param), "Y"),))
    assert prepare.prepare_selftest(selftest, None)[1] == [f"{param}=Y (already)"]
    param.chmod(0o644)
    param.write_text("N\n")
    assert prepare.prepare_selftest(selftest, None)[1] == [f"{param}=Y"] and param.read_text() == "Y"
    selftest = manifest.Selftest("vfio", True, tmp_path, ("a_test",), hugepages_2m=16, hugepages_1g=1)
    (tmp_path / "hugepages-1048576kB").rename(tmp_path / "gone")  # a kernel without gigantic pages
    _args, done = prepare.prepare_selftest(selftest, None)
    assert done[0].startswith("1 GiB hugepages not reserved: [Errno 2]")


def test_records_replace_the_wrappers_of_finished_binaries(tmp_path: Path) -> None:
    write_manifest(tmp_path, [_entry()])
    out, status = output_paths(tmp_path, "vfio", "a_test")
    out.parent.mkdir(parents=True)
    out.write_text("TAP version 13\n1..2\nok 1 x\nnot ok 2 y\n")
    status.write_text(json.dumps({"exit_code": 1, "duration": 2.0, "timeout_s": 300, "argv": ["a_test"]}))
    wrappers = [
        TestRecord(wrapper_name("vfio", "a_test"), "passed"),
        TestRecord(wrapper_name("vfio", "b_test"), "error", message="the guest crashed while this test ran"),
        TestRecord("test_export.py::test_x", "passed"),
    ]
    merged = kselftest_records(wrappers, tmp_path)
    assert [(r.name, r.outcome) for r in merged] == [
        ("test_kselftest.py::test_kselftest[vfio/b_test]", "error"),  # never finished: kept
        ("test_export.py::test_x", "passed"),
        ("kselftest/vfio/a_test/x", "passed"),
        ("kselftest/vfio/a_test/y", "failed"),
    ]


def test_no_manifest_changes_nothing(tmp_path: Path) -> None:
    records = [TestRecord("test_export.py::test_x", "passed")]
    assert kselftest_records(records, tmp_path) == records


def test_guest_runner_keeps_output_and_kills_at_the_limit(tmp_path: Path) -> None:
    runner = _guest("hil_kselftest.runner")
    script = tmp_path / "t.sh"
    script.write_text(
        "#!/bin/sh\necho 'TAP version 13'\necho '1..2'\necho 'ok 1 a'\necho diag >&2\nsleep 30\n"
    )
    script.chmod(0o755)
    ended = runner.run_binary([str(script)], tmp_path, 1.5, tmp_path / "o" / "t.out", None, "x/t")
    assert ended.timed_out and ended.exit_code is None and 1.4 < ended.duration < 10
    assert (tmp_path / "o" / "t.out").read_text() == "TAP version 13\n1..2\nok 1 a\ndiag\n"
    script.write_text("#!/bin/sh\necho 'ok 1 a'\nkill -SEGV $$\n")
    ended = runner.run_binary([str(script)], tmp_path, 10, tmp_path / "t2.out", None, "x/t")
    assert (ended.signal, ended.timed_out) == ("SIGSEGV", False)
    script.write_text("#!/bin/sh\nexit 4\n")
    assert runner.run_binary([str(script)], tmp_path, 10, tmp_path / "t3.out", None, "x/t").exit_code == 4


# -- run_cell end to end: the real guest entry on the host (no VM), a selftest without a device ---------

KTAP_DEMO = r"""#include <stdio.h>
int main(void) {
    printf("TAP version 13\n1..3\nok 1 first\n# demo.c:9:second:Expected 1 == 2\nnot ok 2 second\n");
    printf("ok 3 third # SKIP no such hardware\n");
    return 1;
}
"""


def test_run_cell_turns_the_guests_output_into_records_in_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.cell.request import CellRequest, HostFacts
    from harness.run import run_cell
    from harness.vm.fake import host_entry_vm

    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    tests = tmp_path / "guest_tests"
    tests.mkdir()
    for name in ("conftest.py", "pytest.ini", "hil_vfio", "hil_kselftest", "test_kselftest.py"):
        (tests / name).symlink_to(GUEST_TESTS_DIR / name)
    kernel = _tree(tmp_path, KTAP_DEMO)
    req = CellRequest(
        topology="switch-p2p", kernel_spec="src:demo", select=None, timeout=120, idle_timeout=60,
        out=tmp_path / "run", kselftests=("demo",),
    )  # fmt: skip
    facts = HostFacts(qemu="q", qemu_version="10.0.2", accel="tcg", accel_reason="test", vng="vng")
    result = run_cell(
        req, load_topology("switch-p2p"), kernel, facts, tmp_path / "run", lambda _m: None,
        vm_factory=host_entry_vm, tests_dir=tests,
    )  # fmt: skip
    outcomes = {r.name: r.outcome for r in result.records}
    assert outcomes == {
        "kselftest/demo/good_test/first": "passed",
        "kselftest/demo/good_test/second": "failed",
        "kselftest/demo/good_test/third": "skipped",
    }
    assert result.verdict.value == "failed"
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    names = {t["name"]: t for t in saved["records"]}
    assert "demo.c:9:second:Expected 1 == 2" in names["kselftest/demo/good_test/second"]["message"]
    assert names["kselftest/demo/good_test/third"]["message"] == "no such hardware"
    junit = (tmp_path / "run" / "junit.xml").read_text()
    assert "kselftest/demo/good_test/second" in junit and "no such hardware" in junit
    assert (
        (tmp_path / "run" / "kselftest" / "demo" / "good_test.out").read_text().startswith("TAP version 13")
    )

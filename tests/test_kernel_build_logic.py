"""Build logic without building: cache keys, the dropped-symbol check, make progress, argv."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import BuildError, ConfigError
from harness.kernels import kconfig
from harness.kernels import key as keys
from harness.kernels.build import BuildPlan, build_env, dropped_message, make_argv
from harness.kernels.kconfig import Fragment
from harness.kernels.makelog import MakeProgress
from harness.kernels.proc import run_logged

BASE = Fragment("base", "CONFIG_PCI=y\nCONFIG_VFIO_PCI_DMABUF=y\n# CONFIG_DRM is not set\n")
TRIM = Fragment("trim", "# CONFIG_SOUND is not set\n")
INPUTS = keys.BuildInputs(
    source_identity="linux-source-7.2=7.2.13-1",
    series=None,
    fragments=(BASE, TRIM),
    vng_fragment="CONFIG_VIRTIO=y\n",
    toolchain="gcc 12.2.0 | ld 2.40",
    make_vars=("LOCALVERSION=",),
)


def test_same_inputs_same_key() -> None:
    again = dataclasses.replace(INPUTS, fragments=(Fragment("base", BASE.text), Fragment("trim", TRIM.text)))
    assert keys.build_key(INPUTS) == keys.build_key(again)
    assert len(keys.build_key(INPUTS)) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"fragments": (Fragment("base", BASE.text + " "), TRIM)},  # one byte of one fragment
        {"fragments": (Fragment("base", BASE.text.replace("=y", "=m", 1)), TRIM)},
        {"fragments": (TRIM, BASE)},  # order matters: later fragments override
        {"fragments": (BASE, Fragment("debug", TRIM.text))},  # the selected names
        {"fragments": (BASE, TRIM, Fragment("debug", ""))},
        {"source_identity": "linux-source-7.2=7.2.14-1"},
        {"series": b"From 0 Mon Sep 17 00:00:00 2001\n"},
        {"toolchain": "gcc 13.1.0 | ld 2.40"},
        {"vng_fragment": "CONFIG_VIRTIO=y\nCONFIG_X=y\n"},
        {"make_vars": ()},
        {"recipe": "kbuild-999"},
    ],
)
def test_any_input_change_changes_the_key(change: dict[str, object]) -> None:
    assert keys.build_key(dataclasses.replace(INPUTS, **change)) != keys.build_key(INPUTS)  # type: ignore[arg-type]


def test_config_key_ignores_source_and_series_so_builds_can_seed_each_other() -> None:
    patched = dataclasses.replace(INPUTS, series=b"patch", source_identity="other")
    assert keys.config_key(patched) == keys.config_key(INPUTS)
    assert keys.build_key(patched) != keys.build_key(INPUTS)


def test_moving_bytes_between_fields_changes_the_key() -> None:
    a = dataclasses.replace(INPUTS, fragments=(Fragment("ab", "c"),))
    b = dataclasses.replace(INPUTS, fragments=(Fragment("a", "bc"),))
    assert keys.build_key(a) != keys.build_key(b)


FAKE_CONFIG = """\
CONFIG_PCI=y
# CONFIG_VFIO_PCI_DMABUF is not set
CONFIG_RDMA_RXE=m
CONFIG_LOCALVERSION="-hil"
CONFIG_HWMON=y
"""


def test_dropped_symbols_are_listed() -> None:
    wanted = kconfig.requested(
        [
            Fragment(
                "base",
                "CONFIG_PCI=y\nCONFIG_VFIO_PCI_DMABUF=y\nCONFIG_RDMA_RXE=y\nCONFIG_NOT_A_SYMBOL=y\n"
                'CONFIG_LOCALVERSION="-hil"\n',
            ),
            Fragment("trim", "# CONFIG_HWMON is not set\n# CONFIG_DRM is not set\n"),
        ]
    )
    missing = kconfig.dropped(wanted, FAKE_CONFIG)
    assert [str(m) for m in missing] == [
        "CONFIG_NOT_A_SYMBOL=y (got not set)",
        "CONFIG_RDMA_RXE=y (got m)",
        "CONFIG_VFIO_PCI_DMABUF=y (got not set)",
    ]
    assert kconfig.still_set(wanted, FAKE_CONFIG) == ["CONFIG_HWMON"]
    message = dropped_message(missing, Path("/b/.config"))
    assert "dropped 3 requested option(s)" in message and "CONFIG_VFIO_PCI_DMABUF=y (got not set)" in message


def test_later_fragments_override_earlier_ones() -> None:
    wanted = kconfig.requested([Fragment("a", "CONFIG_KASAN=y\n"), Fragment("b", "CONFIG_KASAN=n\n")])
    assert wanted == {"CONFIG_KASAN": None}
    assert kconfig.dropped(wanted, "") == []


def test_shipped_fragments_parse_and_request_what_the_tests_need() -> None:
    wanted = kconfig.requested(kconfig.load_fragments(kconfig.DEFAULT_FRAGMENTS))
    for symbol in (
        "PCI_P2PDMA",
        "VFIO_PCI_DMABUF",
        "VFIO_NOIOMMU",
        "INTEL_IOMMU",
        "IRQ_REMAP",
        "RDMA_RXE",
        "KPROBE_EVENTS",
        "MAGIC_SYSRQ",
        "MODULE_UNLOAD",
        "NET_9P_VIRTIO",
        "DMA_SHARED_BUFFER",
    ):
        assert wanted[f"CONFIG_{symbol}"] == "y", symbol
    assert wanted["CONFIG_DRM"] is None
    assert kconfig.fragment_names(["debug", "base"]) == ("base", "trim", "debug")
    with pytest.raises(ConfigError, match=r"shipped fragments: .*debug"):
        kconfig.load_fragments(["no-such-fragment"])


def test_merge_and_make_argv() -> None:
    argv = kconfig.merge_argv(Path("/s"), Path("/s/hil-o-1"), [Path("/f/a.config"), Path("/f/b.config")])
    assert argv == [
        "/s/scripts/kconfig/merge_config.sh",
        "-m",
        "-O",
        "/s/hil-o-1",
        "/s/hil-o-1/.config",
        "/f/a.config",
        "/f/b.config",
    ]
    plan = BuildPlan(Path("/s"), Path("/s/hil-o-1"), "k", "c", INPUTS)
    assert make_argv(plan, ["bzImage"], jobs=2, use_ccache=True, nice=10) == [
        "nice",
        "-n",
        "10",
        "make",
        "-C",
        "/s",
        "O=/s/hil-o-1",
        "-j2",
        "LOCALVERSION=",
        "CC=ccache gcc",
        "HOSTCC=ccache gcc",
        "bzImage",
    ]
    assert make_argv(plan, ["bzImage"], jobs=2, use_ccache=False, nice=0)[:3] == ["make", "-C", "/s"]


def test_make_progress_reports_periodically_with_object_count() -> None:
    tracker = MakeProgress(start=100.0, interval=15.0)
    assert tracker.feed("  CC      init/main.o\n", 101.0) is None
    assert tracker.feed("  AR      init/built-in.a\n", 105.0) is None
    assert tracker.feed("drivers/pci/p2pdma.c: In function 'x':\n", 110.0) is None
    assert (
        tracker.feed("  CC      drivers/pci/p2pdma.o\n", 142.0)
        == "[  42s] CC drivers/pci/p2pdma.o (2 objects)"
    )
    assert tracker.feed("  CC [M]  fs/foo.o\n", 150.0) is None
    assert tracker.compiled == 3


def test_a_failing_step_reports_the_log_path_and_its_last_40_lines(tmp_path: Path) -> None:
    log = tmp_path / "hil-build.log"
    seen: list[str] = []
    script = "for i in $(seq 1 60); do echo line$i; done; echo oops >&2; exit 3"
    with pytest.raises(BuildError) as info:
        run_logged(["sh", "-c", script], log=log, what="make", on_line=seen.append)
    error = info.value
    assert error.log == log and f"full log: {log}" in str(error)
    tail = error.tail.splitlines()
    assert len(tail) == 40 and tail[-1] == "### make: exit 3 after " + tail[-1].split("after ")[1]
    assert "oops" in tail and "line60" in tail and "line20" not in tail
    assert len(seen) == 61  # every line streamed to the callback
    assert "line1\n" in log.read_text()  # the full log is kept


def test_build_env_shares_ccache_across_trees() -> None:
    plan = BuildPlan(Path("/c/src/x/pristine"), Path("/c/src/x/pristine/hil-o-1"), "k", "c", INPUTS)
    env = build_env(plan, Path("/c/ccache"))
    assert env["CCACHE_DIR"] == "/c/ccache"
    assert env["CCACHE_BASEDIR"] == "/c/src/x/pristine"
    assert env["CCACHE_DEPEND"] == "1"
    tree_plan = BuildPlan(Path("/home/me/linux"), Path("/c/kernels/tree-builds/k"), "k", "c", INPUTS)
    assert build_env(tree_plan, Path("/c/ccache"))["CCACHE_BASEDIR"] == "/home/me/linux"

"""Build logic without building: cache keys, the dropped-symbol check, make progress, argv."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from pathlib import Path

import pytest

from harness import jsonfile
from harness.errors import BuildError, ConfigError
from harness.kernels import build, kconfig
from harness.kernels import key as keys
from harness.kernels.build import BuildPlan, build_env, dropped_message, make_argv
from harness.kernels.debsrc import SourceTree
from harness.kernels.kconfig import Fragment
from harness.kernels.makelog import MakeProgress, ObjectTotal, PreviousCount, count_compiles, expected_total
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


# make output of the first build of src:debian-7.2 with the project's config (this machine, cold
# ccache), cut down to its start, a stretch of the middle and its end, cache path shortened.
RECORDED = Path(__file__).parent / "data" / "make" / "kbuild-7.2.13-excerpt.log"
SECONDS_PER_LINE = 1.0


def _replay(total: ObjectTotal | None, start: float = 1000.0) -> tuple[MakeProgress, list[tuple[float, str]]]:
    tracker = MakeProgress(start, total=total)
    reports = []
    for i, line in enumerate(RECORDED.read_text().splitlines(keepends=True), start=1):
        now = start + i * SECONDS_PER_LINE
        if (message := tracker.feed(line, now)) is not None:
            reports.append((now, message))
    return tracker, reports


def test_recorded_build_reports_each_5_percent_with_the_time_left_at_the_rate_so_far() -> None:
    lines = RECORDED.read_text().splitlines()
    objects = count_compiles(lines)
    assert objects > 300
    first_compile = 1000.0 + SECONDS_PER_LINE * next(
        i for i, line in enumerate(lines, start=1) if re.match(r"\s+(CC|AS)(\s\[M\])?\s", line)
    )
    tracker, reports = _replay(ObjectTotal(objects, exact=False, why="shipped"))
    assert tracker.compiled == objects
    percents = [int(re.findall(r"\((\d+)%\)", message)[0]) for _, message in reports]
    # Every 5% step gets its line (late when the previous line is less than 10 s old); other lines
    # only come when make went 30 s without reaching the next step.
    assert percents == sorted(percents) and {p // 5 for p in percents} >= set(range(1, 21))
    times = [1000.0] + [now for now, _ in reports]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(10.0 <= gap <= 30.0 + SECONDS_PER_LINE for gap in gaps)
    for gap, percent, previous in zip(gaps, percents, [-1, *percents], strict=False):
        assert gap >= 30.0 or percent // 5 > previous // 5, (gap, percent, previous)
    for now, message in reports:
        done = int(re.findall(r"\] (\d+) of about", message)[0])
        assert f"{done} of about {objects} objects" in message, message
        left = re.findall(r"about (\d+) (s|min) left", message)
        if done < max(MakeProgress.MIN_OBJECTS_FOR_RATE, objects // 100) or done == objects:
            assert not left, message
            continue
        rate = done / (now - first_compile)
        expected = (objects - done) / rate
        value, unit = int(left[0][0]), left[0][1]
        shown = value * 60 if unit == "min" else value
        assert abs(shown - expected) <= (30 if unit == "min" else 5), (message, expected)
    # Each line names what make was doing right then: one of its steps, as kbuild printed it.
    steps = {" ".join(line.split()) for line in lines}
    assert all(message.rsplit(": ", 1)[1] in steps for _, message in reports)


def test_a_total_counted_by_a_previous_build_is_not_called_about() -> None:
    objects = count_compiles(RECORDED.read_text().splitlines())
    _tracker, reports = _replay(ObjectTotal(objects, exact=True, why="previous build"))
    assert reports and all(f" of {objects} objects (" in message for _, message in reports)
    assert not any("of about" in message for _, message in reports)


def test_more_objects_than_expected_says_so_instead_of_passing_100_percent() -> None:
    objects = count_compiles(RECORDED.read_text().splitlines())
    _tracker, reports = _replay(ObjectTotal(objects // 2, exact=False, why="shipped"))
    past = [message for _, message in reports if "more than" in message]
    assert past and all(f"more than the estimated {objects // 2}:" in message for message in past)
    assert not any(re.search(r"\((\d{3,})%\)", message) and "(100%)" not in message for _, message in reports)


def test_time_left_from_the_rate_so_far() -> None:
    tracker = MakeProgress(0.0, total=ObjectTotal(400, exact=False, why="shipped"))
    for i in range(1, 101):
        tracker.feed(f"  CC      drivers/x/f{i}.o\n", float(i))
    # 100 objects from t=1 to t=100: about 1 object/s, 300 to go.
    left = tracker.seconds_left(100.0)
    assert left is not None and abs(left - 297.0) < 1e-6
    assert (
        tracker.status(100.0)
        == "[ 100s] 100 of about 400 objects (25%), about 5 min left: CC drivers/x/f100.o"
    )
    tracker.feed("  CC      drivers/x/last.o\n", 150.0)
    assert "about" in tracker.status(150.0)


def test_expected_total_prefers_this_source_then_this_config_then_the_shipped_figure() -> None:
    mine = PreviousCount("linux-source-7.2=7.2.13-1", 4100, finished=10.0)
    other_old = PreviousCount("linux-source-7.3=7.3.4-1", 4300, finished=5.0)
    other_new = PreviousCount("linux-source-7.3=7.3.4-1", 4200, finished=20.0)
    source = "linux-source-7.2=7.2.13-1"
    exact = expected_total(source=source, previous=[other_new, mine, other_old], shipped=4000)
    assert exact is not None and (exact.count, exact.exact, exact.text) == (4100, True, "4100")
    near = expected_total(source=source, previous=[other_old, other_new], shipped=4000)
    assert near is not None and (near.count, near.exact, near.text) == (4200, False, "about 4200")
    shipped = expected_total(source=source, previous=[], shipped=4000)
    assert shipped is not None and (shipped.count, shipped.text) == (4000, "about 4000")
    assert "shipped" in shipped.why
    assert expected_total(source=source, previous=[], shipped=None) is None


def test_a_resumed_build_expects_only_what_is_not_compiled_yet() -> None:
    source = "linux-source-7.2=7.2.13-1"
    mine = PreviousCount(source, 4100, finished=10.0)
    resumed = expected_total(source=source, previous=[mine], shipped=4000, present=1000)
    assert resumed is not None and (resumed.count, resumed.exact) == (3100, False)
    assert "interrupted" in resumed.why
    assert expected_total(source=source, previous=[mine], shipped=4000, present=4100) is None


def test_previous_counts_come_from_full_builds_of_the_same_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path))
    src = tmp_path / "kernels" / "src"

    def record(where: str, **fields: object) -> None:
        base = {"config_key": "cfg", "source": "linux-source-7.2=7.2.13-1", "finished": 1.0}
        jsonfile.write_record(src / where / build.RECORD, {**base, **fields})

    record("pkg-a/pristine/hil-o-1", objects=4100, objects_full=True)
    record("pkg-a/patched-x/hil-o-2", objects=12, objects_full=False)  # seeded: recompiled 12
    record("pkg-b/pristine/hil-o-3", objects=3900, objects_full=True, config_key="other")
    record("pkg-c/pristine/hil-o-4")  # written before builds counted their objects
    assert build.previous_counts("cfg") == [PreviousCount("linux-source-7.2=7.2.13-1", 4100, 1.0)]


FAKE_MAKE = """#!/bin/sh
# make as build.py runs it: defconfig, olddefconfig, then the build, which replays recorded output.
for arg in "$@"; do case "$arg" in O=*) objtree="${arg#O=}";; esac; done
case "$*" in *bzImage*) ;; *) exit 0;; esac
cat "$RECORDED"
mkdir -p "$objtree/arch/x86/boot" "$objtree/include/config" "$objtree/init"
for i in $(seq 1 "${FAKE_MAKE_OBJECTS:-0}"); do : > "$objtree/init/o$i.o"; done
[ -n "$FAKE_MAKE_FAIL" ] && exit 2
echo bzImage > "$objtree/arch/x86/boot/bzImage"
echo 7.2.13-fake > "$objtree/include/config/kernel.release"
"""
# merge_config.sh -m -O <objtree> <objtree>/.config <fragments...>: later fragments win, as in kconfig.
FAKE_MERGE = """#!/bin/sh
shift 3; config="$1"; shift; cat "$@" >> "$config"
"""


def _fake_tree(cache_root: Path, name: str) -> SourceTree:
    path = cache_root / "kernels" / "src" / f"{name}_1" / "pristine"
    (path / "scripts" / "kconfig").mkdir(parents=True, exist_ok=True)
    (path / "scripts" / "kconfig" / "merge_config.sh").write_text(FAKE_MERGE)
    (path / "scripts" / "kconfig" / "merge_config.sh").chmod(0o755)
    return SourceTree(path, identity=f"{name}=1", lineage=f"{name}=1")


def test_build_progress_total_comes_from_the_shipped_figure_then_from_the_last_real_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_root = tmp_path / "cache"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(FAKE_MAKE)
    (bin_dir / "make").chmod(0o755)
    monkeypatch.setenv("P2P_HIL_CACHE", str(cache_root))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("RECORDED", str(RECORDED))
    recorded = count_compiles(RECORDED.read_text().splitlines())
    messages: list[str] = []

    def built(name: str) -> dict[str, object]:
        messages.clear()
        kimg = build.build_kernel(_fake_tree(cache_root, name), progress=messages.append, jobs=2, nice=0)
        assert kimg.build_dir is not None
        record = jsonfile.read_record(kimg.build_dir / build.RECORD)
        assert record is not None
        return record

    first = built("pkg-a")
    shipped = (
        f"about {build.SHIPPED_OBJECTS} objects to compile (the figure shipped for the project's config)"
    )
    assert shipped in messages, messages
    assert (first["objects"], first["objects_full"]) == (recorded, True)
    assert f"make done in 0 s ({recorded} objects compiled)" in messages

    second = built("pkg-b")  # same config, other source: the count of pkg-a's build, as an estimate
    assert (
        f"about {recorded} objects to compile (counted in a previous build of this config (pkg-a=1))"
        in messages
    )
    assert second["objects_full"] is True

    # An interrupted build leaves objects that the next make does not compile again.
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")
    monkeypatch.setenv("FAKE_MAKE_OBJECTS", "100")
    with pytest.raises(BuildError):
        built("pkg-c")
    monkeypatch.delenv("FAKE_MAKE_FAIL")
    resumed = built("pkg-c")
    assert any(m.startswith(f"about {recorded - 100} objects to compile (") for m in messages), messages
    assert any("less 100 objects left by an interrupted build" in m for m in messages), messages
    assert resumed["objects_full"] is False  # a partial count is never the next build's total


def test_the_project_ships_an_object_count_for_its_config() -> None:
    # Measured (see build.SHIPPED_OBJECTS); the recorded excerpt is a part of the same build.
    assert count_compiles(RECORDED.read_text().splitlines()) < build.SHIPPED_OBJECTS


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


def test_the_log_has_each_line_while_the_command_still_runs(tmp_path: Path) -> None:
    log = tmp_path / "hil-build.log"
    in_log_when_seen: list[bool] = []

    def on_line(line: str) -> None:
        in_log_when_seen.append(line in log.read_text())

    run_logged(["sh", "-c", "echo CC a.o; sleep 0.2; echo CC b.o"], log=log, what="make", on_line=on_line)
    assert in_log_when_seen == [True, True]


def test_build_env_shares_ccache_across_trees() -> None:
    plan = BuildPlan(Path("/c/src/x/pristine"), Path("/c/src/x/pristine/hil-o-1"), "k", "c", INPUTS)
    env = build_env(plan, Path("/c/ccache"))
    assert env["CCACHE_DIR"] == "/c/ccache"
    assert env["CCACHE_BASEDIR"] == "/c/src/x/pristine"
    assert env["CCACHE_DEPEND"] == "1"
    tree_plan = BuildPlan(Path("/home/me/linux"), Path("/c/kernels/tree-builds/k"), "k", "c", INPUTS)
    assert build_env(tree_plan, Path("/c/ccache"))["CCACHE_BASEDIR"] == "/home/me/linux"


def test_a_seeded_build_rebuilds_what_an_older_series_tree_changed(tmp_path: Path) -> None:
    """A series tree made before the seed was built: its patched file must look newer than the seed's
    objects, or make keeps the unpatched object (it did: a 'fixed' kernel that still had the bug)."""
    import os
    import subprocess

    from harness.kernels.build import freshen_series_files

    tree = tmp_path / "series-tree"
    (tree / "drivers").mkdir(parents=True)
    (tree / "drivers" / "a.c").write_text("int a;\n")
    (tree / "b.c").write_text("int b;\n")
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "pristine"]):
        subprocess.run(["git", "-C", str(tree), *ident, *argv], check=True)
    (tree / "drivers" / "a.c").write_text("int a = 1;\n")
    subprocess.run(["git", "-C", str(tree), *ident, "commit", "-qam", "the fix"], check=True)
    for name in ("drivers/a.c", "b.c"):
        os.utime(tree / name, (1_000_000, 1_000_000))  # older than any seed's objects
    assert freshen_series_files(tree) == ["drivers/a.c"]
    assert (tree / "drivers" / "a.c").stat().st_mtime > 1_000_000
    assert (tree / "b.c").stat().st_mtime == 1_000_000

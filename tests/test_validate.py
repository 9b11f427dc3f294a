"""hil validate: input checks, checkpatch counting, the per-patch sequence with fakes, the comparison
of the two matrices and report.txt. No kernel is built and no VM booted."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from matrix_fixtures import FakeCell, record, write_matrix

from harness.errors import ConfigError
from harness.matrix.document import Matrix
from harness.results.known_issues import KNOWN_ISSUES_FILE, load_known_issues
from harness.results.model import Verdict
from harness.validate.checkpatch import CheckpatchResult, parse_output
from harness.validate.command import am_repository, check_inputs, signer_line
from harness.validate.findings import align, entry_line, findings
from harness.validate.perpatch import BuildOutcome, validate_patches
from harness.validate.report import WIDTH, Validation, report_json, report_text
from harness.validate.series_input import SeriesPatch, check_applies, parse_series, prefix_files, read_series
from harness.validate.warnings import CompilerWarning, new_warnings, parse_warnings

DATA = Path(__file__).parent / "data"
SOURCE = "int f(void)\n{\n\treturn 0;\n}\n"


def message(
    n: int, total: int, subject: str, diff: str, author: str = "A Tester <tester@example.org>"
) -> str:
    return (
        f"From {n:040x} Mon Sep 17 00:00:00 2001\n"
        f"From: {author}\n"
        "Date: Tue, 24 Nov 2026 08:49:26 +0000\n"
        f"Subject: [PATCH {n}/{total}] {subject}\n\n"
        f"Body of patch {n}.\n\nSigned-off-by: {author}\n---\n{diff}-- \n2.39.5\n\n"
    )


def modify(path: str, old: str, new: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
        f"@@ -1,4 +1,4 @@\n int f(void)\n {{\n-\t{old}\n+\t{new}\n }}\n"
    )


def create(path: str, line: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n"
        f"+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"
    )


def three_patches() -> str:
    return (
        message(1, 3, "lib: return one", modify("lib/a.c", "return 0;", "return 1;"))
        + message(2, 3, "lib: add b.h", create("lib/b.h", "#define B 2"))
        + message(3, 3, "lib: return two", modify("lib/a.c", "return 1;", "return 2;"))
    )


@pytest.fixture
def kernel_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    (tree / "lib").mkdir(parents=True)
    (tree / "lib" / "a.c").write_text(SOURCE)
    (tree / "Makefile").write_text("all:\n")
    (tree / "Kconfig").write_text("")
    return tree


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# -- input checks --------------------------------------------------------------------------------


def test_a_good_series_parses_with_subjects_and_files(tmp_path: Path, kernel_tree: Path) -> None:
    mbox = write(tmp_path, "good.mbox", three_patches())
    patches = read_series(mbox)
    assert [(p.index, p.subject) for p in patches] == [
        (1, "lib: return one"),
        (2, "lib: add b.h"),
        (3, "lib: return two"),
    ]
    assert patches[1].files[0].created and patches[1].touched == ("lib/b.h",)
    check_applies(mbox, patches, kernel_tree)  # cumulative: patch 3 needs patch 1
    assert (kernel_tree / "lib" / "a.c").read_text() == SOURCE  # the base is never written


def test_empty_mbox_is_refused(tmp_path: Path) -> None:
    mbox = write(tmp_path, "empty.mbox", "\n\n")
    with pytest.raises(ConfigError, match=r"empty.mbox: empty"):
        read_series(mbox)


def test_a_file_that_is_not_an_mbox_is_refused(tmp_path: Path) -> None:
    mbox = write(tmp_path, "plain.diff", modify("lib/a.c", "return 0;", "return 1;"))
    with pytest.raises(ConfigError, match=r"plain.diff: not an mbox") as info:
        read_series(mbox)
    assert info.value.where == "SERIES"


def test_an_mbox_without_a_diff_is_refused(tmp_path: Path) -> None:
    cover = message(0, 2, "cover letter", "").replace("---\n-- \n", "")
    mbox = write(tmp_path, "cover.mbox", cover)
    with pytest.raises(ConfigError, match=r"none with a diff"):
        read_series(mbox)


def test_a_binary_patch_is_refused_naming_patch_and_file(tmp_path: Path) -> None:
    binary = (
        "diff --git a/fw/blob.bin b/fw/blob.bin\nnew file mode 100644\nindex 0000000..1111111\n"
        "GIT binary patch\nliteral 4\nLcmZ?l00001\n\nliteral 0\nHcmV?d00001\n\n"
    )
    text = message(1, 2, "lib: return one", modify("lib/a.c", "return 0;", "return 1;"))
    text += message(2, 2, "fw: add a blob", binary)
    mbox = write(tmp_path, "bin.mbox", text)
    with pytest.raises(ConfigError, match=r"patch 2/2 'fw: add a blob' is a binary patch \(fw/blob.bin\)"):
        read_series(mbox)


def test_a_patch_for_a_file_the_base_lacks_is_refused(tmp_path: Path, kernel_tree: Path) -> None:
    text = message(1, 1, "net: tweak", modify("net/missing.c", "return 0;", "return 1;"))
    mbox = write(tmp_path, "missing.mbox", text)
    with pytest.raises(ConfigError, match=r"patch 1/1 'net: tweak' changes net/missing.c, which is not in"):
        check_applies(mbox, read_series(mbox), kernel_tree)


def test_a_patch_for_a_file_an_earlier_patch_creates_is_fine(tmp_path: Path, kernel_tree: Path) -> None:
    text = message(1, 2, "add", create("lib/new.c", "x")) + message(
        2,
        2,
        "change",
        "diff --git a/lib/new.c b/lib/new.c\n--- a/lib/new.c\n+++ b/lib/new.c\n@@ -1 +1 @@\n-x\n+y\n",
    )
    mbox = write(tmp_path, "chain.mbox", text)
    check_applies(mbox, read_series(mbox), kernel_tree)


def test_patch_two_that_does_not_apply_is_named(tmp_path: Path, kernel_tree: Path) -> None:
    text = message(1, 2, "lib: return one", modify("lib/a.c", "return 0;", "return 1;"))
    text += message(2, 2, "lib: stale context", modify("lib/a.c", "return 0;", "return 3;"))
    mbox = write(tmp_path, "stale.mbox", text)
    with pytest.raises(ConfigError, match=r"patch 2/2 'lib: stale context' does not apply") as info:
        check_applies(mbox, read_series(mbox), kernel_tree)
    assert "lib/a.c" in str(info.value)


def _args(series: Path, tree: Path, out: Path, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(
        series=str(series), kernel=f"tree:{tree}", topology=["switch-p2p"], out=str(out), jobs=None, **extra
    )


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("empty.mbox", "", "empty"),
        ("plain.diff", modify("lib/a.c", "return 0;", "return 1;"), "not an mbox"),
        ("stale.mbox", message(1, 1, "stale", modify("lib/a.c", "return 9;", "return 3;")), "does not apply"),
        ("gone.mbox", message(1, 1, "gone", modify("x/none.c", "a", "b")), "not in the base tree"),
    ],
)
def test_bad_input_leaves_nothing_behind(
    tmp_path: Path, kernel_tree: Path, name: str, text: str, problem: str
) -> None:
    mbox = write(tmp_path, name, text)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=problem) as info:
        check_inputs(_args(mbox, kernel_tree, out), tmp_path / "runs", lambda _: None)
    assert name in str(info.value)
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_a_stock_image_cannot_be_validated(tmp_path: Path, kernel_tree: Path) -> None:
    mbox = write(tmp_path, "good.mbox", three_patches())
    args = _args(mbox, kernel_tree, tmp_path / "out")
    args.kernel = "debian:7.2"
    with pytest.raises(ConfigError, match=r"need a kernel we build"):
        check_inputs(args, tmp_path / "runs", lambda _: None)


def test_a_missing_series_file_and_a_bad_tested_by_are_refused(tmp_path: Path, kernel_tree: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file"):
        check_inputs(_args(tmp_path / "nope.mbox", kernel_tree, tmp_path / "o"), tmp_path, lambda _: None)
    with pytest.raises(ConfigError, match=r"--tested-by"):
        signer_line("just a name", tmp_path)
    assert signer_line("Ann Example <ann@example.org>", tmp_path) == "Ann Example <ann@example.org>"


def test_inputs_of_a_good_series_are_accepted(tmp_path: Path, kernel_tree: Path) -> None:
    mbox = write(tmp_path, "good.mbox", three_patches())
    inputs = check_inputs(_args(mbox, kernel_tree, tmp_path / "out"), tmp_path / "runs", lambda _: None)
    assert [p.index for p in inputs.patches] == [1, 2, 3]
    assert inputs.tree == kernel_tree.resolve() and not inputs.has_history
    assert not (tmp_path / "out").exists()  # claimed only once validation starts for real


def test_prefixes_are_the_series_cut_after_each_patch(tmp_path: Path) -> None:
    mbox = write(tmp_path, "good.mbox", three_patches())
    patches = read_series(mbox)
    files = prefix_files(mbox, patches, tmp_path / "p")
    assert [p.name for p, _ in files] == ["good-1of3.mbox", "good-2of3.mbox", "good-3of3.mbox"]
    assert [len(parse_series(p, c)) for p, c in files] == [1, 2, 3]


def test_git_am_of_each_patch_in_a_scratch_repository(tmp_path: Path, kernel_tree: Path) -> None:
    text = three_patches() + message(
        4, 4, "no author", modify("lib/a.c", "return 2;", "return 4;"), author=""
    )
    patches = parse_series(tmp_path / "s.mbox", text.encode())
    with am_repository(kernel_tree, patches) as am:
        assert [am(p) for p in patches[:3]] == [None, None, None]
        failure = am(patches[3])
    assert failure  # git am wants an author: the mail is wrong even though the diff applies


# -- checkpatch ------------------------------------------------------------------------------------


def test_checkpatch_counts_from_real_output() -> None:
    problems = parse_output((DATA / "checkpatch_strict_problems.txt").read_text())
    assert (problems.errors, problems.warnings, problems.checks) == (4, 3, 1)
    assert len(problems.messages) == 8 and problems.messages[0].startswith("ERROR:SPACING:")
    assert not problems.clean and problems.counts == "4/3/1"
    clean = parse_output((DATA / "checkpatch_strict_clean.txt").read_text())
    assert clean.clean and clean.counts == "0/0/0" and clean.messages == ()


def test_checkpatch_output_without_totals_is_a_problem_not_a_pass() -> None:
    result = parse_output("Can't open perl script\n")
    assert result.problem is not None and not result.clean and result.counts == "?"


# -- compiler warnings -----------------------------------------------------------------------------

BASE_LOG = """\
  CC      drivers/dma-buf/dma-buf-mapping.o
../drivers/dma-buf/dma-buf-mapping.c:40:5: warning: old one [-Wold]
../drivers/other.c:3:1: warning: elsewhere [-Wx]
"""
PREFIX_LOG = """\
  CC      drivers/dma-buf/dma-buf-mapping.o
../drivers/dma-buf/dma-buf-mapping.c:44:5: warning: old one [-Wold]
../drivers/dma-buf/dma-buf-mapping.c:160:9: warning: unused variable 'x' [-Wunused-variable]
../drivers/other.c:9:1: warning: new but elsewhere [-Wx]
"""


def test_new_warnings_are_the_touched_files_ones_the_base_lacks() -> None:
    base = parse_warnings(BASE_LOG.splitlines())
    prefix = parse_warnings(PREFIX_LOG.splitlines())
    assert base[0] == CompilerWarning("drivers/dma-buf/dma-buf-mapping.c", 40, "old one", "-Wold")
    fresh = new_warnings(base, prefix, ["drivers/dma-buf/dma-buf-mapping.c"])
    assert [str(w) for w in fresh] == [
        "drivers/dma-buf/dma-buf-mapping.c:160: unused variable 'x' [-Wunused-variable]"
    ]


# -- per patch -------------------------------------------------------------------------------------


def _clean_style(_: SeriesPatch) -> CheckpatchResult:
    return parse_output((DATA / "checkpatch_strict_clean.txt").read_text())


def test_per_patch_names_the_patch_that_breaks_the_build(tmp_path: Path) -> None:
    patches = parse_series(tmp_path / "s.mbox", three_patches().encode())
    prefixes = [tmp_path / f"s-{i}of3.mbox" for i in (1, 2, 3)]
    warned = CompilerWarning("lib/a.c", 3, "unused variable 'y'", "-Wunused-variable")
    built: list[str] = []

    def build(prefix: Path) -> BuildOutcome:
        built.append(prefix.name)
        if prefix.name == "s-2of3.mbox":
            return BuildOutcome(
                False, error="make failed: lib/b.h:1: error: expected ';'", log=tmp_path / "log"
            )
        return BuildOutcome(True, warnings=(warned,) if prefix.name == "s-3of3.mbox" else ())

    results = validate_patches(
        patches,
        prefixes,
        BuildOutcome(True),
        am=lambda _: None,
        checkpatch=_clean_style,
        build=build,
        progress=lambda _: None,
    )
    assert built == ["s-1of3.mbox", "s-2of3.mbox", "s-3of3.mbox"]  # patch 3 is built after 2 broke
    assert [r.failures for r in results] == [[], ["does not build"], ["1 new compiler warning(s)"]]
    validation = Validation(
        tmp_path / "s.mbox",
        "src:debian-7.2",
        "7.2.13-hil",
        tuple(results),
        None,
        None,
        None,
        matrix_skipped="not run in this test",
    )
    text = report_text(validation, "Ann Example <ann@example.org>")
    assert all(len(line) <= WIDTH for line in text.splitlines())
    row2 = next(line for line in text.splitlines() if line.startswith("  2  "))
    assert "lib: add b.h" in row2 and row2.split()[-2:] == ["NO", "-"]
    assert "patch 2/3 lib: add b.h: does not build" in text and "error: expected ';'" in text
    assert "Tested-by:" not in text and validation.exit_code() == 1


def test_a_patch_that_does_not_apply_stops_the_sequence(tmp_path: Path) -> None:
    patches = parse_series(tmp_path / "s.mbox", three_patches().encode())
    results = validate_patches(
        patches,
        [tmp_path / f"{i}" for i in (1, 2, 3)],
        BuildOutcome(True),
        am=lambda p: "error: patch failed: lib/b.h:1" if p.index == 2 else None,
        checkpatch=_clean_style,
        build=lambda _: BuildOutcome(True),
        progress=lambda _: None,
    )
    assert [r.applies for r in results] == [True, False, None]
    assert results[1].build is None and results[1].failures == ["does not apply"]


def test_checkpatch_errors_fail_the_patch_and_checks_alone_do_not(tmp_path: Path) -> None:
    patches = parse_series(tmp_path / "s.mbox", three_patches().encode())[:2]
    style = [parse_output((DATA / "checkpatch_strict_problems.txt").read_text()), CheckpatchResult(0, 0, 2)]
    results = validate_patches(
        patches,
        [tmp_path / "1", tmp_path / "2"],
        BuildOutcome(True),
        am=lambda _: None,
        checkpatch=lambda p: style[p.index - 1],
        build=lambda _: BuildOutcome(True),
        progress=lambda _: None,
    )
    assert results[0].failures == ["checkpatch 4 errors, 3 warnings"] and results[1].failures == []


# -- the two matrices ------------------------------------------------------------------------------

MULTI = "test_routing.py::test_iova_ranges_linked_at_their_offsets[exporter-dma]"
KNOWN = {"test": MULTI, "reference": "drivers/dma-buf/dma-buf-mapping.c", "reason": "multi-range IOVA"}


def _matrices(tmp_path: Path, *, regress: bool) -> tuple[Matrix, Matrix]:
    series_kernel = "src:debian-7.2+fix.mbox"
    base = write_matrix(
        tmp_path / "base",
        [
            FakeCell(
                "switch-p2p-amd",
                records=[
                    record(MULTI, "xfailed", "known issue", known_issue=KNOWN),
                    record("test_export.py::test_a", "passed"),
                ],
            ),
            FakeCell("switch-p2p", records=[record("test_export.py::test_a", "passed")]),
        ],
    )
    amd_series = [
        record(MULTI, "xpassed", "UNEXPECTED PASS", known_issue=KNOWN),
        record("test_export.py::test_a", "passed"),
    ]
    plain = [
        record(
            "test_export.py::test_a",
            "failed" if regress else "passed",
            "AssertionError: exported 4096 bytes, read back 0\nmore detail",
        )
    ]
    series = write_matrix(
        tmp_path / "series",
        [
            FakeCell("switch-p2p-amd", kernel=series_kernel, records=amd_series, verdict=Verdict.FAILED),
            FakeCell(
                "switch-p2p",
                kernel=series_kernel,
                records=plain,
                verdict=Verdict.FAILED if regress else Verdict.PASSED,
            ),
        ],
    )
    return base, series


def test_align_compares_each_topology_with_itself(tmp_path: Path) -> None:
    base, series = _matrices(tmp_path, regress=False)
    aligned = align(base, series)
    assert sorted(aligned.cells) == sorted(series.cells)
    assert aligned.dir == base.dir


def test_a_known_issue_the_series_fixes_is_a_fix_and_names_its_entry(tmp_path: Path) -> None:
    base, series = _matrices(tmp_path, regress=False)
    found = findings(base, series)
    assert found.clean and found.regressions == ()
    assert [(c.test, c.old, c.new) for c in found.fixes] == [(MULTI, "xfailed", "xpassed")]
    assert [(u.test, u.cells, u.also_on_base) for u in found.updates] == [
        (MULTI, ("switch-p2p-amd__src-debian-7.2+fix.mbox",), False)
    ]
    line = entry_line(KNOWN_ISSUES_FILE.read_text(), MULTI)
    assert line is not None and MULTI in KNOWN_ISSUES_FILE.read_text().splitlines()[line - 1]
    assert any(e.test == MULTI for e in load_known_issues())
    validation = Validation(
        tmp_path / "fix.mbox",
        "src:debian-7.2",
        "7.2.13-hil",
        (),
        base,
        series,
        found,
        known_issues_lines={MULTI: line},
    )
    text = report_text(validation, "Ann Example <ann@example.org>")
    lines = text.splitlines()
    assert all(len(x) <= WIDTH for x in lines)
    assert "Fixed by the series (1):" in lines and "Regressions (0):" in lines
    assert any(x.strip() == "test_iova_ranges_linked_at_their_offsets[exporter-dma]" for x in lines)
    assert f"line {line}:" in text and "not reproduced on: switch-p2p-amd" in text
    assert lines[-1] == "Tested-by: Ann Example <ann@example.org>" and validation.exit_code() == 0
    doc = report_json(validation, "Ann Example <ann@example.org>", tmp_path)
    assert '"clean": true' in doc and '"line": ' + str(line) in doc


def test_a_regression_is_listed_with_evidence_and_no_tested_by(tmp_path: Path) -> None:
    base, series = _matrices(tmp_path, regress=True)
    found = findings(base, series)
    assert [(r.change.test, r.change.old, r.change.new) for r in found.regressions] == [
        ("test_export.py::test_a", "passed", "failed")
    ]
    assert found.regressions[0].evidence[0] == "AssertionError: exported 4096 bytes, read back 0"
    validation = Validation(tmp_path / "fix.mbox", "src:debian-7.2", "7.2.13-hil", (), base, series, found)
    text = report_text(validation, "Ann Example <ann@example.org>")
    assert "Regressions (1):" in text and "> AssertionError: exported 4096 bytes" in text
    assert "Tested-by:" not in text and "1 regression(s)" in text and validation.exit_code() == 1
    assert all(len(x) <= WIDTH for x in text.splitlines())


def test_a_clean_run_without_a_signer_says_how_to_get_the_line(tmp_path: Path) -> None:
    base, series = _matrices(tmp_path, regress=False)
    validation = Validation(
        tmp_path / "fix.mbox", "src:debian-7.2", "v", (), base, series, findings(base, series)
    )
    assert "give --tested-by" in report_text(validation, None)


def test_the_project_fix_series_is_well_formed() -> None:
    mbox = Path(__file__).parents[1] / "kernels" / "series" / "fix-iova-multirange.mbox"
    (patch,) = read_series(mbox)
    text = patch.message.decode()
    assert patch.touched == ("drivers/dma-buf/dma-buf-mapping.c",)
    assert 'Fixes: 3aa31a8bb11e ("dma-buf: provide phys_vec to scatter-gather mapping routine")' in text
    author = next(line for line in text.splitlines() if line.startswith("From: ")).removeprefix("From: ")
    assert f"Signed-off-by: {author}" in text


@pytest.mark.skipif(
    not (Path.home() / ".cache/p2p-hil/kernels/src").is_dir(), reason="no cached kernel source"
)
def test_the_fix_series_passes_checkpatch_strict_in_the_cached_tree() -> None:
    from harness.validate.checkpatch import run_checkpatch

    trees = sorted((Path.home() / ".cache/p2p-hil/kernels/src").glob("linux-source-*/pristine"))
    trees = [t for t in trees if (t / "scripts/checkpatch.pl").is_file()]
    if not trees:
        pytest.skip("no cached tree with scripts/checkpatch.pl")
    mbox = Path(__file__).parents[1] / "kernels" / "series" / "fix-iova-multirange.mbox"
    result = run_checkpatch(trees[-1], mbox, has_history=False)
    assert result.clean and result.checks == 0, result.messages

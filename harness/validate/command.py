"""`hil validate SERIES.mbox --kernel BASE [--topology T ...] [-k EXPR] [--out DIR] [-j N]
[--tested-by 'Name <mail>']`: the real wiring of validate (git, the tree's checkpatch.pl, the kernel
build cache, two matrix runs) around the pure parts of this package.

Order: every input check first (series, kernel spec, topologies, --out, --tested-by; ConfigError,
exit 2, nothing created and nothing built), then the base build, each patch (git am, checkpatch,
the build of patches 1..i), the base matrix in OUT/base, the base+series matrix in OUT/series, and
OUT/report.txt and OUT/report.json. Exit: 0 clean, 1 regressions or per-patch problems, 2 bad input.

b4 is not used: its strengths are fetching a thread from lore and collecting trailers, and a local
mbox needs neither; git am (the tool the build path applies with) and the tree's checkpatch.pl are what
a maintainer runs, so they judge here too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import BuildError, ConfigError, InfraError, one_value
from harness.kernels import series as patch_series
from harness.validate.checkpatch import CheckpatchResult, run_checkpatch
from harness.validate.perpatch import BuildOutcome, validate_patches
from harness.validate.series_input import FLAG, SeriesPatch, check_series, prefix_files
from harness.validate.warnings import CompilerWarning, parse_warnings

if TYPE_CHECKING:
    from harness.cell.request import CellRequest
    from harness.matrix.cells import CellSpec
    from harness.matrix.document import Matrix

Progress = Callable[[str], None]
_PERSON = re.compile(r"^[^<>@]+ <[^<>\s@]+@[^<>\s@]+>$")


@dataclass(frozen=True)
class Inputs:
    series: Path
    spec: str
    patches: list[SeriesPatch]
    tree: Path
    has_history: bool
    out: Path
    topologies: list[str]


def signer_line(given: str | None, cwd: Path) -> str | None:
    """--tested-by, else git config user.name/user.email; ConfigError for a malformed --tested-by."""
    if given:
        if not _PERSON.match(given.strip()):
            raise ConfigError(f"{given!r}: expected 'Name <mail@example.org>'", "--tested-by")
        return given.strip()

    def config(key: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(cwd), "config", key], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    name, email = config("user.name"), config("user.email")
    return f"{name} <{email}>" if name and email else None


def check_inputs(args: argparse.Namespace, runs_root: Path, progress: Progress) -> Inputs:
    from harness import topology as t
    from harness.rundir import check_out_dir

    given = getattr(args, "series", None)
    if not given:
        raise ConfigError("required: the series to validate (an mbox)", FLAG)
    mbox = Path(given).expanduser().resolve()
    if not mbox.is_file():
        raise ConfigError(f"patch series {given}: no such file", FLAG)
    spec = one_value(getattr(args, "kernel", None), "--kernel")
    names: list[str] = []
    for name in getattr(args, "topology", None) or ["all"]:
        names += [topo.name for topo in t.list_topologies()] if name == "all" else [name]
    for name in names:
        t.load_topology(name)
    jobs = getattr(args, "jobs", None)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"{jobs}: run at least one cell at a time", "-j")
    out_given = getattr(args, "out", None)
    out = (
        Path(out_given)
        if out_given
        else runs_root / f"{datetime.now().astimezone():%Y%m%d-%H%M%S}-validate-{mbox.stem}"
    )
    check_out_dir(out)
    patches, tree, history = check_series(spec, mbox, progress)
    progress(f"{mbox.name}: {len(patches)} patch(es), each applies to {spec} ({tree})")
    return Inputs(mbox, spec, patches, tree, history, out, list(dict.fromkeys(names)))


@contextmanager
def am_repository(tree: Path, patches: list[SeriesPatch]) -> Iterator[Callable[[SeriesPatch], str | None]]:
    """A throwaway git repository holding the base's copies of the files the series touches, where
    each patch is applied with git am in turn (the mail as well as the diff must be right)."""
    with tempfile.TemporaryDirectory(prefix="hil-validate-am-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        names = {p for patch in patches for c in patch.files for p in (c.path, c.old_path) if p}
        for rel in sorted(names):
            if (tree / rel).is_file():
                (repo / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tree / rel, repo / rel)
        env = {**os.environ, "GIT_CEILING_DIRECTORIES": tmp}
        env.pop("GIT_DIR", None)

        def git(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["git", *patch_series.GIT_IDENTITY, *argv],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )

        for argv in (("init", "-q"), ("add", "-A"), ("commit", "-q", "--allow-empty", "-m", "base")):
            if (proc := git(*argv)).returncode != 0:
                raise InfraError(f"git {' '.join(argv)} in {repo}: {proc.stderr.strip()}")

        def am(patch: SeriesPatch) -> str | None:
            file = Path(tmp) / f"{patch.index:04d}.mbox"
            file.write_bytes(patch.message)
            proc = git("am", "--no-3way", str(file))
            if proc.returncode == 0:
                return None
            git("am", "--abort")
            return "\n".join(
                line
                for line in (proc.stdout + proc.stderr).strip().splitlines()
                if not line.startswith(("hint:", "When you have resolved"))
            )

        yield am


def build_outcome(
    spec: str, prefix: Path | None, progress: Progress, fragments: tuple[str, ...] = ()
) -> BuildOutcome:
    from harness.kernels.build import LOG
    from harness.kernels.image import resolve_kernel

    try:
        kimg = resolve_kernel(spec, progress=progress, series=prefix, fragments=fragments)
    except BuildError as exc:
        return BuildOutcome(False, (), exc.log, str(exc))
    log = kimg.build_dir / LOG if kimg.build_dir else None
    warnings: tuple[CompilerWarning, ...] = ()
    if log is not None and log.is_file():
        roots = [str(kimg.build_dir.parent)] if kimg.build_dir else []
        with log.open(encoding="utf-8", errors="replace") as lines:
            warnings = tuple(parse_warnings(lines, roots))
    return BuildOutcome(True, warnings, log, "", kimg.version)


def _cells(spec: str, label: str, topologies: list[str]) -> list[CellSpec]:
    from harness import topology as t
    from harness.matrix.cells import plan_cells

    return plan_cells([(name, t.load_topology(name), ()) for name in topologies], [(spec, label)])


def run_matrix(
    args: argparse.Namespace, cells: list[CellSpec], out: Path, series: Path | None, progress: Progress
) -> Matrix:
    from harness import commands
    from harness.cell.request import CellRequest
    from harness.matrix.session import MatrixSession

    def request(cell: CellSpec) -> CellRequest:
        return CellRequest(
            topology=cell.given,
            kernel_spec=cell.kernel_spec,
            select=getattr(args, "select", None),
            timeout=float(getattr(args, "timeout", 900.0)),
            idle_timeout=float(getattr(args, "idle_timeout", 120.0)),
            invocation=("./hil", *sys.argv[1:]),
            series=series,
            axes=cell.axes,
            fragments=variant(args),
        )

    session = MatrixSession.open(cells, out, None, resume=False, baseline=None, runs_root=out.parent)
    kernels = commands.prepared_kernels(
        [c.kernel_spec for c in cells], series, getattr(args, "accel", "auto"), variant(args)
    )
    matrix, _ = session.run(
        cells,
        kernels,
        request,
        parallel=getattr(args, "jobs", None) or commands.default_jobs_for(kernels, cells),
        retries=getattr(args, "retries", 0) or 0,
        progress=progress,
        report=lambda result: progress(f"{result.run_dir.name}: {result.verdict.value}"),
    )
    return matrix


def variant(args: argparse.Namespace) -> tuple[str, ...]:
    """--fragment: the base and the series are built as that kernel variant (e.g. debug)."""
    return tuple(dict.fromkeys(getattr(args, "fragment", None) or ()))


def validate_command(args: argparse.Namespace) -> int:
    """`hil validate`; argparse attributes: series, kernel, topology (list), select, out, jobs,
    tested_by, and as for `hil run`: accel, timeout, idle_timeout, retries."""
    from harness import commands
    from harness.cell.request import kernel_label
    from harness.kernels.kconfig import load_fragments
    from harness.paths import REPO_ROOT
    from harness.results.known_issues import KNOWN_ISSUES_FILE
    from harness.rundir import claim_out_dir
    from harness.validate.findings import entry_line, findings
    from harness.validate.report import Validation, report_json, report_text

    progress = commands.progress
    inputs = check_inputs(args, commands.RUNS_ROOT, progress)
    try:
        load_fragments(variant(args))  # a wrong --fragment is a usage error, found before any work
    except ConfigError as exc:
        raise ConfigError(str(exc), "--fragment") from None
    signer = signer_line(getattr(args, "tested_by", None), REPO_ROOT)
    out = claim_out_dir(inputs.out)
    files = prefix_files(inputs.series, inputs.patches, out / "patches")
    for path, content in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    fragments = variant(args)
    spec_label = kernel_label(inputs.spec, fragments, None)
    base = build_outcome(inputs.spec, None, progress, fragments)
    if not base.ok:
        raise InfraError(f"the base {inputs.spec} does not build: {base.error}")

    def checkpatch(patch: SeriesPatch) -> CheckpatchResult:
        file = (
            out
            / "patches"
            / f"{patch.index:04d}-{re.sub(r'[^A-Za-z0-9]+', '-', patch.subject)[:52].strip('-')}.patch"
        )
        file.write_bytes(patch.message)
        return run_checkpatch(inputs.tree, file, has_history=inputs.has_history)

    with am_repository(inputs.tree, inputs.patches) as am:
        results = validate_patches(
            inputs.patches,
            [path for path, _ in files],
            base,
            am=am,
            checkpatch=checkpatch,
            build=lambda prefix: build_outcome(inputs.spec, prefix, progress, fragments),
            progress=progress,
        )
    last = results[-1]
    base_matrix = series_matrix = found = None
    skipped = ""
    if last.build is not None and last.build.ok:
        base_matrix = run_matrix(
            args, _cells(inputs.spec, spec_label, inputs.topologies), out / "base", None, progress
        )
        label = kernel_label(inputs.spec, fragments, inputs.series)
        series_matrix = run_matrix(
            args, _cells(inputs.spec, label, inputs.topologies), out / "series", files[-1][0], progress
        )
        found = findings(base_matrix, series_matrix)
    else:
        skipped = "the tree with the whole series applied does not build"
    known_text = KNOWN_ISSUES_FILE.read_text(encoding="utf-8") if KNOWN_ISSUES_FILE.is_file() else ""
    lines = {u.test: entry_line(known_text, u.test) for u in (found.updates if found else ())}
    ignored = next((r.checkpatch.ignored for r in results if r.checkpatch and r.checkpatch.ignored), ())
    validation = Validation(
        inputs.series,
        inputs.spec,
        base.version,
        tuple(results),
        base_matrix,
        series_matrix,
        found,
        ignored,
        skipped,
        lines,
    )
    text = report_text(validation, signer)
    (out / "report.txt").write_text(text, encoding="utf-8")
    (out / "report.json").write_text(report_json(validation, signer, out), encoding="utf-8")
    print(text, end="")
    print(
        f"report: {out / 'report.txt'} (report.json; matrices {out / 'base'}, {out / 'series'}: index.html)"
    )
    return validation.exit_code()

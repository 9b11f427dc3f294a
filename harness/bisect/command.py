"""`hil bisect`: the real wiring of the bisect loop (kernels through the build cache, cells through
run_prepared) and what the user reads at the end.

    hil bisect --kernel tree:PATH --good REV --bad REV --topology T -k EXPR [--bad-on ...] [--out DIR]
    hil bisect --kernel src:debian-7.2 --series mine.mbox --topology T -k EXPR [--bad-on ...] [--out DIR]

A commit of a range is built from a clone of the user's repository in the cache (`git clone --shared`:
the user's checkout and repository are never written to), checked out at that commit: kbuild then
reuses the previous step's objects for what did not change (build.py seeds a build from the newest one
of the same tree). The clone is locked for the whole bisect. A series prefix is an ordinary `--series`
build of the base. Exit status: 0 when one first bad candidate is named, 1 when skips leave several,
2 bad input (also a bad end that is not bad or a good end that is not good), 3 an end that cannot be
measured.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness.bisect.candidates import Candidate, Plan, check_kernel_tree, merge_hint, range_plan, series_plan
from harness.bisect.classify import BAD_ON_CHOICES
from harness.bisect.orchestrate import BisectOutcome, BuildFailed, answer_lines, run_bisect
from harness.errors import BuildError, ConfigError, one_value
from harness.kernels.spec import DebianSource, LocalTree, parse_spec
from harness.validate.series_input import check_series

if TYPE_CHECKING:
    from harness.cell.execute import PreparedKernel
    from harness.cell.request import CellResult
    from harness.topology import Topology

Progress = Callable[[str], None]


def plan_from_args(args: argparse.Namespace, out: Path, progress: Progress = lambda _m: None) -> Plan:
    """The candidates, every cheap check done (ConfigError naming the flag); nothing built."""
    kernel = one_value(getattr(args, "kernel", None), "--kernel")
    mbox = getattr(args, "series", None)
    good, bad = getattr(args, "good", None), getattr(args, "bad", None)
    if mbox:
        if good or bad:
            raise ConfigError(
                "--series bisects the patches on top of --kernel; drop it", "--good" if good else "--bad"
            )
        spec = parse_spec(kernel, series=Path(mbox))  # ConfigError for a kernel that is not built here
        assert isinstance(spec, DebianSource | LocalTree)
        path = Path(mbox).expanduser().resolve()
        plan = series_plan(kernel, path, out / "series")
        # A patch that does not apply is bad input, found before any build (not a skip at its step).
        check_series(kernel, path, progress)
        return plan
    if not good or not bad:
        raise ConfigError(
            "a range bisect needs --good REV and --bad REV (or --series MBOX)", "--bad" if good else "--good"
        )
    spec = parse_spec(kernel)
    if not isinstance(spec, LocalTree):
        raise ConfigError(f"{kernel}: --good/--bad name commits of a tree:PATH kernel", "--kernel")
    plan = range_plan(spec.path, good, bad)
    check_kernel_tree(Path(plan.inputs["tree"]), plan.inputs["bad"])
    return plan


def default_out(runs_root: Path, topology: str, kernel: str) -> Path:
    from harness.rundir import slug

    return runs_root / f"{datetime.now().astimezone():%Y%m%d-%H%M%S}-bisect-{slug(topology)}-{slug(kernel)}"


def clone_dir(tree: Path) -> Path:
    from harness.kernels import cache

    return cache.kernels_root() / "bisect-trees" / hashlib.sha256(str(tree).encode()).hexdigest()[:16]


@contextmanager
def bisect_clone(tree: Path, progress: Progress) -> Iterator[Path]:
    """A clone of `tree` that shares its objects, held (locked) for one bisect at a time."""
    from harness.kernels import cache
    from harness.kernels.gitutil import git

    clone = clone_dir(tree)
    with cache.locked(f"bisect-{clone.name}", progress=progress):
        if not (clone / ".git").is_dir():
            with cache.atomic_dir(clone) as tmp:
                git(tmp.parent, "clone", "--shared", "--no-checkout", "--quiet", str(tree), str(tmp))
            progress(f"bisect clone of {tree}: {clone}")
        yield clone


def checkout(clone: Path, sha: str) -> None:
    from harness.kernels.gitutil import git

    git(clone, "checkout", "--detach", "--force", "--quiet", sha)
    git(clone, "clean", "-ffdxq")


def _builder(
    plan: Plan, clone: Path | None, accel: str
) -> Callable[[Candidate], PreparedKernel | BuildFailed]:
    from harness.commands import prepared_kernels

    def build(candidate: Candidate) -> PreparedKernel | BuildFailed:
        if clone is not None:
            checkout(clone, candidate.key)
            spec = f"tree:{clone}"
        else:
            spec = plan.inputs["base"]
        try:
            return prepared_kernels([spec], candidate.series, accel)[spec]
        except BuildError as exc:
            return BuildFailed(str(exc), exc.log)

    return build


def _runner(
    args: argparse.Namespace, topo: Topology, progress: Progress
) -> Callable[[Candidate, PreparedKernel, Path], CellResult]:
    from harness.cell.execute import run_prepared
    from harness.cell.request import CellRequest
    from harness.rundir import claim_out_dir

    def run(candidate: Candidate, kernel: PreparedKernel, cell_dir: Path) -> CellResult:
        req = CellRequest(
            topology=one_value(args.topology, "--topology"),
            kernel_spec=kernel.spec,
            select=args.select,
            timeout=args.timeout,
            idle_timeout=args.idle_timeout,
            invocation=("./hil", *sys.argv[1:]),
            series=candidate.series,
        )
        return run_prepared(req, topo, kernel, claim_out_dir(cell_dir), 0, progress)

    return run


def bisect_command(args: argparse.Namespace) -> int:
    """`hil bisect`; expects argparse attributes kernel, good, bad, series, topology, select, bad_on,
    out, timeout, idle_timeout, accel (see the module docstring for the flags)."""
    from harness import commands
    from harness import topology as t

    progress = commands.progress
    topology = one_value(getattr(args, "topology", None), "--topology")
    if topology == "all":
        raise ConfigError("a bisect is pinned to one topology", "--topology")
    topo = t.load_topology(topology)
    bad_on = getattr(args, "bad_on", None)
    if bad_on is not None and bad_on not in BAD_ON_CHOICES:
        raise ConfigError(f"{bad_on!r}: one of {', '.join(BAD_ON_CHOICES)}", "--bad-on")
    kernel = one_value(getattr(args, "kernel", None), "--kernel")
    out = Path(args.out) if getattr(args, "out", None) else default_out(commands.RUNS_ROOT, topology, kernel)
    plan = plan_from_args(args, out, progress)
    settings = {"topology": topology, "select": args.select or ""}
    progress(
        f"bisect over {len(plan.candidates) - 1} {'commits' if plan.kind == 'range' else 'patches'} in {out} "
        f"(interrupted? the same command with --out {out} resumes)"
    )
    tree = Path(plan.inputs["tree"]) if plan.kind == "range" else None
    with bisect_clone(tree, progress) if tree is not None else nullcontext(None) as clone:
        outcome = run_bisect(
            plan,
            _builder(plan, clone, args.accel),
            _runner(args, topo, progress),
            out,
            bad_on=bad_on,
            settings=settings,
            progress=progress,
        )
    for line in report_lines(outcome):
        print(line)
    if outcome.answer.exact:
        _bundle_first_bad(outcome, out)
    return 0 if outcome.answer.exact else 1


def _bundle_first_bad(outcome: BisectOutcome, out: Path) -> None:
    """The first bad step's cell as a bundle, the thing to attach to the report."""
    from harness.bundle.make import make_bundle

    ((_candidate, step),) = outcome.first_bad
    if step is None or not step.cell:
        return
    bundle = out / "first-bad.tar.gz"
    if not bundle.exists():
        make_bundle(Path(step.cell), bundle)
    print(f"bundle: {bundle} (`./hil reproduce {bundle}` reruns that step anywhere)")


def report_lines(outcome: BisectOutcome) -> list[str]:
    lines = answer_lines(outcome)
    plan = outcome.plan
    if plan.kind == "range" and outcome.answer.exact:
        hint = merge_hint(Path(plan.inputs["tree"]), outcome.first_bad[0][0].key)
        if hint:
            lines.append(hint)
    lines.append(f"steps: {outcome.record.path}")
    return lines

"""`hil` command line. The only place that turns errors into messages and exit codes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence

from harness.errors import ConfigError, HilError, InfraError
from harness.paths import REPO_ROOT

EXIT_USAGE = 2
EXIT_INFRA = 3
# Not a verdict: CI must never read a bug in the harness as "tests failed" (1) or as a kernel
# crash (3), so it gets a status of its own.
EXIT_INTERNAL = 4

# The default job shows what the tool is for: every shipped topology on a kernel built with the
# project's config (importer, routing, data and revocation tests need its build tree).
DEFAULT_TOPOLOGY = "all"
DEFAULT_KERNEL = "src:debian-7.2"
STOCK_KERNEL = "debian:7.2"

EXIT_STATUS_HELP = f"""\
exit status:
  0  passed
  1  failed (a test failed, a known issue unexpectedly passed, -k matched nothing, or a
     regression against --baseline)
  {EXIT_USAGE}  usage or configuration error (nothing was started)
  {EXIT_INFRA}  crashed, hung or infra-error (the worst cell of a matrix decides)
  {EXIT_INTERNAL}  internal error: a bug in p2p-hil itself (traceback on stderr), not a verdict
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil",
        description="Hardware-in-the-loop tests for Linux PCIe peer-to-peer DMA on QEMU machines.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="boot a topology with a kernel and run the in-guest tests",
        description="Boot topologies with kernels and run the in-guest tests.\n"
        f"With no arguments: every shipped topology on {DEFAULT_KERNEL} (built with the project's\n"
        "config and cached; the first build takes a while).\n"
        f"The stock Debian kernel is one flag away: --kernel {STOCK_KERNEL}.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--topology",
        "-t",
        action="append",
        help="shipped name, path to a YAML file, or 'all': every shipped topology; repeatable "
        f"(default {DEFAULT_TOPOLOGY})",
    )
    run.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="run every variant of each topology over these values: cpu, iommu, iommu_passthrough, smp, "
        "memory, acs.<root port>; repeatable (the variants are the product)",
    )
    run.add_argument(
        "--kernel",
        action="append",
        help="debian:7.2, src:debian-7.2, tree:PATH or a bzImage path; repeat it for a topology x kernel "
        f"matrix (default {DEFAULT_KERNEL}; the stock Debian kernel: --kernel {STOCK_KERNEL})",
    )
    run.add_argument("--series", help="mbox patch series to apply (src: and tree: kernels)")
    run.add_argument(
        "--fragment",
        action="append",
        default=[],
        metavar="NAME",
        help="kernel variant: extra config fragment from kernels/configs (e.g. debug), as for `hil kernel "
        "build`; applies to every src:/tree: kernel and names the variant in every report; repeatable",
    )
    run.add_argument(
        "--race-seconds",
        type=float,
        metavar="S",
        help="how long each bounded race test runs (default: the test's own, 10 s)",
    )
    run.add_argument(
        "--kselftest",
        action="append",
        default=[],
        metavar="NAME",
        help="also run the kernel's own selftests of tools/testing/selftests/NAME (vfio, iommu), built on "
        "the host from the kernel under test; repeatable",
    )
    run.add_argument("-k", dest="select", metavar="EXPR", help="pytest -k expression for the in-guest tests")
    run.add_argument(
        "--out",
        help="results directory, new or empty: the cell's (default runs/<time>-<topology>-<kernel>, with "
        "_2, _3, ... when another run took that name) or, for more than one cell, the matrix's (default "
        "runs/<time>-matrix: a directory per cell, matrix.json, junit.xml, kcidb.json, index.html)",
    )
    run.add_argument(
        "-j",
        "--jobs",
        type=int,
        help="cells run at once (default: fitted to the host's cores and the VMs' vCPUs)",
    )
    run.add_argument(
        "--resume",
        metavar="DIR",
        help="complete the matrix in DIR: run only its cells that are missing or ended in infra-error "
        "(give the same arguments as the run that made it)",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="rerun a cell's failed tests up to N times in a fresh VM; a test that then passes is "
        "reported flaky, never passed (default 0)",
    )
    run.add_argument(
        "--shard",
        metavar="K/N",
        help="run the K-th of N deterministic parts of the cells (balanced on --baseline's durations)",
    )
    run.add_argument(
        "--baseline",
        metavar="DIR",
        help="an earlier matrix directory: compare with it at the end (exit 1 on a regression)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        help="deadline for the whole cell, seconds (default 900, 2700 with --fragment debug; plus 900 per "
        "--kselftest directory)",
    )
    run.add_argument(
        "--idle-timeout",
        type=float,
        default=120.0,
        help="a guest silent this long is reported as hung (seconds)",
    )
    run.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print, per cell, the topology, the kernel (cached or to be fetched/built) and the commands "
        "that would run; fetch, build, probe, boot and create nothing",
    )

    _add_matrix_tools(sub)
    _add_reproduction_tools(sub)

    test = sub.add_parser("test", help="run the project's own tests (pytest arguments may follow)")
    test.add_argument("--fast", action="store_true", help="skip tests that boot VMs or build kernels")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)

    topo = sub.add_parser("topology", help="list, render, check or explain topologies")
    tsub = topo.add_subparsers(dest="action", required=True, metavar="ACTION")
    tsub.add_parser("list", help="shipped topologies")
    for name, text in (
        ("render", "the exact QEMU command line"),
        ("check", "start QEMU paused and compare the live PCI tree with the definition"),
        ("explain", "expected p2p route for every exporter/importer pair"),
    ):
        p = tsub.add_parser(name, help=text)
        p.add_argument("topology", help="shipped name or path to a YAML file")

    kern = sub.add_parser("kernel", help="fetch or build kernels")
    ksub = kern.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = ksub.add_parser("fetch", help="download a stock Debian kernel (e.g. debian:7.2)")
    fetch.add_argument("spec")
    build = ksub.add_parser("build", help="build src:debian-7.2, src:debian-7.3 or tree:PATH")
    build.add_argument("spec")
    build.add_argument("--series", help="mbox patch series applied with git am")
    build.add_argument(
        "--fragment",
        action="append",
        default=[],
        help="extra config fragment from kernels/configs (e.g. debug); repeatable",
    )
    return parser


def _add_matrix_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """compare, merge, ci: what a nightly matrix needs besides `hil run`."""
    cmp = sub.add_parser(
        "compare",
        help="compare two matrix directories: regressions, fixes, new, vanished, flaky",
    )
    cmp.add_argument("old")
    cmp.add_argument("new")
    cmp.add_argument("--json", metavar="FILE", help="also write the comparison as JSON to FILE")

    merge = sub.add_parser(
        "merge", help="merge the directories of `hil run --shard` into one matrix directory"
    )
    merge.add_argument("shards", nargs="+", metavar="DIR")
    merge.add_argument("--out", required=True, help="the merged matrix directory, new or empty")
    merge.add_argument("--baseline", metavar="DIR", help="compare the merged matrix with an earlier one")

    ci = sub.add_parser("ci", help="write a pipeline for an existing CI engine that runs a sharded matrix")
    ci.add_argument("engine", choices=("gitlab", "github"))
    ci.add_argument("--shards", type=int, default=2, help="machines the cells are spread over (default 2)")
    ci.add_argument(
        "run_args", nargs=argparse.REMAINDER, help="-- then the `hil run` arguments of the matrix"
    )


def _add_reproduction_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """bundle, reproduce, bisect, validate: a report reproduced, a culprit found, a series checked."""
    from harness.bundle.command import add_bundle_arguments, add_reproduce_arguments

    add_bundle_arguments(
        sub.add_parser("bundle", help="pack a cell's directory into one archive that reproduces it elsewhere")
    )
    add_reproduce_arguments(
        sub.add_parser("reproduce", help="rerun a bundled cell here and compare its outcomes test by test")
    )

    bisect = sub.add_parser(
        "bisect",
        help="find the commit or patch that first makes the selected tests fail on one topology",
        description="Bisect a git range of a kernel tree (--kernel tree:PATH --good REV --bad REV) or the "
        "patches of a series on a base kernel (--kernel src:debian-7.2 --series mbox), booting one topology "
        "with a test selection at each step. Build failures and infra errors are skipped (git bisect skip).",
    )
    bisect.add_argument(
        "--kernel", required=True, help="tree:PATH with --good/--bad, or a base kernel with --series"
    )
    bisect.add_argument("--good", metavar="REV", help="a revision where the tests pass")
    bisect.add_argument("--bad", metavar="REV", help="a revision where they fail")
    bisect.add_argument("--series", help="mbox: bisect over its patches on top of --kernel")
    bisect.add_argument("--topology", "-t", required=True, help="the one topology every step boots")
    bisect.add_argument(
        "-k", dest="select", metavar="EXPR", help="pytest -k expression: the tests that decide"
    )
    bisect.add_argument(
        "--bad-on",
        choices=("failed", "crashed", "hung", "any"),
        help="what counts as bad (default: what the bad end did)",
    )
    _cell_options(
        bisect, out_help="the bisect's directory: bisect.json and a cell per step (rerun to resume)"
    )

    validate = sub.add_parser(
        "validate",
        help="check a patch series before posting: per patch, base vs base+series, a report",
    )
    validate.add_argument("series", metavar="SERIES", help="the series as an mbox (git format-patch output)")
    validate.add_argument("--kernel", required=True, help="the base: src:debian-7.2 or tree:PATH")
    validate.add_argument("--topology", "-t", action="append", default=[], help="repeatable (default: all)")
    validate.add_argument(
        "-k", dest="select", metavar="EXPR", help="pytest -k expression for the in-guest tests"
    )
    validate.add_argument("-j", "--jobs", type=int, help="cells run at once")
    validate.add_argument("--retries", type=int, default=0, help="as for hil run")
    validate.add_argument(
        "--fragment",
        action="append",
        default=[],
        metavar="NAME",
        help="build the base and the series as this kernel variant (e.g. debug), as for hil run",
    )
    validate.add_argument(
        "--tested-by", metavar="'NAME <EMAIL>'", help="for the Tested-by: line (default git config)"
    )
    _cell_options(
        validate,
        out_help="report.txt, report.json, base/ and series/ matrices (default runs/<time>-validate)",
    )


def _cell_options(parser: argparse.ArgumentParser, *, out_help: str) -> None:
    """What a command that boots cells takes from `hil run`'s options."""
    parser.add_argument("--out", help=out_help)
    parser.add_argument("--timeout", type=float, default=900.0, help="deadline for each cell, seconds")
    parser.add_argument("--idle-timeout", type=float, default=120.0, help="a guest silent this long is hung")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")


def _cmd_test(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    if args.fast:
        argv += ["-m", "not vm and not build"]
    extra = [a for a in args.pytest_args if a != "--"]
    proc = subprocess.run([*argv, *extra], cwd=REPO_ROOT, check=False)
    return proc.returncode


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "test":
        return _cmd_test(args)
    if args.command == "topology":
        from harness.commands import topology_command

        return topology_command(args)
    if args.command == "kernel":
        from harness.commands import kernel_command

        return kernel_command(args)
    if args.command in ("compare", "merge", "ci"):
        from harness import matrix_commands

        return matrix_commands.COMMANDS[args.command](args)
    if args.command == "bundle":
        from harness.bundle.command import bundle_command

        return bundle_command(args)
    if args.command == "reproduce":
        from harness.bundle.command import reproduce_command

        return reproduce_command(args)
    if args.command == "bisect":
        from harness.bisect.command import bisect_command

        return bisect_command(args)
    if args.command == "validate":
        from harness.validate.command import validate_command

        return validate_command(args)
    from harness.commands import run_command

    return run_command(args)


def _with_notes(exc: BaseException) -> str:
    """The message plus what callers added on the way up (exc.add_note), e.g. why nothing was booted."""
    return "\n".join([str(exc), *getattr(exc, "__notes__", ())])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args: list[str] = []
    if argv[:1] == ["ci"] and "--" in argv:
        cut = argv.index("--")
        argv, run_args = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    if args.command == "ci":
        args.run_args = run_args
    if args.command == "run":
        # Not argparse defaults: "append" would add to them.
        args.kernel = args.kernel or [DEFAULT_KERNEL]
        args.topology = args.topology or [DEFAULT_TOPOLOGY]
    try:
        return dispatch(args)
    except ConfigError as exc:
        print(f"hil: error: {_with_notes(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except InfraError as exc:
        print(f"hil: infrastructure failure: {_with_notes(exc)}", file=sys.stderr)
        return EXIT_INFRA
    except HilError as exc:
        print(f"hil: {_with_notes(exc)}", file=sys.stderr)
        return EXIT_INFRA
    except KeyboardInterrupt:
        print("hil: interrupted", file=sys.stderr)
        if threading.active_count() > 1:
            # Cells still running on other threads: leave now; each VM's guardian sees us go and kills
            # QEMU and removes its scratch, and `--resume` runs those cells again.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + 2)
        return 128 + 2
    except BrokenPipeError:
        # `hil topology render x | head` must not print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # anything not raised on purpose is a bug in the harness
        traceback.print_exc(file=sys.stderr)
        print(f"hil: internal error (a bug in p2p-hil): {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL

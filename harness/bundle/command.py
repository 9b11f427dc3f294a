"""`hil bundle RUN_DIR -o FILE` and `hil reproduce FILE [--out DIR]`: the actions behind the subcommands
(the CLI adds the arguments with add_*_arguments and calls *_command; errors map to exit codes there).

reproduce runs the cell the way `hil run` does (the kernel fetched or built through the caches first,
then harness.cell.execute.run_prepared) and exits 0 when every original outcome reproduced, 1 when
some differ, 2 for a bad bundle (ConfigError), 3 when the reproduction could not run.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness.commands import progress

if TYPE_CHECKING:
    from harness.bundle.read import Bundle

EXIT_REPRODUCED, EXIT_DIFFERS, EXIT_INFRA = 0, 1, 3
COMPARISON = "comparison.txt"


def add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a cell's directory (runs/<...> or <matrix>/<cell>)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the bundle to write (.tar.gz)")


def add_reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="FILE", help="a bundle made by `hil bundle`")
    parser.add_argument(
        "--out",
        help="directory for the reproduction, new or empty: inputs/, cell/ and comparison.txt "
        "(default runs/<time>-reproduce-<topology>-<kernel>)",
    )
    parser.add_argument(
        "--kernel",
        help="a kernel spec to use instead of the bundle's (e.g. tree:PATH of the same commit here)",
    )
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument(
        "--timeout", type=float, help="deadline for the cell, seconds (default: the original's)"
    )
    parser.add_argument("--idle-timeout", type=float, default=120.0, help="a guest silent this long is hung")


def bundle_command(args: argparse.Namespace) -> int:
    from harness.bundle.make import make_bundle
    from harness.bundle.read import read_bundle

    out = make_bundle(Path(args.run_dir), Path(args.output))
    with read_bundle(out) as bundle:  # what a reproduction will read: checked once here too
        man = bundle.manifest
        for note in man.notes:
            print(f"note: {note}")
        size = out.stat().st_size
        what = f"{man.topology} x {man.kernel_label}"
        print(f"bundle: {out} ({size / 1024:.0f} KiB, {len(man.files) + 1} files): {what}")
    return 0


def _out_dir(given: str | None, topology: str, kernel_label: str) -> Path:
    from harness import commands
    from harness.rundir import allocate_run_dir, check_out_dir, claim_out_dir

    if given is not None:
        check_out_dir(Path(given))
        return claim_out_dir(Path(given))
    now = datetime.now(UTC).astimezone()
    return allocate_run_dir(commands.RUNS_ROOT, f"reproduce-{topology}", kernel_label, now)


def reproduce_command(args: argparse.Namespace) -> int:
    from harness.bundle.read import read_bundle

    with read_bundle(Path(args.bundle)) as bundle:
        if args.out is not None:
            from harness.rundir import check_out_dir

            check_out_dir(Path(args.out))  # before anything is fetched or built
        return _reproduce(bundle, args)


def _reproduce(bundle: Bundle, args: argparse.Namespace) -> int:
    from harness import commands
    from harness.bundle.make import local_environment
    from harness.bundle.reproduce import environment_differences, outcome_comparison, reproduction
    from harness.cell.execute import run_prepared
    from harness.cell.request import CellRequest
    from harness.results.model import Verdict
    from harness.run import print_cell

    man = bundle.manifest
    original = bundle.original()
    out = _out_dir(args.out, man.topology, man.kernel_label)
    cell = reproduction(bundle, out / "inputs", args.kernel)
    progress(
        f"reproducing {man.topology} x {man.kernel_label} ({man.verdict} on {man.environment.host}) -> {out}"
    )
    for note in man.notes:
        progress(f"bundle note: {note}")
    variant = cell.options.fragments
    kernels = commands.prepared_kernels([cell.kernel_spec], cell.series, args.accel, variant)
    prepared = kernels[cell.kernel_spec]
    facts = prepared.facts
    here = local_environment(
        qemu_version=facts.qemu_version if facts else None,
        accelerator=facts.accel if facts else "",
        kernel=prepared.image,
    )
    differences = environment_differences(man, here)
    if args.kernel:
        differences.insert(0, f"kernel spec: was {man.kernel_spec}, now {args.kernel} (--kernel)")
    for line in differences:
        progress(f"warning: environment differs: {line}")
    req = CellRequest(
        topology=cell.topology_given,
        kernel_spec=cell.kernel_spec,
        select=cell.select,
        timeout=args.timeout or cell.timeout,
        idle_timeout=args.idle_timeout,
        invocation=("./hil", "reproduce", str(bundle.path)),
        series=cell.series,
        axes=cell.axes,
        fragments=variant,
        kselftests=cell.options.kselftests,
        race_seconds=cell.options.race_seconds,
    )
    result = run_prepared(req, cell.topology, prepared, out / "cell", 0, progress)
    print_cell(result, print)
    text, reproduced = outcome_comparison(
        original.records, result.records, verdicts=(original.verdict, result.verdict)
    )
    env_text = "".join(f"environment differs: {line}\n" for line in differences) or "environment: same\n"
    (out / COMPARISON).write_text(f"{env_text}\n{text}\n", encoding="utf-8")
    print(f"\ncompared with the original run ({man.environment.host}, {man.created_at}):")
    print(env_text + text)
    print(f"reproduction: {out}")
    if result.verdict is Verdict.INFRA_ERROR and original.verdict is not Verdict.INFRA_ERROR:
        return EXIT_INFRA
    return EXIT_REPRODUCED if reproduced else EXIT_DIFFERS

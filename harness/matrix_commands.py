"""The actions behind `hil compare`, `hil merge` and `hil ci`: matrices after (or around) the runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError, InfraError

if TYPE_CHECKING:
    from harness.matrix.document import Matrix


def _matrix(given: str, flag: str) -> Matrix:
    from harness.matrix.document import read_matrix

    try:
        return read_matrix(Path(given))
    except InfraError as exc:
        raise ConfigError(str(exc), flag) from None


def compare_command(args: argparse.Namespace) -> int:
    from harness.matrix.compare import compare, comparison_json, comparison_text, has_regressions
    from harness.results.write import write_text

    comparison = compare(_matrix(args.old, "OLD"), _matrix(args.new, "NEW"))
    print(comparison_text(comparison))
    if args.json:
        write_text(Path(args.json), comparison_json(comparison))
    return 1 if has_regressions(comparison) else 0


def merge_command(args: argparse.Namespace) -> int:
    from harness.matrix.compare import comparison_text, has_regressions
    from harness.matrix.merge import merge
    from harness.results.model import exit_code

    shards = [_matrix(given, "DIR") for given in args.shards]
    baseline = _matrix(args.baseline, "--baseline") if args.baseline else None
    merged, comparison = merge(shards, Path(args.out), ["./hil", *sys.argv[1:]], baseline)
    status = exit_code(merged.verdict)
    print(
        f"merged {len(shards)} shard(s), {len(merged.cells)} cell(s): {merged.verdict.value} -> {merged.dir}"
    )
    for cell in merged.missing:
        print(f"missing: {cell}")
    if comparison is not None:
        print(comparison_text(comparison))
        status = max(status, 1 if has_regressions(comparison) else 0)
    return status


def ci_command(args: argparse.Namespace) -> int:
    from harness.matrix.pipelines import ci_text
    from harness.paths import REPO_ROOT

    text = ci_text(args.engine, args.run_args, args.shards, REPO_ROOT)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compare": compare_command,
    "merge": merge_command,
    "ci": ci_command,
}

"""Per patch, in order: it applies (git am), checkpatch --strict, the tree builds with patches 1..i
(bisectability), and the compiler warnings it adds in the files it touched.

Applying, checkpatch and building are injected, so the sequence is tested with fakes; command.py wires
a small git repository for git am, the tree's checkpatch.pl and the kernel build cache. Every prefix is
built even after one fails: a series whose patch 2 breaks the build and patch 3 mends it must show
patch 2. A patch that does not apply ends the sequence: nothing after it exists to build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.validate.checkpatch import CheckpatchResult
from harness.validate.series_input import SeriesPatch
from harness.validate.warnings import CompilerWarning, new_warnings

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildOutcome:
    ok: bool
    warnings: tuple[CompilerWarning, ...] = ()
    log: Path | None = None
    error: str = ""
    version: str = ""


@dataclass(frozen=True)
class PatchResult:
    patch: SeriesPatch
    applies: bool | None  # None: not tried (an earlier patch did not apply)
    apply_error: str = ""
    checkpatch: CheckpatchResult | None = None
    build: BuildOutcome | None = None  # None: not built
    new_warnings: tuple[CompilerWarning, ...] = field(default=())

    @property
    def failures(self) -> list[str]:
        """What makes this patch fail validation, one phrase each (empty: it passed)."""
        found = []
        if self.applies is False:
            found.append("does not apply")
        elif self.applies is None:
            found.append("not tried (an earlier patch does not apply)")
        if self.checkpatch is not None and not self.checkpatch.clean:
            c = self.checkpatch
            found.append(
                f"checkpatch: {c.problem}"
                if c.problem
                else f"checkpatch {c.errors} errors, {c.warnings} warnings"
            )
        if self.build is not None and not self.build.ok:
            found.append("does not build")
        if self.new_warnings:
            found.append(f"{len(self.new_warnings)} new compiler warning(s)")
        return found


def _touched_suffix_match(warnings: Sequence[CompilerWarning], touched: Sequence[str]) -> list[str]:
    # A build of a tree outside the cache prints absolute paths: match them by their tail.
    return [w.file for w in warnings for t in touched if w.file == t or w.file.endswith("/" + t)]


def validate_patches(
    patches: Sequence[SeriesPatch],
    prefixes: Sequence[Path],
    base: BuildOutcome,
    *,
    am: Callable[[SeriesPatch], str | None],
    checkpatch: Callable[[SeriesPatch], CheckpatchResult],
    build: Callable[[Path], BuildOutcome],
    progress: Progress,
) -> list[PatchResult]:
    """`am` applies the next patch (None, or why it failed); `build` builds a prefix mbox."""
    results: list[PatchResult] = []
    stopped = False
    for patch, prefix in zip(patches, prefixes, strict=True):
        if stopped:
            results.append(PatchResult(patch, None))
            continue
        error = am(patch)
        style = checkpatch(patch)
        progress(f"{patch.label}: checkpatch --strict {style.counts} (errors/warnings/checks)")
        if error is not None:
            progress(f"{patch.label}: does not apply: {error.splitlines()[0] if error else ''}")
            results.append(PatchResult(patch, False, error, style))
            stopped = True
            continue
        progress(f"{patch.label}: building the tree with patches 1..{patch.index}")
        built = build(prefix)
        fresh: tuple[CompilerWarning, ...] = ()
        if built.ok:
            tails = set(_touched_suffix_match(built.warnings, patch.touched))
            relevant = [w for w in built.warnings if w.file in tails]
            fresh = tuple(new_warnings(base.warnings, relevant, tails))
        verdict = (
            "builds" if built.ok else f"DOES NOT BUILD ({built.error.splitlines()[0] if built.error else ''})"
        )
        progress(f"{patch.label}: {verdict}" + (f", {len(fresh)} new warning(s)" if fresh else ""))
        results.append(PatchResult(patch, True, "", style, built, fresh))
    return results

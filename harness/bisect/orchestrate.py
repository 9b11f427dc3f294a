"""The bisect loop: ask the state machine, build the candidate, run its cell, classify, record.

Building and running a cell are injected (`build`, `run_cell`), so the loop is tested with fakes and
the command wires the real kernel cache and run_prepared.

The ends are measured first, bad then good, and they are input, not steps of the search: an end that
cannot be measured (it did not build, or its cell was an infra-error) is an InfraError and is not
recorded, so the same command tries it again; a bad end that is not bad, or a good end that is not
good, is a ConfigError (exit 2) with the cell as evidence. That costs one or two cells, and only
those: nothing in the middle is built before both ends are known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from harness.bisect.candidates import Candidate, Plan, write_files
from harness.bisect.classify import BAD_ON_CHOICES, BUILD_FAILED, bad_verdicts, classify
from harness.bisect.record import BisectRecord, Step, open_record
from harness.bisect.search import Answer, Mark, next_step, steps_left
from harness.errors import ConfigError, InfraError
from harness.results.model import Verdict

K = TypeVar("K")


@dataclass(frozen=True)
class BuildFailed:
    """A candidate that could not be built: skipped, like `git bisect skip`."""

    reason: str
    log: Path | None = None


class CellOutcome(Protocol):
    """What the loop needs of a cell's result (harness.cell.request.CellResult has it)."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def verdict(self) -> Verdict: ...


Progress = Callable[[str], None]


@dataclass(frozen=True)
class BisectOutcome:
    """The answer: the first bad candidate, or the candidates it is one of, each with its step."""

    plan: Plan
    answer: Answer
    record: BisectRecord

    @property
    def first_bad(self) -> list[tuple[Candidate, Step | None]]:
        steps = {s.index: s for s in self.record.steps}
        return [(self.plan.candidates[i], steps.get(i)) for i in self.answer.first_bad]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no reason given"


def _fresh_cell_dir(out: Path, number: int, candidate: Candidate) -> Path:
    """The step's cell directory; what an interrupted attempt left there is kept beside it."""
    path = out / f"step-{number:02d}-{candidate.slug}"
    if path.exists():
        n = 1
        while (kept := path.with_name(f"{path.name}.interrupted-{n}")).exists():
            n += 1
        path.rename(kept)
    return path


def _check_ends(record: BisectRecord, plan: Plan, bad_on: str | None) -> None:
    """ConfigError when a recorded end is not what the user said it is (also on resume)."""
    steps = {s.index: s for s in record.steps}
    last = len(plan.candidates) - 1
    if last in steps and record.bad is None:
        record.bad = bad_verdicts(bad_on, Verdict(steps[last].verdict))
        record.save()
    good = steps.get(0)
    if good is not None and good.mark is not Mark.GOOD:
        what = "already bad" if good.mark is Mark.BAD else "not good"
        raise ConfigError(
            f"{plan.candidates[0].label} is {what}: its cell ended {good.verdict} ({good.why}), "
            f"see {good.cell}",
            "--good" if plan.kind == "range" else "--series",
        )


def run_bisect(
    plan: Plan,
    build: Callable[[Candidate], K | BuildFailed],
    run_cell: Callable[[Candidate, K, Path], CellOutcome],
    out: Path,
    *,
    bad_on: str | None,
    settings: Mapping[str, str],
    progress: Progress,
) -> BisectOutcome:
    """Bisect `plan` in `out` (resuming what bisect.json there records) to the first bad candidate.

    `settings` (topology, test selection, ...) join the plan's inputs: a resume must match them all."""
    if bad_on is not None and bad_on not in BAD_ON_CHOICES:
        raise ConfigError(f"{bad_on!r}: one of {', '.join(BAD_ON_CHOICES)}", "--bad-on")
    inputs = {**plan.inputs, **settings, "bad_on": bad_on or ""}
    record = open_record(out, inputs, [c.key for c in plan.candidates])
    write_files(plan)
    count = len(plan.candidates)
    if record.steps:
        progress(f"resuming the bisect in {out}: {len(record.steps)} step(s) recorded")
    while True:
        _check_ends(record, plan, bad_on)
        marks = record.marks()
        decision = next_step(count, marks)
        if isinstance(decision, Answer):
            return BisectOutcome(plan, decision, record)
        candidate = plan.candidates[decision.index]
        number = len(record.steps) + 1
        about = len(record.steps) + steps_left(count, marks)
        progress(f"step {number} of about {about}: testing {candidate.label}")
        step = _take_step(plan, record, candidate, number, build, run_cell, out, bad_on)
        record.add(step)
        where = f", cell {step.cell}" if step.cell else ""
        progress(f"step {number}: {candidate.label} is {step.mark.value} ({step.why}{where})")


def _take_step(
    plan: Plan,
    record: BisectRecord,
    candidate: Candidate,
    number: int,
    build: Callable[[Candidate], K | BuildFailed],
    run_cell: Callable[[Candidate, K, Path], CellOutcome],
    out: Path,
    bad_on: str | None,
) -> Step:
    built = build(candidate)
    if isinstance(built, BuildFailed):
        verdict, cell = BUILD_FAILED, None
        failure = f"{_first_line(built.reason)}" + (f" (log {built.log})" if built.log else "")
    else:
        result = run_cell(candidate, built, _fresh_cell_dir(out, number, candidate))
        verdict, cell, failure = result.verdict.value, str(result.run_dir), ""
    is_end = candidate.index in (0, len(plan.candidates) - 1)
    if is_end and verdict in (BUILD_FAILED, Verdict.INFRA_ERROR.value):
        raise InfraError(
            f"{candidate.label} (an end of the bisect) could not be measured: "
            f"{failure or f'infra-error, see {cell}'}; the same command resumes once that is fixed"
        )
    if candidate.index == len(plan.candidates) - 1:
        try:
            record.bad = bad_verdicts(bad_on, Verdict(verdict))
            mark, why = Mark.BAD, verdict
        except ConfigError as exc:
            # Recorded all the same: the measurement stands, and _check_ends reports it (now and on resume).
            mark, why = Mark.SKIP, str(exc)
    else:
        assert record.bad is not None, "the bad end is measured first"
        mark, why = classify(verdict, record.bad)
        if failure:
            why = f"{why}: {failure}"
    return Step(number, candidate.index, candidate.key, candidate.label, cell, verdict, mark, why)


def answer_lines(outcome: BisectOutcome) -> list[str]:
    """The end of a bisect as the user reads it."""
    kind = "commit" if outcome.plan.kind == "range" else "patch"
    steps = len(outcome.record.steps)
    if outcome.answer.exact:
        candidate, step = outcome.first_bad[0]
        lines = [f"first bad {kind}: {candidate.label} (after {steps} steps)"]
        if step is not None and step.cell:
            lines.append(f"  its cell: {step.cell} ({step.verdict})")
        return lines
    lines = [f"the first bad {kind} is one of (skipped candidates hide which; after {steps} steps):"]
    for candidate, step in outcome.first_bad:
        detail = f"{step.mark.value}: {step.why}" if step is not None else "not tested"
        lines.append(
            f"  {candidate.label} ({detail}" + (f", cell {step.cell})" if step and step.cell else ")")
        )
    return lines

"""A cell's verdict -> good, bad or skip (pure).

What is bad is a set of verdicts. `--bad-on failed|crashed|hung` names one, `any` all three; without
it, the verdict measured at the bad end decides: failed means {failed}; crashed or hung means
{crashed, hung} (a kernel that dies, whether by a report or by a hang, is the symptom being chased).
A passed cell is good. A verdict outside the set (a crash while chasing a failed test, or a failed test
while chasing a crash) is skip: a different problem hides whether this candidate has the one bisected.
An infra-error cell and a candidate that did not build are skip, like `git bisect skip`.
"""

from __future__ import annotations

from harness.bisect.search import Mark
from harness.errors import ConfigError
from harness.results.model import Verdict

BAD_ON_CHOICES = ("failed", "crashed", "hung", "any")
BUILD_FAILED = "build-failed"  # the verdict recorded for a candidate that never became a cell
_DEATH = frozenset({Verdict.CRASHED, Verdict.HUNG})


def bad_verdicts(bad_on: str | None, at_bad_end: Verdict) -> frozenset[Verdict]:
    """The verdicts that count as bad. ConfigError when the bad end is not bad by that measure."""
    if bad_on is not None and bad_on not in BAD_ON_CHOICES:
        raise ConfigError(f"{bad_on!r}: one of {', '.join(BAD_ON_CHOICES)}", "--bad-on")
    if bad_on == "any":
        wanted = frozenset({Verdict.FAILED, Verdict.CRASHED, Verdict.HUNG})
    elif bad_on is not None:
        wanted = frozenset({Verdict(bad_on)})
    elif at_bad_end in _DEATH:
        wanted = _DEATH
    else:
        wanted = frozenset({Verdict.FAILED})
    if at_bad_end not in wanted:
        names = "/".join(sorted(v.value for v in wanted))
        raise ConfigError(
            f"the cell at the bad end ended {at_bad_end.value}, not {names}: nothing to bisect", "--bad"
        )
    return wanted


def classify(verdict: str, bad: frozenset[Verdict]) -> tuple[Mark, str]:
    """(mark, why) for a step's verdict (a Verdict's value, or BUILD_FAILED)."""
    if verdict == BUILD_FAILED:
        return Mark.SKIP, "did not build"
    # Verdict(...) rather than comparing strings: an Enum member hashes by its name, not its value.
    measured = Verdict(verdict)
    if measured is Verdict.PASSED:
        return Mark.GOOD, "passed"
    if measured is Verdict.INFRA_ERROR:
        return Mark.SKIP, "infra-error: the cell could not run"
    if measured in bad:
        return Mark.BAD, measured.value
    names = "/".join(sorted(v.value for v in bad))
    return Mark.SKIP, f"{measured.value}, which is not the {names} being bisected"

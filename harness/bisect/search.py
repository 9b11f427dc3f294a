"""The bisect state machine, pure: candidates 0..n-1 in history order, where 0 is the known-good end
(--good, or the base without any patch) and n-1 the known-bad end (--bad, or the whole series).

The bad end is measured first (it decides what "bad" means when --bad-on is not given), then the good
end; then the untested candidate nearest the middle of the narrowest good..bad interval. A skipped
candidate (it did not build, or its cell could not run) is never chosen again, like `git bisect skip`;
when only skipped candidates are left between the last good and the first bad, the answer is the set
"one of these".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Mark(StrEnum):
    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"


@dataclass(frozen=True)
class Next:
    """Test this candidate next."""

    index: int


@dataclass(frozen=True)
class Answer:
    """The first bad candidate: exactly one, or, when skips hide it, one of several (in order)."""

    first_bad: tuple[int, ...]

    @property
    def exact(self) -> bool:
        return len(self.first_bad) == 1


def _interval(count: int, marks: Mapping[int, Mark]) -> tuple[int, int]:
    """(last good, first bad): the narrowest interval the first bad is known to lie in (lo excluded)."""
    hi = min((i for i, m in marks.items() if m is Mark.BAD), default=count - 1)
    lo = max((i for i, m in marks.items() if m is Mark.GOOD and i < hi), default=0)
    return lo, hi


def next_step(count: int, marks: Mapping[int, Mark]) -> Next | Answer:
    """What to do next. The ends must have been marked good (0) and bad (count-1) before the middle:
    a caller that recorded anything else there has an input error to report, not a step to take."""
    if count < 2:
        raise ValueError(f"a bisect needs a good and a bad end, got {count} candidate(s)")
    last = count - 1
    if last not in marks:
        return Next(last)
    if 0 not in marks:
        return Next(0)
    if marks[last] is not Mark.BAD or marks[0] is not Mark.GOOD:
        raise ValueError(f"the ends are marked {marks[0]} and {marks[last]}, not good and bad")
    lo, hi = _interval(count, marks)
    untested = [i for i in range(lo + 1, hi) if i not in marks]
    if not untested:
        return Answer((*(i for i in range(lo + 1, hi) if marks.get(i) is Mark.SKIP), hi))
    middle = (lo + hi) / 2
    return Next(min(untested, key=lambda i: (abs(i - middle), i)))


def steps_left(count: int, marks: Mapping[int, Mark]) -> int:
    """About how many more cells this bisect needs (skips can add some): the unmeasured ends plus a
    binary search over the untested candidates of the current interval."""
    last = count - 1
    ends = (last not in marks) + (0 not in marks)
    lo, hi = _interval(count, marks)
    untested = sum(1 for i in range(lo + 1, hi) if i not in marks)
    return ends + math.ceil(math.log2(untested + 1))

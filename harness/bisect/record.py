"""bisect.json: the inputs of a bisect and every step taken, rewritten (atomically) after each step.

Rerunning the same command with the same --out reads it back and goes on where it stopped: a step is
recorded only once its cell has a verdict, so an interrupted step is simply taken again. Different
inputs in a directory that already holds a bisect are a usage error, never a silent mix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import jsonfile
from harness.bisect.search import Mark
from harness.errors import ConfigError
from harness.results.model import Verdict

RECORD = "bisect.json"
SCHEMA = 1


@dataclass(frozen=True)
class Step:
    """One tested candidate: `cell` is its cell directory (None when it did not build), `verdict` the
    cell's verdict or classify.BUILD_FAILED, `mark` what that means for the bisect and `why`."""

    step: int
    index: int
    key: str
    label: str
    cell: str | None
    verdict: str
    mark: Mark
    why: str


@dataclass
class BisectRecord:
    path: Path
    inputs: dict[str, str]
    keys: list[str]
    bad: frozenset[Verdict] | None = None
    steps: list[Step] = field(default_factory=list)

    def marks(self) -> dict[int, Mark]:
        return {s.index: s.mark for s in self.steps}

    def add(self, step: Step) -> None:
        self.steps.append(step)
        self.save()

    def save(self) -> None:
        jsonfile.write_record(
            self.path,
            {
                "schema": SCHEMA,
                "inputs": self.inputs,
                "candidates": self.keys,
                "bad_verdicts": sorted(v.value for v in self.bad) if self.bad is not None else None,
                "steps": [asdict(s) for s in self.steps],
            },
        )


def _differences(old: Mapping[str, Any], new: Mapping[str, str]) -> list[str]:
    return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))


def _parse(path: Path, data: Any) -> BisectRecord:
    try:
        steps = [Step(**{**s, "mark": Mark(s["mark"])}) for s in data["steps"]]
        bad = data.get("bad_verdicts")
        return BisectRecord(
            path,
            dict(data["inputs"]),
            list(data["candidates"]),
            frozenset(Verdict(v) for v in bad) if bad is not None else None,
            steps,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a bisect record ({type(exc).__name__}: {exc})", "--out") from None


def open_record(out: Path, inputs: Mapping[str, str], keys: Sequence[str]) -> BisectRecord:
    """The record of this bisect in `out`: read back when it is there (resume), else a new one in a
    new or empty directory."""
    path = out / RECORD
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable bisect record: {exc}", "--out") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ConfigError(f"{path}: not a bisect record of schema {SCHEMA}", "--out")
        record = _parse(path, data)
        changed = _differences(record.inputs, inputs)
        if changed:
            raise ConfigError(
                f"{out} holds a bisect of other inputs (differing: {', '.join(changed)}); "
                "give the same arguments to resume it, or another --out",
                "--out",
            )
        if record.keys != list(keys):
            raise ConfigError(f"{out} holds a bisect over other candidates; give another --out", "--out")
        return record
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and holds no bisect ({RECORD}); give a new or empty --out", "--out")
    record = BisectRecord(path, dict(inputs), list(keys))
    record.save()
    return record

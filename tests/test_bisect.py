"""Bisect: the state machine, the classification, and the loop over real small git histories and mbox
series with a fake build (the file's content at the candidate) and a fake cell (fails on a marker)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from git_history import git

from harness.bisect.candidates import Candidate, Plan, merge_hint, range_plan, series_plan
from harness.bisect.classify import BUILD_FAILED, bad_verdicts, classify
from harness.bisect.orchestrate import BuildFailed, answer_lines, run_bisect
from harness.bisect.search import Answer, Mark, Next, next_step, steps_left
from harness.errors import ConfigError, InfraError
from harness.results.model import Verdict

G, B, S = Mark.GOOD, Mark.BAD, Mark.SKIP


# --- the state machine -------------------------------------------------------------------------


def test_the_ends_come_first_bad_then_good() -> None:
    assert next_step(9, {}) == Next(8)
    assert next_step(9, {8: B}) == Next(0)


def test_the_middle_of_the_interval_is_tested_and_the_answer_is_the_first_bad() -> None:
    assert next_step(9, {0: G, 8: B}) == Next(4)
    assert next_step(9, {0: G, 8: B, 4: G}) == Next(6)
    assert next_step(9, {0: G, 8: B, 4: G, 6: B}) == Next(5)
    assert next_step(9, {0: G, 8: B, 4: G, 6: B, 5: B}) == Answer((5,))
    assert next_step(2, {0: G, 1: B}) == Answer((1,))


def test_a_skipped_candidate_is_not_chosen_again_and_ambiguity_names_every_possibility() -> None:
    assert next_step(5, {0: G, 4: B, 2: S}) == Next(1)
    assert next_step(5, {0: G, 4: B, 2: S, 1: G}) == Next(3)
    assert next_step(5, {0: G, 4: B, 2: S, 1: G, 3: B}) == Answer((2, 3))
    assert next_step(5, {0: G, 4: B, 2: S, 1: G, 3: S}) == Answer((2, 3, 4))
    assert not Answer((2, 3)).exact and Answer((3,)).exact


def test_wrong_ends_are_a_caller_error_not_a_step() -> None:
    with pytest.raises(ValueError, match="not good and bad"):
        next_step(5, {0: B, 4: B})
    with pytest.raises(ValueError, match="a good and a bad end"):
        next_step(1, {})


def test_steps_left_counts_the_ends_and_a_binary_search() -> None:
    assert steps_left(9, {}) == 2 + 3  # 7 untested in the middle: 3 halvings
    assert steps_left(9, {0: G, 8: B, 4: G}) == 2
    assert steps_left(9, {0: G, 8: B, 4: G, 6: B, 5: B}) == 0


# --- classification ----------------------------------------------------------------------------


def test_without_bad_on_the_bad_end_decides_what_bad_means() -> None:
    assert bad_verdicts(None, Verdict.FAILED) == {Verdict.FAILED}
    assert bad_verdicts(None, Verdict.CRASHED) == {Verdict.CRASHED, Verdict.HUNG}
    assert bad_verdicts(None, Verdict.HUNG) == {Verdict.CRASHED, Verdict.HUNG}
    assert bad_verdicts("any", Verdict.HUNG) == {Verdict.FAILED, Verdict.CRASHED, Verdict.HUNG}
    with pytest.raises(ConfigError, match=r"--bad: .*ended passed, not failed: nothing to bisect"):
        bad_verdicts(None, Verdict.PASSED)
    with pytest.raises(ConfigError, match="ended failed, not crashed"):
        bad_verdicts("crashed", Verdict.FAILED)
    with pytest.raises(ConfigError, match="--bad-on"):
        bad_verdicts("flaky", Verdict.FAILED)


def test_a_crash_counts_as_bad_only_when_the_bad_end_was_one() -> None:
    chasing_failure = bad_verdicts(None, Verdict.FAILED)
    chasing_crash = bad_verdicts(None, Verdict.CRASHED)
    assert classify("crashed", chasing_failure)[0] is S
    assert classify("hung", chasing_crash) == (B, "hung")
    assert classify("failed", chasing_crash)[0] is S
    assert classify("failed", chasing_failure) == (B, "failed")
    assert classify("passed", chasing_crash) == (G, "passed")
    assert classify("infra-error", chasing_failure)[0] is S
    assert classify(BUILD_FAILED, chasing_failure) == (S, "did not build")


# --- fixtures: small git histories and series ------------------------------------------------


def history(tree: Path, states: list[str]) -> list[str]:
    """A linear history, one commit per state of the file `state`; returns the shas."""
    tree.mkdir()
    git(tree, "init", "-q", "-b", "main")
    shas = []
    for i, state in enumerate(states):
        (tree / "state").write_text(state + "\n")
        git(tree, "add", "state")
        git(tree, "commit", "-q", "--allow-empty", "-m", f"change {i}: {state}")
        shas.append(git(tree, "rev-parse", "HEAD"))
    return shas


@dataclass
class FakeCell:
    run_dir: Path
    verdict: Verdict


class Fakes:
    """build: the `state` file at the candidate (BuildFailed for NOBUILD); cell: fails on BROKEN,
    crashes on CRASH, infra-error on NOVM. Counts what it did."""

    def __init__(self, read: Callable[[Candidate], str]) -> None:
        self.read = read
        self.built: list[str] = []
        self.ran: list[str] = []

    def build(self, candidate: Candidate) -> str | BuildFailed:
        self.built.append(candidate.key)
        content = self.read(candidate)
        return BuildFailed("make: *** error 2\nmore", Path("/tmp/log")) if "NOBUILD" in content else content

    def run_cell(self, candidate: Candidate, kernel: str, out: Path) -> FakeCell:
        self.ran.append(candidate.key)
        out.mkdir()
        if "NOVM" in kernel:
            return FakeCell(out, Verdict.INFRA_ERROR)
        if "CRASH" in kernel:
            return FakeCell(out, Verdict.CRASHED)
        return FakeCell(out, Verdict.FAILED if "BROKEN" in kernel else Verdict.PASSED)


def tree_fakes(tree: Path) -> Fakes:
    return Fakes(lambda c: git(tree, "show", f"{c.key}:state"))


def series_fakes() -> Fakes:
    # The "kernel" is the text of the applied prefix: what patches 1..i added.
    return Fakes(lambda c: c.series.read_text() if c.series else "base")


def mbox(path: Path, bodies: list[str], cover: bool = False) -> Path:
    messages = []
    if cover:
        messages.append("From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 0/3] the cover\n\nwhy\n")
    for i, body in enumerate(bodies, start=1):
        messages.append(
            f"From {i:040x} Mon Sep 17 00:00:00 2001\nFrom: a <a@b>\n"
            f"Subject: [PATCH {i}/{len(bodies)}] patch number {i}\n\nwhy {i}\n---\n"
            f"diff --git a/state b/state\n--- a/state\n+++ b/state\n@@ -1 +1 @@\n-x\n+{body}\n"
        )
    path.write_text("".join(messages))
    return path


def bisect(plan: Plan, fakes: Fakes, out: Path, bad_on: str | None = None) -> list[str]:
    said: list[str] = []
    outcome = run_bisect(
        plan,
        fakes.build,
        fakes.run_cell,
        out,
        bad_on=bad_on,
        settings={"topology": "t"},
        progress=said.append,
    )
    return [*said, *answer_lines(outcome)]


# --- the loop ----------------------------------------------------------------------------------


def test_a_range_bisect_names_the_commit_that_introduced_the_marker(tmp_path: Path) -> None:
    states = ["ok", "ok", "ok", "ok", "ok BROKEN", "ok BROKEN", "ok BROKEN", "ok BROKEN", "ok BROKEN"]
    shas = history(tmp_path / "linux", states)
    plan = range_plan(tmp_path / "linux", shas[0], "main")
    assert [c.key for c in plan.candidates] == shas
    fakes = tree_fakes(tmp_path / "linux")
    said = bisect(plan, fakes, tmp_path / "out")
    assert said[-2] == f"first bad commit: commit {shas[4][:12]} 'change 4: ok BROKEN' (after 5 steps)"
    assert fakes.ran[:2] == [shas[8], shas[0]], "the bad end first, then the good end"
    assert len(fakes.ran) == len(set(fakes.ran)) == 5
    assert any(line.startswith("step 3 of about 5: testing commit ") for line in said), said
    record = json.loads((tmp_path / "out" / "bisect.json").read_text())
    [culprit] = [s for s in record["steps"] if s["key"] == shas[4]]
    assert culprit["mark"] == "bad" and culprit["verdict"] == "failed"
    assert Path(culprit["cell"]).is_dir() and said[-1] == f"  its cell: {culprit['cell']} (failed)"
    assert record["bad_verdicts"] == ["failed"]


def test_a_series_bisect_names_patch_2_and_builds_each_prefix(tmp_path: Path) -> None:
    series = mbox(tmp_path / "mine.mbox", ["fine", "BROKEN", "also fine"], cover=True)
    plan = series_plan("src:debian-7.2", series, tmp_path / "out" / "series")
    fakes = series_fakes()
    said = bisect(plan, fakes, tmp_path / "out")
    assert said[-2] == "first bad patch: patch 2/3 'patch number 2' (after 4 steps)"
    prefix = tmp_path / "out" / "series" / "mine-2of3.mbox"
    text = prefix.read_text()
    assert "patch number 1" in text and "patch number 2" in text and "patch number 3" not in text
    assert "the cover" not in text, "a cover letter is not a patch"
    assert fakes.built == ["patch-3", "base", "patch-1", "patch-2"]


def test_skips_route_around_a_broken_build_and_an_ambiguous_answer_lists_the_candidates(
    tmp_path: Path,
) -> None:
    # change 2 does not build; the marker arrives in change 3 (or 2: nobody can tell).
    shas = history(tmp_path / "linux", ["ok", "ok", "NOBUILD BROKEN", "BROKEN", "BROKEN"])
    fakes = tree_fakes(tmp_path / "linux")
    said = bisect(range_plan(tmp_path / "linux", shas[0], shas[4]), fakes, tmp_path / "out")
    assert said[-3].startswith("the first bad commit is one of")
    assert shas[2][:12] in said[-2] and "skip: did not build: make: *** error 2 (log /tmp/log)" in said[-2]
    assert shas[3][:12] in said[-1] and "bad: failed" in said[-1]
    assert shas[2] not in fakes.ran, "a candidate that did not build has no cell"


def test_an_infra_error_in_the_middle_is_a_skip_and_the_search_goes_on(tmp_path: Path) -> None:
    shas = history(tmp_path / "linux", ["ok", "ok", "NOVM", "ok", "BROKEN"])
    said = bisect(
        range_plan(tmp_path / "linux", shas[0], shas[4]), tree_fakes(tmp_path / "linux"), tmp_path / "o"
    )
    assert said[-2].startswith(f"first bad commit: commit {shas[4][:12]}")
    assert any("is skip (infra-error: the cell could not run" in line for line in said)


def test_a_crash_while_chasing_a_failure_is_skipped_but_bad_when_the_bad_end_crashed(tmp_path: Path) -> None:
    shas = history(tmp_path / "linux", ["ok", "ok", "CRASH", "CRASH", "BROKEN"])
    said = bisect(
        range_plan(tmp_path / "linux", shas[0], shas[4]), tree_fakes(tmp_path / "linux"), tmp_path / "a"
    )
    assert said[-4].startswith("the first bad commit is one of"), "crashes hide where the failure began"
    shas = history(tmp_path / "crashing", ["ok", "ok", "CRASH", "CRASH", "CRASH"])
    said = bisect(
        range_plan(tmp_path / "crashing", shas[0], shas[4]), tree_fakes(tmp_path / "crashing"), tmp_path / "b"
    )
    assert said[-2].startswith(f"first bad commit: commit {shas[2][:12]}")
    shas = history(tmp_path / "any", ["ok", "ok", "CRASH", "BROKEN", "BROKEN"])
    said = bisect(
        range_plan(tmp_path / "any", shas[0], shas[4]), tree_fakes(tmp_path / "any"), tmp_path / "c", "any"
    )
    assert said[-2].startswith(f"first bad commit: commit {shas[2][:12]}")


def test_an_interrupted_bisect_resumes_without_repeating_its_steps(tmp_path: Path) -> None:
    states = ["ok"] * 5 + ["BROKEN"] * 4
    shas = history(tmp_path / "linux", states)
    plan = range_plan(tmp_path / "linux", shas[0], shas[8])
    first = tree_fakes(tmp_path / "linux")
    real_run = first.run_cell

    def stops_at_the_third(candidate: Candidate, kernel: str, out: Path) -> FakeCell:
        if len(first.ran) == 2:
            out.mkdir()  # a half-run cell directory, as a killed run leaves it
            raise KeyboardInterrupt
        return real_run(candidate, kernel, out)

    first.run_cell = stops_at_the_third  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        bisect(plan, first, tmp_path / "out")
    assert len(json.loads((tmp_path / "out" / "bisect.json").read_text())["steps"]) == 2
    second = tree_fakes(tmp_path / "linux")
    said = bisect(range_plan(tmp_path / "linux", shas[0], shas[8]), second, tmp_path / "out")
    assert said[0] == f"resuming the bisect in {tmp_path / 'out'}: 2 step(s) recorded"
    assert shas[8] not in second.ran and shas[0] not in second.ran, "the two ends are not measured again"
    assert said[-2].startswith(f"first bad commit: commit {shas[5][:12]}")
    assert len(json.loads((tmp_path / "out" / "bisect.json").read_text())["steps"]) == 2 + len(second.ran)
    assert list((tmp_path / "out").glob("step-03-*.interrupted-1")), "the interrupted cell is kept aside"


def test_resuming_with_other_inputs_or_into_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    shas = history(tmp_path / "linux", ["ok", "ok", "BROKEN"])
    plan = range_plan(tmp_path / "linux", shas[0], shas[2])
    bisect(plan, tree_fakes(tmp_path / "linux"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"--out: .* holds a bisect of other inputs \(differing: bad_on\)"):
        bisect(plan, tree_fakes(tmp_path / "linux"), tmp_path / "out", bad_on="any")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    fakes = tree_fakes(tmp_path / "linux")
    with pytest.raises(ConfigError, match="holds no bisect"):
        bisect(plan, fakes, tmp_path / "other")
    assert fakes.built == []


def test_a_good_end_that_is_already_bad_is_an_input_error_with_its_cell(tmp_path: Path) -> None:
    shas = history(tmp_path / "linux", ["BROKEN", "BROKEN", "BROKEN"])
    fakes = tree_fakes(tmp_path / "linux")
    with pytest.raises(ConfigError, match=r"--good: commit .* is already bad: its cell ended failed .*see "):
        bisect(range_plan(tmp_path / "linux", shas[0], shas[2]), fakes, tmp_path / "out")
    assert fakes.ran == [shas[2], shas[0]], "two cells, nothing in the middle"
    with pytest.raises(ConfigError, match="already bad"):  # and again on resume, without a cell
        bisect(range_plan(tmp_path / "linux", shas[0], shas[2]), fakes, tmp_path / "out")
    assert len(fakes.ran) == 2


def test_a_bad_end_that_passes_is_an_input_error_after_one_cell(tmp_path: Path) -> None:
    series = mbox(tmp_path / "mine.mbox", ["fine", "fine too"])
    fakes = series_fakes()
    with pytest.raises(ConfigError, match="--bad: the cell at the bad end ended passed"):
        bisect(series_plan("src:debian-7.2", series, tmp_path / "out" / "series"), fakes, tmp_path / "out")
    assert fakes.ran == ["patch-2"]


def test_an_end_that_cannot_be_measured_is_an_infra_error_and_is_retried_on_resume(tmp_path: Path) -> None:
    shas = history(tmp_path / "linux", ["ok", "ok", "NOBUILD BROKEN"])
    fakes = tree_fakes(tmp_path / "linux")
    with pytest.raises(
        InfraError, match="an end of the bisect\\) could not be measured: make: \\*\\*\\* error 2"
    ):
        bisect(range_plan(tmp_path / "linux", shas[0], shas[2]), fakes, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "bisect.json").read_text())["steps"] == []


def test_a_merge_that_brought_the_change_is_named_with_the_range_to_bisect_next(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    shas = history(tree, ["ok", "ok"])
    git(tree, "checkout", "-q", "-b", "topic")
    (tree / "state").write_text("BROKEN\n")
    git(tree, "commit", "-qam", "topic breaks it")
    git(tree, "checkout", "-q", "main")
    (tree / "other").write_text("x\n")
    git(tree, "add", "other")
    git(tree, "commit", "-qm", "mainline goes on")
    git(tree, "merge", "-q", "--no-ff", "-m", "merge topic", "topic")
    said = bisect(range_plan(tree, shas[0], "main"), tree_fakes(tree), tmp_path / "out")
    merge = git(tree, "rev-parse", "main")
    assert said[-2].startswith(f"first bad commit: commit {merge[:12]} 'merge topic'")
    hint = merge_hint(tree, merge)
    assert hint is not None and f"--good {shas[1][:12]} --bad {git(tree, 'rev-parse', 'topic')[:12]}" in hint
    assert merge_hint(tree, shas[1]) is None

"""The generated GitLab pipeline, run by gitlab-ci-local on this machine.

gitlab-ci-local runs each job with the shell executor (no `image:`). With --shell-isolation every job
gets its own copy of the project's git-tracked files under .gitlab-ci-local/builds/<job>
(CI_PROJECT_DIR points there), `cache:` is copied in and out of .gitlab-ci-local/cache/<key>, a job's
artifacts are copied to .gitlab-ci-local/artifacts/<job> and into the jobs that need it, and
`parallel: N` makes N jobs with CI_NODE_INDEX 1..N and CI_NODE_TOTAL N: the way a GitLab runner
isolates jobs, which is what proves that the shards and the merge meet only through artifacts.
Without --shell-isolation all jobs would share the checkout and skip cache and artifacts entirely.

Seen with 4.60.0: its exit status is 1 when a job failed that may not fail, but a job with
`allow_failure: exit_codes:` never counts as failed there, whatever its exit code (GitLab fails it
for a code outside the list): the tests read each job's PASS/WARN/FAIL line instead.

CI installs it with INSTALL below (Node 20 runs 4.60.0; newer releases need Node 22); it also needs
rsync and git, which ./hil installs anyway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hil_live import hil, run_live, show

from harness.matrix.cells import cell_id
from harness.matrix.document import read_matrix
from harness.matrix.pipelines import gitlab_pipeline
from harness.paths import REPO_ROOT, cache_dir

GCL_VERSION = "4.60.0"
INSTALL = f"npm install -g gitlab-ci-local@{GCL_VERSION}"
KERNEL = "src:debian-7.2"
TOPOLOGIES = ("switch-p2p", "rootports-acs")
SELECTION = "test_routing and whole"
RUN_ARGS = [*(a for t in TOPOLOGIES for a in ("--topology", t)), "--kernel", KERNEL, "-k", SELECTION]
PUBLISHED = ("matrix.json", "index.html", "junit.xml", "kcidb.json")
# The whole real pipeline (a venv per job, two cells per side under TCG) takes a few minutes here.
PIPELINE_TIMEOUT_S = 1800
# A job's summary line, e.g. " PASS  [   17 s] prepare-kernels" or " WARN  matrix: [2/2]    pre_script".
_SUMMARY = re.compile(r"^ (PASS|WARN|FAIL) +(?:\[\s*([\d.]+) (\S+)\] )?(.+?)(?:\s+(?:pre|after)_script)?\s*$")
_UNIT_S = {"ns": 1e-9, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def gitlab_ci_local() -> str:
    path = shutil.which("gitlab-ci-local")
    if path is None:
        pytest.skip(f"gitlab-ci-local is not installed; CI installs it with: {INSTALL}")
    return path


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=p2p-hil test", "-c", "user.email=test@p2p-hil", "-c", "commit.gpgsign=false",
         *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout


def commit_all(repo: Path, message: str) -> None:
    # -f: the copy holds exactly what should be committed, even a tracked file an ignore rule matches.
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "-m", message)


def snapshot_checkout(src: Path, dest: Path) -> int:
    """The working tree of `src` as it is now, committed into a new repository at `dest`.

    gitlab-ci-local copies a job's files from git's view of the project (tracked files, as they are
    on disk), and a clone would miss uncommitted work: this copies tracked files with their changes
    plus the untracked files git does not ignore, keeping modes and mtimes (./hil compares
    pyproject.toml's mtime with its venv's stamp). Returns the number of files."""
    listed = git(src, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    count = 0
    for rel in sorted(set(listed) - {""}):
        source = src / rel
        if not (source.exists() or source.is_symlink()):
            continue  # deleted in the working tree, not yet committed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
        count += 1
    git(dest, "init", "-q")
    commit_all(dest, "snapshot of the working tree")
    return count


@dataclass(frozen=True)
class PipelineRun:
    proc: subprocess.CompletedProcess[str]
    wall_s: float
    status: dict[str, str]  # job name -> PASS, WARN or FAIL
    duration_s: dict[str, float]  # job name -> its own time, as gitlab-ci-local measured it

    def artifacts(self, project: Path, job: str) -> Path:
        return project / ".gitlab-ci-local" / "artifacts" / job

    def overhead_s(self, stages: Sequence[Sequence[str]]) -> float:
        """Wall time not spent inside a job: each stage lasts as long as its longest job."""
        inside = sum(max(self.duration_s.get(job, 0.0) for job in stage) for stage in stages)
        return self.wall_s - inside


def job_summary(stdout: str) -> tuple[dict[str, str], dict[str, float]]:
    status: dict[str, str] = {}
    duration: dict[str, float] = {}
    for line in stdout.splitlines():
        match = _SUMMARY.match(line)
        if match:
            verdict, amount, unit, name = match.groups()
            status[name.strip()] = verdict
            if amount is not None:
                duration[name.strip()] = float(amount) * _UNIT_S[unit]
    return status, duration


def run_pipeline(project: Path, variables: dict[str, str], *, live: bool = False) -> PipelineRun:
    argv = [
        # timeout(1) signals its whole process group: no job's hil or QEMU outlives a stuck pipeline.
        "timeout", "-k", "30", str(PIPELINE_TIMEOUT_S),
        # Run from the project: 4.60.0 refuses an absolute --cwd.
        gitlab_ci_local(),
        "--shell-isolation", "--no-artifacts-to-source", "--no-color", "--timestamps",
        *(a for key, value in variables.items() for a in ("--variable", f"{key}={value}")),
    ]  # fmt: skip
    start = time.monotonic()
    if live:
        proc = run_live(argv, timeout=PIPELINE_TIMEOUT_S + 60, cwd=project)
    else:
        proc = subprocess.run(
            argv, cwd=project, capture_output=True, text=True, timeout=PIPELINE_TIMEOUT_S + 60, check=False
        )
    wall = time.monotonic() - start
    status, duration = job_summary(proc.stdout)
    return PipelineRun(proc, wall, status, duration)


def output_of(run: PipelineRun) -> str:
    proc = run.proc
    tail_out, tail_err = proc.stdout[-6000:], proc.stderr[-3000:]
    return f"gitlab-ci-local exit {proc.returncode}\nstdout:\n{tail_out}\nstderr:\n{tail_err}"


# Stands in for ./hil in the fast tests: what `kernel`, `run --shard` and `merge` leave behind, so that
# the pipeline's plumbing (cache, parallel, artifacts, exit codes) is checked in seconds.
FAKE_HIL = textwrap.dedent("""\
    #!/usr/bin/env python3
    import json, os, sys
    from pathlib import Path
    args = sys.argv[1:]
    cache = Path(os.environ["P2P_HIL_CACHE"])
    env = os.environ
    job = {"job": env.get("CI_JOB_NAME"), "cwd": os.getcwd(), "project": env.get("CI_PROJECT_DIR")}
    if args[0] == "kernel":
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / "kernels.txt", "a") as f:
            f.write(f"{args[1]} {args[2]} by {job['job']}\\n")
        sys.exit(0)
    if args[0] == "run":
        at = args.index("--shard")
        shard, out = args[at + 1], Path(args[args.index("--out") + 1])
        out.mkdir(parents=True)
        kernels = (cache / "kernels.txt").read_text() if (cache / "kernels.txt").exists() else None
        node = [os.environ.get("CI_NODE_INDEX"), os.environ.get("CI_NODE_TOTAL")]
        record = {**job, "shard": shard, "run_args": args[1:at], "kernels": kernels, "node": node}
        (out / "matrix.json").write_text(json.dumps(record))
        sys.exit(int(os.environ.get("FAKE_EXIT_" + shard.split("/")[0], "0")))
    if args[0] == "merge":
        at = args.index("--out")
        out = Path(args[at + 1])
        out.mkdir(parents=True)
        shards = {d: json.loads((Path(d) / "matrix.json").read_text()) for d in args[1:at]}
        (out / "matrix.json").write_text(json.dumps({**job, "shards": shards}))
        for name in ("index.html", "junit.xml", "kcidb.json"):
            (out / name).write_text("<testsuites/>\\n" if name == "junit.xml" else "{}\\n")
        sys.exit(int(os.environ.get("FAKE_MERGE_EXIT", "0")))
    sys.exit(99)
""")
FAKE_RUN_ARGS = [*RUN_ARGS, "--kernel", "debian:7.2", "--axis", 'it\'s "odd" $HOME `x`', "-k", "a\\b *"]


@pytest.fixture(scope="module")
def fake_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gitlab_ci_local()
    project = tmp_path_factory.mktemp("gcl") / "project"
    project.mkdir()
    hil_stub = project / "hil"
    hil_stub.write_text(FAKE_HIL)
    hil_stub.chmod(0o755)
    (project / ".gitlab-ci.yml").write_text(
        gitlab_pipeline(FAKE_RUN_ARGS, 2, cache_key="p2p-hil-kernels-test")
    )
    git(project, "init", "-q")
    commit_all(project, "fake pipeline")
    return project


def test_gitlab_ci_local_runs_the_pipeline_shape_cache_to_shards_to_merge(fake_project: Path) -> None:
    run = run_pipeline(fake_project, {})
    assert run.proc.returncode == 0, output_of(run)
    assert run.status == {
        "prepare-kernels": "PASS",
        "matrix: [1/2]": "PASS",
        "matrix: [2/2]": "PASS",
        "merge": "PASS",
    }, output_of(run)
    show(f"gitlab-ci-local {GCL_VERSION}, 4 jobs doing nothing: {run.wall_s:.1f} s wall")
    merged_dir = run.artifacts(fake_project, "merge") / "matrix"
    for name in PUBLISHED:
        assert (merged_dir / name).is_file(), name
    merged = json.loads((merged_dir / "matrix.json").read_text())
    assert sorted(merged["shards"]) == ["shards/1", "shards/2"]
    cwds = {merged["cwd"]}
    for index in ("1", "2"):
        shard = merged["shards"][f"shards/{index}"]
        assert shard["shard"] == f"{index}/2"
        assert shard["node"] == [index, "2"]
        assert shard["run_args"] == FAKE_RUN_ARGS  # through YAML, gitlab-ci-local and bash, intact
        # The prepare job's cache reached every shard.
        assert (
            shard["kernels"]
            == "build src:debian-7.2 by prepare-kernels\nfetch debian:7.2 by prepare-kernels\n"
        )
        assert shard["cwd"] == shard["project"]
        cwds.add(shard["cwd"])
    # Each job had a directory of its own: the merge saw the shards only through their artifacts.
    assert len(cwds) == 3 and str(fake_project) not in {c.rstrip("/") for c in cwds}


# hil run's exit status -> the shard job's: a verdict (1 failed, 3 crashed/hung/infra-error) is left
# to the merge (GitLab shows the job as a warning), a usage error (2) or a harness bug (4) fails it.
SHARD_STATUS = {1: "WARN", 3: "WARN", 2: "FAIL", 4: "FAIL"}


@pytest.mark.parametrize("codes", [(1, 2), (3, 4)])
def test_a_failing_shard_does_not_stop_the_merge(fake_project: Path, codes: tuple[int, int]) -> None:
    run = run_pipeline(fake_project, {f"FAKE_EXIT_{i}": str(code) for i, code in enumerate(codes, 1)})
    for i, code in enumerate(codes, 1):
        assert run.status.get(f"matrix: [{i}/2]") == SHARD_STATUS[code], output_of(run)
    assert run.status.get("merge") == "PASS", output_of(run)
    merged = json.loads((run.artifacts(fake_project, "merge") / "matrix" / "matrix.json").read_text())
    # Both shards' directories were kept (artifacts when: always) and merged.
    assert {s["shard"] for s in merged["shards"].values()} == {"1/2", "2/2"}


def test_the_merge_verdict_is_the_pipelines(fake_project: Path) -> None:
    run = run_pipeline(fake_project, {"FAKE_EXIT_1": "1", "FAKE_MERGE_EXIT": "1"})
    assert run.status.get("merge") == "FAIL", output_of(run)
    assert run.proc.returncode == 1, output_of(run)
    # Its artifacts are published all the same: the page shows what failed.
    assert (run.artifacts(fake_project, "merge") / "matrix" / "index.html").is_file()


@pytest.mark.vm
@pytest.mark.kernel(KERNEL)
def test_generated_pipeline_under_gitlab_ci_local_merges_to_the_single_run(tmp_path: Path) -> None:
    gitlab_ci_local()
    project = tmp_path / "project"
    files = snapshot_checkout(REPO_ROOT, project)
    # The CLI of the snapshot itself (python -m puts the working directory first on sys.path).
    generated = subprocess.run(
        [sys.executable, "-m", "harness", "ci", "gitlab", "--shards", "2", "--", *RUN_ARGS],
        cwd=project, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    pipeline = yaml.safe_load(generated.stdout)
    assert pipeline["matrix"]["parallel"] == 2
    (project / ".gitlab-ci.yml").write_text(generated.stdout)
    commit_all(project, "pipeline")
    show(f"gitlab-ci-local {GCL_VERSION}: the generated pipeline on a snapshot of {files} files")
    try:
        # The host's kernel cache (prepared before this test): nothing is rebuilt.
        run = run_pipeline(project, {"P2P_HIL_CACHE": str(cache_dir())}, live=True)
    finally:
        # Each job's copy holds its own .venv (a few hundred MB); the artifacts are what the test reads.
        shutil.rmtree(project / ".gitlab-ci-local" / "builds", ignore_errors=True)
    assert run.proc.returncode != 124, f"the pipeline took over {PIPELINE_TIMEOUT_S} s\n{output_of(run)}"

    single_dir = tmp_path / "single"
    single = hil("run", *RUN_ARGS, "-j", "2", "--out", str(single_dir), timeout=PIPELINE_TIMEOUT_S)
    assert single.returncode in (0, 1), f"the single run did not give a verdict:\n{single.stderr[-4000:]}"

    stages = [["prepare-kernels"], ["matrix: [1/2]", "matrix: [2/2]"], ["merge"]]
    show(
        f"gitlab-ci-local: {run.wall_s:.1f} s wall; jobs: "
        + ", ".join(f"{job} {run.duration_s.get(job, 0.0):.1f} s" for stage in stages for job in stage)
        + f"; outside the jobs {run.overhead_s(stages):.1f} s"
    )
    assert run.status.get("prepare-kernels") == "PASS", output_of(run)
    merged_dir = run.artifacts(project, "merge") / "matrix"
    for name in PUBLISHED:
        assert (merged_dir / name).is_file(), f"the merge job published no {name}\n{output_of(run)}"
    shard_files = sorted(project.glob(".gitlab-ci-local/artifacts/*/shards/*/matrix.json"))
    assert [p.parent.name for p in shard_files] == ["1", "2"], shard_files

    merged, alone = read_matrix(merged_dir), read_matrix(single_dir)
    expected_ids = sorted(cell_id(t, KERNEL) for t in TOPOLOGIES)
    assert sorted(merged.cells) == sorted(alone.cells) == expected_ids
    assert merged.missing == [] and alone.missing == []
    for cid in expected_ids:
        ours, theirs = merged.cells[cid], alone.cells[cid]
        outcomes = {r.name: r.outcome for r in ours.records}
        assert outcomes == {r.name: r.outcome for r in theirs.records}, cid
        assert ours.verdict == theirs.verdict, cid
        assert outcomes, f"{cid}: -k {SELECTION!r} selected no test"
        assert all("whole" in name and name.startswith("test_routing.py::") for name in outcomes), outcomes
    assert merged.verdict == alone.verdict
    # The shards' verdicts were left to the merge, whose exit status is the matrix's.
    for index in (1, 2):
        assert run.status.get(f"matrix: [{index}/2]") in ("PASS", "WARN"), output_of(run)
    assert run.status.get("merge") == ("PASS" if single.returncode == 0 else "FAIL"), output_of(run)

"""The CI pipelines `hil ci gitlab|github` prints: structure, quoting through a real shell, cache keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import ConfigError
from harness.matrix.pipelines import (
    KERNEL_INPUT_DIRS,
    ci_text,
    github_workflow,
    gitlab_pipeline,
    kernel_cache_key,
    kernel_inputs,
    prepare_commands,
)
from harness.paths import REPO_ROOT

RUN_ARGS = [
    "--topology",
    "switch-p2p",
    "--topology",
    "rootports-acs",
    "--kernel",
    "src:debian-7.2",
    "-k",
    "test_routing and whole",
]
# Every character a shell treats specially, in one argument each.
NASTY = ['it\'s "quoted"', "$HOME and `date`", "a\\b", "*", "two\nlines", "", "-- x"]


def gitlab(run_args: list[str], shards: int = 2, **kw: Any) -> dict[str, Any]:
    data = yaml.safe_load(gitlab_pipeline(run_args, shards, **kw))
    assert isinstance(data, dict)
    return data


def github(run_args: list[str], shards: int = 2) -> dict[str, Any]:
    data = yaml.safe_load(github_workflow(run_args, shards))
    assert isinstance(data, dict)
    return data


def argv_stub(tmp_path: Path) -> Path:
    """A directory whose ./hil prints its arguments as JSON and exits with $STUB_EXIT."""
    work = tmp_path / "work"
    work.mkdir()
    stub = work / "hil"
    stub.write_text(
        textwrap.dedent("""\
        #!/usr/bin/env python3
        import json, os, sys
        print(json.dumps(sys.argv[1:]))
        sys.exit(int(os.environ.get("STUB_EXIT", "0")))
        """)
    )
    stub.chmod(0o755)
    return work


def run_shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Both engines run a job's script with bash -e -o pipefail on a Linux shell runner.
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_gitlab_pipeline_has_prepare_matrix_and_merge_stages() -> None:
    data = gitlab(RUN_ARGS, 3)
    assert data["stages"] == ["prepare", "matrix", "merge"]
    assert data["variables"] == {"P2P_HIL_CACHE": "$CI_PROJECT_DIR/.p2p-hil-cache"}
    prepare, matrix, merge = data["prepare-kernels"], data["matrix"], data["merge"]
    assert prepare["stage"] == "prepare"
    assert prepare["script"] == ["./hil kernel build src:debian-7.2"]
    assert prepare["cache"]["policy"] == "pull-push"
    assert prepare["cache"]["paths"] == [".p2p-hil-cache/"]
    assert matrix["stage"] == "matrix"
    assert matrix["needs"] == ["prepare-kernels"]
    assert matrix["parallel"] == 3
    assert matrix["cache"] == {**prepare["cache"], "policy": "pull"}
    assert matrix["allow_failure"] == {"exit_codes": [1, 3]}
    assert matrix["artifacts"]["when"] == "always"
    assert matrix["artifacts"]["paths"] == ["shards/"]
    assert merge["stage"] == "merge"
    assert merge["needs"] == ["matrix"]
    assert merge["when"] == "always"
    assert merge["script"] == ["./hil merge shards/* --out matrix"]
    assert merge["artifacts"]["when"] == "always"
    assert merge["artifacts"]["paths"] == ["matrix/"]
    assert merge["artifacts"]["reports"] == {"junit": "matrix/junit.xml"}


def test_gitlab_shard_line_reaches_hil_with_every_argument_intact(tmp_path: Path) -> None:
    run_args = [*RUN_ARGS, "-k", *NASTY[:1], "--axis", *NASTY[1:2], "--series", *NASTY[2:]]
    (script,) = gitlab(run_args)["matrix"]["script"]
    work = argv_stub(tmp_path)
    proc = run_shell(script, work, {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["run", *run_args, "--shard", "2/3", "--out", "shards/2"]


def test_gitlab_merge_line_takes_every_shard_directory(tmp_path: Path) -> None:
    (script,) = gitlab(RUN_ARGS)["merge"]["script"]
    work = argv_stub(tmp_path)
    for k in (2, 1, 10):
        (work / "shards" / str(k)).mkdir(parents=True)
    proc = run_shell(script, work, {})
    assert json.loads(proc.stdout) == ["merge", "shards/1", "shards/10", "shards/2", "--out", "matrix"]


def test_one_shard_needs_no_parallel_keyword(tmp_path: Path) -> None:
    matrix = gitlab(RUN_ARGS, 1)["matrix"]
    assert "parallel" not in matrix  # GitLab sets no CI_NODE_INDEX without it
    proc = run_shell(matrix["script"][0], argv_stub(tmp_path), {})
    assert json.loads(proc.stdout)[-4:] == ["--shard", "1/1", "--out", "shards/1"]


@pytest.mark.parametrize(
    ("kernels", "expected"),
    [
        ([], [["./hil", "kernel", "build", "src:debian-7.2"]]),  # hil run's default kernel
        (["debian:7.2"], [["./hil", "kernel", "fetch", "debian:7.2"]]),
        (
            ["src:debian-7.3", "tree:/src/linux", "debian:7.2", "src:debian-7.3"],
            [
                ["./hil", "kernel", "build", "src:debian-7.3"],
                ["./hil", "kernel", "build", "tree:/src/linux"],
                ["./hil", "kernel", "fetch", "debian:7.2"],
            ],
        ),
        (["/boot/vmlinuz-7.2"], []),
    ],
)
def test_one_prepare_command_per_kernel_to_fetch_or_build(
    kernels: list[str], expected: list[list[str]]
) -> None:
    args = ["--topology", "all", *[a for k in kernels for a in ("--kernel", k)]]
    assert prepare_commands(args) == expected


def test_a_patch_series_goes_to_the_builds_and_forms_with_equals_count() -> None:
    args = ["--kernel=src:debian-7.2", "--kernel", "debian:7.2", "--series=kernels/series/fix.mbox"]
    assert prepare_commands(args) == [
        ["./hil", "kernel", "build", "src:debian-7.2", "--series", "kernels/series/fix.mbox"],
        ["./hil", "kernel", "fetch", "debian:7.2"],
    ]


def test_only_prebuilt_images_leave_out_the_prepare_stage() -> None:
    data = gitlab(["--kernel", "/boot/bzImage"])
    assert data["stages"] == ["matrix", "merge"]
    assert "prepare-kernels" not in data
    assert data["matrix"]["needs"] == []


def test_an_unknown_kernel_form_is_refused_when_generating() -> None:
    with pytest.raises(ConfigError, match="foo:bar"):
        gitlab_pipeline(["--kernel", "foo:bar"], 2)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--out", "x"], "--out"),
        (["--out=x"], "--out"),
        (["--ou", "x"], "--ou"),  # argparse would take the abbreviation
        (["--shard", "1/2"], "--shard"),
        (["--shard=1/2"], "--shard"),
        (["--resume", "nightly"], "--resume"),
        (["-k", "x", "--resume=nightly"], "--resume"),
    ],
)
def test_run_args_must_not_set_what_the_pipeline_sets(args: list[str], flag: str) -> None:
    for generate in (gitlab_pipeline, github_workflow):
        with pytest.raises(ConfigError, match=f"{flag} is set by the pipeline") as info:
            generate([*RUN_ARGS, *args], 2)
        assert info.value.where == "run arguments"


def test_a_second_double_dash_is_refused() -> None:
    # What `hil ci gitlab --shards 3 -- ...` hands over when the CLI leaves --shards to the run arguments.
    with pytest.raises(ConfigError, match="'--' inside them"):
        gitlab_pipeline(["--shards", "3", "--", *RUN_ARGS], 2)


@pytest.mark.parametrize("args", [["--retries", "1"], ["--series", "x.mbox"], ["-k", "out or shard"]])
def test_look_alikes_are_not_refused(args: list[str]) -> None:
    gitlab_pipeline([*RUN_ARGS, *args], 2)


@pytest.mark.parametrize(
    ("shards", "engine"), [(0, "gitlab"), (-1, "github"), (201, "gitlab"), (257, "github")]
)
def test_shard_count_out_of_range_is_refused(shards: int, engine: str) -> None:
    generate = gitlab_pipeline if engine == "gitlab" else github_workflow
    with pytest.raises(ConfigError, match="--shards"):
        generate(RUN_ARGS, shards)


def test_output_is_deterministic_and_says_how_to_regenerate_it() -> None:
    for generate in (gitlab_pipeline, github_workflow):
        first = generate([*RUN_ARGS, "-k", NASTY[4]], 4)
        assert first == generate([*RUN_ARGS, "-k", NASTY[4]], 4)
        comments = [line for line in first.splitlines() if line.startswith("#")]
        assert comments[0].startswith("# Generated by: ./hil ci ")
        assert "'test_routing and whole'" in comments[0]
        # The newline inside an argument stays inside the comment.
        assert yaml.safe_load(first) == yaml.safe_load("\n".join(first.splitlines()[len(comments) :]))


def test_cache_key_follows_kernels_and_their_build_inputs() -> None:
    inputs = {"kernels/configs/base.config": b"CONFIG_PCI_P2PDMA=y\n"}
    key = kernel_cache_key(RUN_ARGS, inputs)
    assert key == kernel_cache_key(RUN_ARGS, dict(inputs))
    assert key.startswith("p2p-hil-kernels-")
    changed = {"kernels/configs/base.config": b"CONFIG_PCI_P2PDMA=n\n"}
    assert kernel_cache_key(RUN_ARGS, changed) != key
    assert kernel_cache_key([*RUN_ARGS, "--kernel", "src:debian-7.3"], inputs) != key
    assert kernel_cache_key(RUN_ARGS, {**inputs, "kernels/series/x.mbox": b""}) != key
    # The topology and the test selection do not change which kernels are built.
    assert kernel_cache_key([*RUN_ARGS, "-k", "other"], inputs) == key
    data = gitlab(RUN_ARGS, cache_key=key)
    assert data["prepare-kernels"]["cache"]["key"] == data["matrix"]["cache"]["key"] == key


def test_ci_text_keys_the_cache_on_this_checkouts_kernels_directory(tmp_path: Path) -> None:
    text = ci_text("gitlab", RUN_ARGS, 2, REPO_ROOT)
    inputs = kernel_inputs(REPO_ROOT, RUN_ARGS)
    assert inputs, f"no files under {KERNEL_INPUT_DIRS} in {REPO_ROOT}"
    assert all(name.startswith(KERNEL_INPUT_DIRS) for name in inputs)
    assert yaml.safe_load(text)["matrix"]["cache"]["key"] == kernel_cache_key(RUN_ARGS, inputs)
    copy = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "kernels", copy / "kernels")
    assert ci_text("gitlab", RUN_ARGS, 2, copy) == text
    (copy / "kernels" / "configs" / "base.config").write_text("CONFIG_X=y\n")
    assert ci_text("gitlab", RUN_ARGS, 2, copy) != text


def test_github_workflow_shards_with_a_matrix_and_merges_always() -> None:
    data = github([*RUN_ARGS, "--kernel", "debian:7.2"], 3)
    assert data["on"] == {"workflow_dispatch": {}}
    assert data["env"]["P2P_HIL_CACHE"] == "${{ github.workspace }}/.p2p-hil-cache"
    jobs = data["jobs"]
    prepare_runs = [s["run"] for s in jobs["prepare-kernels"]["steps"] if "run" in s]
    assert prepare_runs == ["./hil kernel build src:debian-7.2", "./hil kernel fetch debian:7.2"]
    matrix = jobs["matrix"]
    assert matrix["needs"] == ["prepare-kernels"]
    assert matrix["strategy"] == {"fail-fast": False, "matrix": {"shard": [1, 2, 3]}}
    upload = matrix["steps"][-1]
    assert upload["if"] == "always()"
    assert upload["with"] == {"name": "shard-${{ matrix.shard }}", "path": "shards/${{ matrix.shard }}/"}
    caches = [s for job in jobs.values() for s in job["steps"] if "actions/cache" in s.get("uses", "")]
    assert [c["uses"] for c in caches] == ["actions/cache@v4", "actions/cache/restore@v4"]
    assert len({c["with"]["key"] for c in caches}) == 1
    assert "hashFiles('kernels/configs/**', 'kernels/series/**')" in caches[0]["with"]["key"]
    merge = jobs["merge"]
    assert merge["needs"] == ["matrix"]
    assert merge["if"] == "${{ !cancelled() }}"
    download = merge["steps"][1]
    assert download["with"] == {"pattern": "shard-*", "path": "shards"}
    assert merge["steps"][2]["run"] == "./hil merge shards/* --out matrix"
    assert merge["steps"][3]["with"]["path"] == "matrix/"


@pytest.mark.parametrize(("status", "step_exit"), [(0, 0), (1, 0), (3, 0), (2, 2), (4, 4)])
def test_github_shard_step_leaves_verdicts_to_the_merge(tmp_path: Path, status: int, step_exit: int) -> None:
    run_args = [*RUN_ARGS, "-k", NASTY[0], "--axis", NASTY[1]]
    step = next(s for s in github(run_args, 2)["jobs"]["matrix"]["steps"] if "run" in s)
    assert step["env"] == {"SHARD": "${{ matrix.shard }}"}
    work = argv_stub(tmp_path)
    output = tmp_path / "github_output"
    proc = run_shell(
        step["run"], work, {"SHARD": "2", "GITHUB_OUTPUT": str(output), "STUB_EXIT": str(status)}
    )
    assert proc.returncode == step_exit, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0]) == [
        "run",
        *run_args,
        "--shard",
        "2/2",
        "--out",
        "shards/2",
    ]
    assert output.read_text() == f"status={status}\n"


def test_github_refuses_arguments_it_would_evaluate() -> None:
    with pytest.raises(ConfigError, match="GitHub Actions would evaluate"):
        github_workflow([*RUN_ARGS, "-k", "${{ secrets.X }}"], 2)
    gitlab_pipeline([*RUN_ARGS, "-k", "${{ secrets.X }}"], 2)  # GitLab's shell sees it quoted

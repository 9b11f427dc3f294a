"""CI pipelines that spread a matrix over an existing engine: GitLab CI and GitHub Actions (pure).

Both have the same three steps:
  1. prepare: one `./hil kernel build|fetch` per kernel the run needs, into a kernel cache the engine
     keeps between pipelines (P2P_HIL_CACHE inside the checkout, because both engines cache only
     paths under it);
  2. matrix: N parallel jobs, each `./hil run <run args> --shard K/N --out shards/K`, whose shard
     directory is kept as an artifact whatever the verdict;
  3. merge: `./hil merge shards/* --out matrix`, publishing index.html, junit.xml and kcidb.json.

A shard that ends with a verdict (1 failed, 3 crashed/hung/infra-error) must not stop the merge: the
merged matrix decides the pipeline's status. A usage error (2) or a bug in the harness (4) is not a
verdict and fails its job.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.cli import DEFAULT_KERNEL, EXIT_INFRA
from harness.errors import ConfigError
from harness.kernels.spec import DebianImage, DebianSource, ImageFile, LocalTree, parse_spec

Engine = Literal["gitlab", "github"]

HIL = "./hil"
CACHE_DIR = ".p2p-hil-cache"
SHARDS_DIR = "shards"
MATRIX_DIR = "matrix"
PUBLISHED = ("index.html", "junit.xml", "kcidb.json", "matrix.json")
# `hil run` exit statuses that are verdicts of the cells: the merge reports them for the whole matrix.
VERDICT_EXIT_CODES = (1, EXIT_INFRA)
# GitLab's `parallel:` accepts 1..200, a GitHub matrix at most 256 jobs.
MAX_SHARDS: Mapping[Engine, int] = {"gitlab": 200, "github": 256}
# What the generated pipeline itself decides per shard; in run args they would fight it.
FORBIDDEN_RUN_FLAGS = ("--out", "--shard", "--resume")
# `hil run`'s long options (also the lead's planned ones), to resolve abbreviations the way argparse
# does; the boolean ones take no value.
RUN_LONG_FLAGS = (
    "--topology",
    "--kernel",
    "--series",
    "--out",
    "--timeout",
    "--idle-timeout",
    "--accel",
    "--dry-run",
    "--axis",
    "--jobs",
    "--shard",
    "--resume",
    "--retries",
    "--baseline",
)
RUN_BOOLEAN_FLAGS = frozenset({"--dry-run"})
RUN_SHORT_VALUE_FLAGS = frozenset({"-t", "-k", "-j"})
# Inputs of a kernel build besides its spec, as paths relative to the checkout.
KERNEL_INPUT_DIRS = ("kernels/configs", "kernels/series")


@dataclass(frozen=True)
class RunOption:
    """One option of the run arguments: its flag as written, the long flag it stands for (None when
    it is not one of hil run's known long flags) and its value (None for a boolean)."""

    written: str
    flag: str | None
    value: str | None


def _resolve_long(name: str) -> str | None:
    if name in RUN_LONG_FLAGS:
        return name
    matches = [flag for flag in RUN_LONG_FLAGS if flag.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def _forbidden_prefix(name: str) -> str | None:
    """The forbidden flag `name` could abbreviate: argparse takes any unique prefix, so `--ou` is
    `--out`; an ambiguous prefix such as `--re` is refused too, it could only mean trouble."""
    for flag in FORBIDDEN_RUN_FLAGS:
        if len(name) > 2 and flag.startswith(name):
            return flag
    return None


def run_options(run_args: Sequence[str]) -> list[RunOption]:
    """The options in `run_args`, each with its value (`--kernel X`, `--kernel=X`, `-kEXPR`, `-k EXPR`)."""
    options: list[RunOption] = []
    args = list(run_args)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            name, eq, inline = arg.partition("=")
            flag = _resolve_long(name)
            if eq:
                options.append(RunOption(name, flag, inline))
            elif flag in RUN_BOOLEAN_FLAGS or i >= len(args) or (flag is None and args[i].startswith("-")):
                options.append(RunOption(name, flag, None))
            else:
                options.append(RunOption(name, flag, args[i]))
                i += 1
        elif arg[:2] in RUN_SHORT_VALUE_FLAGS:
            if len(arg) > 2:
                options.append(RunOption(arg[:2], arg[:2], arg[2:]))
            elif i < len(args):
                options.append(RunOption(arg, arg, args[i]))
                i += 1
            else:
                options.append(RunOption(arg, arg, None))
    return options


def check_run_args(run_args: Sequence[str], shards: int, engine: Engine = "gitlab") -> None:
    """ConfigError when the run arguments name what the pipeline decides, or shards is out of range."""
    limit = MAX_SHARDS[engine]
    if not 1 <= shards <= limit:
        raise ConfigError(f"must be between 1 and {limit} for {engine}, got {shards}", "--shards")
    if "--" in run_args:
        # hil run takes no positional argument, so a "--" there is a slip (say, `hil ci` options
        # given after the engine, where its run arguments begin).
        raise ConfigError(f"'--' inside them: {shlex.join(run_args)}", "run arguments")
    for option in run_options(run_args):
        forbidden = _forbidden_prefix(option.written)
        if forbidden is not None:
            raise ConfigError(
                f"{option.written} is set by the pipeline for each shard (--shard K/N --out {SHARDS_DIR}/K, "
                "then hil merge); leave it out of the run arguments",
                "run arguments",
            )
    if engine == "github":
        for arg in run_args:
            if "${{" in arg:
                # GitHub evaluates expressions inside `run:` before the shell sees them.
                raise ConfigError(
                    f"{arg!r} contains '${{{{', which GitHub Actions would evaluate", "run arguments"
                )


def _values(run_args: Sequence[str], flag: str) -> list[str]:
    return [o.value for o in run_options(run_args) if o.flag == flag and o.value is not None]


def kernel_specs(run_args: Sequence[str]) -> list[str]:
    """The --kernel values in order, each once; hil run's default when there is none."""
    return list(dict.fromkeys(_values(run_args, "--kernel"))) or [DEFAULT_KERNEL]


def series_path(run_args: Sequence[str]) -> str | None:
    found = _values(run_args, "--series")
    return found[-1] if found else None  # argparse keeps the last one


def prepare_commands(run_args: Sequence[str]) -> list[list[str]]:
    """One hil kernel command per kernel that needs preparing (a bzImage path needs none)."""
    series = series_path(run_args)
    commands: list[list[str]] = []
    for text in kernel_specs(run_args):
        spec = parse_spec(text)  # the kind only; hil run says whether --series fits it
        if isinstance(spec, DebianImage):
            commands.append([HIL, "kernel", "fetch", text])
        elif isinstance(spec, DebianSource | LocalTree):
            commands.append([HIL, "kernel", "build", text, *(["--series", series] if series else [])])
        else:
            assert isinstance(spec, ImageFile)
    return commands


def kernel_inputs(repo_root: Path, run_args: Sequence[str]) -> dict[str, bytes]:
    """What a kernel build reads besides its spec (config fragments, patch series), by path relative
    to the checkout: the cache key changes with any of it."""
    files: dict[str, bytes] = {}
    for sub in KERNEL_INPUT_DIRS:
        base = repo_root / sub
        if base.is_dir():
            for path in sorted(p for p in base.rglob("*") if p.is_file()):
                files[path.relative_to(repo_root).as_posix()] = path.read_bytes()
    series = series_path(run_args)
    if series is not None and (repo_root / series).is_file():
        files[Path(series).as_posix()] = (repo_root / series).read_bytes()
    return files


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two inputs hash alike
        h.update(part)
    return h.hexdigest()[:16]


def specs_digest(run_args: Sequence[str]) -> str:
    series = series_path(run_args)
    return _digest([*(s.encode() for s in kernel_specs(run_args)), (series or "").encode()])


def kernel_cache_key(run_args: Sequence[str], inputs: Mapping[str, bytes]) -> str:
    """A cache key that changes with the kernels asked for and every file their builds read."""
    parts = [specs_digest(run_args).encode()]
    for name in sorted(inputs):
        parts += [name.encode(), inputs[name]]
    return f"p2p-hil-kernels-{_digest(parts)}"


def _join(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _header(engine: Engine, run_args: Sequence[str], shards: int) -> str:
    # A newline inside an argument would end the comment line and leave the rest as YAML.
    command = _join([HIL, "ci", engine, "--shards", str(shards), "--", *run_args]).replace("\n", "\\n")
    runner = "a shell executor" if engine == "gitlab" else "a self-hosted runner"
    lines = [
        f"Generated by: {command}",
        "Regenerate it when the run arguments or kernels/ change"
        + (" (the kernel cache key is derived from them)." if engine == "gitlab" else "."),
        f"Meant for {runner} on Linux: ./hil installs QEMU and the build tools when it runs as root and",
        "otherwise stops with the exact apt command; KVM is used when a probe boot proves it works.",
    ]
    return "".join(f"# {line}\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """Plain YAML a person can read: no anchors for repeated steps, multi-line scripts as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    if "\n" in text.rstrip("\n"):
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
    return dumper.represent_str(text)


_Dumper.add_representer(str, _represent_str)


def _dump(document: Mapping[str, Any]) -> str:
    return yaml.dump(dict(document), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 20)


def _shard_run(run_args: Sequence[str], index: str, total: str) -> str:
    """The hil run line of one shard; `index`/`total` are shell words (a variable or a number)."""
    return f'{_join([HIL, "run", *run_args])} --shard "{index}/{total}" --out "{SHARDS_DIR}/{index}"'


def gitlab_pipeline(
    run_args: Sequence[str],
    shards: int,
    *,
    cache_key: str | None = None,
    tags: Sequence[str] = (),
    image: str | None = None,
) -> str:
    """.gitlab-ci.yml text for `hil run <run_args>` in `shards` parallel jobs, then `hil merge`.

    `cache_key` names the kernel cache (kernel_cache_key(); derived from the specs alone when None),
    `tags` pick the runners, `image` is for a Docker executor (it must give QEMU /dev/kvm to be fast).
    """
    check_run_args(run_args, shards, "gitlab")
    key = cache_key or f"p2p-hil-kernels-{specs_digest(run_args)}"
    common: dict[str, Any] = {}
    if image is not None:
        common["image"] = image
    if tags:
        common["tags"] = list(tags)

    def cache(policy: str) -> dict[str, Any]:
        return {"key": key, "paths": [f"{CACHE_DIR}/"], "policy": policy}

    prepare = prepare_commands(run_args)
    jobs: dict[str, Any] = {}
    stages = ["matrix", "merge"]
    if prepare:
        stages.insert(0, "prepare")
        jobs["prepare-kernels"] = {
            "stage": "prepare",
            **common,
            "cache": cache("pull-push"),
            "script": [_join(c) for c in prepare],
        }
    matrix: dict[str, Any] = {"stage": "matrix", **common, "needs": ["prepare-kernels"] if prepare else []}
    if shards > 1:
        matrix["parallel"] = shards
        matrix["script"] = [_shard_run(run_args, "$CI_NODE_INDEX", "$CI_NODE_TOTAL")]
    else:
        # Without `parallel:` GitLab sets no CI_NODE_INDEX.
        matrix["script"] = [_shard_run(run_args, "1", "1")]
    matrix["cache"] = cache("pull")
    matrix["allow_failure"] = {"exit_codes": list(VERDICT_EXIT_CODES)}
    matrix["artifacts"] = {
        "name": "shard-$CI_NODE_INDEX" if shards > 1 else "shard-1",
        "when": "always",
        "paths": [f"{SHARDS_DIR}/"],
    }
    jobs["matrix"] = matrix
    jobs["merge"] = {
        "stage": "merge",
        **common,
        "needs": ["matrix"],
        # Also after a shard's job failed outright: what the other shards found is still published.
        "when": "always",
        "script": [f"{_join([HIL, 'merge'])} {SHARDS_DIR}/* --out {MATRIX_DIR}"],
        "artifacts": {
            "name": "p2p-hil-matrix",
            "when": "always",
            "paths": [f"{MATRIX_DIR}/"],
            "expose_as": "p2p-hil matrix",
            "reports": {"junit": f"{MATRIX_DIR}/junit.xml"},
        },
    }
    document = {
        "stages": stages,
        "variables": {"P2P_HIL_CACHE": f"$CI_PROJECT_DIR/{CACHE_DIR}"},
        **jobs,
    }
    return _header("gitlab", run_args, shards) + _dump(document)


def _gh_string(text: str) -> str:
    """A string literal inside a GitHub expression."""
    return "'" + text.replace("'", "''") + "'"


def github_workflow(
    run_args: Sequence[str],
    shards: int,
    *,
    runs_on: Sequence[str] = ("self-hosted", "linux", "x64"),
) -> str:
    """A GitHub Actions workflow for the same three steps (run by hand or nightly).

    The kernel cache key is computed by GitHub from kernels/ at run time (hashFiles), and falls back to
    the newest cache of the same kernels, so a config change still reuses ccache and the downloads.
    """
    check_run_args(run_args, shards, "github")
    prepare = prepare_commands(run_args)
    hashed = [f"{d}/**" for d in KERNEL_INPUT_DIRS]
    series = series_path(run_args)
    if series is not None:
        hashed.append(series)
    prefix = f"p2p-hil-kernels-{specs_digest(run_args)}-"
    key = prefix + "${{ hashFiles(" + ", ".join(_gh_string(h) for h in hashed) + ") }}"
    runner = list(runs_on) if len(runs_on) != 1 else runs_on[0]
    checkout = {"uses": "actions/checkout@v4"}

    def cache_step(action: str) -> dict[str, Any]:
        return {
            "uses": action,
            "with": {"path": CACHE_DIR, "key": key, "restore-keys": prefix},
        }

    jobs: dict[str, Any] = {}
    if prepare:
        jobs["prepare-kernels"] = {
            "runs-on": runner,
            "steps": [
                checkout,
                cache_step("actions/cache@v4"),
                *({"run": _join(c)} for c in prepare),
            ],
        }
    verdicts = "|".join(str(c) for c in (0, *VERDICT_EXIT_CODES))
    shard_script = (
        "status=0\n"
        f"{_shard_run(run_args, '$SHARD', str(shards))} || status=$?\n"
        'echo "status=$status" >> "$GITHUB_OUTPUT"\n'
        "# A verdict is the merge's to report; a usage error or a harness bug fails the shard.\n"
        f'case $status in {verdicts}) ;; *) exit "$status" ;; esac\n'
        f'if [ "$status" != 0 ]; then echo "::warning::shard $SHARD: hil run exited $status"; fi\n'
    )
    jobs["matrix"] = {
        "runs-on": runner,
        "needs": ["prepare-kernels"] if prepare else [],
        "strategy": {"fail-fast": False, "matrix": {"shard": list(range(1, shards + 1))}},
        "steps": [
            checkout,
            cache_step("actions/cache/restore@v4"),
            {
                "name": "hil run (shard ${{ matrix.shard }}/" + str(shards) + ")",
                "env": {"SHARD": "${{ matrix.shard }}"},
                "run": shard_script,
            },
            {
                "if": "always()",
                "uses": "actions/upload-artifact@v4",
                "with": {
                    "name": "shard-${{ matrix.shard }}",
                    "path": f"{SHARDS_DIR}/${{{{ matrix.shard }}}}/",
                },
            },
        ],
    }
    jobs["merge"] = {
        "runs-on": runner,
        "needs": ["matrix"],
        "if": "${{ !cancelled() }}",
        "steps": [
            checkout,
            {
                "uses": "actions/download-artifact@v4",
                "with": {"pattern": "shard-*", "path": SHARDS_DIR},
            },
            {"run": f"{_join([HIL, 'merge'])} {SHARDS_DIR}/* --out {MATRIX_DIR}"},
            {
                "if": "always()",
                "uses": "actions/upload-artifact@v4",
                "with": {"name": "p2p-hil-matrix", "path": f"{MATRIX_DIR}/"},
            },
        ],
    }
    document = {
        "name": "p2p-hil matrix",
        "on": {"workflow_dispatch": {}},
        "env": {"P2P_HIL_CACHE": "${{ github.workspace }}/" + CACHE_DIR},
        "jobs": jobs,
    }
    return _header("github", run_args, shards) + _dump(document)


def ci_text(engine: Engine, run_args: Sequence[str], shards: int, repo_root: Path) -> str:
    """The pipeline `hil ci ENGINE --shards N -- <run args>` prints, for the checkout at repo_root."""
    check_run_args(run_args, shards, engine)
    if engine == "gitlab":
        key = kernel_cache_key(run_args, kernel_inputs(repo_root, run_args))
        return gitlab_pipeline(run_args, shards, cache_key=key)
    return github_workflow(run_args, shards)

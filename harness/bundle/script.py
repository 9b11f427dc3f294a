"""A cell's reproduce.sh read back: the harness command and the raw steps underneath (pure).

reproduce.sh is the one place a cell directory keeps the whole invocation of the cell (kernel spec,
series path, -k, --axis, --timeout) and the exact vng command; harness.results.write.reproduce_sh
writes it, and this reads the same shape back.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from harness.errors import ConfigError

RAW_START = 'if [ "${1:-}" = --raw ]; then'


@dataclass(frozen=True)
class HarnessCommand:
    """The `./hil run` line of a cell, as options."""

    topology: str
    kernel: str
    series: str | None = None
    select: str | None = None
    axes: tuple[tuple[str, str], ...] = ()
    timeout: float = 900.0
    fragments: tuple[str, ...] = ()  # the kernel variant (--fragment, repeatable)
    kselftests: tuple[str, ...] = ()
    race_seconds: float | None = None


@dataclass(frozen=True)
class ReproduceScript:
    harness_argv: list[str]
    raw: list[list[str]] = field(default_factory=list)  # mkdir, trap, truncate, dd, vng: one argv each
    cwd: str | None = None

    @property
    def vng_argv(self) -> list[str]:
        if not self.raw:
            return []
        return self.raw[-1]

    @property
    def scratch(self) -> str | None:
        """The scratch directory the raw steps made (their first step is `mkdir -p <scratch>`)."""
        first = self.raw[0] if self.raw else []
        return first[2] if first[:2] == ["mkdir", "-p"] and len(first) == 3 else None


def parse_reproduce(text: str, source: str = "reproduce.sh") -> ReproduceScript:
    lines = text.splitlines()
    raw: list[list[str]] = []
    cwd = None
    harness: list[str] | None = None
    in_raw = False
    try:
        for line in lines:
            stripped = line.strip()
            if stripped == RAW_START:
                in_raw = True
            elif in_raw:
                if stripped == "exit":
                    continue
                if stripped == "fi":
                    in_raw = False
                    continue
                raw.append(shlex.split(stripped))
            elif stripped.startswith("cd "):
                cwd = shlex.split(stripped)[1]
            elif stripped.startswith("exec "):
                harness = shlex.split(stripped)[1:]
    except ValueError as exc:
        raise ConfigError(f"not a p2p-hil reproduce script: {exc}", source) from None
    if harness is None:
        raise ConfigError("not a p2p-hil reproduce script: no `exec ./hil run ...` line", source)
    return ReproduceScript(harness, raw, cwd)


def harness_options(argv: list[str], source: str = "reproduce.sh") -> HarnessCommand:
    """The options of `./hil run --topology T --kernel K [--series S] [--fragment F]... [--axis k=v]...
    [-k E] [--kselftest N]... [--race-seconds S] --timeout N`."""
    values: dict[str, str] = {}
    axes: list[tuple[str, str]] = []
    repeated: dict[str, list[str]] = {"--fragment": [], "--kselftest": []}
    args = iter(argv[2:] if argv[1:2] == ["run"] else argv)
    for arg in args:
        value = next(args, None)
        if value is None or not arg.startswith("-"):
            raise ConfigError(f"unexpected argument {arg!r} in the hil command {shlex.join(argv)}", source)
        if arg == "--axis":
            key, _, setting = value.partition("=")
            axes.append((key, setting))
        elif arg in repeated:
            repeated[arg].append(value)
        else:
            values[arg] = value
    if "--topology" not in values or "--kernel" not in values:
        raise ConfigError(f"the hil command names no topology or kernel: {shlex.join(argv)}", source)
    try:
        timeout = float(values.get("--timeout", "900"))
    except ValueError:
        raise ConfigError(f"--timeout {values['--timeout']!r} is not a number", source) from None
    try:
        race = float(values["--race-seconds"]) if "--race-seconds" in values else None
    except ValueError:
        raise ConfigError(f"--race-seconds {values['--race-seconds']!r} is not a number", source) from None
    return HarnessCommand(
        topology=values["--topology"],
        kernel=values["--kernel"],
        series=values.get("--series"),
        select=values.get("-k"),
        axes=tuple(axes),
        timeout=timeout,
        fragments=tuple(repeated["--fragment"]),
        kselftests=tuple(repeated["--kselftest"]),
        race_seconds=race,
    )


def qemu_opts(vng: list[str]) -> list[str]:
    """The QEMU arguments vng was given (--qemu-opts=...): the topology, as QEMU saw it."""
    for arg in vng:
        if arg.startswith("--qemu-opts="):
            return shlex.split(arg.removeprefix("--qemu-opts="))
    return []


def option_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[i + 1]
    return None

"""The project's one exception hierarchy.

    HilError                    base; never raised directly
     +-- ConfigError            the user's input is wrong (topology file, flag, kernel spec): exit 2
     +-- InfraError             the machinery failed, not the kernel under test: exit 3
          +-- FetchError        a kernel package could not be resolved or downloaded
          +-- BuildError        a kernel or test-module build failed (carries the log path)
          +-- LaunchError       QEMU/vng did not start (carries argv and captured output)
          +-- GuestError        the guest misbehaved in a way that ends the run
               +-- GuestHang    no progress before the deadline (carries the console tail)
               +-- GuestCrash   panic/Oops/BUG seen on the console (carries the excerpt)

Only harness.cli.main turns these into messages and exit codes.
"""

from __future__ import annotations

from pathlib import Path


class HilError(Exception):
    """Base of every error p2p-hil raises on purpose."""


class ConfigError(HilError):
    """Bad user input. `where` names the file and field when known."""

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class InfraError(HilError):
    """Something other than the kernel under test failed."""


class FetchError(InfraError):
    """A kernel package could not be resolved or downloaded."""


class BuildError(InfraError):
    """A build failed; `log` is the full log, `tail` its last lines."""

    def __init__(self, message: str, log: Path | None = None, tail: str = "") -> None:
        self.log = log
        self.tail = tail
        source = f"last lines of {log}" if log is not None else "last lines"
        detail = f"\n--- {source} ---\n{tail}" if tail else ""
        super().__init__(message + detail)


class LaunchError(InfraError):
    """The VM could not be started."""

    def __init__(self, message: str, command: str = "", output: str = "") -> None:
        self.command = command
        self.output = output
        parts = [message]
        if command:
            parts.append(f"command: {command}")
        if output:
            parts.append(f"output:\n{output}")
        super().__init__("\n".join(parts))


class GuestError(InfraError):
    """The guest ended the run abnormally. `excerpt` is console evidence."""

    def __init__(self, message: str, excerpt: str = "") -> None:
        self.excerpt = excerpt
        super().__init__(message)


class GuestHang(GuestError):
    """The guest made no progress before its deadline."""


class GuestCrash(GuestError):
    """The guest kernel crashed (panic, Oops, BUG)."""


def one_value(value: object, flag: str) -> str:
    """The single value a flag must have: argparse may hand a list (an append action shared with
    `hil run`) or nothing; a command that takes exactly one says so naming the flag."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(f"takes exactly one value, got {len(value)}", flag)
        value = value[0]
    if not isinstance(value, str) or not value:
        raise ConfigError("required", flag)
    return value

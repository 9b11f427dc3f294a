"""GuestVM: the one owner of a running VM (vng under the guardian, console through pexpect).

The constructor only records; launch() starts; watch() yields console events until the guest
ends or stops making progress; shutdown() stops softly, then hard, and always cleans up.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

import pexpect

from harness.console.events import ConsoleScanner, Event, tail
from harness.deadline import Deadline
from harness.errors import GuestHang, LaunchError

CONSOLE_TAIL_LINES = 60
_READ_CHUNK = 65536
# With helpers the console loop wakes up at least this often, so that they see the guest's requests:
# a test waits for the answer, so this is latency added to it (a directory listing on the host costs
# next to nothing).
_HELPER_POLL_S = 0.05


class VmHelper(Protocol):
    """Host-side work that runs alongside the VM (harness.vm.host_agent.HostAgent): poll() is called
    from the console loop and must not block; close() when the VM is stopped."""

    def poll(self) -> None: ...

    def close(self) -> None: ...


class GuestVM:
    def __init__(
        self,
        argv: list[str],
        *,
        console_log: Path,
        token: str,
        env: dict[str, str] | None = None,
        helpers: Sequence[VmHelper] = (),
    ) -> None:
        self.argv = argv
        self.helpers = tuple(helpers)
        self.console_log = console_log
        self.token = token
        self.env = env
        self._child: pexpect.spawn | None = None
        self._log: IO[str] | None = None
        self._recent: list[str] = []
        self.exit_status: int | None = None
        self.signal_status: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def launch(self) -> None:
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.console_log.open("w", encoding="utf-8", errors="replace")
        try:
            self._child = pexpect.spawn(
                self.argv[0],
                self.argv[1:],
                env=self.env,
                encoding="utf-8",
                codec_errors="replace",
                timeout=None,
                echo=False,
                dimensions=(50, 250),
            )
        except (pexpect.ExceptionPexpect, OSError) as exc:
            self._close_log()
            raise LaunchError(f"could not start the VM: {exc}", shlex.join(self.argv)) from exc

    def watch(self, deadline: Deadline, idle_timeout: float | Callable[[], float]) -> Iterator[Event]:
        """Yield console events until the VM exits; GuestHang on deadline or silence.

        `idle_timeout` may be a function, asked on every turn: how much silence is normal depends on
        what the guest is doing (Python starting over 9p prints nothing for a long while)."""
        idle_limit = idle_timeout if callable(idle_timeout) else (lambda: idle_timeout)
        child = self._require_child()
        scanner = ConsoleScanner(self.token)
        last_output = time.monotonic()
        while True:
            now = time.monotonic()
            idle_timeout_s = idle_limit()
            if deadline.expired():
                raise GuestHang(f"run deadline of {deadline.seconds:.0f} s reached", self.console_tail())
            if now - last_output > idle_timeout_s:
                raise GuestHang(f"no console output for {idle_timeout_s:.0f} s", self.console_tail())
            for helper in self.helpers:
                helper.poll()
            longest = _HELPER_POLL_S if self.helpers else 1.0
            wait = max(0.05, min(longest, deadline.remaining(), idle_timeout_s - (now - last_output)))
            try:
                text = child.read_nonblocking(_READ_CHUNK, timeout=wait)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                break
            last_output = time.monotonic()
            self._record(text)
            yield from scanner.feed(text)
        yield from scanner.finish()
        self._reap()

    def shutdown(self, before_cleanup: Callable[[], None] | None = None) -> None:
        """Stop the VM if it still runs (guardian first, so it kills the whole tree), clean up.

        `before_cleanup` runs once the VM is stopped: host-side checks of the guest's bytes go there.
        The scratch directory belongs to the caller (harness.cell.scratch), not to the VM.
        """
        child = self._child
        try:
            if child is not None and child.isalive():
                child.kill(signal.SIGTERM)  # the guardian kills its process group
                for _ in range(50):
                    if not child.isalive():
                        break
                    time.sleep(0.1)
                else:
                    os.killpg(child.pid, signal.SIGKILL)
            if child is not None:
                self._reap()
            for helper in self.helpers:
                helper.close()
            if before_cleanup is not None:
                before_cleanup()
        finally:
            self._close_log()

    def __enter__(self) -> GuestVM:
        self.launch()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # -- evidence --------------------------------------------------------------------------------
    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> str:
        return tail("".join(self._recent), lines)  # the serial console ends lines with \r\r\n

    # -- internals -------------------------------------------------------------------------------
    def _require_child(self) -> pexpect.spawn:
        if self._child is None:
            raise LaunchError("watch() before launch()", shlex.join(self.argv))
        return self._child

    def _record(self, text: str) -> None:
        if self._log is not None:
            self._log.write(text)
            self._log.flush()
        self._recent.append(text)
        if len(self._recent) > 400:
            del self._recent[:200]

    def _reap(self) -> None:
        child = self._require_child()
        with contextlib.suppress(pexpect.ExceptionPexpect):
            child.close(force=True)
        self.exit_status = child.exitstatus
        self.signal_status = child.signalstatus

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

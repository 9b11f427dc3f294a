"""Requests from the guest that only the host can carry out (QMP), through the shared run directory.

The guest writes a request file in the run directory (`device_del` or `device_add` of a device id)
and waits for the response file; both formats are the guest's half of the contract,
harness/guest/agent.py.

The host's GuestVM calls HostAgent.poll() from its console loop; poll() only lists the directory and
hands new requests to one worker thread, which runs each against QEMU's QMP socket with the official
qemu.qmp client (one asyncio.run and one connection per request) and writes the response. So a slow
QMP call never stalls the console reader, and requests run one at a time, in name order.

device_del is answered once QEMU accepted it: finishing the unplug needs the guest (its hotplug driver
ejects the slot; vfio-pci waits for the device fd to be closed), so waiting here would deadlock a
guest that must act first. device_add retries for a while when QEMU still holds the old device (its
DEVICE_DELETED comes when the guest has powered the slot off, a little after sysfs lost it).

A device with a memory backend (ivshmem-plain's memdev) is plugged back with a *new* backend object
on the same file: QEMU 10.0 aborts in qemu_ram_set_idstr() ("Assertion `!new_block->idstr[0]'
failed") when a re-added ivshmem-plain reuses the backend of the unplugged one (its RAM block keeps
the old name). The file is the same, so are the bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.guest.agent import (
    REQUESTS_DIR,
    RESPONSES_DIR,
    Request,
    RequestError,
    parse_request,
    read_response,
    write_request,
)
from harness.jsonfile import write_record
from harness.sizes import parse_size

QMP_TIMEOUT_S = 10.0
DUPLICATE_RETRY_S = 15.0
_RETRY_PAUSE_S = 0.25

QmpCall = Callable[[str, Mapping[str, object]], object]
"""Runs one QMP command with arguments and returns its "return" value; raises QmpCommandError."""

Progress = Callable[[str], None]


class QmpCommandError(RuntimeError):
    """QEMU refused a command (its error class and description), or QMP was unreachable."""


def _options(qemu_args: Sequence[str], flag: str, type_key: str) -> dict[str, dict[str, str]]:
    """Id -> properties of every `flag TYPE,k=v,...` argument pair (TYPE under `type_key`)."""
    table: dict[str, dict[str, str]] = {}
    for arg, value in itertools.pairwise(qemu_args):
        if arg != flag:
            continue
        kind, *props = value.split(",")
        args = {type_key: kind}
        for prop in props:
            key, sep, val = prop.partition("=")
            if sep:
                args[key] = val
        if "id" in args:
            table[args["id"]] = args
    return table


def device_table(qemu_args: Sequence[str]) -> dict[str, dict[str, str]]:
    """Device id -> device_add arguments, from the topology's `-device DRIVER,k=v,...` arguments."""
    return _options(qemu_args, "-device", "driver")


def object_table(qemu_args: Sequence[str]) -> dict[str, dict[str, str]]:
    """Object id -> properties (qom-type too), from the topology's `-object TYPE,k=v,...` arguments."""
    return _options(qemu_args, "-object", "qom-type")


def object_add_args(props: Mapping[str, str], new_id: str) -> dict[str, object]:
    """QMP object-add arguments for a copy of a command-line object (sizes in bytes, on/off as bools)."""
    args: dict[str, object] = {}
    for key, value in props.items():
        if key == "size":
            args[key] = parse_size(value)
        elif value in ("on", "off"):
            args[key] = value == "on"
        else:
            args[key] = value
    args["id"] = new_id
    return args


def qmp_args(socket_path: Path) -> list[str]:
    """QEMU arguments of the agent's QMP socket (server, no waiting for a client)."""
    return ["-qmp", f"unix:{socket_path},server=on,wait=off"]


def unix_qmp(socket_path: Path, timeout: float = QMP_TIMEOUT_S) -> QmpCall:
    """A QmpCall that connects to `socket_path` for each command (qemu.qmp, asyncio.run)."""
    # Imported here: the guest imports this module for the request files only.
    from qemu.qmp import ExecuteError, QMPClient, QMPError

    async def run(command: str, arguments: Mapping[str, object]) -> object:
        client = QMPClient("hil-host-agent")
        try:
            await asyncio.wait_for(client.connect(str(socket_path)), timeout)
            return await asyncio.wait_for(client.execute(command, dict(arguments)), timeout)
        except ExecuteError as exc:
            raise QmpCommandError(f"QMP {command}: {exc.error_class}: {exc}") from exc
        except (QMPError, OSError, TimeoutError) as exc:
            raise QmpCommandError(f"QMP {command} via {socket_path}: {type(exc).__name__}: {exc}") from exc
        finally:
            await client.disconnect()

    def call(command: str, arguments: Mapping[str, object]) -> object:
        return asyncio.run(run(command, arguments))

    return call


class HostAgent:
    """Carries out the guest's requests (see the module docstring). Owned by GuestVM: poll(), close()."""

    def __init__(
        self,
        run_dir: Path,
        qmp: QmpCall,
        devices: Mapping[str, Mapping[str, str]],
        progress: Progress | None = None,
        objects: Mapping[str, Mapping[str, str]] | None = None,
        duplicate_retry_s: float = DUPLICATE_RETRY_S,
    ) -> None:
        self.requests = run_dir / REQUESTS_DIR
        self.responses = run_dir / RESPONSES_DIR
        self.qmp = qmp
        self.devices = {k: dict(v) for k, v in devices.items()}
        self.objects = {k: dict(v) for k, v in (objects or {}).items()}
        self._plugs = 0
        self.progress = progress or (lambda _text: None)
        self.duplicate_retry_s = duplicate_retry_s
        self.handled: list[dict[str, Any]] = []  # every response written, in order
        self._seen: set[str] = set()
        self._queue: queue.Queue[Request | tuple[str, str] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the owner's interface -------------------------------------------------------------------
    def poll(self) -> None:
        """Hand new request files to the worker; never blocks on QMP."""
        try:
            names = sorted(p.name for p in self.requests.iterdir() if p.suffix == ".json")
        except FileNotFoundError:
            return
        for file_name in names:
            if file_name in self._seen:
                continue
            self._seen.add(file_name)
            name = file_name.removesuffix(".json")
            try:
                item: Request | tuple[str, str] = parse_request(name, (self.requests / file_name).read_text())
            except (RequestError, OSError) as exc:
                item = (name, str(exc))
            self._ensure_worker()
            self._queue.put(item)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker (a request in flight finishes or fails on its own QMP timeout)."""
        self._stop.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    def drain(self, timeout: float = QMP_TIMEOUT_S) -> None:
        """Wait until every queued request has been answered (tests)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    # -- worker ----------------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="hil-host-agent", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None or self._stop.is_set():
                    return
                self._answer(item)
            finally:
                self._queue.task_done()

    def _answer(self, item: Request | tuple[str, str]) -> None:
        started = time.monotonic()
        if isinstance(item, tuple):
            name, error = item
            response: dict[str, Any] = {"request": name, "ok": False, "error": f"bad request: {error}"}
        else:
            name = item.name
            response = {"request": name, "op": item.op, "id": item.device}
            try:
                response["return"] = self._execute(item)
                response["ok"] = True
            except (QmpCommandError, RequestError) as exc:
                response.update(ok=False, error=str(exc))
        response["elapsed_s"] = round(time.monotonic() - started, 3)
        self.responses.mkdir(exist_ok=True)
        write_record(self.responses / f"{name}.json", response)
        self.handled.append(response)
        outcome = "ok" if response["ok"] else f"failed: {response['error']}"
        self.progress(f"host agent: {response.get('op', '?')} {response.get('id', '')} -> {outcome}")

    def _execute(self, req: Request) -> object:
        if req.op == "device_del":
            return self.qmp("device_del", {"id": req.device})
        args = self.devices.get(req.device)
        if args is None:
            raise RequestError(f"device {req.device!r} is not a -device of this topology")
        memdev = args.get("memdev")
        if memdev is not None and memdev in self.objects:
            self._plugs += 1
            new_id = f"{memdev}-replug{self._plugs}"
            self.qmp("object-add", object_add_args(self.objects[memdev], new_id))
            args = {**args, "memdev": new_id}
        deadline = time.monotonic() + self.duplicate_retry_s
        while True:
            try:
                return self.qmp("device_add", args)
            except QmpCommandError as exc:
                # QEMU still holds the unplugged device until the guest powered its slot off.
                if "uplicate" not in str(exc) or time.monotonic() > deadline or self._stop.is_set():
                    raise
                time.sleep(_RETRY_PAUSE_S)


__all__ = [
    "HostAgent",
    "QmpCommandError",
    "Request",
    "RequestError",
    "device_table",
    "parse_request",
    "qmp_args",
    "read_response",
    "unix_qmp",
    "write_request",
]

"""The host agent (harness/vm/host_agent.py) against a fake QMP server on a real unix socket, and its
owner's hooks in GuestVM (helpers polled from the console loop, a check before the scratch goes)."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.deadline import Deadline
from harness.guest.agent import REQUESTS_DIR, RequestError, parse_request, read_response, write_request
from harness.topology import lay_out, load_topology, qemu_topology_args
from harness.vm.host_agent import (
    HostAgent,
    device_table,
    object_add_args,
    object_table,
    qmp_args,
    unix_qmp,
)
from harness.vm.machine import GuestVM

QEMU_VERSION = {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}
GREETING = {"QMP": {"version": QEMU_VERSION, "capabilities": []}}


class FakeQmp:
    """A QMP server speaking the protocol's JSON stream: greeting, qmp_capabilities, device_del/add.

    Devices are a set of ids; a deleted id stays "being deleted" (device_add says duplicate) for
    `delete_delay` seconds, like QEMU until the guest has powered the slot off. A memory backend that
    an earlier device used cannot back a new one (QEMU 10.0 aborts in qemu_ram_set_idstr then).
    """

    def __init__(self, path: Path, devices: set[str], delete_delay: float = 0.0) -> None:
        self.path = path
        self.devices = set(devices)
        self.objects: dict[str, dict[str, Any]] = {"mem-exporter": {}}
        self.used_memdevs = {"mem-exporter"}
        self.delete_delay = delete_delay
        self.deleting: dict[str, float] = {}
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        decoder = json.JSONDecoder()
        buffer = ""
        with conn:
            conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data.decode()
                while buffer.strip():
                    try:
                        msg, end = decoder.raw_decode(buffer.lstrip())
                    except ValueError:
                        break  # incomplete
                    buffer = buffer.lstrip()[end:]
                    reply = self._reply(msg)
                    if "id" in msg:
                        reply["id"] = msg["id"]
                    conn.sendall(json.dumps(reply).encode() + b"\r\n")

    def _reply(self, msg: dict[str, Any]) -> dict[str, Any]:
        command, args = msg.get("execute", ""), msg.get("arguments", {})
        self.commands.append((command, args))
        now = time.monotonic()
        for dev, since in list(self.deleting.items()):
            if now - since >= self.delete_delay:
                del self.deleting[dev]
        if command == "qmp_capabilities":
            return {"return": {}}
        if command == "device_del":
            if args["id"] not in self.devices:
                return _error("DeviceNotFound", f"Device '{args['id']}' not found")
            self.devices.discard(args["id"])
            self.deleting[args["id"]] = now
            return {"return": {}}
        if command == "object-add":
            if args["id"] in self.objects:
                return _error("GenericError", f"attempt to add duplicate property '{args['id']}'")
            self.objects[args["id"]] = dict(args)
            return {"return": {}}
        if command == "device_add":
            if args["id"] in self.devices or args["id"] in self.deleting:
                return _error("GenericError", f"Duplicate device ID '{args['id']}' for device")
            memdev = args.get("memdev")
            if memdev is not None and (memdev not in self.objects or memdev in self.used_memdevs):
                return _error("FakeAbort", f"memdev {memdev} missing or used before: QEMU would abort")
            if memdev is not None:
                self.used_memdevs.add(memdev)
            self.devices.add(args["id"])
            return {"return": {}}
        return _error("CommandNotFound", f"The command {command} has not been found")


def _error(cls: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": cls, "desc": desc}}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="hil-qmp-") as d:
        yield Path(d)


EXPORTER_ARGS = {
    "driver": "ivshmem-plain",
    "id": "exporter",
    "memdev": "mem-exporter",
    "bus": "dp1",
    "addr": "00.0",
}


MEM_EXPORTER = {
    "qom-type": "memory-backend-file",
    "id": "mem-exporter",
    "mem-path": "/tmp/x/exporter.shm",
    "size": "64M",
    "share": "on",
}


def _agent(run_dir: Path, sock: Path, **kwargs: Any) -> HostAgent:
    qmp, objects = unix_qmp(sock, timeout=5.0), {"mem-exporter": MEM_EXPORTER}
    return HostAgent(run_dir, qmp, {"exporter": EXPORTER_ARGS}, objects=objects, **kwargs)


def test_device_table_from_the_rendered_topology(tmp_path: Path) -> None:
    layout = lay_out(load_topology("switch-p2p"))
    args = qemu_topology_args(layout, tmp_path)
    table = device_table(args)
    assert table["exporter"] == EXPORTER_ARGS
    objects = object_table(args)
    assert objects["mem-exporter"] == {**MEM_EXPORTER, "mem-path": str(tmp_path / "exporter.shm")}
    assert object_add_args(objects["mem-exporter"], "m2") == {
        "qom-type": "memory-backend-file",
        "id": "m2",
        "mem-path": str(tmp_path / "exporter.shm"),
        "size": 64 << 20,
        "share": True,
    }
    assert table["dma"]["driver"] == "edu"
    assert {"rp1", "sw1", "dp1", "dp2", "importer", "dma"} <= set(table)


def test_qmp_args_name_a_server_socket(tmp_path: Path) -> None:
    assert qmp_args(tmp_path / "qmp.sock") == ["-qmp", f"unix:{tmp_path}/qmp.sock,server=on,wait=off"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ("[]", "object"),
        ('{"op": "system_reset", "id": "x"}', "unknown op"),
        ('{"op": "device_del"}', "id"),
    ],
)
def test_parse_request_refuses(text: str, problem: str) -> None:
    with pytest.raises(RequestError, match=problem):
        parse_request("r", text)


def test_unplug_and_replug_through_qmp(short_tmp: Path) -> None:
    """device_del and device_add reach QEMU as QMP commands; the responses land where the guest looks."""
    qmp = FakeQmp(short_tmp / "qmp.sock", {"exporter"}, delete_delay=0.6)
    run_dir = short_tmp / "run"
    run_dir.mkdir()
    progress: list[str] = []
    agent = _agent(run_dir, qmp.path, progress=progress.append)
    try:
        agent.poll()  # no requests directory yet: nothing to do
        write_request(run_dir, "001", "device_del", "exporter")
        agent.poll()
        agent.drain()
        deleted = read_response(run_dir, "001")
        # device_add while QEMU still holds the deleted device: retried until it is gone.
        started = time.monotonic()
        write_request(run_dir, "002", "device_add", "exporter")
        agent.poll()
        agent.drain()
        added = read_response(run_dir, "002")
        took = time.monotonic() - started
    finally:
        agent.close()
        qmp.close()
    assert deleted is not None and deleted["ok"] and deleted["op"] == "device_del", deleted
    assert added is not None and added["ok"], added
    assert took >= 0.3, "device_add must have waited for the deletion to finish"
    sent = [(c, a) for c, a in qmp.commands if c != "qmp_capabilities"]
    assert sent[0] == ("device_del", {"id": "exporter"})
    # Plugged back on a fresh backend object for the same file.
    assert sent[1] == ("object-add", {**object_add_args(MEM_EXPORTER, "mem-exporter-replug1")})
    assert sent[-1] == ("device_add", {**EXPORTER_ARGS, "memdev": "mem-exporter-replug1"})
    assert qmp.devices == {"exporter"}
    assert [r["request"] for r in agent.handled] == ["001", "002"]
    assert progress == ["host agent: device_del exporter -> ok", "host agent: device_add exporter -> ok"]


def test_refusals_are_answered_not_raised(short_tmp: Path) -> None:
    qmp = FakeQmp(short_tmp / "qmp.sock", set())
    run_dir = short_tmp / "run"
    (run_dir / REQUESTS_DIR).mkdir(parents=True)
    agent = _agent(run_dir, qmp.path, duplicate_retry_s=0.0)
    try:
        write_request(run_dir, "a", "device_del", "exporter")  # QEMU: not found
        write_request(run_dir, "b", "device_add", "importer")  # not a -device of the topology
        (run_dir / REQUESTS_DIR / "c.json").write_text("{nope")
        (run_dir / REQUESTS_DIR / ".d.json.tmp").write_text("{}")  # half-written: ignored
        agent.poll()
        agent.poll()  # seen once, answered once
        agent.drain()
    finally:
        agent.close()
        qmp.close()
    a, b, c = (read_response(run_dir, n) for n in "abc")
    assert a is not None and not a["ok"] and "DeviceNotFound" in a["error"]
    assert b is not None and not b["ok"] and "not a -device" in b["error"]
    assert c is not None and not c["ok"] and "bad request" in c["error"]
    assert read_response(run_dir, ".d") is None
    assert len(agent.handled) == 3


def test_unreachable_qmp_fails_the_request_and_never_blocks_poll(short_tmp: Path) -> None:
    run_dir = short_tmp / "run"
    run_dir.mkdir()
    agent = _agent(run_dir, short_tmp / "missing.sock")
    try:
        write_request(run_dir, "x", "device_del", "exporter")
        started = time.monotonic()
        agent.poll()
        assert time.monotonic() - started < 0.5
        agent.drain()
    finally:
        agent.close()
    answer = read_response(run_dir, "x")
    assert answer is not None and not answer["ok"] and "missing.sock" in answer["error"]


class _Helper:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.polls = 0
        self.closed = False

    def poll(self) -> None:
        self.polls += 1

    def close(self) -> None:
        self.closed = True


def test_guest_vm_polls_helpers_and_checks_before_cleanup(tmp_path: Path) -> None:
    """A stand-in "VM" (a shell that prints for a second): helpers are polled while it runs and closed
    after; the before_cleanup callback sees the scratch directory, which the VM leaves to its owner."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "exporter.shm").write_bytes(b"bytes")
    helper = _Helper(scratch)
    vm = GuestVM(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(1.0); print('bye')"],
        console_log=tmp_path / "console.log",
        token="t0k3n",
        helpers=(helper,),
    )
    seen: list[bytes] = []
    vm.launch()
    try:
        list(vm.watch(Deadline(20.0), idle_timeout=10.0))
    finally:
        vm.shutdown(before_cleanup=lambda: seen.append((scratch / "exporter.shm").read_bytes()))
    assert helper.polls >= 3, "a quiet console must still wake the loop for the helpers"
    assert helper.closed
    assert seen == [b"bytes"]
    assert scratch.exists(), "scratch belongs to the cell (harness.cell.scratch), not to the VM"

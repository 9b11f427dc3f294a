"""`topology check`: does QEMU build the machine the layout describes?

QEMU starts paused (-S) without a kernel; once the QMP client is connected it lets the
firmware run, because query-pci lists what sits behind a bridge only after the
firmware has given the bridge a secondary bus number (with -S alone every bridge is
empty). SeaBIOS then also assigns BARs, which shows whether large BARs fit.

`compare` is pure and unit-tested on a recorded query-pci answer; `run_check` owns the
QEMU process and its private directory and always removes both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from qemu.qmp import QMPClient, QMPError

from harness.errors import LaunchError
from harness.sizes import format_size
from harness.topology.layout import ROOT_BUS, DeviceLayout, Layout, Node, PortLayout, lay_out
from harness.topology.model import Topology
from harness.topology.render import standalone_qemu_argv

ACS_NOTE = "ACS capabilities not checked: query-pci does not report PCI capabilities"
UNASSIGNED = -1  # query-pci's address of a BAR the firmware left unassigned
PR_SET_PDEATHSIG = 1
_POLL = 0.2
_SETTLE = 1.0


@dataclass(frozen=True)
class Seen:
    """One device of a query-pci answer, with the -device id of the bridge above it."""

    qdev_id: str
    parent: str  # ROOT_BUS for devices on the root bus
    slot: int
    function: int
    vendor: int
    device: int
    bars: dict[int, dict[str, Any]]


@dataclass(frozen=True)
class CheckReport:
    topology: str
    mismatches: tuple[str, ...]
    notes: tuple[str, ...]
    query_pci: list[dict[str, Any]]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.mismatches


def flatten(query_pci: list[dict[str, Any]]) -> dict[str, Seen]:
    """Devices that carry a -device id, by id (the machine's own devices have none)."""
    found: dict[str, Seen] = {}

    def walk(devices: list[dict[str, Any]], parent: str) -> None:
        for dev in devices:
            qdev_id = dev.get("qdev_id") or ""
            if qdev_id:
                found[qdev_id] = Seen(
                    qdev_id=qdev_id,
                    parent=parent,
                    slot=dev["slot"],
                    function=dev["function"],
                    vendor=dev["id"]["vendor"],
                    device=dev["id"]["device"],
                    bars={r["bar"]: r for r in dev.get("regions", [])},
                )
            bridge = dev.get("pci_bridge")
            if bridge:
                walk(bridge.get("devices", []), qdev_id or f"<unnamed {dev['slot']:02x}.{dev['function']}>")

    for bus in query_pci:
        walk(bus.get("devices", []), ROOT_BUS)
    return found


def compare(layout: Layout, query_pci: list[dict[str, Any]]) -> list[str]:
    """What differs between the layout and QEMU's query-pci answer; empty when they agree."""
    seen = flatten(query_pci)
    problems: list[str] = []
    for node in layout.nodes:
        got = seen.get(node.id)
        if got is None:
            problems.append(f"{node.id}: {node.qemu_driver} expected under {node.bus}, not found")
            continue
        problems += _compare_node(node, got)
    ours = {n.id for n in layout.nodes}
    for got in seen.values():
        if got.qdev_id not in ours and got.parent in ours:
            problems.append(f"{got.qdev_id}: unexpected device under {got.parent}")
    return problems


def _compare_node(node: Node, got: Seen) -> list[str]:
    problems = []
    if got.parent != node.bus:
        problems.append(f"{node.id}: under {got.parent}, expected under {node.bus}")
    if (got.slot, got.function) != (node.addr, 0):
        problems.append(f"{node.id}: at {got.slot:02x}.{got.function}, expected {node.addr:02x}.0")
    want = node.pci_id
    if (got.vendor, got.device) != want:
        problems.append(
            f"{node.id}: id {got.vendor:04x}:{got.device:04x}, expected {want[0]:04x}:{want[1]:04x}"
        )
    if isinstance(node, DeviceLayout):
        for bar, size in node.bars.items():
            region = got.bars.get(bar)
            if region is None:
                problems.append(f"{node.id}: BAR{bar} missing, expected {format_size(size)}")
            elif region["size"] != size:
                problems.append(
                    f"{node.id}: BAR{bar} is {format_size(region['size'])}, expected {format_size(size)}"
                )
    return problems


def notes(layout: Layout, query_pci: list[dict[str, Any]]) -> list[str]:
    """Facts worth showing that are not mismatches: what was not checked, what firmware left out."""
    out = []
    if any(isinstance(n, PortLayout) for n in layout.nodes):
        out.append(ACS_NOTE)
    seen = flatten(query_pci)
    for dev in layout.devices:
        got = seen.get(dev.id)
        if got is None:
            continue
        for bar in dev.bars:
            region = got.bars.get(bar)
            if region is not None and region.get("address", UNASSIGNED) == UNASSIGNED:
                out.append(
                    f"{dev.id}: firmware left BAR{bar} unassigned (the guest kernel may still place it)"
                )
    return out


def _settled(layout: Layout, query_pci: list[dict[str, Any]]) -> bool:
    """Every node found and every BAR of ours assigned: the firmware is done with us."""
    seen = flatten(query_pci)
    if any(n.id not in seen for n in layout.nodes):
        return False
    return all(
        seen[d.id].bars.get(bar, {}).get("address", UNASSIGNED) != UNASSIGNED
        for d in layout.devices
        for bar in d.bars
    )


def _numbered(query_pci: list[dict[str, Any]]) -> bool:
    """Every bridge has a secondary bus number, so query-pci shows what is behind it."""

    def walk(devices: list[dict[str, Any]]) -> bool:
        for dev in devices:
            bridge = dev.get("pci_bridge")
            if bridge and (not bridge["bus"]["secondary"] or not walk(bridge.get("devices", []))):
                return False
        return True

    return all(walk(bus.get("devices", [])) for bus in query_pci)


def run_check(layout: Layout, qemu: str = "qemu-system-x86_64", timeout: float = 30.0) -> CheckReport:
    """Start QEMU on the topology, read query-pci, compare. Raises LaunchError if QEMU fails."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hil-check-") as tmp:
        scratch = Path(tmp)
        sock = scratch / "qmp.sock"
        argv = [*standalone_qemu_argv(layout, scratch, qemu), "-S", "-qmp", f"unix:{sock},server=on,wait=off"]
        log = scratch / "qemu.log"
        with _qemu(argv, log) as proc:
            try:
                answer = asyncio.run(_query_pci(layout, sock, proc, start + timeout))
            except (LaunchError, QMPError, OSError) as exc:
                output = log.read_text(errors="replace")[-4000:]
                raise LaunchError(f"topology check failed: {exc}", shlex.join(argv), output) from exc
    return CheckReport(
        topology=layout.topology.name,
        mismatches=tuple(compare(layout, answer)),
        notes=tuple(notes(layout, answer)),
        query_pci=answer,
        seconds=time.monotonic() - start,
    )


def check_topology(topo: Topology, qemu: str = "qemu-system-x86_64", timeout: float = 30.0) -> list[str]:
    """The mismatches of `run_check` on a topology (what `hil topology check` prints)."""
    return list(run_check(lay_out(topo), qemu, timeout).mismatches)


def _die_with_parent() -> None:
    # Runs in the child before exec: if the harness is killed outright, QEMU goes too.
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextlib.contextmanager
def _qemu(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # No other thread exists yet (asyncio starts after), so preexec_fn is safe here.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        except OSError as exc:
            raise LaunchError(f"cannot start {argv[0]}: {exc.strerror}", shlex.join(argv)) from exc
        try:
            yield proc
        finally:
            proc.kill()
            proc.wait()


async def _query_pci(
    layout: Layout, sock: Path, proc: subprocess.Popen[bytes], deadline: float
) -> list[dict[str, Any]]:
    client = QMPClient("hil-topology-check")
    await _connect(client, sock, proc, deadline)
    try:
        await client.execute("cont")
        previous: list[dict[str, Any]] | None = None
        stable_since = time.monotonic()
        while True:
            answer = cast(list[dict[str, Any]], await client.execute("query-pci"))
            now = time.monotonic()
            if answer != previous:
                previous, stable_since = answer, now
            # Done when all our BARs are placed, or when the buses are numbered and nothing
            # has changed for a while (a BAR the firmware cannot place stays unassigned).
            if _settled(layout, answer) or (_numbered(answer) and now - stable_since >= _SETTLE):
                return answer
            if now > deadline:
                raise LaunchError("the firmware did not finish PCI setup before the deadline")
            await asyncio.sleep(_POLL)
    finally:
        await client.disconnect()


async def _connect(client: QMPClient, sock: Path, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise LaunchError(f"QEMU exited with status {proc.returncode} before QMP was up")
        try:
            await client.connect(str(sock))
            return
        except QMPError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)

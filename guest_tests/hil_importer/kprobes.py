"""Watching the kernel's p2p routing decision with kprobe events (tracefs), in a private trace instance.

What is probed, and why these functions (v7.2 source):
- pci_p2pdma_map_type(provider, dev) (drivers/pci/p2pdma.c) is what dma_buf_phys_vec_to_sgt() switches
  on for every map; it is global and exported, so it is in kallsyms and probe-able. Its return value is
  enum pci_p2pdma_map_type (include/linux/pci-p2pdma.h): 2 NOT_SUPPORTED, 3 BUS_ADDR, 4 THRU_HOST_BRIDGE.
  An entry probe records the provider's and the client's device names (provider->owner, dev).
- calc_map_type_and_dist() is static and runs only the first time a provider/client pair is seen (the
  result is cached in the provider's xarray until it is unbound), so it is not a per-map witness; it is
  probed only if kallsyms has it, for information.
- dma_iova_try_alloc() (drivers/iommu/dma-iommu.c) tells the two THRU_HOST_BRIDGE cases apart: true ->
  one IOVA span, false -> dma_map_phys() per range (identity domain / no IOMMU).
- dma_iova_link(dev, state, phys, offset, size, ...) links each range into that span: `offset` says
  where in the span each range lands (so a multi-range buffer must see 0, len0, len0 + len1, ...).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KALLSYMS = Path("/proc/kallsyms")
GROUP = "hil"
INSTANCE = "hil_p2p"

MAP_TYPES = {0: "UNKNOWN", 1: "NONE", 2: "NOT_SUPPORTED", 3: "BUS_ADDR", 4: "THRU_HOST_BRIDGE"}
# The oracle's routes -> the map type the kernel must compute for them.
ROUTE_MAP_TYPE = {
    "bus_addr": "BUS_ADDR",
    "host_bridge_iova": "THRU_HOST_BRIDGE",
    "host_bridge_direct": "THRU_HOST_BRIDGE",
    "refused": "NOT_SUPPORTED",
}

_EVENT = re.compile(r":\s+(?P<event>\w+):\s+\((?P<where>[^)]*)\)(?P<args>.*)$")
_ARG = re.compile(r'(?P<key>\w+)=(?:"(?P<quoted>[^"]*)"|(?P<plain>\S+))')


class KprobeUnavailableError(RuntimeError):
    """kprobe events cannot be used here; the message is the skip reason."""


@dataclass(frozen=True, slots=True)
class TraceEvent:
    event: str
    args: dict[str, str] = field(default_factory=dict)


def parse_trace(text: str) -> list[TraceEvent]:
    """The events of a tracefs `trace` file, in order; comment lines are skipped (pure)."""
    events = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _EVENT.search(line)
        if match is None:
            continue
        args = {m.group("key"): m.group("quoted") if m.group("quoted") is not None else m.group("plain")
                for m in _ARG.finditer(match.group("args"))}  # fmt: skip
        events.append(TraceEvent(match.group("event"), args))
    return events


def kallsyms_has(text: str, symbol: str) -> str | None:
    """The kallsyms name for `symbol` (exact, or a compiler clone like symbol.isra.0), else None (pure)."""
    # One regex scan in C: splitting /proc/kallsyms' ~100k lines in Python took 0.3-0.5 s per lookup
    # under TCG, 2.8 s of a switch-p2p cell. A line is "address type name" plus "\t[module]" for a
    # module's symbol; only text symbols (t/T) can be probed.
    name = re.escape(symbol)
    exact = re.search(rf"^[0-9a-f]+ [tT] ({name})(?:\s|$)", text, re.MULTILINE)
    if exact is not None:
        return exact.group(1)
    clone = re.search(rf"^[0-9a-f]+ [tT] ({name}\.\S+)", text, re.MULTILINE)
    return clone.group(1) if clone is not None else None


def probe_definitions(optional_calc: str | None, iova_link: bool = True) -> list[str]:
    """kprobe_events lines (pure). $argN/$retval need CONFIG_HAVE_FUNCTION_ARG_ACCESS_API (x86 has it)."""
    # struct device starts with its kobject, whose first member is the name pointer; struct
    # p2pdma_provider starts with its owner device: so +0(+0(x)) is dev_name().
    names = "provider=+0(+0(+0($arg1))):string client=+0(+0($arg2)):string"
    lines = [
        f"p:{GROUP}/map_type pci_p2pdma_map_type {names}",
        f"r:{GROUP}/map_type_ret pci_p2pdma_map_type ret=$retval:s32",
        f"r:{GROUP}/iova_alloc_ret dma_iova_try_alloc ret=$retval:u8",
    ]
    if optional_calc:
        lines.append(f"r:{GROUP}/calc_ret {optional_calc} ret=$retval:s32")
    if iova_link:
        lines += [
            f"p:{GROUP}/iova_link dma_iova_link phys=$arg3:x64 offset=$arg4:u64 size=$arg5:u64",
            f"r:{GROUP}/iova_link_ret dma_iova_link ret=$retval:s32",
        ]
    return lines


@dataclass(frozen=True, slots=True)
class IovaLink:
    offset: int
    size: int
    ret: int | None  # None: no return event seen

    def __str__(self) -> str:
        return f"+{self.offset:#x} len {self.size:#x} -> {self.ret}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the kernel decided during one map call, from the trace."""

    provider: str | None
    client: str | None
    map_type: str | None
    iova: bool | None  # None: dma_iova_try_alloc was not called
    calc_map_type: str | None  # None: the cached decision was used (or the function is not probed)
    links: tuple[IovaLink, ...] = ()  # dma_iova_link calls, in order

    def as_details(self) -> dict[str, object]:
        return {"provider": self.provider, "client": self.client, "map_type": self.map_type,
                "iova": self.iova, "calc_map_type": self.calc_map_type,
                "iova_links": [str(link) for link in self.links]}  # fmt: skip


def decision(events: list[TraceEvent]) -> Decision:
    """Fold one map call's events into a Decision (pure). The last map_type call wins."""
    provider = client = map_type = calc = None
    iova: bool | None = None
    links: list[IovaLink] = []
    for ev in events:
        if ev.event == "map_type":
            provider, client = ev.args.get("provider"), ev.args.get("client")
        elif ev.event == "map_type_ret":
            map_type = MAP_TYPES.get(int(ev.args["ret"]), ev.args["ret"])
        elif ev.event == "iova_alloc_ret":
            iova = int(ev.args["ret"], 0) != 0
        elif ev.event == "calc_ret":
            calc = MAP_TYPES.get(int(ev.args["ret"]), ev.args["ret"])
        elif ev.event == "iova_link":
            links.append(IovaLink(int(ev.args["offset"], 0), int(ev.args["size"], 0), None))
        elif ev.event == "iova_link_ret" and links and links[-1].ret is None:
            links[-1] = IovaLink(links[-1].offset, links[-1].size, int(ev.args["ret"]))
    return Decision(provider, client, map_type, iova, calc, tuple(links))


def _tracefs() -> Path:
    for path in TRACEFS_CANDIDATES:
        if (path / "kprobe_events").exists():
            return path
    mount_point = TRACEFS_CANDIDATES[0]
    proc = subprocess.run(["mount", "-t", "tracefs", "nodev", str(mount_point)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0 or not (mount_point / "kprobe_events").exists():
        raise KprobeUnavailableError(
            f"no tracefs with kprobe_events (CONFIG_KPROBE_EVENTS off?): mount said {proc.stderr.strip()!r}"
        )
    return mount_point


class TraceSession:
    """kprobe events (group `hil`) enabled in a private trace instance, removed by close()."""

    def __init__(self, definitions: list[str], instance: str = INSTANCE) -> None:
        self.tracefs = _tracefs()
        self.definitions = definitions
        self.instance = self.tracefs / "instances" / instance
        self._install()

    def _install(self) -> None:
        self.close()
        for line in self.definitions:
            try:
                _append(self.tracefs / "kprobe_events", line)
            except OSError as exc:
                log = _read_or_empty(self.tracefs / "error_log")
                self.close()
                raise KprobeUnavailableError(f"kprobe_events rejected {line!r}: {exc} {log}".strip()) from exc
        self.instance.mkdir(exist_ok=True)
        (self.instance / "events" / GROUP / "enable").write_text("1")

    @contextlib.contextmanager
    def watch(self) -> Iterator[list[TraceEvent]]:
        """Collects the events of the block into the yielded list (filled when the block ends)."""
        (self.instance / "trace").write_text("")
        collected: list[TraceEvent] = []
        try:
            yield collected
        finally:
            collected.extend(parse_trace((self.instance / "trace").read_text()))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            (self.instance / "events" / GROUP / "enable").write_text("0")
        with contextlib.suppress(OSError):
            os.rmdir(self.instance)
        for line in self.definitions:
            name = line.split()[0].split(":", 1)[1]
            with contextlib.suppress(OSError):
                _append(self.tracefs / "kprobe_events", f"-:{name}")


def _kallsyms_require(symbols: tuple[str, ...]) -> str:
    kallsyms = KALLSYMS.read_text()
    missing = [s for s in symbols if kallsyms_has(kallsyms, s) is None]
    if missing:
        raise KprobeUnavailableError(f"not in /proc/kallsyms (inlined or absent): {', '.join(missing)}")
    return kallsyms


class RoutingProbe(TraceSession):
    """pci_p2pdma_map_type (entry + return), dma_iova_try_alloc and, if present, calc_map_type_and_dist."""

    def __init__(self) -> None:
        kallsyms = _kallsyms_require(("pci_p2pdma_map_type", "dma_iova_try_alloc"))
        self.calc_symbol = kallsyms_has(kallsyms, "calc_map_type_and_dist")
        self.iova_link = kallsyms_has(kallsyms, "dma_iova_link") == "dma_iova_link"
        super().__init__(probe_definitions(self.calc_symbol, self.iova_link))


def call_probe(symbol: str, event: str) -> TraceSession:
    """Counts calls of one kernel function (event `event`), e.g. to see whether a syscall reached it."""
    name = kallsyms_has(_kallsyms_require((symbol,)), symbol)
    return TraceSession([f"p:{GROUP}/{event} {name}"], instance=f"{INSTANCE}_{event}")


def _append(path: Path, line: str) -> None:
    """One write(2) with O_APPEND. Not open("a"): Python seeks to the end, which tracefs refuses (EINVAL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""

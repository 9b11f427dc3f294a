"""A topology's PCIe tree as an inline SVG, with the path each exporter->importer pair took (pure).

Layout: one column per leaf (a device or an empty port), a parent centred over its children, one row
per tree level, every device on the bottom row so the endpoints line up. Paths run beside the tree's
edges (one lane each, so two pairs over the same link stay apart) and are drawn under the boxes: what
shows is the line climbing out of the exporter, into the bridge where it turns (the switch for
bus_addr, the host bridge otherwise) and down into the importer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from itertools import pairwise

from harness.results.routes import NOT_OBSERVED, RouteRow
from harness.sizes import format_size
from harness.topology.acs import ACS_CR, ACS_DT, ACS_EC, ACS_RR, ACS_SV, ACS_TB, ACS_UF, guest_view
from harness.topology.layout import Layout, PortLayout, SwitchLayout, lay_out
from harness.topology.model import Topology
from harness.topology.oracle import Q35_HOST_BRIDGE, host_bridge_whitelisted
from harness.topology.render import kernel_cmdline

ROUTE_COLOURS: dict[str, str] = {
    "bus_addr": "#1a9850",
    "host_bridge_iova": "#2c7bb6",
    "host_bridge_direct": "#e08214",
    "refused": "#d7191c",
}
ROUTE_LABELS: dict[str, str] = {
    "bus_addr": "bus address (through the common switch)",
    "host_bridge_iova": "host bridge, IOVA (translating IOMMU)",
    "host_bridge_direct": "host bridge, direct (iommu=pt or none)",
    "refused": "refused (the map fails with EINVAL)",
}
UNKNOWN_COLOUR = "#7f7f7f"
MISMATCH_COLOUR = "#c51b7d"

HOST = "#host"  # not a valid topology id, so it cannot clash with one
COL_W = 184
BOX_W = 166
LINE_H = 13
BOX_H = 4 * LINE_H + 12
LANE = 6
MARGIN = 16
_MAX_CHARS = 27
_ACS_BITS = (
    (ACS_SV, "SV"),
    (ACS_TB, "TB"),
    (ACS_RR, "RR"),
    (ACS_CR, "CR"),
    (ACS_UF, "UF"),
    (ACS_EC, "EC"),
    (ACS_DT, "DT"),
)
_FILL = {"host": "#eef2f7", "root": "#f4f4f4", "downstream": "#f4f4f4", "switch": "#fbf3e4", "device": "#fff"}


@dataclass(frozen=True)
class _Box:
    id: str
    kind: str
    cx: float
    y: float
    w: float
    lines: tuple[str, ...]

    @property
    def bottom(self) -> float:
        return self.y + BOX_H


@dataclass(frozen=True)
class _Pair:
    row: RouteRow
    exporter: str
    importer: str
    route: str  # what is drawn: the kernel's decision, or the oracle's when none was observed
    observed: bool
    mismatch: bool

    @property
    def colour(self) -> str:
        return ROUTE_COLOURS.get(self.route, UNKNOWN_COLOUR)


def _bytes(n: int) -> str:
    text = format_size(n)
    return f"{text[:-1]} {text[-1]}iB" if text[-1] in "KMGT" else f"{text} B"


def _acs_text(ctrl: int) -> str:
    names = [name for bit, name in _ACS_BITS if ctrl & bit]
    return "ACS on: " + " ".join(names) if names else "ACS capable, all off"


def _box_lines(layout: Layout) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each node's (kind, text lines); the host bridge's under HOST."""
    topo = layout.topology
    view = guest_view(layout, kernel_cmdline(topo))
    iommu = {
        "translated": f"IOMMU {topo.iommu}: translating",
        "passthrough": f"IOMMU {topo.iommu}: passthrough",
        "none": "no IOMMU" if topo.iommu == "none" else f"IOMMU {topo.iommu}: off",
    }[view.iommu]
    cpu = topo.machine.cpu_model
    via_host = cpu.p2pdma_through_host_bridge or host_bridge_whitelisted()
    bridge = "{:04x}:{:04x}".format(*Q35_HOST_BRIDGE)
    out: dict[str, tuple[str, tuple[str, ...]]] = {
        HOST: (
            "host",
            (
                f"host bridge / root complex (q35 {bridge})",
                iommu,
                f"CPU {topo.machine.cpu}",
                "p2p via host bridge: " + ("allowed" if via_host else "not allowed"),
            ),
        )
    }
    for node in layout.nodes:
        if isinstance(node, PortLayout):
            kind = "root port" if node.kind == "root" else "downstream port"
            state = view.acs.get(node.id)
            if not node.acs:
                acs, redirect = "no ACS capability", "p2p not redirected"
            elif state is None:
                acs, redirect = "ACS capable", ""
            else:
                acs = _acs_text(state.ctrl)
                redirect = "redirects p2p upstream" if state.redirects else "no ACS redirect"
            out[node.id] = (node.kind, (f"{node.id} · {kind}", acs, redirect))
        elif isinstance(node, SwitchLayout):
            out[node.id] = (
                "switch",
                (f"{node.id} · switch", "upstream port x3130", f"{len(node.downstream)} ports"),
            )
        else:
            bars = tuple(f"BAR{i} {_bytes(size)}" for i, size in sorted(node.bars.items()))
            out[node.id] = ("device", (f"{node.id} · {node.kind}", f"role {node.role}", *bars))
    return out


def _parents(layout: Layout) -> dict[str, str]:
    return {node.id: (HOST if node.bus == "pcie.0" else node.bus) for node in layout.nodes}


def _boxes(layout: Layout, lanes: int) -> tuple[dict[str, _Box], float, float]:
    """Every node's box, the tree's width and its bottom."""
    parents = _parents(layout)
    children: dict[str, list[str]] = {HOST: []}
    for node in layout.nodes:  # plug order keeps siblings in slot order
        children.setdefault(node.id, [])
        children[parents[node.id]].append(node.id)
    depth = {HOST: 0}
    for node in layout.nodes:
        depth[node.id] = depth[parents[node.id]] + 1
    bottom_level = max(depth.values())
    devices = {d.id for d in layout.devices}
    level = {n: (bottom_level if n in devices else d) for n, d in depth.items()}
    column: dict[str, float] = {}
    leaves: list[str] = []

    def place(node_id: str) -> None:
        kids = children[node_id]
        if not kids:
            column[node_id] = float(len(leaves))
            leaves.append(node_id)
            return
        for kid in kids:
            place(kid)
        column[node_id] = (column[kids[0]] + column[kids[-1]]) / 2

    place(HOST)
    gap = _gap(lanes)
    texts = _box_lines(layout)
    boxes = {}
    for node_id, col in column.items():
        kind, lines = texts[node_id]
        width = float(BOX_W)
        if node_id == HOST:
            roots = children[HOST]
            width = max(BOX_W + 80.0, (column[roots[-1]] - column[roots[0]]) * COL_W + BOX_W)
        boxes[node_id] = _Box(
            id=node_id,
            kind=kind,
            cx=MARGIN + COL_W / 2 + col * COL_W,
            y=MARGIN + level[node_id] * (BOX_H + gap),
            w=width,
            lines=lines,
        )
    width = max(2 * MARGIN + len(leaves) * COL_W, 2 * MARGIN + boxes[HOST].w)
    return boxes, width, MARGIN + (bottom_level + 1) * (BOX_H + gap) - gap


def _gap(lanes: int) -> float:
    return 36.0 + lanes * LANE


def _chain(layout: Layout, device: str) -> list[str]:
    dev = layout.device(device)
    return [dev.id, *reversed(dev.upstream), HOST]


def _split_pair(pair: str, devices: set[str]) -> tuple[str, str] | None:
    for i, char in enumerate(pair):
        if char == "-" and pair[:i] in devices and pair[i + 1 :] in devices:
            return pair[:i], pair[i + 1 :]
    return None


def _pairs(topo: Topology, layout: Layout, rows: Sequence[RouteRow]) -> tuple[list[_Pair], list[RouteRow]]:
    devices = {d.id for d in layout.devices}
    drawn, skipped = [], []
    for row in rows:
        if row.topology != topo.name:
            continue
        ends = _split_pair(row.pair, devices)
        if ends is None:
            skipped.append(row)
            continue
        observed = row.decided not in (NOT_OBSERVED, "-", "")
        route = row.decided if observed else row.predicted
        mismatch = observed and row.predicted not in ("-", "") and row.decided != row.predicted
        drawn.append(_Pair(row, ends[0], ends[1], route, observed, mismatch))
    return drawn, skipped


def _leg(
    boxes: dict[str, _Box], chain: list[str], turn: str, dx: float, dy: float, gap: float
) -> list[tuple[float, float]]:
    """From the device's top up beside the tree's edges to the middle of the turning box."""
    first = boxes[chain[0]]
    points = [(first.cx + dx, first.y)]
    for child, parent in pairwise(chain):
        up = boxes[parent]
        bend = up.bottom + gap / 2 + dy
        points += [(boxes[child].cx + dx, bend), (up.cx + dx, bend)]
        if parent == turn:
            points.append((up.cx + dx, up.y + BOX_H / 2))
            break
        points.append((up.cx + dx, up.y))
    return points


def _path_d(points: list[tuple[float, float]]) -> str:
    return "M " + " L ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _text_lines(box: _Box) -> str:
    left = box.cx - box.w / 2 + 7
    out = []
    for i, line in enumerate(box.lines):
        shown = line if len(line) <= _MAX_CHARS or box.id == HOST else line[: _MAX_CHARS - 1] + "…"
        weight = ' font-weight="bold"' if i == 0 else ""
        out.append(f'<text x="{left:.1f}" y="{box.y + 15 + i * LINE_H:.1f}"{weight}>{escape(shown)}</text>')
    return "".join(out)


def _box_svg(box: _Box) -> str:
    title = escape(" | ".join(box.lines))
    stroke = "#555" if box.kind in ("host", "device") else "#999"
    node_id = "host" if box.id == HOST else box.id
    return (
        f'<g class="node node-{escape(box.kind.replace(" ", "-"))}" data-node="{escape(node_id)}">'
        f"<title>{title}</title>"
        f'<rect x="{box.cx - box.w / 2:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{BOX_H}" rx="5" '
        f'fill="{_FILL.get(box.kind, "#fff")}" stroke="{stroke}"/>'
        f"{_text_lines(box)}</g>"
    )


def _edge_svg(parent: _Box, child: _Box, gap: float) -> str:
    bend = parent.bottom + gap / 2
    points = [(parent.cx, parent.bottom), (parent.cx, bend), (child.cx, bend), (child.cx, child.y)]
    return f'<path class="edge" d="{_path_d(points)}" fill="none" stroke="#bbb" stroke-width="1.2"/>'


def _status(pair: _Pair) -> str:
    row = pair.row
    if not pair.observed:
        return f"kernel decision not observed; oracle {row.predicted}"
    if pair.mismatch:
        return f"MISMATCH: kernel {row.decided}, oracle {row.predicted}"
    if row.predicted in ("-", ""):
        return f"kernel {row.decided}; no oracle prediction recorded"
    return f"kernel {row.decided} == oracle"


def _pair_svg(pair: _Pair, points: list[tuple[float, float]], several_kernels: bool) -> str:
    row = pair.row
    classes = "pair" + (" mismatch" if pair.mismatch else "") + ("" if pair.observed else " unobserved")
    dash = "" if pair.observed else ' stroke-dasharray="7 5"'
    label = f"{pair.exporter} → {pair.importer}" + (f" ({row.kernel})" if several_kernels else "")
    halo = (
        f'<path class="mismatch-halo" d="{_path_d(points)}" fill="none" stroke="{MISMATCH_COLOUR}" '
        'stroke-opacity="0.35" stroke-width="12" stroke-linejoin="round"/>'
        if pair.mismatch
        else ""
    )
    return (
        f"{halo}"
        f'<path class="{classes}" d="{_path_d(points)}" fill="none" stroke="{pair.colour}" '
        f'stroke-width="3.5" '
        f'stroke-linejoin="round"{dash} data-pair="{escape(row.pair)}" data-kernel="{escape(row.kernel)}" '
        f'data-route="{escape(pair.route)}" data-oracle="{escape(row.predicted)}" '
        f'data-decided="{escape(row.decided)}"><title>{escape(label)}: {escape(_status(pair))}</title></path>'
    )


def _swatch(x: float, y: float, colour: str, *, dashed: bool = False, halo: bool = False) -> str:
    d = f"M {x:.1f},{y:.1f} L {x + 26:.1f},{y:.1f}"
    out = ""
    if halo:
        out += f'<path d="{d}" stroke="{MISMATCH_COLOUR}" stroke-opacity="0.35" stroke-width="12"/>'
    dash = ' stroke-dasharray="7 5"' if dashed else ""
    return out + f'<path class="swatch" d="{d}" stroke="{colour}" stroke-width="3.5"{dash}/>'


def _pair_list(
    pairs: list[_Pair], skipped: list[RouteRow], top: float, several_kernels: bool
) -> tuple[str, float]:
    out = [
        f'<text x="{MARGIN}" y="{top + 12:.1f}" font-weight="bold">pairs (kernel decision vs oracle)</text>'
    ]
    y = top + 30
    for pair in pairs:
        row = pair.row
        out.append(_swatch(MARGIN, y - 4, pair.colour, dashed=not pair.observed, halo=pair.mismatch))
        kernel = f" [{row.kernel}]" if several_kernels else ""
        colour = f' fill="{MISMATCH_COLOUR}" font-weight="bold"' if pair.mismatch else ""
        out.append(
            f'<text x="{MARGIN + 36}" y="{y:.1f}"{colour} class="pair-status">'
            f"{escape(pair.exporter)} → {escape(pair.importer)}{escape(kernel)}: "
            f"{escape(_status(pair))}</text>"
        )
        y += 18
    for row in skipped:
        out.append(
            f'<text x="{MARGIN + 36}" y="{y:.1f}" fill="#a00">{escape(row.pair)} [{escape(row.kernel)}]: '
            "not drawn (its devices are not in this topology)</text>"
        )
        y += 18
    if not pairs and not skipped:
        out.append(
            f'<text x="{MARGIN + 36}" y="{y:.1f}" fill="#666">no pair has a routing decision record</text>'
        )
        y += 18
    return "".join(out), y


def _legend(top: float, pairs: list[_Pair]) -> tuple[str, float]:
    out = [f'<text x="{MARGIN}" y="{top + 12:.1f}" font-weight="bold">legend</text>']
    y = top + 30
    entries = [(ROUTE_COLOURS[r], ROUTE_LABELS[r], False, False) for r in ROUTE_COLOURS]
    if any(p.route not in ROUTE_COLOURS for p in pairs):
        entries.append((UNKNOWN_COLOUR, "another route (see the routes table)", False, False))
    entries += [
        ("#555", "dashed: the kernel's decision was not observed (the oracle's route is drawn)", True, False),
        ("#555", "halo: the kernel decided otherwise than the oracle predicted", False, True),
    ]
    for colour, label, dashed, halo in entries:
        out.append(_swatch(MARGIN, y - 4, colour, dashed=dashed, halo=halo))
        out.append(f'<text x="{MARGIN + 36}" y="{y:.1f}">{escape(label)}</text>')
        y += 18
    return "".join(out), y


def topology_svg(topo: Topology, rows: Sequence[RouteRow]) -> str:
    """The PCIe tree of `topo` and, for each of `rows` about this topology, the path of its pair:
    the kernel's decision when observed (else the oracle's, dashed), mismatches haloed."""
    layout = lay_out(topo)
    pairs, skipped = _pairs(topo, layout, rows)
    lanes = max(1, len(pairs))
    gap = _gap(lanes)
    boxes, width, tree_bottom = _boxes(layout, lanes)
    parents = _parents(layout)
    several_kernels = len({p.row.kernel for p in pairs}) > 1

    edges = [_edge_svg(boxes[parents[n.id]], boxes[n.id], gap) for n in layout.nodes]
    paths = []
    for i, pair in enumerate(pairs):
        offset = (i - (len(pairs) - 1) / 2) * LANE
        up_e, up_i = _chain(layout, pair.exporter), _chain(layout, pair.importer)
        common = next((n for n in up_e if n in up_i), HOST)
        turn = common if pair.route == "bus_addr" else HOST
        leg_e = _leg(boxes, up_e, turn, offset, offset, gap)
        leg_i = _leg(boxes, up_i, turn, offset, offset, gap)
        paths.append(_pair_svg(pair, leg_e + leg_i[::-1][1:], several_kernels))
    nodes = [_box_svg(boxes[HOST]), *(_box_svg(boxes[n.id]) for n in layout.nodes)]
    listing, y = _pair_list(pairs, skipped, tree_bottom + 20, several_kernels)
    legend, y = _legend(y + 8, pairs)
    height = y + MARGIN
    width = max(width, 620.0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" data-topology="{escape(topo.name)}" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'font-family="DejaVu Sans, Verdana, sans-serif" font-size="11">'
        f"<title>PCIe topology {escape(topo.name)} and the route of each exporter/importer pair</title>"
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<g class="edges">{"".join(edges)}</g><g class="paths">{"".join(paths)}</g>'
        f'<g class="nodes">{"".join(nodes)}</g><g class="pairs">{listing}</g><g class="legend">{legend}</g>'
        "</svg>"
    )

"""index.html and the topology drawing, read back as a parser sees them (no browser)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import matrix_html_fixtures as fx
import pytest
from html_tree import Node, parse_html
from matrix_fixtures import FakeCell, record, write_matrix

from harness.matrix.cells import TOPOLOGY_FILE
from harness.matrix.document import Matrix
from harness.matrix.html import cell_anchor, index_html, topology_anchor
from harness.matrix.svg import ROUTE_COLOURS, topology_svg
from harness.results.routes import NOT_OBSERVED, RouteRow
from harness.topology import lay_out, load_topology

SVG = "{http://www.w3.org/2000/svg}"
OK = {"passed", "skipped", "xfailed"}


@pytest.fixture
def matrix(tmp_path: Path) -> Matrix:
    return fx.build(tmp_path / "nightly")


@pytest.fixture
def page(matrix: Matrix) -> Node:
    return parse_html(index_html(matrix, fx.comparison(matrix)))


def _grid_cells(page: Node) -> list[Node]:
    (grid,) = page.find_all("table", cls="grid")
    return grid.find_all("td", cls="cell")


def test_the_grid_has_one_cell_per_planned_cell_and_says_which_ran(matrix: Matrix, page: Node) -> None:
    cells = _grid_cells(page)
    ran = [c for c in cells if "run" in c.classes]
    missing = [c for c in cells if "missing" in c.classes]
    assert sorted(c.attrs["data-cell"] for c in ran) == sorted(matrix.cells)
    assert [c.attrs["data-cell"] for c in missing] == matrix.missing
    assert len(cells) == len(matrix.planned)
    for cell in ran:
        doc = matrix.cells[cell.attrs["data-cell"]]
        ok = sum(r.outcome in OK for r in doc.records)
        assert f"v-{doc.verdict.value}" in cell.classes
        assert f"{ok}/{len(doc.records)}" in cell.text
    (flaky_cell,) = [c for c in ran if "flaky" in c.text]
    assert "1 flaky" in flaky_cell.text
    assert "missing" in missing[0].text


def test_a_failing_cell_links_from_the_grid_to_its_evidence(matrix: Matrix, page: Node) -> None:
    failing = next(c for c in fx.cells()[0] if c.evidence)
    (cell,) = [c for c in _grid_cells(page) if c.attrs.get("data-cell") == failing.id]
    (link,) = cell.find_all("a")
    assert link.attrs["href"] == f"#{cell_anchor(failing.id)}"
    section = page.by_id(cell_anchor(failing.id))
    assert section is not None
    evidence = page.by_id(f"{cell_anchor(failing.id)}-evidence")
    assert evidence is not None and evidence in list(section.iter())
    assert fx.WARNING_LINE in evidence.text
    assert "Call Trace:" in evidence.text  # the excerpt, not just its first line
    assert fx.NOTE in evidence.text
    assert fx.FAILING_TEST in evidence.text
    hrefs = [a.attrs["href"] for a in section.find_all("a")]
    assert f"{failing.id}/console.log" in hrefs


def test_cell_files_are_linked_relative_to_the_matrix_directory(matrix: Matrix) -> None:
    cell_id = next(iter(matrix.cells))
    (matrix.dir / cell_id / "reproduce.sh").write_text("#!/bin/sh\n")
    section = parse_html(index_html(matrix)).by_id(cell_anchor(cell_id))
    assert section is not None
    hrefs = {a.attrs["href"] for a in section.find_all("a")}
    assert {f"{cell_id}/console.log", f"{cell_id}/reproduce.sh", f"{cell_id}/results.json"} <= hrefs
    assert "no junit.xml" in section.text  # the fixture writes none: said, not linked


def test_the_tests_table_holds_every_record_with_its_outcome_and_a_filter(matrix: Matrix, page: Node) -> None:
    for cell_id, doc in matrix.cells.items():
        table = page.by_id(f"{cell_anchor(cell_id)}-tests")
        assert table is not None
        rows = table.find_all("tbody")[0].find_all("tr")
        assert [r.attrs["data-outcome"] for r in rows] == [r.outcome for r in doc.records]
        (box,) = page.find_all("div", cls="filter", data_table=table.attrs["id"])
        assert box.find_all("input") and box.find_all("select")


def test_a_hostile_test_name_stays_text(matrix: Matrix, page: Node) -> None:
    scripts = page.find_all("script")
    assert len(scripts) == 2  # the page's own two, nothing injected
    assert all("pwned" not in s.text for s in scripts)
    assert not page.find_all("img")
    codes = [c.text for c in page.find_all("code")]
    assert fx.HOSTILE in codes
    assert "<b>not bold</b> & <i>not italic</i>" in page.text
    assert not page.find_all("i")


def test_the_page_fetches_nothing(matrix: Matrix) -> None:
    text = index_html(matrix, fx.comparison(matrix))
    page = parse_html(text)
    assert not page.find_all("link")
    assert all("src" not in n.attrs for n in page.iter())
    for node in page.find_all("a"):
        href = node.attrs["href"]
        assert href.startswith("#") or not re.match(r"^[a-z]+:|^//", href), href
    assert "@import" not in text and "url(" not in text
    assert "xmlns" in text  # the only URL in the page is the SVG namespace, which is never fetched
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)


def test_routes_table_marks_a_mismatch_and_an_unobserved_decision(matrix: Matrix, page: Node) -> None:
    (table,) = page.find_all("table", cls="routes")
    rows = table.find_all("tbody")[0].find_all("tr")
    assert len(rows) == len(matrix.routes())
    mismatches = [r for r in rows if "mismatch" in r.classes]
    unobserved = [r for r in rows if "unobserved" in r.classes]
    wrong = [r for r in matrix.routes() if r.decided not in (NOT_OBSERVED, r.predicted)]
    assert len(mismatches) == len(wrong) == 1
    assert "!=" in mismatches[0].text and "rootports-acs" in mismatches[0].text
    assert len(unobserved) == 1 and "not observed" in unobserved[0].text


def _svgs(page: Node) -> dict[str, Node]:
    return {s.attrs["data-topology"]: s for s in page.find_all("svg")}


def test_each_topology_that_ran_is_drawn_with_one_path_per_routes_row(matrix: Matrix, page: Node) -> None:
    svgs = _svgs(page)
    assert set(svgs) == {doc.meta.topology for doc in matrix.cells.values()}
    for name, svg in svgs.items():
        section = page.by_id(topology_anchor(name))
        assert section is not None and svg in list(section.iter())
        rows = [r for r in matrix.routes() if r.topology == name]
        paths = svg.find_all("path", cls="pair")
        assert len(paths) == len(rows)
        for path, row in zip(paths, rows, strict=True):
            drawn = row.decided if row.decided != NOT_OBSERVED else row.predicted
            assert path.attrs["stroke"] == ROUTE_COLOURS[drawn]
            assert (path.attrs["data-pair"], path.attrs["data-kernel"]) == (row.pair, row.kernel)


def test_the_drawing_marks_the_kernel_disagreeing_and_not_observed(page: Node) -> None:
    svg = _svgs(page)["rootports-acs"]
    by_pair = {p.attrs["data-pair"]: p for p in svg.find_all("path", cls="pair")}
    wrong, unseen = by_pair["exporter-importer"], by_pair["exporter-dma"]
    assert "mismatch" in wrong.classes and "unobserved" not in wrong.classes
    assert wrong.attrs["stroke"] == ROUTE_COLOURS["bus_addr"]  # what the kernel did, not what was predicted
    assert svg.find_all("path", cls="mismatch-halo")
    assert "unobserved" in unseen.classes and "stroke-dasharray" in unseen.attrs
    statuses = [t.text for t in svg.find_all("text", cls="pair-status")]
    assert any("MISMATCH" in s and "host_bridge_iova" in s for s in statuses)
    assert any("not observed" in s for s in statuses)


def _points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]


def _boxes(root: ET.Element) -> dict[str, tuple[float, float, float, float]]:
    out = {}
    for g in root.iter(f"{SVG}g"):
        if "data-node" in g.attrib:
            rect = g.find(f"{SVG}rect")
            assert rect is not None
            x, y, w, h = (float(rect.attrib[k]) for k in ("x", "y", "width", "height"))
            out[g.attrib["data-node"]] = (x, y, x + w, y + h)
    return out


def _inside(point: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def test_a_bus_address_path_turns_in_the_switch_and_a_host_bridge_path_at_the_host_bridge() -> None:
    topo = load_topology("switch-p2p")
    rows = [
        RouteRow("switch-p2p", "k", "exporter-importer", "bus_addr", "bus_addr", "-", ""),
        RouteRow("switch-p2p", "k", "exporter-dma", "refused", "host_bridge_iova", "-", ""),
    ]
    root = ET.fromstring(topology_svg(topo, rows))  # well-formed XML on its own, too
    boxes = _boxes(root)
    paths = {
        p.attrib["data-pair"]: _points(p.attrib["d"])
        for p in root.iter(f"{SVG}path")
        if "pair" in p.attrib.get("class", "").split()
    }
    switch = lay_out(topo).switches[0].id
    local, through_host = paths["exporter-importer"], paths["exporter-dma"]
    top = min(local, key=lambda p: p[1])
    assert _inside(top, boxes[switch])
    assert not any(_inside(p, boxes["host"]) for p in local)
    assert _inside(min(through_host, key=lambda p: p[1]), boxes["host"])
    for path, (exporter, importer) in (
        (local, ("exporter", "importer")),
        (through_host, ("exporter", "dma")),
    ):
        assert _inside(path[0], boxes[exporter]) and _inside(path[-1], boxes[importer])


def test_the_drawing_names_acs_iommu_and_bar_sizes() -> None:
    topo = load_topology("bar-4g-pt")
    text = "".join(ET.fromstring(topology_svg(topo, [])).itertext())
    layout = lay_out(topo)
    assert "passthrough" in text
    for port in layout.ports:
        assert port.id in text
    assert ("ACS on" in text) == any(p.acs for p in layout.ports)
    big = max(d.size or 0 for d in layout.devices)
    assert f"{big >> 30} GiB" in text
    assert "no pair has a routing decision record" in text


def test_a_topology_without_its_file_is_not_drawn_and_says_why(matrix: Matrix) -> None:
    for doc in matrix.cells.values():
        if doc.meta.topology == "rootports-acs":
            (doc.path.parent / TOPOLOGY_FILE).unlink()
    page = parse_html(index_html(matrix))
    section = page.by_id(topology_anchor("rootports-acs"))
    assert section is not None
    assert not section.find_all("svg")
    assert "drawing skipped" in section.text
    assert _svgs(page).keys() == {"switch-p2p"}


def test_extra_axes_become_columns(tmp_path: Path) -> None:
    cells = [
        FakeCell("switch-p2p", axes={"cpu": "Skylake-Server"}, records=[record("t.py::a", "passed")]),
        FakeCell("switch-p2p-amd", axes={"cpu": "EPYC-Rome"}, records=[record("t.py::a", "passed")]),
    ]
    matrix = write_matrix(tmp_path / "m", cells)
    (grid,) = parse_html(index_html(matrix)).find_all("table", cls="grid")
    assert [th.text for th in grid.find_all("thead")[0].find_all("th")][:2] == ["topology \\ kernel", "cpu"]
    body_rows = grid.find_all("tbody")[0].find_all("tr")
    assert [next(td.text for td in row.find_all("td")) for row in body_rows] == [
        "Skylake-Server",
        "EPYC-Rome",
    ]


def test_the_comparison_section_renders_the_comparison_document(matrix: Matrix, page: Node) -> None:
    doc: dict[str, Any] = fx.comparison(matrix)
    section = page.by_id("comparison")
    assert section is not None
    assert f"Compared with {doc['old']}" in section.find_all("h2")[0].text
    (changes,) = section.find_all("table", cls="changes")
    rows = changes.find_all("tbody")[0].find_all("tr")
    assert len(rows) == len(doc["changes"])
    assert rows[0].classes == ["change-regression"]  # regressions first
    assert rows[0].find_all("a")[0].attrs["href"] == f"#{cell_anchor(doc['changes'][0]['cell'])}"
    assert "kernel version changed" in section.text
    regressed = next(c for c in _grid_cells(page) if c.attrs.get("data-cell") == doc["changes"][0]["cell"])
    assert "1 regression" in regressed.text
    assert parse_html(index_html(matrix)).by_id("comparison") is None


def test_a_comparison_missing_fields_still_renders(matrix: Matrix) -> None:
    page = parse_html(index_html(matrix, {"old": "x", "changes": [{"kind": "fix"}, "junk"], "cells": None}))
    section = page.by_id("comparison")
    assert section is not None and "Compared with x" in section.text


def test_the_page_renders_what_hil_compare_writes(tmp_path: Path, matrix: Matrix) -> None:
    from harness.matrix.compare import compare, comparison_json

    ran, _ = fx.cells()
    calm = [FakeCell(c.topology, c.kernel, records=[record(fx.FAILING_TEST, "passed")]) for c in ran]
    old = write_matrix(tmp_path / "old", calm)
    doc = json.loads(comparison_json(compare(old, matrix)))
    section = parse_html(index_html(matrix, doc)).by_id("comparison")
    assert section is not None
    (changes,) = section.find_all("table", cls="changes")
    assert len(changes.find_all("tbody")[0].find_all("tr")) == len(doc["changes"]) > 0
    assert any("change-regression" in row.classes for row in changes.find_all("tr"))


def test_an_axis_variant_is_drawn_under_its_own_name(tmp_path: Path) -> None:
    name = "switch-p2p[cpu=EPYC-Rome]"  # set after validation by harness/topology/axes.py, on purpose
    cell = FakeCell(
        name,
        axes={"cpu": "EPYC-Rome"},
        records=[fx.decision("exporter-dma", "host_bridge_iova", "THRU_HOST_BRIDGE", True)],
    )
    matrix = write_matrix(tmp_path / "m", [cell])
    page = parse_html(index_html(matrix))
    section = page.by_id(topology_anchor(name))
    assert section is not None
    (svg,) = section.find_all("svg")
    assert svg.attrs["data-topology"] == name
    (path,) = svg.find_all("path", cls="pair")
    assert path.attrs["stroke"] == ROUTE_COLOURS["host_bridge_iova"]

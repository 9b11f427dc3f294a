"""index.html of a matrix directory: one static page that opens from disk, with no server and nothing
fetched (CSS, JS and the topology drawings are inline).

Pure but for one read per topology: the cell directory's topology.json, the machine the cell booted
(an --axis variant is not in qemu_configs, so the page cannot draw it from anywhere else). Everything
that comes from results (test names, messages, console excerpts) is escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from harness.matrix.cells import TOPOLOGY_FILE
from harness.matrix.document import Matrix
from harness.matrix.svg import ROUTE_COLOURS, UNKNOWN_COLOUR, topology_svg
from harness.results.model import FAILING, OUTCOMES, Outcome, TestRecord, count_outcomes, exit_code
from harness.results.read import CellDocument
from harness.results.routes import NOT_OBSERVED, RouteRow
from harness.results.write import details_text
from harness.topology.model import Topology

OK_OUTCOMES: tuple[Outcome, ...] = ("passed", "skipped", "xfailed")
CELL_FILES = ("console.log", "reproduce.sh", "results.json", "junit.xml")
CHANGE_KINDS = ("regression", "fix", "new", "vanished", "flaky")
_PLAIN_NAME = "variant"
_ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

_CSS = """
:root { --passed: #d9f0d3; --failed: #f4a6a6; --crashed: #d98bd9; --hung: #f6c177; --infra-error: #c8c8c8;
  --missing: #fff; --line: #ccc; }
body { font: 14px/1.4 "DejaVu Sans", Verdana, sans-serif; margin: 0 1.5em 3em; color: #222; }
h1 { font-size: 1.5em; margin: .6em 0 .2em; } h2 { margin-top: 1.6em; border-bottom: 2px solid #ddd; }
h3 { margin: 1.2em 0 .3em; } nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; white-space: nowrap; }
.badge { display: inline-block; padding: 0 .5em; border-radius: 3px; border: 1px solid #999;
  font-weight: bold; }
.v-passed { background: var(--passed); } .v-failed { background: var(--failed); }
.v-crashed { background: var(--crashed); } .v-hung { background: var(--hung); }
.v-infra-error { background: var(--infra-error); }
.missing { background: repeating-linear-gradient(45deg, #fff, #fff 6px, #eee 6px, #eee 12px); color: #555; }
table.grid td.cell { min-width: 9em; }
table.grid td.cell a { display: block; color: inherit; text-decoration: none; }
table.grid td.cell a:hover { text-decoration: underline; }
.ok { font-variant-numeric: tabular-nums; } .flaky { color: #8a4b00; font-weight: bold; }
.cmp { font-size: .85em; display: block; } .cmp.regression { color: #a00; font-weight: bold; }
.o-failed, .o-error, .o-xpassed { background: #fbe0e0; } .o-flaky { background: #fdf0d5; }
.o-skipped, .o-xfailed { color: #555; }
.mismatch, tr.mismatch td { background: #f9d9ea; } .mark { font-weight: bold; text-align: center; }
.route { display: inline-block; padding: 0 .4em; border-radius: 3px; color: #fff; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .5em; overflow-x: auto; max-height: 30em;
  white-space: pre-wrap; word-break: break-word; margin: .3em 0; }
td pre { max-height: 14em; }
.evidence { border-left: 4px solid #c33; padding-left: .8em; margin: .5em 0; }
.evidence.none { border-color: #9c9; }
section.cell-section { border-top: 1px solid #ddd; margin-top: 1.5em; }
section:target, section.cell-section:target { outline: 3px solid #4a90d9; outline-offset: 4px; }
.filter { margin: .4em 0; } .filter input { width: 24em; }
.svg-box { overflow-x: auto; border: 1px solid #e3e3e3; padding: .3em; display: inline-block;
  max-width: 100%; }
.note { color: #555; font-style: italic; }
tr[hidden] { display: none; }
#page-status { color: #777; font-size: .85em; margin-top: 3em; }
"""

# Installed before anything else runs, so an error anywhere on the page is counted.
_HEAD_JS = """
window.hilErrors = [];
window.addEventListener('error', function (e) {
  window.hilErrors.push(String(e.message || e));
  if (window.hilReport) { window.hilReport(); }
});
"""

_BODY_JS = """
(function () {
  'use strict';
  var OK = ['passed', 'skipped', 'xfailed'];
  window.hilReport = function () {
    var status = document.getElementById('page-status');
    var errors = window.hilErrors;
    status.textContent = errors.length ? 'script errors: ' + errors.join(' | ') : 'page script: no errors';
    document.body.dataset.errors = String(errors.length);
  };
  Array.prototype.forEach.call(document.querySelectorAll('.filter'), function (box) {
    var table = document.getElementById(box.dataset.table);
    var text = box.querySelector('input');
    var outcome = box.querySelector('select');
    var shown = box.querySelector('.shown');
    function apply() {
      var query = text.value.toLowerCase();
      var want = outcome.value;
      var rows = table.tBodies[0].rows;
      var n = 0;
      for (var i = 0; i < rows.length; i++) {
        var got = rows[i].dataset.outcome;
        var keep = (want === 'all' || got === want || (want === 'not-ok' && OK.indexOf(got) < 0)) &&
          (!query || rows[i].textContent.toLowerCase().indexOf(query) >= 0);
        rows[i].hidden = !keep;
        if (keep) { n++; }
      }
      shown.textContent = n + ' of ' + rows.length + ' shown';
    }
    text.addEventListener('input', apply);
    outcome.addEventListener('change', apply);
    apply();
  });
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (target) {
      Array.prototype.forEach.call(target.querySelectorAll('details'), function (d) { d.open = true; });
    }
  }
  window.addEventListener('hashchange', openTarget);
  openTarget();
  window.hilReport();
  document.body.dataset.ready = '1';
})();
"""


def anchor(prefix: str, ident: str) -> str:
    """An HTML id from a cell id or topology name (both slugs already; this keeps it so)."""
    return f"{prefix}-{_ANCHOR_UNSAFE.sub('_', ident)}"


def cell_anchor(cell_id: str) -> str:
    return anchor("cell", cell_id)


def topology_anchor(name: str) -> str:
    return anchor("topology", name)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def ok_total(records: Sequence[TestRecord]) -> tuple[int, int]:
    counts = count_outcomes(records)
    return sum(counts[o] for o in OK_OUTCOMES), len(records)


def _counts_text(counts: Mapping[Outcome, int]) -> str:
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts.get(o))


def _cell_dir(matrix: Matrix, doc: CellDocument) -> str:
    try:
        return doc.path.parent.relative_to(matrix.dir).as_posix()
    except ValueError:
        return doc.path.parent.name


def _route_chip(route: str) -> str:
    colour = ROUTE_COLOURS.get(route)
    if colour is None:
        return (
            _e(route)
            if route in ("-", NOT_OBSERVED)
            else f'<span class="route" style="background:{UNKNOWN_COLOUR}">{_e(route)}</span>'
        )
    return f'<span class="route" style="background:{colour}">{_e(route)}</span>'


# -- the grid --------------------------------------------------------------------------------------


def _planned_index(matrix: Matrix) -> dict[tuple[str, str], dict[str, Any]]:
    return {(str(p.get("topology")), str(p.get("kernel"))): p for p in matrix.planned}


def _axis_values(matrix: Matrix, key: str) -> list[str]:
    values = [str(v) for v in matrix.axes.get(key, [])]
    for p in matrix.planned:
        if str(p.get(key)) not in values:
            values.append(str(p.get(key)))
    return values


def _changes_by_cell(comparison: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for change in _dicts(comparison.get("changes") if comparison else None):
        kinds = out.setdefault(str(change.get("cell")), {})
        kind = str(change.get("kind"))
        kinds[kind] = kinds.get(kind, 0) + 1
    return out


def _grid_cell(matrix: Matrix, planned: dict[str, Any] | None, changes: dict[str, dict[str, int]]) -> str:
    if planned is None:
        return '<td class="cell none">&ndash;</td>'
    cell_id = str(planned["id"])
    href = f"#{cell_anchor(cell_id)}"
    doc = matrix.cells.get(cell_id)
    if doc is None:
        return (
            f'<td class="cell missing" data-cell="{_e(cell_id)}"><a href="{href}">missing'
            '<span class="cmp">planned, did not run</span></a></td>'
        )
    ok, total = ok_total(doc.records)
    flaky = count_outcomes(doc.records)["flaky"]
    extra = f' <span class="flaky">{flaky} flaky</span>' if flaky else ""
    cmp = "".join(
        f'<span class="cmp {_e(kind)}">{n} {_e(kind)}{"s" if n > 1 else ""}</span>'
        for kind, n in sorted(changes.get(cell_id, {}).items(), key=lambda kv: _kind_order(kv[0]))
    )
    verdict = doc.verdict.value
    return (
        f'<td class="cell run v-{_e(verdict)}" data-cell="{_e(cell_id)}" data-verdict="{_e(verdict)}">'
        f'<a href="{href}"><b>{_e(verdict)}</b> <span class="ok">{ok}/{total}</span>{extra}{cmp}</a></td>'
    )


def _grid(matrix: Matrix, comparison: Mapping[str, Any] | None) -> str:
    topologies = _axis_values(matrix, "topology")
    kernels = _axis_values(matrix, "kernel")
    extra = [k for k in matrix.axes if k not in ("topology", "kernel")]
    index = _planned_index(matrix)
    changes = _changes_by_cell(comparison)
    versions = {
        k: sorted({d.meta.kernel_version or "?" for d in matrix.cells.values() if d.meta.kernel == k})
        for k in kernels
    }
    head = "".join(f"<th>{_e(k)}</th>" for k in extra)
    head += "".join(
        f"<th>{_e(k)}<br><small>{_e(', '.join(versions[k]))}</small></th>"
        if versions[k]
        else f"<th>{_e(k)}</th>"
        for k in kernels
    )
    rows = []
    for topo in topologies:
        some = next((p for p in matrix.planned if str(p.get("topology")) == topo), {})
        given = some.get("axes")
        axes: dict[str, Any] = given if isinstance(given, dict) else {}
        cells = "".join(f"<td>{_e(axes.get(k, ''))}</td>" for k in extra)
        cells += "".join(_grid_cell(matrix, index.get((topo, k)), changes) for k in kernels)
        rows.append(f'<tr><th><a href="#{topology_anchor(topo)}">{_e(topo)}</a></th>{cells}</tr>')
    return (
        '<section id="grid"><h2>Topology &times; kernel</h2>'
        f'<table class="grid"><thead><tr><th>topology \\ kernel</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">cells: verdict, ok/total tests (ok = passed, skipped or xfailed); '
        "flaky = failed, then passed on a retry. Each cell links to its tests and evidence.</p></section>"
    )


def _summary(matrix: Matrix) -> str:
    by_verdict: dict[str, int] = {}
    for doc in matrix.cells.values():
        by_verdict[doc.verdict.value] = by_verdict.get(doc.verdict.value, 0) + 1
    parts = [f"{n} {v}" for v, n in sorted(by_verdict.items())]
    missing = matrix.missing
    if missing:
        parts.append(f'<a href="#missing">{len(missing)} missing</a>')
    verdict = matrix.verdict
    shard = f" (shard {matrix.shard})" if matrix.shard else ""
    return (
        f'<p class="summary">{len(matrix.cells)} runs of {len(matrix.planned)} planned{_e(shard)}: '
        f'{", ".join(parts) or "none"}. Overall: <span class="badge v-{_e(verdict.value)}">'
        f"{_e(verdict.value)}</span> (exit {exit_code(verdict)})</p>"
    )


# -- comparison ------------------------------------------------------------------------------------


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _kind_order(kind: str) -> int:
    return CHANGE_KINDS.index(kind) if kind in CHANGE_KINDS else len(CHANGE_KINDS)


def _cell_link(matrix: Matrix, cell: str) -> str:
    known = any(str(p.get("id")) == cell for p in matrix.planned)
    return f'<a href="#{cell_anchor(cell)}">{_e(cell)}</a>' if known else _e(cell)


def _or_dash(value: object) -> str:
    return "&ndash;" if value is None else _e(value)


def _comparison(matrix: Matrix, doc: Mapping[str, Any]) -> str:
    summary = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
    assert isinstance(summary, dict)
    keys = ("regressions", "fixes", "new", "vanished", "flaky", "changed_cells")
    line = " · ".join(f"{k.replace('_', ' ')}: {_e(summary.get(k, 0))}" for k in keys)
    changes = sorted(_dicts(doc.get("changes")), key=lambda c: _kind_order(str(c.get("kind"))))
    change_rows = "".join(
        f'<tr class="change-{_e(c.get("kind"))}"><td>{_e(c.get("kind"))}</td>'
        f"<td>{_cell_link(matrix, str(c.get('cell')))}</td>"
        f"<td>{_or_dash(c.get('test')) if c.get('test') is not None else '(the cell)'}</td>"
        f"<td>{_or_dash(c.get('old'))}</td><td>{_or_dash(c.get('new'))}</td></tr>"
        for c in changes
    )
    cell_rows = []
    for c in _dicts(doc.get("cells")):
        flags = [
            text
            for key, text in (
                ("kernel_version_changed", "kernel version changed"),
                ("topology_changed", "topology changed"),
            )
            if c.get(key)
        ]
        if c.get("old_verdict") == c.get("new_verdict") and not flags:
            continue
        cell_rows.append(
            f"<tr><td>{_cell_link(matrix, str(c.get('cell')))}</td><td>{_or_dash(c.get('old_verdict'))}</td>"
            f"<td>{_or_dash(c.get('new_verdict'))}</td><td>{_e(', '.join(flags))}</td></tr>"
        )
    changes_table = (
        '<table class="changes"><thead><tr><th>kind</th><th>cell</th><th>test</th><th>old</th>'
        f"<th>new</th></tr></thead><tbody>{change_rows}</tbody></table>"
        if change_rows
        else '<p class="note">no test changed.</p>'
    )
    cells_table = (
        '<table class="changed-cells"><thead><tr><th>cell</th><th>old verdict</th><th>new verdict</th>'
        f"<th>changed</th></tr></thead><tbody>{''.join(cell_rows)}</tbody></table>"
        if cell_rows
        else '<p class="note">no cell changed its verdict, kernel version or topology.</p>'
    )
    return (
        f'<section id="comparison"><h2>Compared with {_e(doc.get("old", "?"))}</h2>'
        f"<p>{_e(doc.get('old', '?'))} → {_e(doc.get('new', '?'))}: {line}</p>"
        f"<h3>Changes</h3>{changes_table}<h3>Cells</h3>{cells_table}</section>"
    )


# -- routes and topologies -------------------------------------------------------------------------


def _mark(row: RouteRow) -> str:
    if row.decided == NOT_OBSERVED:
        return "not observed"
    if row.predicted == "-":
        return ""
    return "==" if row.decided == row.predicted else "!="


def _routes(rows: Sequence[RouteRow]) -> str:
    if not rows:
        return (
            '<section id="routes"><h2>Routes</h2><p class="note">no routing decisions recorded.</p></section>'
        )
    body = []
    for r in rows:
        mark = _mark(r)
        cls = ' class="mismatch"' if mark == "!=" else ' class="unobserved"' if mark == "not observed" else ""
        body.append(
            f'<tr{cls}><td><a href="#{topology_anchor(r.topology)}">{_e(r.topology)}</a></td>'
            f"<td>{_e(r.kernel)}</td>"
            f"<td>{_e(r.pair.replace('-', ' → ', 1))}</td><td>{_route_chip(r.predicted)}</td>"
            f'<td class="mark">{_e(mark)}</td><td>{_route_chip(r.decided)}</td><td>{_e(r.whole_bar)}</td>'
            f"<td>{_e(r.tests)}</td></tr>"
        )
    return (
        '<section id="routes"><h2>Routes</h2><p>Per exporter → importer pair: the route the oracle predicts, '
        "the route the kernel decided (a kprobe on its routing decision), the DMA list of a whole-BAR "
        "export.</p>"
        '<table class="routes"><thead><tr><th>topology</th><th>kernel</th><th>pair</th><th>oracle</th>'
        "<th></th><th>kernel decided</th><th>whole-BAR DMA list</th><th>routing tests</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></section>"
    )


def _load_topology(path: Path) -> Topology | str:
    """The topology, or why it cannot be drawn."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        # An --axis variant's name (`switch-p2p[cpu=EPYC-Rome]`) is set after validation, outside the
        # model's name pattern on purpose: validate the machine under a plain name, then give it back.
        name = str(data.get("name", ""))
        checked = Topology.model_validate_json(json.dumps({**data, "name": _PLAIN_NAME}))
        return checked.model_copy(update={"name": name})
    except FileNotFoundError:
        return f"no {TOPOLOGY_FILE} in {path.parent.name}: drawing skipped"
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{path.parent.name}/{TOPOLOGY_FILE} unreadable ({first}): drawing skipped"


def _topology_section(matrix: Matrix, name: str, rows: Sequence[RouteRow]) -> str:
    docs = [d for d in matrix.cells.values() if d.meta.topology == name]
    head = f'<section class="topology" id="{topology_anchor(name)}"><h3>{_e(name)}</h3>'
    if not docs:
        return head + '<p class="note">no cell of this topology ran: nothing to draw.</p></section>'
    found: Topology | str = ""
    for doc in docs:
        found = _load_topology(doc.path.parent / TOPOLOGY_FILE)
        if isinstance(found, Topology):
            break
    if not isinstance(found, Topology):
        return head + f'<p class="note">{_e(found)}</p></section>'
    drawing = topology_svg(found, [r for r in rows if r.topology == name])
    return head + f'<p>{_e(found.description)}</p><div class="svg-box">{drawing}</div></section>'


def _topologies(matrix: Matrix, rows: Sequence[RouteRow]) -> str:
    sections = "".join(_topology_section(matrix, name, rows) for name in _axis_values(matrix, "topology"))
    return f'<section id="topologies"><h2>Topologies</h2>{sections}</section>'


# -- cells -----------------------------------------------------------------------------------------


def _evidence(anchor_id: str, doc: CellDocument) -> str:
    items = []
    for item in doc.evidence:
        kind = str(item.get("kind", "?"))
        if kind == "note":
            items.append(
                f'<div class="evidence-item note-item"><b>note</b><pre>{_e(item.get("text", ""))}</pre></div>'
            )
            continue
        cut = "" if item.get("complete", True) else " (cut short)"
        items.append(
            f'<div class="evidence-item kernel-report" data-kind="{_e(kind)}"><b>{_e(kind)}</b>: '
            f"{_e(item.get('first_line', ''))}{_e(cut)}<pre>{_e(item.get('excerpt', ''))}</pre></div>"
        )
    failing = [r for r in doc.records if r.outcome in FAILING or r.outcome == "flaky"]
    if failing:
        lines = "".join(
            f'<li><span class="o-{_e(r.outcome)}">{_e(r.outcome)}</span> <code>{_e(r.name)}</code>'
            f"{f'<pre>{_e(r.message)}</pre>' if r.message else ''}</li>"
            for r in failing
        )
        items.append(
            f'<div class="evidence-item failing-tests"><b>tests that did not pass</b><ul>{lines}</ul></div>'
        )
    if not items:
        return (
            f'<div class="evidence none" id="{anchor_id}">'
            '<span class="note">no kernel reports, notes or failing tests.</span></div>'
        )
    return f'<div class="evidence" id="{anchor_id}"><h4>Evidence</h4>{"".join(items)}</div>'


def _tests_table(table_id: str, records: Sequence[TestRecord], open_: bool) -> str:
    counts = count_outcomes(records)
    options = "".join(f'<option value="{o}">{o} ({counts[o]})</option>' for o in OUTCOMES if counts[o])
    rows = []
    for r in records:
        details = details_text(r.details)
        more = f"<details><summary>details</summary><pre>{_e(details)}</pre></details>" if details else ""
        rows.append(
            f'<tr class="o-{_e(r.outcome)}" data-outcome="{_e(r.outcome)}"><td><code>{_e(r.name)}</code></td>'
            f'<td>{_e(r.outcome)}</td><td class="num">{r.duration:.2f}s</td>'
            f"<td>{_e(r.message)}{more}</td></tr>"
        )
    return (
        f'<details class="tests"{" open" if open_ else ""}><summary>{len(records)} tests: '
        f"{_e(_counts_text(counts))}</summary>"
        f'<div class="filter" data-table="{table_id}"><input type="search" placeholder="filter by text" '
        f'aria-label="filter tests by text"> <select aria-label="filter tests by outcome">'
        f'<option value="all">all outcomes</option><option value="not-ok">not ok</option>{options}</select> '
        '<span class="shown"></span></div>'
        f'<table class="tests" id="{table_id}"><thead><tr><th>test</th><th>outcome</th><th>time</th>'
        f"<th>message</th></tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )


def _file_links(matrix: Matrix, doc: CellDocument) -> str:
    rel = _cell_dir(matrix, doc)
    links = []
    for name in CELL_FILES:
        if (doc.path.parent / name).exists():
            links.append(f'<a href="{_e(quote(f"{rel}/{name}"))}">{name}</a>')
        else:
            links.append(f'<span class="note">no {name}</span>')
    return " · ".join(links)


def _cell_section(matrix: Matrix, cell_id: str, doc: CellDocument) -> str:
    meta = doc.meta
    verdict = doc.verdict.value
    ok, total = ok_total(doc.records)
    axes = ", ".join(f"{k}={v}" for k, v in meta.axes.items())
    facts = [
        f"kernel {_e(meta.kernel)} ({_e(meta.kernel_version or 'version unknown')})",
        f"accelerator {_e(meta.accelerator)}",
        f"QEMU {_e(meta.qemu_version or '?')}",
        f"started {_e(meta.started_at)}",
    ]
    if "total" in meta.durations:
        facts.append(f"{meta.durations['total']:.1f} s")
    if axes:
        facts.append(f"axes {_e(axes)}")
    base = cell_anchor(cell_id)
    open_tests = doc.verdict.value != "passed" or any(
        r.outcome in FAILING or r.outcome == "flaky" for r in doc.records
    )
    return (
        f'<section class="cell-section" id="{base}" data-cell="{_e(cell_id)}">'
        f"<h3>{_e(meta.topology)} &times; {_e(meta.kernel)} "
        f'<span class="badge v-{_e(verdict)}">{_e(verdict)}</span> '
        f'<span class="ok">{ok}/{total}</span></h3>'
        f'<p class="meta">{" · ".join(facts)}<br>{_file_links(matrix, doc)} · '
        f'<a href="#{topology_anchor(meta.topology)}">topology drawing</a></p>'
        f"{_evidence(f'{base}-evidence', doc)}"
        f"{_tests_table(f'{base}-tests', doc.records, open_tests)}</section>"
    )


def _cells(matrix: Matrix) -> str:
    sections = []
    for p in matrix.planned:
        cell_id = str(p["id"])
        doc = matrix.cells.get(cell_id)
        if doc is not None:
            sections.append(_cell_section(matrix, cell_id, doc))
    missing = "".join(
        f'<li class="missing-cell" id="{cell_anchor(c)}"><code>{_e(c)}</code>: planned, no results.json '
        "(not run yet, or lost: <code>hil run --resume</code> reruns it)</li>"
        for c in matrix.missing
    )
    missing_html = (
        f'<section id="missing"><h2>Missing cells</h2><ul>{missing}</ul></section>' if missing else ""
    )
    return f'<section id="cells"><h2>Cells</h2>{"".join(sections)}</section>{missing_html}'


# -- the page --------------------------------------------------------------------------------------


def _nav(comparison: bool, missing: bool) -> str:
    targets = [("grid", "grid"), *([("comparison", "comparison")] if comparison else [])]
    targets += [("routes", "routes"), ("topologies", "topologies"), ("cells", "cells")]
    targets += [("missing", "missing")] if missing else []
    return "<nav>" + "".join(f'<a href="#{t}">{label}</a>' for t, label in targets) + "</nav>"


def index_html(matrix: Matrix, comparison: Mapping[str, Any] | None = None) -> str:
    """The matrix as one self-contained page (comparison: a comparison.json document, when there is one)."""
    rows = matrix.routes()
    name = matrix.dir.name or str(matrix.dir)
    verdict = matrix.verdict.value
    parts: Iterable[str] = (
        f"<h1>p2p-hil matrix {_e(name)}</h1>",
        _summary(matrix),
        _nav(comparison is not None, bool(matrix.missing)),
        _grid(matrix, comparison),
        _comparison(matrix, comparison) if comparison is not None else "",
        _routes(rows),
        _topologies(matrix, rows),
        _cells(matrix),
        '<footer id="page-status">page script did not run</footer>',
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>p2p-hil matrix {_e(name)}: {_e(verdict)}</title>"
        f"<style>{_CSS}</style><script>{_HEAD_JS}</script></head>\n"
        f'<body data-verdict="{_e(verdict)}">\n{"".join(parts)}\n<script>{_BODY_JS}</script></body></html>\n'
    )

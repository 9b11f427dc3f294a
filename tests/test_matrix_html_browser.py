"""index.html in a real browser (Debian's headless Chromium): it loads from disk without script errors or
network requests, the grid has one cell per run, a click on the failing cell's grid entry lands on its
evidence, and the test filter hides what does not match. A screenshot is kept with the test's files
(its path is printed; HIL_INDEX_SCREENSHOT=<path> copies it there too)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import matrix_html_fixtures as fx
import pytest
from chromium_pipe import Chromium

from harness.matrix.document import Matrix
from harness.matrix.html import cell_anchor, index_html

CHROMIUM = shutil.which("chromium")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed: apt-get install -y --no-install-recommends chromium "
    "(CI must install it)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """One browser for the module (starting it is most of the time); each test loads the page afresh."""
    assert CHROMIUM is not None
    home = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(CHROMIUM, home / "profile", home / "chromium.log")
    try:
        chromium.open_page()
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def loaded(tmp_path: Path, browser: Chromium) -> tuple[Chromium, Matrix]:
    matrix = fx.build(tmp_path / "nightly")
    page = matrix.dir / "index.html"
    page.write_text(index_html(matrix, fx.comparison(matrix)), encoding="utf-8")
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1400, "height": 2000, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.events.clear()
    browser.send("Page.navigate", {"url": page.as_uri()})
    browser.wait_for("document.readyState === 'complete'")
    browser.pump(0.3)  # late console messages and errors
    if browser.evaluate("document.body.dataset.ready") != "1":
        exceptions = [e["exceptionDetails"] for e in browser.events_named("Runtime.exceptionThrown")]
        status = browser.evaluate("document.getElementById('page-status').textContent")
        pytest.fail(f"the page's script did not finish: {status!r}; exceptions: {exceptions}")
    return browser, matrix


def _rect_centre(browser: Chromium, selector: str) -> tuple[float, float]:
    x, y = browser.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
        " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    return float(x), float(y)


def test_the_page_loads_from_disk_without_errors_or_network(loaded: tuple[Chromium, Matrix]) -> None:
    browser, _ = loaded
    assert browser.events_named("Runtime.exceptionThrown") == []
    assert (
        browser.events_named("Runtime.consoleAPICalled", lambda p: p.get("type") in ("error", "assert")) == []
    )
    assert browser.events_named("Log.entryAdded", lambda p: p["entry"].get("level") == "error") == []
    fetched = [p["request"]["url"] for p in browser.events_named("Network.requestWillBeSent")]
    assert all(url.startswith("file://") for url in fetched), fetched
    assert browser.evaluate("document.body.dataset.errors") == "0"
    assert browser.evaluate("document.getElementById('page-status').textContent") == "page script: no errors"
    assert browser.events_named("Page.javascriptDialogOpening") == []
    assert browser.evaluate("typeof window.pwned") == "undefined"  # the hostile test name stayed text


def test_the_grid_has_one_cell_per_run(loaded: tuple[Chromium, Matrix]) -> None:
    browser, matrix = loaded
    ran = browser.evaluate(
        "Array.from(document.querySelectorAll('table.grid td.cell.run'), td => td.dataset.cell)"
    )
    missing = browser.evaluate(
        "Array.from(document.querySelectorAll('table.grid td.cell.missing'), td => td.dataset.cell)"
    )
    assert sorted(ran) == sorted(matrix.cells)
    assert missing == matrix.missing
    drawn = browser.evaluate("document.querySelectorAll('svg.topology path.pair').length")
    assert drawn == len(matrix.routes())
    width = browser.evaluate("document.querySelector('svg.topology').getBoundingClientRect().width")
    assert width > 300  # laid out, not collapsed


def test_a_click_on_the_failing_cell_lands_on_its_evidence(
    loaded: tuple[Chromium, Matrix], tmp_path: Path
) -> None:
    browser, _ = loaded
    failing = next(c for c in fx.cells()[0] if c.evidence)
    target = cell_anchor(failing.id)
    shot = browser.screenshot(tmp_path / "index.png")
    full = browser.screenshot(tmp_path / "index-full.png", full_page=True)
    print(f"screenshots: {shot} {full}")
    if os.environ.get("HIL_INDEX_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["HIL_INDEX_SCREENSHOT"])
        shutil.copyfile(full, Path(os.environ["HIL_INDEX_SCREENSHOT"]).with_suffix(".full.png"))

    browser.click(*_rect_centre(browser, f'table.grid td.cell[data-cell="{failing.id}"] a'))
    browser.wait_for(f"location.hash === {json.dumps('#' + target)}")
    assert browser.evaluate("document.querySelector(':target').id") == target
    evidence = browser.evaluate(f"document.getElementById({json.dumps(target + '-evidence')}).innerText")
    assert fx.WARNING_LINE in evidence and fx.NOTE in evidence
    top = browser.evaluate(f"document.getElementById({json.dumps(target)}).getBoundingClientRect().top")
    assert -5 <= top < browser.evaluate("window.innerHeight")  # scrolled to it, on screen
    assert (
        browser.evaluate(
            f"getComputedStyle(document.getElementById({json.dumps(target + '-evidence')})).display"
        )
        != "none"
    )


def test_the_test_filter_hides_what_does_not_match(loaded: tuple[Chromium, Matrix]) -> None:
    browser, matrix = loaded
    cell_id = next(c.id for c in fx.cells()[0] if c.evidence)
    records = matrix.cells[cell_id].records
    table = f"{cell_anchor(cell_id)}-tests"
    visible = (
        f"Array.from(document.getElementById({json.dumps(table)}).tBodies[0].rows)"
        ".filter(r => r.offsetParent !== null).map(r => r.dataset.outcome)"
    )
    assert browser.evaluate(visible) == [r.outcome for r in records]

    browser.click(*_rect_centre(browser, f'.filter[data-table="{table}"] input'))
    browser.type_text("edu_copies")
    assert browser.evaluate(visible) == [r.outcome for r in records if "edu_copies" in r.name]
    shown = browser.evaluate(f"document.querySelector('.filter[data-table=\"{table}\"] .shown').textContent")
    assert shown == f"1 of {len(records)} shown"

    browser.evaluate(
        f"(() => {{ const box = document.querySelector('.filter[data-table=\"{table}\"]');"
        " box.querySelector('input').value = ''; const s = box.querySelector('select');"
        " s.value = 'not-ok'; s.dispatchEvent(new Event('change')); })()"
    )
    assert browser.evaluate(visible) == [
        r.outcome for r in records if r.outcome not in ("passed", "skipped", "xfailed")
    ]

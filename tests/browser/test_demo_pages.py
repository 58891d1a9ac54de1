"""First open: on a fresh workspace the app shows the shipped demo pack on every result page (no CLI command
needed); and on the workspace `g2is demo` leaves (tiny model, the shipped spec), every page has content."""
from __future__ import annotations

import time

import pytest
import yaml
from stwait import wait_idle

TIMEOUT_MS = 60_000
pytestmark = pytest.mark.browser

# points drawn by the first plotly chart (x arrays may be typed arrays)
_POINTS = ("() => { const d = document.querySelector('.js-plotly-plot'); return d && d._fullData ? "
           "d._fullData.reduce((a, t) => a + (t.x ? Array.from(t.x).filter(v => v !== null && v !== undefined)"
           ".length : 0), 0) : -1; }")
# cells of a plotly heatmap, if the page draws one
_HEATMAP = ("() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(d => d._fullData && "
            "d._fullData.some(t => t.type === 'heatmap' && t.z && t.z.length > 0))")


def _clean(page) -> str:
    body = page.inner_text("body")
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in body and "could not be shown" not in body, body[:2000]
    return body


def _open(page, url: str, path: str, heading: str) -> str:
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    return _clean(page)


def _every_page_has_content(page, url: str, expect_banner: bool) -> None:
    t0 = time.monotonic()
    body = _open(page, url, "graph", "Instruction graph")
    page.wait_for_function(f"() => ({_POINTS})() > 0", timeout=TIMEOUT_MS)          # the map, with points
    assert ("Showing the shipped demo" in body) == expect_banner
    assert "No instruction graph yet" not in body and "no cached 2-D layout" not in body

    body = _open(page, url, "walk", "Walk")
    page.get_by_text("Replaying step").first.wait_for(timeout=TIMEOUT_MS)          # a walk replay
    page.wait_for_function(f"() => ({_POINTS})() > 0", timeout=TIMEOUT_MS)
    assert "first_last" in page.inner_text("body")                                  # labels name the target

    _open(page, url, "heads", "Heads")
    page.wait_for_function(_HEATMAP, timeout=TIMEOUT_MS)                            # a head heatmap
    _clean(page)

    body = _open(page, url, "benchmarks", "Benchmarks")
    page.get_by_text("Results").first.wait_for(timeout=TIMEOUT_MS)                  # the benchmark table
    page.locator('[role="gridcell"]').filter(has_text="g2is").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    cells = set(page.locator('[role="gridcell"]').all_text_contents())
    assert {"g2is", "less", "bm25", "random", "full", "base"} <= cells
    assert "No benchmark results yet" not in body
    return time.monotonic() - t0


def test_a_fresh_workspace_shows_the_shipped_pack(page, fresh_server, tmp_path):
    from g2is_core.demo.pack import PACK_DIR

    with fresh_server(tmp_path / "fresh-ws", pack=PACK_DIR) as url:
        page.goto(url)
        page.get_by_role("heading", name="The shipped demo").first.wait_for(timeout=TIMEOUT_MS)
        wait_idle(page)
        _clean(page)
        seconds = _every_page_has_content(page, url, expect_banner=True)
        page.screenshot(path="/tmp/g2is_pack_benchmarks.png", full_page=True)
    assert seconds < 120, f"the four result pages took {seconds:.0f} s to show the pack"


def test_the_demo_workspace_fills_every_page(page, fresh_server, tmp_path):
    """`g2is demo` on the tiny model (CI's reduced setting; the real-model cost is in docs/benchmarks.md)."""
    from g2is_core.demo.run import DemoSettings, run_demo
    from g2is_core.loop.spec import DEMO_SPEC
    from g2is_core.workspace import Workspace

    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw["model"] = "tiny"
    spec = tmp_path / "demo_tiny.yaml"
    spec.write_text(yaml.safe_dump(raw))
    ws = Workspace(tmp_path / "demo-ws")
    run_demo(DemoSettings(spec=spec, layout="pca"), ws, log=lambda m: None)
    with fresh_server(ws.root) as url:      # no pack: what the page shows is the demo's own results
        _every_page_has_content(page, url, expect_banner=False)

"""Browser test of the Instruction graph and Walk pages on a tiny stored graph, layout and walk.

The test writes its artefacts into the app server's workspace with the project's own functions
(random clustered features, no model): a g2is selection (which caches its kNN graph), the pool's
records, and a PCA layout keyed by the features, exactly what `g2is graph build` + `g2is select`
leave behind.
"""
from __future__ import annotations

import numpy as np
import pytest
from stwait import wait_idle

TIMEOUT_MS = 60_000
pytestmark = pytest.mark.browser
N_PER, D = 20, 16


@pytest.fixture(scope="module")
def seeded(app_url, tmp_path_factory):
    """Write graph + layout + walk run into the workspace of the running app; returns (n nodes, n steps)."""
    from g2is_core.graph.layout import layout
    from g2is_core.data.records import simple
    from g2is_core.selection import FeatureSet, SelectionRun, select
    from g2is_core.workspace import Workspace

    roots = sorted(tmp_path_factory.getbasetemp().glob("g2is-ws*"))
    assert roots, "the app_url fixture's workspace was not found under the pytest base temp directory"
    ws = Workspace(roots[0])
    rng = np.random.default_rng(0)
    centres = np.linalg.qr(rng.normal(size=(D, 3)))[0].T
    x = np.concatenate([c + 0.2 * rng.normal(size=(N_PER, D)) for c in centres]).astype(np.float32)
    tasks = ["add", "sort", "lookup"]
    pool = [simple(f"toy:{i}", f"<b>question</b> {i} & co", f"answer {i}", source="toy" if i % 2 else "demo",
                   task=tasks[i // N_PER]) for i in range(len(x))]
    targets = [simple(f"t:{j}", f"target {j}", "a", source="toy", task="add") for j in range(6)]
    y = (centres[0] + 0.2 * rng.normal(size=(6, D))).astype(np.float32)
    train = FeatureSet.from_arrays(x, [r.id for r in pool])
    sel = select("g2is", pool, targets, ratio=0.2, train_features=train, target_features=FeatureSet.from_arrays(y),
                 workspace=ws, k=5, align_signs=True, add_mean=True)
    SelectionRun.save(sel, pool, ws, name="toy walk")
    select_random = select("random", pool, targets, ratio=0.2, workspace=ws)
    SelectionRun.save(select_random, pool, ws, name="toy random")
    layout(train.combined(), train.key, ws, method="pca", ids=train.ids)
    return len(x), len(sel)


# points drawn by a plotly chart: its full (decoded) traces; x arrays may be typed arrays
_COUNT = ("d && d._fullData ? d._fullData.reduce((a, t) => a + (t.x ? Array.from(t.x).filter(v => v !== null "
          "&& v !== undefined).length : 0), 0) : -1")


def _plot_points(page, index: int = 0) -> int:
    return page.evaluate(
        f"(i) => {{ const d = document.querySelectorAll('.js-plotly-plot')[i]; return {_COUNT}; }}",
        index)


def test_graph_page_renders_points_and_focuses_a_node(page, app_url, seeded):
    n, _ = seeded
    page.goto(f"{app_url}/graph")
    page.get_by_role("heading", name="Instruction graph").first.wait_for()
    page.wait_for_selector(".js-plotly-plot")
    wait_idle(page)
    page.wait_for_function(f"() => {{ const d = document.querySelector('.js-plotly-plot'); return ({_COUNT}) > 0; }}")
    assert _plot_points(page) >= n                      # every node is a point on the WebGL map
    body = page.inner_text("body")
    assert "Traceback" not in body and "could not be shown" not in body
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "--head-signatures" in body                  # no signatures in these features: one caption says how
    # focus a node: its record, its neighbours and the in-line network view appear
    box = page.get_by_label("Focus node")
    box.fill("3")
    box.press("Enter")
    page.get_by_text("Node 3").first.wait_for()
    page.get_by_text("Neighbourhood").first.wait_for()
    wait_idle(page)
    frame = page.frame_locator("iframe").first
    frame.locator("#mynetwork canvas").first.wait_for()
    assert "<b>question</b> 3 & co" in page.inner_text("body")   # record text shown as text, not HTML
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path="/tmp/g2is_graph_page.png", full_page=True)


def test_walk_page_replays_the_trajectory(page, app_url, seeded):
    _, n_sel = seeded
    page.goto(f"{app_url}/walk")
    page.get_by_role("heading", name="Walk").first.wait_for()
    page.get_by_text(f"Replaying step {n_sel} / {n_sel}").first.wait_for()
    wait_idle(page)
    page.wait_for_function(f"() => {{ const d = document.querySelector('.js-plotly-plot'); return ({_COUNT}) > 0; }}")
    full = _plot_points(page)
    assert full >= n_sel
    slider = page.get_by_role("slider").first
    slider.focus()
    slider.press("Home")
    page.get_by_text(f"Replaying step 1 / {n_sel}").first.wait_for()
    wait_idle(page)
    page.wait_for_function(f"() => {{ const d = document.querySelector('.js-plotly-plot'); return ({_COUNT}) < {full}; }}")
    slider.press("ArrowRight")
    page.get_by_text(f"Replaying step 2 / {n_sel}").first.wait_for()
    wait_idle(page)
    body = page.inner_text("body")
    assert "Fill per component" in body and "Constraint rejections so far" in body
    assert "Compare with another run" in body and "Jaccard" in body
    assert "Head signatures along the walk: " in body and "--head-signatures" in body   # a caption, no error
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "could not be shown" not in body
    page.screenshot(path="/tmp/g2is_walk_page.png", full_page=True)

"""Browser test of the head-signature views (docs/bridge.md, "The graph and walk views") on the Instruction
graph and Walk pages, on gradient stores that carry head signatures.

The stores are written with the project's store writer (``write_store``, as `g2is grads --head-signatures`
leaves them, without a model): three clusters of pool records whose signatures sit in the early, middle or
late layers, and a target near the first cluster whose signatures sit in the early layers. Then a g2is
selection from those stores (its kNN graph is cached with the stores' keys) and a PCA layout, as in
test_graph_walk_pages.py. The app runs on its own workspace, so the other tests' default picks are not moved.
"""
from __future__ import annotations

import numpy as np
import pytest
from stwait import wait_idle

pytestmark = pytest.mark.browser
N_PER, D, L, H = 12, 16, 6, 3
BANDS = ("early layers 0-1", "middle layers 2-3", "late layers 4-5")

# plotly traces of every chart on the page: [{type, name, n}] (x arrays may be typed arrays)
# (n: points drawn; for a heatmap, its rows, i.e. the layers)
_TRACES = ("() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(d => (d._fullData || [])"
           ".map(t => ({type: t.type, name: t.name, n: t.type === 'heatmap' ? (t.z ? t.z.length : 0) : (t.x ? "
           "Array.from(t.x).filter(v => v !== null && v !== undefined).length : 0)})))")


def _band_signatures(rng, n: int, band: int) -> np.ndarray:
    """[n, L, H] non-negative signatures with most of their mass in layer band ``band`` (two layers each)."""
    s = 0.05 * np.abs(rng.normal(size=(n, L, H)))
    s[:, 2 * band: 2 * band + 2, :] += 1.0 + np.abs(rng.normal(size=(n, 2, H)))
    return s.astype(np.float32)


def _seed(root) -> tuple[int, int]:
    from g2is_core.data.records import simple
    from g2is_core.features.store import KIND, write_store
    from g2is_core.graph.layout import layout
    from g2is_core.selection import FeatureSet, SelectionRun, select
    from g2is_core.workspace import Workspace

    ws = Workspace(root)
    rng = np.random.default_rng(0)
    centres = np.linalg.qr(rng.normal(size=(D, 3)))[0].T
    x = np.concatenate([c + 0.2 * rng.normal(size=(N_PER, D)) for c in centres]).astype(np.float32)
    sx = np.concatenate([_band_signatures(rng, N_PER, b) for b in range(3)])
    tasks = ["add", "sort", "lookup"]
    pool = [simple(f"toy:{i}", f"question {i}", f"answer {i}", source="toy", task=tasks[i // N_PER])
            for i in range(len(x))]
    targets = [simple(f"t:{j}", f"target {j}", "a", source="toy", task="add") for j in range(6)]
    y = (centres[0] + 0.2 * rng.normal(size=(6, D))).astype(np.float32)
    sy = _band_signatures(rng, 6, 0)

    def store(key, kind, ids, feats, sigs):
        cfg = {"model_key": "toy", "lora": {}, "projector": {"seed": 0, "dim": D}, "kind": kind, "features": {},
               "checkpoint": {"warmup": "toy", "epoch": 0, "weight": 1.0}}
        return write_store(ws.root / KIND / key, cfg, ids, D, lambda r: (feats[r.start: r.stop], sigs[r.start: r.stop]),
                           inputs={"data_hash": key}, dtype="fp32", heads_shape=(L, H),
                           extra={"head_signatures": {"route": "gate"}})

    train_store = store("toy-pool-heads", "adam", [r.id for r in pool], x, sx)
    target_store = store("toy-target-heads", "sgd", [t.id for t in targets], y, sy)
    sel = select("g2is", pool, targets, ratio=0.25, train_stores=[train_store], target_stores=[target_store],
                 workspace=ws, k=5, align_signs=True, add_mean=True)
    SelectionRun.save(sel, pool, ws, name="toy heads walk")
    train = FeatureSet.from_stores([train_store])
    layout(train.combined(), train.key, ws, method="pca", ids=train.ids)
    return len(x), len(sel)


@pytest.fixture(scope="module")
def heads_app(tmp_path_factory):
    from conftest import serve

    root = tmp_path_factory.mktemp("g2is-heads")
    n, n_sel = _seed(root)
    with serve(root) as url:
        yield url, n, n_sel


def _clean(page) -> str:
    body = page.inner_text("body")
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in body and "could not be shown" not in body and "cannot be shown" not in body, body[:2000]
    return body


def _traces(page) -> list[dict]:
    return page.evaluate(_TRACES)


def test_graph_page_colours_by_band_and_shows_a_nodes_heatmap(page, heads_app):
    url, n, _ = heads_app
    page.goto(f"{url}/graph")
    page.get_by_role("heading", name="Instruction graph").first.wait_for()
    wait_idle(page)
    page.wait_for_function(f"() => ({_TRACES})().some(t => t.type === 'scattergl' && t.n > 0)")
    _clean(page)
    # colour by head signature: one trace per layer band, each cluster's 12 records in its own band
    page.get_by_text("head signature", exact=True).first.click()
    page.wait_for_function(f"() => ({_TRACES})().some(t => t.name === '{BANDS[2]}')")
    wait_idle(page)
    drawn = {t["name"]: t["n"] for t in _traces(page) if t["type"] == "scattergl"}
    assert [drawn.get(b) for b in BANDS] == [N_PER, N_PER, N_PER], drawn
    # focus a node: its [layer x head] heatmap beside its record
    box = page.get_by_label("Focus node")
    box.fill("3")
    box.press("Enter")
    page.get_by_text("Node 3").first.wait_for()
    page.wait_for_function(f"() => ({_TRACES})().some(t => t.type === 'heatmap' && t.n === {L})")
    wait_idle(page)
    body = _clean(page)
    assert f"Most of its signature lies in the {BANDS[0]}" in body
    assert "Cosine with the target's pattern" in body          # the run's target is the default pattern
    # a box selection on the map: the chosen nodes' mean signature against the target's, and their cosine
    plot = page.locator(".js-plotly-plot").first
    plot.hover()
    page.locator('.js-plotly-plot .modebar-btn[data-val="select"]').first.click()
    bb = plot.bounding_box()
    page.mouse.move(bb["x"] + 60, bb["y"] + 60)               # inside the plot area, off the modebar
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2, steps=8)
    page.mouse.move(bb["x"] + bb["width"] - 60, bb["y"] + bb["height"] - 60, steps=8)
    page.mouse.up()
    page.get_by_text("chosen nodes").first.wait_for()
    wait_idle(page)
    heat = [t for t in _traces(page) if t["type"] == "heatmap"]
    assert len(heat) >= 3, heat                                 # the node's, the chosen mean, the target's
    _clean(page)
    page.screenshot(path="/tmp/g2is_graph_heads.png", full_page=True)


def test_walk_page_shows_the_head_similarity_per_step(page, heads_app):
    url, _, n_sel = heads_app
    page.goto(f"{url}/walk")
    page.get_by_role("heading", name="Walk").first.wait_for()
    page.get_by_text(f"Replaying step {n_sel} / {n_sel}").first.wait_for()
    page.get_by_text("Head signatures along the walk").first.wait_for()
    page.wait_for_function(f"() => ({_TRACES})().some(t => t.name === 'selection so far' && t.n === {n_sel})")
    wait_idle(page)
    names = {t["name"] for t in _traces(page)}
    assert {"selection so far", "its component so far", "added record", "consistency after (right axis)"} <= names
    assert any(t["type"] == "heatmap" and t["n"] == L for t in _traces(page))   # the added record's signature
    _clean(page)
    page.screenshot(path="/tmp/g2is_walk_heads.png", full_page=True)

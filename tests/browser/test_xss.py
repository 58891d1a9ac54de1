"""Untrusted content in a real browser: instruction text, ids, sources, tasks, run and job names that
carry HTML/JS are shown as text on every page; no script runs, no dialog opens.

The payloads go into the app server's workspace the way real data would: a data file the Data page
reads, a stored graph + layout + walk/selection whose records and ids carry them (Graph and Walk
pages, incl. plotly hover labels and the in-line pyvis component), a registry row (Benchmarks) and
a job name (Runs). Each payload, if it ever became markup, would set ``window.__xss`` or open an
``alert``; the test checks every frame of every page.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from stwait import wait_idle

TIMEOUT_MS = 60_000
FIRST_RENDER_MS = 180_000
pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__xss=1;alert(1)</script>"
IMG = '<img src=x onerror="window.__xss=1;alert(2)">'
LINK = '<a href="javascript:window.__xss=1;alert(3)">x</a>'
SVG = "<svg onload=\"window.__xss=1\"></svg>"
PAYLOADS = [SCRIPT, IMG, LINK, SVG]
N_PER, D = 12, 16


@pytest.fixture(scope="module")
def hostile(app_url, app_workspace):
    """Write hostile data, artefacts, a registry row and a job into the running app's workspace."""
    from g2is_core import jobs
    from g2is_core.data.loaders import save_records_jsonl
    from g2is_core.graph.layout import layout
    from g2is_core.data.records import simple
    from g2is_core.loop.registry import Registry
    from g2is_core.selection import FeatureSet, SelectionRun, select
    from g2is_core.workspace import Workspace

    ws = Workspace(app_workspace)
    recs = [simple(f"xss{i}:{PAYLOADS[i % 4]}", f"prompt {PAYLOADS[i % 4]} {i}", f"response {PAYLOADS[(i + 1) % 4]}",
                   source=f"src{PAYLOADS[(i + 2) % 4]}", task=f"task{PAYLOADS[(i + 3) % 4]}") for i in range(8)]
    save_records_jsonl(recs, ws.root / "uploads" / "xss<script>.jsonl")

    # graph + layout + walk whose pool records carry the payloads (what `g2is graph build` + `select` leave)
    rng = np.random.default_rng(0)
    centres = np.linalg.qr(rng.normal(size=(D, 3)))[0].T
    x = np.concatenate([c + 0.2 * rng.normal(size=(N_PER, D)) for c in centres]).astype(np.float32)
    pool = [simple(f"id{i}{PAYLOADS[i % 4]}", f"{PAYLOADS[i % 4]} question {i}", f"{PAYLOADS[(i + 1) % 4]}",
                   source=f"s{PAYLOADS[(i + 2) % 4]}", task=f"t{i // N_PER}{PAYLOADS[(i + 3) % 4]}")
            for i in range(len(x))]
    targets = [simple(f"t:{j}", f"target {j}", "a", source="toy", task="add") for j in range(6)]
    y = (centres[0] + 0.2 * rng.normal(size=(6, D))).astype(np.float32)
    train = FeatureSet.from_arrays(x, [r.id for r in pool])
    sel = select("g2is", pool, targets, ratio=0.2, train_features=train, target_features=FeatureSet.from_arrays(y),
                 workspace=ws, k=5, align_signs=True, add_mean=True)
    SelectionRun.save(sel, pool, ws, name=f"walk {SCRIPT}")
    SelectionRun.save(select("random", pool, targets, ratio=0.2, workspace=ws), pool, ws, name=f"random {IMG}")
    layout(train.combined(), train.key, ws, method="pca", ids=train.ids)

    reg = Registry.open(ws)
    for m in ("base", "random", f"m{LINK}"):
        key = f"xss-{m}"
        reg.claim(key, f"exp{SCRIPT}", f"target{IMG}", m, None if m == "base" else 0.1, 0,
                  {"model": f"model{SVG}", "method": m})
        reg.finish(key, metrics={"accuracy": 0.5, "n_eval": 4, "n_train": 3}, timings={"train_s": 1.0})

    job = jobs.start_job(["--help"], name=f"job {SCRIPT}{IMG}", workspace=ws)
    return {"job": job, "records": recs}


def _guard(page):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    return dialogs


def _assert_clean(page, dialogs) -> str:
    page.wait_for_timeout(500)           # give an injected onerror/onload a chance to fire
    for frame in page.frames:
        assert frame.evaluate("() => typeof window.__xss") == "undefined", frame.url
        assert frame.evaluate("() => document.querySelectorAll('img[src=x], svg[onload]').length") == 0, frame.url
    assert dialogs == []
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "could not be shown" not in body
    return body


def test_data_page_shows_hostile_records_as_text(page, app_url, hostile):
    dialogs = _guard(page)
    page.goto(f"{app_url}/data")
    page.get_by_text("Path on this machine").first.click()
    box = page.get_by_label("File or folder", exact=True).and_(page.locator("input"))
    box.fill("uploads/xss<script>.jsonl")
    box.press("Enter")
    page.get_by_text("Records by task").first.wait_for(timeout=FIRST_RENDER_MS)
    wait_idle(page, FIRST_RENDER_MS)
    body = _assert_clean(page, dialogs)
    assert "xss<script>.jsonl" in body                       # the file name, literally
    # the bar-chart axes carry the hostile sources/tasks: plotly shows them, never as markup
    axis = page.evaluate("() => Array.from(document.querySelectorAll('.xtick text')).map(t => t.textContent)")
    assert axis and any("task" in t for t in axis)


def test_graph_page_hover_and_network_are_inert(page, app_url, hostile):
    dialogs = _guard(page)
    page.goto(f"{app_url}/graph")
    page.get_by_role("heading", name="Instruction graph").first.wait_for()
    page.wait_for_selector(".js-plotly-plot")
    wait_idle(page)
    # hover labels: the traces' hover text is escaped before plotly's pseudo-HTML renderer sees it
    hover = page.evaluate("() => { const d = document.querySelector('.js-plotly-plot'); "
                          "return d._fullData.map(t => (t.hovertext || []).join(' ')).join(' '); }")
    assert "&lt;script&gt;" in hover and "<script>" not in hover
    box = page.get_by_label("Focus node")
    box.fill("0")
    box.press("Enter")
    page.get_by_text("Node 0").first.wait_for()
    page.get_by_text("Neighbourhood").first.wait_for()
    wait_idle(page)
    frame = page.frame_locator("iframe").first
    frame.locator("#mynetwork canvas").first.wait_for()
    # hover a point on the map so plotly draws a hover label with the hostile text
    plot = page.locator(".js-plotly-plot").first
    bb = plot.bounding_box()
    for fx in np.linspace(0.2, 0.8, 7):
        page.mouse.move(bb["x"] + bb["width"] * fx, bb["y"] + bb["height"] * 0.5)
        page.wait_for_timeout(50)
    body = _assert_clean(page, dialogs)
    assert f"id: id0{SCRIPT}" in body and f"{SCRIPT} question 0" in body     # st.text: literal
    # the network view: click the focus node; its record panel is filled with textContent
    net = page.frames[-1]
    for f in page.frames:
        if f.query_selector("#mynetwork"):
            net = f
    canvas = net.locator("#mynetwork canvas").first
    cb = canvas.bounding_box()
    canvas.click(position={"x": cb["width"] / 2, "y": cb["height"] / 2})
    page.wait_for_timeout(300)
    _assert_clean(page, dialogs)
    assert net.evaluate("() => document.querySelectorAll('#g2is-record *').length") == 0   # text only, no elements


def test_walk_page_is_inert(page, app_url, hostile):
    dialogs = _guard(page)
    page.goto(f"{app_url}/walk")
    page.get_by_role("heading", name="Walk").first.wait_for()
    page.get_by_text("Replaying step").first.wait_for()
    wait_idle(page)
    page.get_by_text("Network view of the walk so far").first.click()
    page.wait_for_timeout(1000)
    wait_idle(page)
    body = _assert_clean(page, dialogs)
    assert "Compare with another run" in body


@pytest.mark.parametrize("path,heading", [("benchmarks", "Benchmarks"), ("runs", "Runs"), ("heads", "Heads"), ("data", "Data"), ("", "G2IS Studio")])
def test_other_pages_are_inert(page, app_url, hostile, path, heading):
    import time

    job = hostile["job"]
    deadline = time.monotonic() + 60
    while job.refresh().is_active and time.monotonic() < deadline:
        time.sleep(0.1)
    dialogs = _guard(page)
    page.goto(f"{app_url}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for()
    wait_idle(page)
    _assert_clean(page, dialogs)
    if path == "runs":  # the job name, literally (the job list is a fragment that re-renders: wait for it)
        page.get_by_text(f"job {SCRIPT}{IMG}").first.wait_for(state="attached", timeout=TIMEOUT_MS)
        _assert_clean(page, dialogs)
    if path == "benchmarks":                                 # the experiment picker shows the name as text
        # other tests of the session store experiments in the same workspace: pick the hostile one
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Experiment").first.click()
        page.get_by_role("option", name=f"exp{SCRIPT}", exact=True).first.click()
        wait_idle(page)
        page.get_by_text(f"exp{SCRIPT}").first.wait_for(state="attached", timeout=TIMEOUT_MS)  # a grid cell's text
        _assert_clean(page, dialogs)

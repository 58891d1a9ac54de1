"""The closed loop on the Benchmarks page (issue 16): from a stored run, the change heatmaps side by side per
method and the two scatters with their correlation; rows recorded without head patterns say so."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from g2is_core.loop import bridge
from g2is_core.loop.registry import Registry
from g2is_core.workspace import Workspace, canonical_json

from conftest import TIMEOUT_MS
from stwait import wait_idle

pytestmark = pytest.mark.browser

EXP = "heads-loop-bench"
PLAIN = "plain-bench"
P = np.arange(12, dtype=float).reshape(3, 4) / 10 + 0.1     # base pattern [L=3, H=4]
D = np.array([[0.3, -0.2, 0.0, 0.1], [0.0, 0.5, -0.1, 0.0], [0.2, 0.0, 0.0, -0.4]])
# (method, ratio, seed, pattern, accuracy, head similarity): the head similarity is 0.5 + accuracy, so r = +1;
# the gradient similarity is 1 - accuracy, so r = -1: as strong, so the head-vs-gradient difference is 0
CELLS = [("base", None, 0, P, 0.10, None), ("full", None, 0, P + D, 0.60, None),
         ("less", 0.05, 0, P + D, 0.45, 0.95), ("less", 0.05, 1, P + 2 * D, 0.40, 0.90),
         ("less", 0.05, 2, P + 0.5 * D, 0.35, 0.85), ("random", 0.05, 0, P - D, 0.20, 0.70),
         ("random", 0.05, 1, P + D[::-1], 0.25, 0.75), ("random", 0.05, 2, P - 0.5 * D, 0.15, 0.65)]


def _store(ws: Workspace) -> None:
    reg = Registry.open(ws)
    ids = ["t0", "t1", "t2"]
    for method, ratio, seed, pattern, acc, hsim in CELLS:
        key = f"{EXP}-{method}-{ratio}-{seed}"
        info = {bridge.PATTERN: json.loads(canonical_json(bridge.pattern_record(pattern, ids, n_kv_heads=2,
                                                                                max_length=64)))}
        if hsim is not None:
            info[bridge.SIMILARITY] = {"cosine": hsim}
            info[bridge.GRADIENT] = {"cosine": 1 - acc}
        assert reg.claim(key, EXP, "target_a", method, ratio, seed, {"method": method, "seed": seed})
        reg.finish(key, metrics={"accuracy": acc, "n_eval": 10, "n_train": 5}, timings={}, info=info)
    for method, ratio, seed, acc in [("base", None, 0, 0.1), ("random", 0.05, 0, 0.2), ("less", 0.05, 0, 0.3)]:
        key = f"{PLAIN}-{method}-{seed}"
        assert reg.claim(key, PLAIN, "target_a", method, ratio, seed, {"method": method})
        reg.finish(key, metrics={"accuracy": acc, "n_eval": 10, "n_train": 5}, timings={})


def _open(page, app_url, exp: str) -> None:
    page.goto(f"{app_url}/benchmarks")
    page.get_by_role("heading", name="Benchmarks").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Experiment").first.click()
    page.get_by_role("option", name=exp, exact=True).first.click()
    wait_idle(page)
    heading = page.get_by_role("heading", name="Heads: what training changed").first
    heading.wait_for(timeout=TIMEOUT_MS)
    heading.scroll_into_view_if_needed()
    wait_idle(page)


def test_benchmarks_page_shows_the_change_heatmaps_and_the_scatters(page, app_url, app_workspace):
    _store(Workspace(app_workspace))
    _open(page, app_url, EXP)
    page.get_by_text("Change of the target's head pattern").first.wait_for(timeout=TIMEOUT_MS)
    heat = page.locator(".js-plotly-plot .heatmaplayer .hm")
    heat.first.wait_for(state="attached", timeout=TIMEOUT_MS)
    assert heat.count() == 3                                   # full, less, random side by side (base: zero)
    titles = " ".join(page.locator(".js-plotly-plot .gtitle").all_text_contents())
    subtitles = " ".join(page.locator(".js-plotly-plot .annotation-text").all_text_contents())
    assert "full" in subtitles and "less" in subtitles and "random" in subtitles
    # the head-similarity scatter: 6 selection cells, x = 0.5 + score, so r = +1
    assert "head similarity of the selection to the target's pattern" in titles
    assert "Pearson r = +1.00" in titles and "Spearman ρ = +1.00" in titles and "n = 6" in titles
    assert "change similarity to the full-data model's change" in titles
    assert "gradient similarity of the selection to the target" in titles and "Pearson r = -1.00" in titles
    points = page.locator(".js-plotly-plot .scatterlayer .point")
    assert points.count() == 6 + 6 + 6                         # head, gradient, change scatters
    body = page.inner_text("body")
    assert re.search(r"Head vs gradient similarity \(the same 6 distinct selections; a deterministic method's seeds are one\): \|r head\| − \|r gradient\| = [+-]0\.00", body)
    assert "neither goes with the score more strongly" in body
    assert "two-sided permutation p-value" in body and "Traceback" not in body
    assert page.locator('[data-testid="stException"]').count() == 0
    page.locator('[data-testid="stPlotlyChart"]').last.scroll_into_view_if_needed()
    page.screenshot(path="/tmp/g2is_benchmarks_heads_loop.png", full_page=True)


def test_rows_without_head_patterns_say_so(page, app_url, app_workspace):
    if Registry.open(Workspace(app_workspace)).status(f"{PLAIN}-base-0") is None:
        _store(Workspace(app_workspace))
    _open(page, app_url, PLAIN)
    page.get_by_text("These rows carry no head patterns").first.wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".js-plotly-plot .heatmaplayer .hm").count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0

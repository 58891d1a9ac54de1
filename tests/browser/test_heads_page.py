"""The Heads page in a real browser: a stored tiny study renders as layer x head heatmaps."""
from __future__ import annotations

import re

import pytest
from stwait import wait_idle

pytestmark = pytest.mark.browser
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def stored_study(app_workspace):
    """A tiny study (random 2-layer Llama, 4 tasks, 2 seeds, 3 steps) in the app's workspace."""
    from g2is_core.heads.study import StudyConfig, run_study
    from g2is_core.workspace import Workspace

    cfg = StudyConfig(model="tiny", tasks=("add", "reverse", "upper", "add_reverse"), seeds=(0, 1), steps=3,
                      measure_at=(0, 2), n_pattern=4, n_eval=2, max_new_tokens=2, lr=1e-3, batch_size=2)
    return run_study(cfg, Workspace(app_workspace), log=lambda *_: None)


def test_heads_page_renders_heatmap_for_stored_study(page, app_url, stored_study):
    page.goto(f"{app_url}/heads")
    page.get_by_role("heading", name="Heads").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Activation patterns").first.wait_for(timeout=TIMEOUT_MS)
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.first.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    wait_idle(page)
    body = page.inner_text("body")
    assert "Model tiny (2 layers × 4 heads, 2 KV heads)" in body   # the stored study's caption
    assert "Traceback" not in body and "could not be shown" not in body
    assert page.locator('[data-testid="stException"]').count() == 0
    assert charts.count() >= 5                               # 3 task heatmaps, similarity, composition, convergence
    page.screenshot(path="/tmp/g2is_heads_page.png", full_page=True)
    # Top heads listed with L{l}H{h} labels (below the fold: Streamlit draws it once scrolled to).
    page.get_by_text("Top heads of").first.scroll_into_view_if_needed()
    page.get_by_text(re.compile(r"^L[01]H[0-3]$")).first.wait_for(timeout=TIMEOUT_MS)
    assert "Task specificity" in body and "Composition" in body and "Convergence" in body

"""The Data impact page in a real browser: a stored tiny impact study renders its corpus x capability
heatmap, the relationship graph and the unlearning loss curves."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from stwait import wait_idle

pytestmark = pytest.mark.browser
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def stored_study(app_workspace, tmp_path_factory):
    """A tiny study (random 2-layer Llama, 3 corpora, one joint pair) in the app's workspace."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
    from test_impact import tiny_config

    from g2is_core.impact.study import run_study
    from g2is_core.workspace import Workspace

    return run_study(tiny_config(tmp_path_factory.mktemp("impact-corpora")), Workspace(app_workspace),
                     log=lambda *_: None)


def test_impact_page_renders_a_stored_study(page, app_url, stored_study):
    page.goto(f"{app_url}/impact")
    page.get_by_role("heading", name="Data impact").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Impact: corpus x capability").first.wait_for(timeout=TIMEOUT_MS)
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.first.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    page.get_by_text("Unlearning loss curves").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    body = page.inner_text("body")
    assert stored_study.dir.name in body                      # the study selector names it
    assert "Traceback" not in body and "could not be shown" not in body
    assert page.locator('[data-testid="stException"]').count() == 0
    assert charts.count() >= 3                                # heatmap, relationship graph, loss curve
    assert "Relationships between corpora" in body and "animals+space" in body
    page.screenshot(path="/tmp/g2is_impact_page.png", full_page=True)

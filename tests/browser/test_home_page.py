"""The overview page: the app opens on it; it says what the app answers, what the workspace holds, and
offers the next step as a button (here: a fresh workspace, so the model is missing)."""
from __future__ import annotations

import pytest
from stwait import wait_idle

TIMEOUT_MS = 60_000

pytestmark = pytest.mark.browser


def test_the_app_opens_on_the_overview(page, app_url):
    page.goto(app_url)
    page.get_by_role("heading", name="G2IS Studio").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("This workspace").first.wait_for(timeout=TIMEOUT_MS)
    for metric in ("Gradient stores", "Graphs", "Selection runs", "Head studies", "Benchmark results"):
        page.get_by_text(metric, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Load your data").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    body = page.inner_text("body")
    for question in ("Which data should I train on for a target?", "What does training change in the model?",
                     "How do the two meet?"):
        assert question in body
    assert "missing" in body and "g2is model fetch" in body          # a fresh workspace: no model yet
    for button in ("Fetch the model", "Run the demo live", "Load your data"):
        assert page.get_by_role("button").filter(has_text=button).count() >= 1, button
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in body and "could not be shown" not in body
    page.screenshot(path="/tmp/g2is_home_page.png", full_page=True)

    page.get_by_role("button").filter(has_text="Load your data").first.click()     # the next step for your own data
    page.get_by_role("heading", name="Data").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Path on this machine").first.wait_for(timeout=TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0

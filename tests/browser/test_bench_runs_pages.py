"""The closed loop in the browser: the Benchmarks page shows a stored run's table; the Runs page starts a
tiny benchmark job from its form and shows it finish."""
from __future__ import annotations

import time

import pytest

from g2is_core import jobs
from g2is_core.loop.registry import Registry
from g2is_core.workspace import Workspace

from conftest import TIMEOUT_MS
from stwait import wait_idle

pytestmark = pytest.mark.browser

EXP = "stored-bench"


def _store_rows(ws: Workspace) -> None:
    reg = Registry.open(ws)
    rows = [("base", None, 0, 0.10), ("full", None, 0, 0.60), ("random", 0.05, 0, 0.20), ("random", 0.05, 1, 0.30),
            ("g2is", 0.05, 0, 0.40), ("g2is", 0.05, 1, 0.50)]
    for method, ratio, seed, acc in rows:
        key = f"{EXP}-{method}-{ratio}-{seed}"
        assert reg.claim(key, EXP, "target_a", method, ratio, seed, {"method": method})
        reg.finish(key, metrics={"accuracy": acc, "n_eval": 10, "n_train": 5}, timings={"train_s": 1.0})


def _choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    wait_idle(page)


def test_benchmarks_page_shows_a_stored_run(page, app_url, app_workspace):
    _store_rows(Workspace(app_workspace))
    page.goto(f"{app_url}/benchmarks")
    page.get_by_role("heading", name="Benchmarks").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    _choose(page, "Experiment", EXP)
    # the results grid (its accessible cells hold the raw values): g2is at 5%, 2 seeds, mean 0.45,
    # +0.20 vs random (0.25), -0.15 vs full, +0.35 vs base
    page.locator('[role="gridcell"]').filter(has_text="g2is").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    cells = page.locator('[role="gridcell"]').all_text_contents()
    i = cells.index("g2is")
    ratio, n_seeds, mean, std, vs_random, vs_full, vs_base = cells[i + 1:i + 8]
    assert (float(ratio), int(n_seeds)) == (0.05, 2)
    assert [round(float(v), 6) for v in (mean, vs_random, vs_full, vs_base)] == [0.45, 0.2, -0.15, 0.35]
    body = page.inner_text("body")
    assert "Seed-matched differences to random" in body and "Download the table as CSV" in body
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path="/tmp/g2is_benchmarks_page.png", full_page=True)


def test_benchmarks_page_shows_the_latest_spec_version_and_cut_prompts(page, app_url, app_workspace):
    """Issue 18 items 4 and 8: an edited spec rerun under the same name shows its own rows only, says so, and
    prompts the eval cut are counted on the page."""
    reg = Registry.open(Workspace(app_workspace))
    exp = "edited-bench"
    for version, (acc, cut) in enumerate([(0.10, 0.0), (0.90, 3.0)]):
        keys = []
        for method, ratio, seed in [("random", 0.05, 0), ("random", 0.05, 1)][:2 - version]:
            key = f"{exp}-v{version}-{method}-{seed}"
            assert reg.claim(key, exp, "target_a", method, ratio, seed, {"method": method, "v": version})
            reg.finish(key, metrics={"accuracy": acc, "n_eval": 10, "n_train": 5, "n_truncated": cut}, timings={})
            keys.append(key)
        reg.record_version(exp, f"spec{version}", {"name": exp, "v": version}, keys)
    page.goto(f"{app_url}/benchmarks")
    page.get_by_role("heading", name="Benchmarks").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    _choose(page, "Experiment", exp)
    page.get_by_text("Spec version 2 of 2").first.wait_for(timeout=TIMEOUT_MS)
    body = page.inner_text("body")
    assert "2 finished row(s) of earlier versions" in body and "Truncated prompts" in body
    # the grid's accessible cells attach after the page is idle: wait for the row before reading them
    page.locator('[role="gridcell"]').filter(has_text="random").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    cells = page.locator('[role="gridcell"]').all_text_contents()
    i = cells.index("random")
    assert int(cells[i + 2]) == 1 and round(float(cells[i + 3]), 6) == 0.9  # one seed of the new config, not 0.5
    assert page.locator('[data-testid="stException"]').count() == 0


def test_runs_page_starts_a_tiny_benchmark_and_shows_it_finish(page, app_url, app_workspace):
    spec = app_workspace / "tiny-bench.yaml"
    spec.write_text(
        "name: tiny-browser\nmodel: tiny\npool: {builtin: {seed: 0, per_task: 4, distractors: 8}}\n"
        "targets: [{name: add_reverse, eval_limit: 2, n_select: 2}]\nmethods: []\nratios: [0.2]\nseeds: [0]\n"
        "train: {lr: 0.001, epochs: 1, batch_size: 4, max_length: 48, lora: {r: 2, alpha: 4, dropout: 0.0}}\n"
        "eval: {max_new_tokens: 4}\n")
    label = "Benchmark: run an experiment spec"
    page.goto(f"{app_url}/runs")
    page.get_by_role("heading", name="Runs").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    _choose(page, "Command", label)
    box = page.get_by_label("Experiment spec", exact=True).and_(page.locator("input"))
    box.fill(str(spec))
    box.press("Enter")  # commits the text input inside the form
    page.get_by_role("button", name=f"Start: {label}").click()
    page.get_by_text("as job").first.wait_for(timeout=TIMEOUT_MS)
    job = next(j for j in jobs.list_jobs(Workspace(app_workspace)) if j.argv[:3] == ["bench", "run", str(spec)])
    deadline = time.monotonic() + 240
    while job.refresh().is_active and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job.status == "done", job.tail(20)
    # the page's job list (a fragment polling every 2 s while a job runs) shows it finished, with its log
    head = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text=job.id)  # name · status · time, id
    head.filter(has_text=f"{label} · done").first.wait_for(timeout=TIMEOUT_MS)
    assert Registry.open(Workspace(app_workspace)).rows("tiny-browser")  # the job wrote its rows
    assert page.locator('[data-testid="stException"]').count() == 0

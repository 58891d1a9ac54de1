"""The app in a real browser: the Data page renders the built-in suite; no page shows an exception."""
from __future__ import annotations

import time

import pytest
from stwait import wait_idle

TIMEOUT_MS = 60_000
FIRST_RENDER_MS = 180_000   # the first Data render imports transformers and tokenises 1,440 records

pytestmark = pytest.mark.browser

PAGES = {  # url path -> a heading the page always shows
    "": "G2IS Studio",                           # the overview (pages/home.py) is the default page
    "data": "Data",
    "graph": "Instruction graph",
    "walk": "Walk",
    "heads": "Heads",
    "benchmarks": "Benchmarks",
    "runs": "Runs",
}


def test_data_page_shows_builtin_suite(page, app_url):
    page.goto(app_url)
    page.get_by_role("link", name="Data").first.click()
    table = page.locator('[data-testid="stDataFrame"]:visible').first
    table.wait_for(state="visible", timeout=FIRST_RENDER_MS)
    page.get_by_text("Records by task").first.wait_for(timeout=FIRST_RENDER_MS)
    page.get_by_text("Token length").first.wait_for(timeout=FIRST_RENDER_MS)
    wait_idle(page, FIRST_RENDER_MS)
    body = page.inner_text("body")
    assert "builtin" in body                     # the source column / caption of the built-in suite
    assert "the demo's pool" in body             # the caption naming the loaded data (the default: the demo's)
    assert "first_last" in body                  # a built-in task of it (axis of "Records by task")
    assert "Traceback" not in body
    assert page.locator('[data-testid="stException"]').count() == 0
    box = table.bounding_box()
    assert box and box["height"] > 100          # the record table has rows, not just a header
    page.screenshot(path="/tmp/g2is_data_page.png", full_page=True)


@pytest.mark.parametrize("path,heading", list(PAGES.items()))
def test_every_page_renders_without_exception(page, app_url, path, heading):
    page.goto(f"{app_url}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body
    assert "could not be shown" not in body      # our own error guard did not fire either


def test_path_outside_allowed_folders_is_refused(page, app_url):
    page.goto(f"{app_url}/data")
    page.get_by_text("Path on this machine").first.click()
    box = page.get_by_label("File or folder", exact=True).and_(page.locator("input"))
    box.fill("/etc/passwd")
    box.press("Enter")
    page.get_by_text("outside the folders the app may read").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_runs_page_lists_a_finished_job(page, app_url, app_workspace):
    from g2is_core import jobs

    job = jobs.start_job(["--help"], name="CLI help", workspace=app_workspace)
    deadline = time.monotonic() + 60
    while job.refresh().is_active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.status == "done"
    page.goto(f"{app_url}/runs")
    page.get_by_text("CLI help").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text(job.id).first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    body = page.inner_text("body")
    assert "done" in body and "Fetch the default model" in body
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path="/tmp/g2is_runs_page.png")


def test_first_request_to_a_subpage_gets_the_app_shell(page, tmp_path, fresh_server):
    """A fresh server asked for /runs first (a bookmark after a restart) still runs app.py's navigation."""
    with fresh_server(tmp_path / "ws") as url:
        page.goto(f"{url}/runs")
        page.get_by_role("heading", name="Runs").first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_text("G2IS Studio").first.wait_for(timeout=TIMEOUT_MS)   # the sidebar of app.py
        wait_idle(page)
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Instruction graph" in nav and "Benchmarks" in nav
        assert "_ui" not in nav and "\nui\n" not in f"\n{nav}\n"
        assert page.locator('[data-testid="stException"]').count() == 0


def test_bad_file_gives_a_sentence_then_lenient_lists_skipped_lines(page, app_url, app_workspace):
    good = '{"instruction": "Say hi", "input": "", "output": "hi"}'
    (app_workspace / "bad.jsonl").write_text(f"{good}\n{{not json\n{good.replace('hi', 'yo')}\n")
    page.goto(f"{app_url}/data")
    page.get_by_text("Path on this machine").first.click()
    box = page.get_by_label("File or folder", exact=True).and_(page.locator("input"))
    box.fill("bad.jsonl")
    box.press("Enter")
    page.get_by_text("Could not load the data").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    body = page.inner_text("body")
    assert "line 2" in body and "Traceback" not in body
    assert page.locator('[data-testid="stException"]').count() == 0
    page.get_by_text("Lenient", exact=True).first.click()
    page.get_by_text("skipped 1").first.wait_for(timeout=FIRST_RENDER_MS)
    wait_idle(page, FIRST_RENDER_MS)
    body = page.inner_text("body")
    assert "loaded 2 records" in body and "Traceback" not in body
    assert page.locator('[data-testid="stException"]').count() == 0


def test_upload_is_saved_in_the_workspace_and_loaded(page, app_url, app_workspace, tmp_path):
    src = tmp_path / "my data (v2).jsonl"
    src.write_text('{"instruction": "Add 1 and 2.", "input": "", "output": "3"}\n'
                   '{"instruction": "Say no.", "input": "", "output": "no"}\n')
    page.goto(f"{app_url}/data")
    page.get_by_text("Upload a file").first.click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(src))
    page.get_by_text("loaded 2 records").first.wait_for(timeout=FIRST_RENDER_MS)
    wait_idle(page, FIRST_RENDER_MS)
    saved = app_workspace / "uploads" / "my_data_v2_.jsonl"
    assert saved.read_bytes() == src.read_bytes()
    body = page.inner_text("body")
    assert "alpaca" in body and "Traceback" not in body
    assert page.locator('[data-testid="stException"]').count() == 0

"""Browser-test fixtures: one Streamlit server per session (temp workspace), one headless Chromium.

The server runs `streamlit run app.py` on 127.0.0.1 and a free port with G2IS_WORKSPACE set to a
temporary folder, so the tests never touch the user's workspace. Chromium is the system one
(/usr/bin/chromium): no browser download is possible here.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


def pytest_collection_modifyitems(config, items):
    if Path(CHROMIUM).exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: the browser tests drive the system Chromium")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_workspace(tmp_path_factory) -> Path:
    """The workspace folder the test app uses (tests may put artefacts or jobs in it)."""
    return tmp_path_factory.mktemp("g2is-ws")


@contextlib.contextmanager
def serve(workspace: Path, pack: str | Path = "none"):
    """Run `streamlit run app.py` on 127.0.0.1 and a free port; yield its URL; stop its process group.

    ``pack``: the demo pack the app shows (G2IS_DEMO_PACK); "none" by default, so a test of a fresh workspace
    meets its empty states; the pack's own tests pass its folder."""
    port = _free_port()
    log_path = workspace.parent / f"streamlit-{port}.log"
    env = {**os.environ, "G2IS_WORKSPACE": str(workspace), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "G2IS_DEMO_PACK": str(pack)}
    cmd = [sys.executable, "-m", "streamlit", "run", str(PROJECT / "app.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=str(PROJECT), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer /_stcore/health within 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def app_url(app_workspace):
    """URL of the app shared by the session's tests (workspace: ``app_workspace``)."""
    with serve(app_workspace) as url:
        yield url


@pytest.fixture
def fresh_server():
    """The :func:`serve` context manager, for a test that needs its own, never-visited server."""
    return serve


@pytest.fixture(scope="session")
def browser():
    pw_api = pytest.importorskip("playwright.sync_api")
    with pw_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    ctx.close()

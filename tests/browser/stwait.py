"""The one wait the browser tests share: until Streamlit has finished the script run."""
from __future__ import annotations


def wait_idle(page, timeout: int = 120_000) -> None:
    """Wait for the app to mount, then for its running-status widget to disappear."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)

"""Progress reporting shared by the CLI, background jobs and the app.

Long work takes a ``progress(fraction, message)`` callback. The CLI's callback draws a tqdm bar
and, when ``G2IS_PROGRESS_FILE`` is set (a background job started from the Runs page), also
writes ``{"fraction", "message", "time"}`` to that file atomically so the page can show it.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Callable, Iterator

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:  # noqa: ARG001
    pass


def _write_progress_file(path: str, fraction: float, message: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"fraction": round(float(fraction), 4), "message": message, "time": time.time()}, f)
    os.replace(tmp, path)


@contextlib.contextmanager
def cli_progress(desc: str, min_interval: float = 0.5) -> Iterator[Progress]:
    """A progress callback drawing a tqdm bar (0-100%) and mirroring it to G2IS_PROGRESS_FILE."""
    from tqdm import tqdm

    path = os.environ.get("G2IS_PROGRESS_FILE")
    last = [0.0]
    with tqdm(total=100, desc=desc, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}",
              dynamic_ncols=True) as bar:
        def cb(fraction: float, message: str) -> None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            bar.n = round(100 * fraction, 1)
            bar.set_postfix_str(message[:80], refresh=False)
            bar.refresh()
            now = time.time()
            if path and (now - last[0] >= min_interval or fraction >= 1.0):
                last[0] = now
                with contextlib.suppress(OSError):
                    _write_progress_file(path, fraction, message)

        yield cb


def read_progress_file(path: str | os.PathLike) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return None

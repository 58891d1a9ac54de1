"""Streamlit helpers shared by the pages: error guard, empty states, artefact lists, job forms.

Layout only; numbers and tables come from :mod:`g2is_core.app.kit`, artefacts from
:mod:`g2is_core.app.readers`, the launch forms from :mod:`g2is_core.app.forms`.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import streamlit as st

from g2is_core.app import kit as appkit
from g2is_core.workspace import Workspace

log = logging.getLogger("g2is.app")


def _leave_legacy_multipage_mode() -> None:
    """Make the first request of a fresh server go through app.py, whatever URL it asks for.

    Why: Streamlit treats a folder named ``pages/`` beside the main script as a v1 multipage app
    until the first ``st.navigation`` call of the process. A first request for /runs (a bookmark,
    a reload after a restart) would run pages/runs.py alone: no page config, no sidebar, no error
    guard, and a file list as navigation. Every page imports this module, so on that first run we
    clear the flag and rerun; the rerun executes app.py, whose st.navigation picks the page.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without this class has no v1 fallback to leave
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_legacy_multipage_mode()


# ----------------------------------------------------------------------------- errors
def error_sentence(exc: BaseException) -> str:
    """The message a user reads: the exception's own sentence (our errors say what to do)."""
    from g2is_core.models.loading import ModelError
    from g2is_core.data.records import DataError

    msg = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (DataError, ModelError, ValueError, FileNotFoundError, PermissionError)):
        return msg
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller file or fewer records"
    return f"{type(exc).__name__}: {msg}"


def show_error(exc: BaseException, what: str = "This section") -> None:
    """st.error with one readable sentence and an expander with the place it happened; no traceback.

    The full traceback goes to the server log (the terminal running the app).
    """
    log.error("%s failed:\n%s", what, "".join(traceback.format_exception(exc)))
    st.error(f"{what} could not be shown: {error_sentence(exc)}")
    frames = traceback.extract_tb(exc.__traceback__)
    with st.expander("details"):
        st.write(f"Error type: `{type(exc).__name__}`")
        if frames:
            f = frames[-1]
            st.write(f"Raised in `{Path(f.filename).name}`, line {f.lineno}, in `{f.name}`.")
        st.caption("The full traceback is in the log of the terminal that runs the app.")


@contextlib.contextmanager
def guard(what: str = "This page") -> Iterator[None]:
    """Run a block; an exception becomes :func:`show_error` (Streamlit's rerun/stop signals pass through)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001  (the point is that nothing escapes as a raw traceback)
        show_error(exc, what)


def guarded(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of :func:`guard`, for fragments (they rerun outside the page's guard)."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            with guard(what):
                return fn(*a, **kw)
        return wrapper
    return deco


# ----------------------------------------------------------------------------- workspace
SOURCE_KEY = "g2is_results_from"
YOURS, PACK = "Your workspace", "The shipped demo"


def user_workspace() -> Workspace:
    """The user's workspace (G2IS_WORKSPACE or cache/ in the project): where runs, uploads and jobs go."""
    return Workspace()


@functools.lru_cache(maxsize=1)
def demo_pack():
    """The demo pack shipped with the package (:mod:`g2is_core.demo.pack`), or None (read once per server)."""
    from g2is_core.demo.pack import find_pack

    return find_pack()


def showing_pack() -> bool:
    """Do the result pages show the shipped demo pack? The sidebar's choice; by default the pack exactly
    when the user's workspace has no results yet (a fresh machine opens on content, not on empty states)."""
    from g2is_core.app import readers

    if demo_pack() is None:
        return False
    choice = st.session_state.get(SOURCE_KEY)
    if choice is None:
        choice = YOURS if readers.workspace_state(user_workspace()).has_results else PACK
        st.session_state[SOURCE_KEY] = choice
    return choice == PACK


def workspace() -> Workspace:
    """The workspace the result pages read: the user's, or the shipped demo pack (read-only) when the sidebar
    says so. Pages that start work (Runs, the Overview's buttons, Data) use :func:`user_workspace`."""
    if showing_pack():
        return demo_pack().workspace()
    return user_workspace()


def pack_banner() -> None:
    """Say, on a result page that shows the shipped demo pack, what it is and how to see your own results."""
    if not showing_pack():
        return
    info = demo_pack()
    st.info(f"Showing **the shipped demo** (read-only): results of the embedded default made by `{info.command}` "
            f"on {info.created[:10]} (code {info.code_version}, model {info.model_hash[:12]}). Your own results: "
            "“Results from” in the sidebar.", icon=":material/inventory_2:")


# ----------------------------------------------------------------------------- empty states and lists
def empty_state(message: str, commands: Sequence[str] = (), note: str | None = None, *,
                ws: Workspace | None = None) -> None:
    """An honest empty state: what is missing and exactly what to run to fill it. The page redraws by itself
    when the workspace gains an artefact (a job or a terminal command writing what it waits for)."""
    st.info(message)
    for c in commands:
        st.code(c, language="bash")
    if note:
        st.caption(note)
    if demo_pack() is not None and not showing_pack():
        st.caption("Or look at the shipped demo's results first: “Results from” → “The shipped demo” in the sidebar.")
    rerun_when_workspace_changes(ws or workspace())


def rerun_when_workspace_changes(ws: Workspace, every: float = 4.0) -> None:
    """Poll the workspace's fingerprint (readers.workspace_stamp) and re-run the whole page when it changes."""
    from g2is_core.app import readers

    if getattr(ws, "read_only", False):  # the shipped pack never changes
        return
    first = readers.workspace_stamp(ws)

    @st.fragment(run_every=every)
    def _poll() -> None:
        if readers.workspace_stamp(ws) != first:
            st.rerun(scope="app")
    _poll()


def artefacts(kinds: str | Sequence[str], *, empty: str, commands: Sequence[str] = (), note: str | None = None,
              ws: Workspace | None = None):
    """List the finished artefacts of workspace kind(s) as a table; the empty state when there are none.

    Returns the DataFrame (empty when none) so a page can add its own view of a chosen row.
    """
    df = appkit.artefact_rows(ws or workspace(), kinds)
    if df.empty:
        empty_state(empty, commands, note)
    else:
        st.dataframe(df, hide_index=True, width="stretch")
    return df


# ----------------------------------------------------------------------------- job launch forms
def template_form(template, key_prefix: str = "tpl") -> list[str] | None:
    """Render a :class:`g2is_core.app.forms.JobTemplate`'s fields in a form; return argv when submitted.

    Field kinds map to widgets: text/path -> text_input, int/float -> number_input, bool -> checkbox,
    choice -> selectbox. ``build`` errors (ValueError) are shown as st.error and return None.
    """
    values: dict[str, Any] = {}
    with st.form(f"{key_prefix}-{template.key}"):
        st.caption(template.description)
        for f in template.fields:
            k = f"{key_prefix}-{template.key}-{f.name}"
            if f.kind == "bool":
                values[f.name] = st.checkbox(f.label, value=bool(f.default), help=f.help or None, key=k)
            elif f.kind == "int":
                values[f.name] = int(st.number_input(f.label, value=int(f.default or 0), step=1, help=f.help or None,
                                                     min_value=None if f.min is None else int(f.min),
                                                     max_value=None if f.max is None else int(f.max), key=k))
            elif f.kind == "float":
                values[f.name] = float(st.number_input(f.label, value=float(f.default or 0.0), help=f.help or None,
                                                       min_value=f.min, max_value=f.max, key=k))
            elif f.kind == "choice":
                opts = f.options()
                if not opts:
                    st.warning(f"{f.label}: nothing to choose from yet.")
                    values[f.name] = None
                else:
                    idx = opts.index(f.default) if f.default in opts else 0
                    values[f.name] = st.selectbox(f.label, opts, index=idx, help=f.help or None, key=k)
            else:
                values[f.name] = st.text_input(f.label, value=str(f.default or ""), help=f.help or None, key=k)
        submitted = st.form_submit_button(f"Start: {template.label}", type="primary")
    if not submitted:
        return None
    try:
        return template.build(values)
    except ValueError as exc:
        st.error(f"Not started: {exc}")
        return None

"""G2IS Studio: the Streamlit entry point (``g2is app`` or ``streamlit run app.py``).

Navigation, page config and the sidebar (workspace, model status, running jobs). Each page is a
thin layout file under pages/; all computation lives in g2is_core.
"""
from __future__ import annotations

import streamlit as st

from g2is_core.app import kit as appkit
from g2is_core import jobs
from pages import _ui

st.set_page_config(page_title="G2IS Studio", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/table:"),
    st.Page("pages/graph.py", title="Instruction graph", icon=":material/hub:"),
    st.Page("pages/walk.py", title="Walk", icon=":material/route:"),
    st.Page("pages/heads.py", title="Heads", icon=":material/grid_on:"),
    st.Page("pages/impact.py", title="Data impact", icon=":material/science:"),
    st.Page("pages/benchmarks.py", title="Benchmarks", icon=":material/leaderboard:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/play_circle:"),
]
page = st.navigation(PAGES)

with st.sidebar:
    st.markdown("### G2IS Studio")
    with _ui.guard("The workspace status"):
        ws = _ui.user_workspace()
        if _ui.demo_pack() is not None:
            _ui.showing_pack()  # sets the default choice before the radio reads it
            st.radio("Results from", [_ui.YOURS, _ui.PACK], key=_ui.SOURCE_KEY,
                     help="The shipped demo: the demo's results made with this code and the default model, read-only. "
                          "Your workspace: what you computed (the demo run live, your data).")
        st.caption(f"Workspace  \n`{ws.root}`")
        status = appkit.model_status(ws)
        if status.ready:
            st.success(f"Model: {status.message}", icon=":material/check_circle:")
        else:
            st.warning(f"Model: {status.message}", icon=":material/download:")
        running = [j for j in jobs.list_jobs(ws) if j.is_active]
        if running:
            st.info(f"{len(running)} job(s) running: see Runs", icon=":material/autorenew:")

with _ui.guard(f"The {page.title} page"):
    page.run()

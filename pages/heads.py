"""Heads: attention-head activation patterns before / after SFT per task, task specificity with its
noise floor, composition of composites from basic tasks against a permutation null, convergence.

Layout only: studies, stored findings and mix results come from g2is_core.app.readers, patterns from
g2is_core.heads.study.HeadStudy, every number from g2is_core.heads.analysis (pure, tested functions).
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from g2is_core.app import readers
from g2is_core.heads import analysis as ha
from g2is_core.heads.patterns import head_label, kv_group
from g2is_core.heads.study import HeadStudy
from pages import _ui

st.title("Heads")
st.caption("Activation pattern AP[l, h] = mean over samples of |Σ A·∂Loss/∂A| per head (Zhao et al., ACL 2025), "
           "labelled L{layer}H{head}; measured on held-apart dev samples before, during and after SFT on each task.")

ws = _ui.workspace()
_ui.pack_banner()
studies = {str(e.path): e for e in readers.head_studies(ws)}
if not studies:
    _ui.empty_state("No head study yet. Run one: it fine-tunes the model on each built-in task and measures the "
                    "activation patterns along the way (the default study takes about half an hour on a 2-core "
                    "CPU; the tiny one below takes seconds and only checks the plumbing).",
                    ["g2is heads study", "g2is heads study --model tiny --tasks add,reverse,add_reverse --steps 4 "
                     "--measure 0,2,4 --n-pattern 4 --n-eval 4"],
                    note="Also from the Runs page: “Head study”. A single pattern: `g2is heads pattern --task add`.")
    st.stop()


@st.cache_data(max_entries=4, show_spinner="Loading the study")
def _load(path: str, stamp: float) -> dict:  # noqa: ARG001  (stamp keys the cache to the study's content)
    s = HeadStudy.load(path)
    pats = {f"{t}|{seed}": s.patterns(t, seed) for t, seed in s.runs}
    return {"meta": s.meta, "runs": {f"{t}|{seed}": r for (t, seed), r in s.runs.items()}, "patterns": pats,
            "complete": s.complete}


@st.cache_data(max_entries=4, show_spinner="Computing the findings (permutation nulls)")
def _findings(path: str, stamp: float, n_perm: int) -> dict:  # noqa: ARG001
    return readers.head_findings(path, n_perm)


@st.cache_data(max_entries=16, show_spinner=False)
def _null(path: str, stamp: float, target: str, space: str, method: str, n_perm: int) -> dict:  # noqa: ARG001
    s = HeadStudy.load(path)
    which, norm = {"change_norm": ("change", True), "change_raw": ("change", False), "after_raw": ("after", False)}[space]
    preds = [t for t in s.tasks if s.kind(t) in ("basic", "control")]
    y = s.mean_pattern(target, which, normalised=norm)
    X = {p: s.mean_pattern(p, which, normalised=norm) for p in preds}
    res = ha.permutation_null(y, X, method, n_perm=n_perm)
    return {"observed": res.observed, "null": res.null, "p": res.p_value}


def _label(e: readers.StudyEntry) -> str:
    c = e.config
    done = "complete" if e.complete else "in progress"
    return f"{e.path.name} · {c['model']} · {len(c['tasks'])} tasks · {c['steps']} steps · {done}"


path = st.selectbox("Study", list(studies), format_func=lambda p: _label(studies[p]), key="heads_study")
stamp = studies[path].stamp()
data = _load(path, stamp)
meta, runs, pats = data["meta"], data["runs"], data["patterns"]
L, H, KV = meta["model"]["n_layers"], meta["model"]["n_heads"], meta["model"]["n_kv_heads"]
cfg = meta["config"]
tasks = [t for t in cfg["tasks"] if any(k.split("|")[0] == t for k in runs)]
kinds = {t: meta["tasks"][t]["kind"] for t in tasks}
seeds = sorted({int(k.split("|")[1]) for k in runs})
st.caption(f"Model {cfg['model']} ({L} layers × {H} heads, {KV} KV heads) · {cfg['method']} SFT, {cfg['steps']} steps × "
           f"batch {cfg['batch_size']}, lr {cfg['lr']} · seeds {', '.join(map(str, seeds))} · AP on {cfg['n_pattern']} dev "
           f"samples at steps {', '.join(map(str, meta['measure_steps']))}"
           + ("" if data["complete"] else " · study still running: showing finished runs"))


def _pattern(task: str, which: str, normalised: bool, seed: str) -> np.ndarray:
    """[layer, head] before / after / change for one seed or the mean over seeds."""
    sel = [s for s in seeds if f"{task}|{s}" in runs] if seed == "mean" else [int(seed)]
    out = []
    for s in sel:
        P = pats[f"{task}|{s}"]
        b, a = (ha.normalise(P[0]), ha.normalise(P[-1])) if normalised else (P[0], P[-1])
        out.append({"before": b, "after": a, "change": ha.change(b, a)}[which])
    return np.mean(out, 0)


def _heatmap(z: np.ndarray, title: str, diverging: bool, zmax: float | None = None) -> go.Figure:
    hover = [[f"{head_label(l, h)} · KV group {kv_group(h, H, KV)}<br>{z[l, h]:.4g}" for h in range(H)] for l in range(L)]
    x = [f"H{h} (kv{kv_group(h, H, KV)})" for h in range(H)]
    y = [f"L{l}" for l in range(L)]
    kw = dict(colorscale="RdBu", reversescale=True, zmid=0.0) if diverging else dict(colorscale="Viridis")
    if zmax is not None:
        kw.update(zmin=-zmax if diverging else 0.0, zmax=zmax)
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, text=hover, hoverinfo="text", **kw))
    for g in range(1, KV):   # KV-group boundaries
        fig.add_vline(x=g * (H // KV) - 0.5, line_width=1, line_color="white")
    fig.update_layout(title=title, height=max(320, 18 * L + 120), margin=dict(l=40, r=10, t=40, b=40),
                      yaxis=dict(autorange="reversed"))
    return fig


# ---- heatmaps, side by side
st.subheader("Activation patterns")
c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
chosen = c1.multiselect("Tasks (side by side)", tasks, default=tasks[:min(3, len(tasks))],
                        format_func=lambda t: f"{t} ({kinds[t]})", key="heads_tasks")
which = c2.radio("Show", ["before", "after", "change"], index=2, horizontal=True, key="heads_which")
normalised = c3.toggle("Normalised (sum 1)", value=True, key="heads_norm",
                       help="Raw patterns shrink as the loss falls; normalised ones compare shapes.")
seed_pick = c4.selectbox("Seed", ["mean"] + [str(s) for s in seeds], key="heads_seed")
if chosen:
    zs = {t: _pattern(t, which, normalised, seed_pick) for t in chosen}
    shared = st.checkbox("Same colour scale for all", value=True, key="heads_shared")
    zmax = max(float(np.abs(z).max()) for z in zs.values()) if shared else None
    cols = st.columns(len(chosen))
    for col, t in zip(cols, chosen):
        col.plotly_chart(_heatmap(zs[t], f"{t}: {which}{' (normalised)' if normalised else ''}", which == "change", zmax),
                         width="stretch", key=f"hm-{t}")

# ---- finding 1 table and top heads
fin_perm = st.sidebar.number_input("Permutations for the regression null", 100, 10000, 1000, 100, key="heads_perm")
F = _findings(path, stamp, int(fin_perm))
st.subheader("Per task: accuracy and concentration")
rows = [{"task": t, "kind": r["kind"], "accuracy before": r["accuracy_before"], "accuracy after": r["accuracy_after"],
         "loss first": r["loss_first"], "loss last": r["loss_last"], "Gini before": r["gini_before"],
         "Gini after": r["gini_after"], "CV before": r["cv_before"], "CV after": r["cv_after"],
         "ΣAP before": r["sum_before"], "ΣAP after": r["sum_after"]}
        for t, r in ((t, F["tasks"][t]) for t in (F.get("order") or list(F["tasks"])))]
st.dataframe(pd.DataFrame(rows).style.format(precision=3), hide_index=True, width="stretch")
st.caption("A task the model did not learn (accuracy after ≈ before, loss barely falling) has no meaningful change; "
           "read its pattern with care.")

tt = st.selectbox("Top heads of", tasks, key="heads_top_task")
k = st.slider("How many", 3, 30, 10, key="heads_top_k")
z = _pattern(tt, which, normalised, seed_pick)
st.table(pd.DataFrame([{"head": head_label(l, h), "KV group": kv_group(h, H, KV), which: f"{v:.4g}"}
                       for l, h, v in ha.top_heads(z, k)]).set_index("head"))

# ---- task specificity
st.subheader("Task specificity")
m = st.radio("Similarity of normalised changes", ["pearson", "spearman", "jaccard"], horizontal=True, key="heads_sim",
             help=f"jaccard: overlap of the top-{F['k']} heads")
S = np.array(F["similarity"][m])
names = F.get("order") or list(F["tasks"])
fig = go.Figure(go.Heatmap(z=S, x=names, y=names, colorscale="RdBu", reversescale=True, zmid=0.0 if m != "jaccard" else None,
                           text=[[f"{a} vs {b}: {S[i, j]:.3f}" for j, b in enumerate(names)] for i, a in enumerate(names)],
                           hoverinfo="text"))
fig.update_layout(height=460, margin=dict(l=40, r=10, t=20, b=40), yaxis=dict(autorange="reversed"))
st.plotly_chart(fig, width="stretch", key="sim")
floor_rows = []
for key, v in F["noise_floor"].items():
    kind_, meth = key.split("_", 1)
    if meth == m:
        floor_rows.append({"replicates": "two seeds" if kind_ == "seeds" else "two disjoint halves of the AP samples",
                           "same task (noise floor)": v["within_mean"], "different tasks": v["between"]})
if floor_rows:
    st.dataframe(pd.DataFrame(floor_rows).style.format(precision=3), hide_index=True, width="stretch")
    st.caption("Task-specific patterns need the same task across replicates to agree more than different tasks do.")
else:
    st.info("No noise floor: the study has one seed and too few samples to split.")

# ---- composition
st.subheader("Composition: composite ≈ basics")
comps = list(F["composition"])
if not comps:
    st.info("The study has no composite task together with basic tasks; add both to `--tasks`.")
else:
    a1, a2, a3 = st.columns(3)
    target = a1.selectbox("Composite", comps, key="heads_comp")
    space = a2.selectbox("Patterns", ["change_norm", "change_raw", "after_raw"], key="heads_space",
                         format_func={"change_norm": "change, normalised", "change_raw": "change, raw",
                                      "after_raw": "after SFT, raw"}.get)
    method = a3.radio("Regression", ["ols", "nnls"], horizontal=True, key="heads_method",
                      format_func={"ols": "OLS", "nnls": "non-negative"}.get)
    e = F["composition"][target]
    fit = e[f"{space}_{method}"]
    ing, ctl = set(e["ingredients"]), set(e["controls"])
    coef = fit["coef"]
    colours = ["#d62728" if n in ing else "#7f7f7f" if n in ctl else "#1f77b4" for n in coef]
    b1, b2 = st.columns(2)
    bar = go.Figure(go.Bar(x=list(coef), y=list(coef.values()), marker_color=colours,
                           text=[("ingredient" if n in ing else "control" if n in ctl else "") for n in coef]))
    bar.update_layout(title="Coefficients (red: declared ingredient, grey: control)", height=360,
                      margin=dict(l=40, r=10, t=40, b=40))
    b1.plotly_chart(bar, width="stretch", key="coef")
    nl = _null(path, stamp, target, space, method, int(fin_perm))
    hist = go.Figure(go.Histogram(x=nl["null"], nbinsx=40, name="shuffled head order"))
    hist.add_vline(x=nl["observed"], line_color="#d62728", annotation_text=f"observed R² {nl['observed']:.3f}")
    hist.update_layout(title=f"R² against the permutation null (p = {nl['p']:.4f})", height=360,
                       margin=dict(l=40, r=10, t=40, b=40), showlegend=False)
    b2.plotly_chart(hist, width="stretch", key="null")
    st.caption(f"R² {fit['r2']:.3f}, adjusted {fit['adj_r2']:.3f}, intercept {fit['intercept']:.3g}, over {fit['n']} heads. "
               "Any two raw patterns correlate through layer structure; only an R² above the null says more.")

# ---- convergence
st.subheader("Convergence during SFT")
fig_c, fig_m = go.Figure(), go.Figure()
for t in tasks:
    for cv in F["convergence"][t]:
        name = f"{t} s{cv['seed']}"
        fig_c.add_trace(go.Scatter(x=cv["samples_seen"], y=cv["corr"], mode="lines+markers", name=name))
        fig_m.add_trace(go.Scatter(x=cv["samples_seen"], y=cv["mse_x1e6"], mode="lines+markers", name=name))
fig_c.update_layout(title="Correlation with the final pattern", xaxis_title="samples seen", height=380)
fig_m.update_layout(title="MSE to the final pattern (normalised, ×1e6)", xaxis_title="samples seen", height=380)
d1, d2 = st.columns(2)
d1.plotly_chart(fig_c, width="stretch", key="conv-corr")
d2.plotly_chart(fig_m, width="stretch", key="conv-mse")
pc = pd.DataFrame([{"task": t, "seed": cv["seed"], **cv["param_change"]} for t in tasks for cv in F["convergence"][t]])
if not pc.empty:
    st.caption("Relative parameter change ‖ΔW‖/‖W‖ per module kind after SFT")
    st.dataframe(pc.style.format({c: "{:.2e}" for c in pc.columns if c not in ("task", "seed")}), hide_index=True,
                 width="stretch")

# ---- the application
mixes = readers.head_mixes(ws, path)
st.subheader("Application: a basic-task mix weighted by the regression")
if not mixes:
    _ui.empty_state("No mix run for this study yet.", [f"g2is heads mix --study {path} --target add_reverse"])
for res in mixes:
    c = res["config"]
    st.markdown(f"**{c['target']}**: {c['n_target']} target samples, {c['mix_steps']} mix steps + {c['target_steps']} "
                f"target steps")
    st.dataframe(pd.DataFrame([{"condition": k, "accuracy": v["accuracy"]} for k, v in res["conditions"].items()]),
                 hide_index=True)
    st.caption("weights: " + ", ".join(f"{k} {v:.2f}" for k, v in res["weights"].items()) + " · random: "
               + ", ".join(f"{k} {v:.2f}" for k, v in res["random_weights"].items())
               + ". No gain over target-only or the random mix is a valid result.")

"""Walk: replay a G2IS walk step by step on the map, its budget fill and rejections; compare two runs.

Layout only: runs come from app.readers (selection.SelectionRun), the per-step numbers from
selection.walk_progress, the comparison from selection.compare_runs, the map from the layout the
graph build cached, the network view from netview, the head signatures along the walk from app.bridge
(docs/bridge.md, "The graph and walk views").
"""
from __future__ import annotations

import html
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components

from g2is_core.app import kit as appkit
from g2is_core.app import bridge, netview, readers
from g2is_core.graph.knn import InstructionGraph
from g2is_core.graph.layout import find_layout, fit_ranges, marker_size
from g2is_core.selection import SelectionRun, compare_runs, walk_progress
from pages import _heads_view, _ui


@st.cache_resource(max_entries=4, show_spinner="Loading the run")
def _run(path: str, stamp: float) -> SelectionRun:  # noqa: ARG001
    return SelectionRun.load(path)


@st.cache_resource(max_entries=2, show_spinner="Loading the graph")
def _graph(path: str, stamp: float) -> InstructionGraph:  # noqa: ARG001
    return InstructionGraph.load(path)


@st.cache_data(max_entries=4, show_spinner="Comparing the walk's head signatures with the target's pattern")
def _walk_heads(root: str, pool_keys: tuple[str, ...], pool_stamp: float, target_keys: tuple[str, ...],
                target_stamp: float, path: str, run_stamp: float):
    """Per replay step: the added record's and the selection's (and its component's) cosine with the target's
    pattern (app.bridge.walk_similarity), with the walk's own consistency after the step."""
    pool = _heads_view.signatures(root, pool_keys, "pool", pool_stamp)
    target = _heads_view.signatures(root, target_keys, "target", target_stamp)
    bridge.check_pair(pool, target)
    t = _run(path, run_stamp).trajectory.sort_values(["component", "step"], kind="stable")
    bridge.check_nodes(pool, t["node"].to_numpy(), t["id"].astype(str).tolist())
    out = bridge.walk_similarity(pool, t["node"].to_numpy(), target.pattern(), t["component"].to_numpy())
    out["consistency_after"] = t["consistency_after"].to_numpy()
    return out


def _by_component(per_step, column: str) -> dict[str, list]:
    """{x, y} of a per-component series, broken (None) where the replay passes to the next component, so no
    line joins the last step of one component to the first of the next."""
    xs: list = []
    ys: list = []
    prev = None
    for t, c, v in zip(per_step["t"], per_step["component"], per_step[column]):
        if prev is not None and c != prev:
            xs.append(None)
            ys.append(None)
        xs.append(int(t))
        ys.append(float(v))
        prev = c
    return {"x": xs, "y": ys}


def _head_section(ws, entry, step: int) -> None:
    """The walk's head similarity per step and the heatmaps at the replayed step; a caption when the run's
    stores carry no head signatures."""
    pool_keys, target_keys = tuple(entry.train_store_keys), tuple(entry.target_store_keys)
    try:
        if not target_keys and pool_keys:
            raise bridge.MissingSignatures("this run records no target gradient store, so there is no target "
                                           "pattern to compare with")
        pool_stamp, target_stamp = bridge.signature_stamp(ws, pool_keys), bridge.signature_stamp(ws, target_keys)
        pool = _heads_view.signatures(str(ws.root), pool_keys, "pool", pool_stamp)
        target = _heads_view.signatures(str(ws.root), target_keys, "target", target_stamp)
        per_step = _walk_heads(str(ws.root), pool_keys, pool_stamp, target_keys, target_stamp, str(entry.path),
                               entry.stamp())
    except ValueError as exc:  # MissingSignatures: the sentence says how to get them
        st.caption(f"Head signatures along the walk: {str(exc).rstrip('.')}.")
        return
    st.subheader("Head signatures along the walk")
    row = per_step.iloc[step - 1]
    left, right = st.columns([3, 2])
    with left:
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=per_step["t"], y=per_step["running"], mode="lines", name="selection so far",
                                 line={"color": "#4c78a8", "width": 2}))
        fig.add_trace(go.Scatter(**_by_component(per_step, "component_running"), mode="lines+markers",
                                 name="its component so far", line={"color": "#4c78a8", "dash": "dash", "width": 1},
                                 marker={"size": 3}))
        fig.add_trace(go.Scatter(x=per_step["t"], y=per_step["added"], mode="markers", name="added record",
                                 marker={"color": "#f58518", "size": 5}))
        fig.add_trace(go.Scatter(**_by_component(per_step, "consistency_after"), mode="lines+markers",
                                 yaxis="y2", name="consistency after (right axis)",
                                 line={"color": "#888", "dash": "dot"}, marker={"size": 3}))
        fig.add_vline(x=step, line={"color": "#111", "width": 1})
        fig.update_layout(height=320, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis={"title": "step"},
                          yaxis={"title": "cos with the target's pattern"},
                          yaxis2={"title": "consistency", "overlaying": "y", "side": "right", "showgrid": False},
                          legend={"orientation": "h", "y": -0.25})
        st.plotly_chart(fig, key="walk_heads_cos", width="stretch")
        st.caption("Cosine of head signatures with the target's activation pattern (checkpoints weighted as in the "
                   "heads method): the selection's running signature (its activation pattern so far), its "
                   "component's, and each added record's own; the walk's consistency (per component) on the right "
                   "axis. A walk whose "
                   "consistency rises while the head similarity falls shows here.")
    with right:
        node = int(row["node"])
        tabs = st.tabs(["Added record", "Selection so far", "Target's pattern"])
        nodes = per_step["node"].to_numpy()[:step]
        with tabs[0]:
            st.plotly_chart(_heads_view.heatmap(pool.shown([node])[0], f"step {step}: node {node}"),
                            key="walk_heads_added", width="stretch")
            st.caption(f"cos with the target's pattern {row['added']:.3f}")
        with tabs[1]:
            st.plotly_chart(_heads_view.heatmap(bridge.combine(pool.pattern(nodes), pool.weights),
                                                f"mean of the first {step} records"),
                            key="walk_heads_running", width="stretch")
            st.caption(f"cos with the target's pattern {row['running']:.3f}")
        with tabs[2]:
            st.plotly_chart(_heads_view.heatmap(bridge.combine(target.pattern(), pool.weights),
                                                f"the target ({target.n} records)"),
                            key="walk_heads_target", width="stretch")


st.title("Walk")
st.caption("Core-knowledge components of the target, the walk's budget per component and every step it took.")
ws = _ui.workspace()
_ui.pack_banner()
walk_runs = {str(r.path): r for r in readers.selection_runs(ws) if r.has_walk}
if not walk_runs:
    _ui.empty_state("No walk yet. `g2is demo` computes gradient features of the built-in pool and targets and "
                    "runs the G2IS walk for each target; `g2is select --method g2is` walks your own data once its "
                    "gradient stores exist (see `g2is select --help`).", ["g2is demo"],
                    note="“Demo: the whole chain on the embedded default” on the Runs page runs the demo too.")
    st.subheader("Selections")
    _ui.artefacts("selections", empty="No selection yet.")
    st.stop()

labels = {str(r.path): f"for {r.target} · {r.meta.get('name') or r.path.name} · {r.meta.get('n_selected')}/"
          f"{r.meta.get('budget')} selected · {r.meta.get('produced_by', {}).get('created_utc', '')}"
          for r in walk_runs.values()}
path = st.selectbox("Walk run", list(labels), format_func=labels.get, key="walk_pick")
run = _run(path, walk_runs[path].stamp())
traj = run.trajectory.sort_values(["component", "step"], kind="stable").reset_index(drop=True)
comps = run.components
n_steps = len(traj)
pool_hash = run.meta["inputs"].get("pool_data_hash")
task_of = dict(zip(run.scores["id"], run.scores["task"]))
source_of = dict(zip(run.scores["id"], run.scores["source"]))

st.caption(f"Method g2is · target {appkit.md_text(walk_runs[path].target)} · budget {run.meta.get('budget')} · selected {len(run.ids)} · components {len(comps)} · "
           f"config {html.escape(str(run.meta['config'].get('options', {})))}")
if n_steps == 0:
    st.warning("This walk selected nothing (every component stopped before its anchor).")
    st.stop()

step = st.slider("Replay: steps taken", 1, n_steps, n_steps, key="walk_step")
st.markdown(f"**Replaying step {step} / {n_steps}**")
upto = traj.iloc[:step]

# ---- the map: the pool in grey, the walk so far on top
gentry = readers.run_graph(ws, run.meta)
layout = None
g = None
if gentry is not None:
    g = _graph(str(gentry.path), gentry.stamp())
    found = find_layout(gentry.features_key, ws)
    layout = None if found is None else found[0]
left, right = st.columns([3, 2])
with left:
    if layout is None:
        keys = walk_runs[path].train_store_keys
        _ui.empty_state("No cached layout for this run's graph, so there is no map to replay on; the tables below "
                        "still replay the walk. This command computes it for the run's pool stores:",
                        ["g2is graph build " + " ".join(f"--train-store {k}" for k in keys) + " --layout umap"]
                        if keys else [])
    else:
        fig = go.Figure()
        fig.add_trace(go.Scattergl(x=layout["x"], y=layout["y"], mode="markers", name="pool",
                                   marker={"size": marker_size(len(layout)), "color": "#d0d0d0"}, hoverinfo="skip"))
        for c, part in upto.groupby("component", sort=True):
            nodes = part["node"].to_numpy()
            text = [html.escape(f"step {s} · node {v} · {i} · {task_of.get(i, '')} · {src}")
                    for s, v, i, src in zip(part["step"], nodes, part["id"], part["source"])]
            fig.add_trace(go.Scattergl(x=layout["x"].to_numpy()[nodes], y=layout["y"].to_numpy()[nodes],
                                       mode="lines+markers", name=f"component {c}", hovertext=text, hoverinfo="text",
                                       marker={"size": marker_size(len(layout)) + 3}, line={"width": 1}))
        last = int(upto["node"].iat[-1])
        fig.add_trace(go.Scattergl(x=[layout["x"].iat[last]], y=[layout["y"].iat[last]], mode="markers",
                                   name="current", marker={"size": 15, "symbol": "star", "color": "#111"}))
        (x0, x1), (y0, y1) = fit_ranges(layout["x"], layout["y"])  # zoom onto the pool, not its strays
        fig.update_layout(height=560, margin={"l": 0, "r": 0, "t": 10, "b": 0},
                          xaxis={"visible": False, "range": [x0, x1]}, yaxis={"visible": False, "range": [y0, y1]},
                          uirevision="walk")
        st.plotly_chart(fig, key="walk_map", width="stretch", config={"scrollZoom": True, "displaylogo": False})
with right:
    prog = walk_progress(traj, comps, step)
    st.markdown("**Fill per component**")
    bar = go.Figure()
    bar.add_trace(go.Bar(x=[f"c{c}" for c in prog["component"]], y=prog["budget"], name="budget",
                         marker_color="#d0d0d0"))
    bar.add_trace(go.Bar(x=[f"c{c}" for c in prog["component"]], y=prog["filled"], name="filled",
                         marker_color="#4c78a8"))
    bar.update_layout(barmode="overlay", height=220, margin={"l": 0, "r": 0, "t": 10, "b": 0})
    st.plotly_chart(bar, key="walk_fill", width="stretch")
    st.markdown("**Constraint rejections so far**")
    st.dataframe(prog, hide_index=True, width="stretch")

_head_section(ws, walk_runs[path], step)

st.subheader("Steps")
table = upto.assign(task=[task_of.get(i, "") for i in upto["id"]])
cols = ["component", "step", "node", "id", "task", "source", "rank", "proj", "sim_prev", "consistency_before",
        "consistency_after", "nbr_conflict", "nbr_consistency", "scan_conflict", "scan_consistency"]
st.dataframe(table[[c for c in cols if c in table.columns]], hide_index=True, width="stretch", height=300)

if g is not None:
    with st.expander("Network view of the walk so far", expanded=False):
        per_node = st.slider("kNN edges per node", 0, max(g.k, 1), min(2, g.k), key="walk_m",
                             help="Besides the walk's own steps (always drawn), each node's strongest kNN edges.")
        nodes, every = netview.walk_subgraph(traj, g.neighbors, g.sims, upto=step)
        edges = netview.strongest_edges(every, per_node)
        id_of = {int(v): i for v, i in zip(traj["node"], traj["id"])}
        # short labels (the node number); id and task on hover
        items = [{"id": v, "label": str(v), "title": f"node {v} · {id_of[v]} · "
                  f"{task_of.get(id_of[v], '')}", "color": "#4c78a8" if k else "#e45756"}
                 for k, v in enumerate(nodes)]
        components.html(netview.network_html(items, edges, focus=nodes[-1] if nodes else None, height=460),
                        height=580, scrolling=True)
        st.caption(f"{len(nodes)} nodes, {len(edges)} of {len(every)} edges drawn: the walk's steps (thick) and "
                   f"each node's {per_node} strongest kNN edges. Hover a node for its id and task.")

st.subheader("Compare with another run")
this = walk_runs[path]
# Same target first (the default): two runs for different targets share little by design (Jaccard ~0).
others = {str(r.path): r for r in sorted((r for r in readers.selection_runs(ws)
                                          if str(r.path) != path and r.pool_data_hash == pool_hash),
                                         key=lambda r: r.target_data_hash != this.target_data_hash)}
if not others:
    st.caption("No other selection of the same pool yet (any method: `g2is select --method less|random|...`).")
else:
    olabels = {str(r.path): f"{r.method} for {r.target}"
               + ("" if r.target_data_hash == this.target_data_hash else " (another target)")
               + f" · {r.meta.get('n_selected')} selected · {r.path.name}" for r in others.values()}
    other = st.selectbox("Other run", list(olabels), format_func=olabels.get, key="walk_other")
    b = _run(other, others[other].stamp())
    stats, comp = compare_runs(run.ids, b.ids, task_of, source_of)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("This run", stats["a"])
    m2.metric("Other run", stats["b"])
    m3.metric("In both", stats["both"])
    m4.metric("Jaccard", f"{stats['jaccard']:.3f}")
    st.dataframe(comp.rename(columns={"a": "this run", "b": "other run"}), hide_index=True, width="stretch")

if pool_hash and not readers.dataset_saved(ws, pool_hash):
    st.caption("The pool's records are not saved in this workspace; only ids are shown.")

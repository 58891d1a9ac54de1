"""Instruction graph: the top-k neighbour graph over pool gradient features (G2IS §3).

Layout only. The 2-D map reads a layout cached by `g2is graph build` (never computed here), the
table behind it comes from layout.map_frame, the neighbourhood from netview (pyvis, in-line JS).
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components

from g2is_core.app import netview, readers
from g2is_core.graph.knn import InstructionGraph
from g2is_core.graph.layout import (DISPLAY_MAX, cluster_labels, display_mask, find_layout, fit_ranges, map_frame,
                                    marker_size)
from g2is_core.selection import load_dataset
from pages import _ui

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac", "#1f77b4", "#2ca02c"]
BIG = 20_000  # above this many nodes, hover text carries no prompt (keeps the page light)
MAX_DRAWN = DISPLAY_MAX  # above this many visible nodes the browser gets a fixed subset (plus selection and focus)


@st.cache_resource(max_entries=4, show_spinner="Loading the graph")
def _graph(path: str, stamp: float) -> InstructionGraph:  # noqa: ARG001  (stamp keys the cache)
    return InstructionGraph.load(path)


@st.cache_resource(max_entries=2, show_spinner="Loading the records")
def _records_by_id(data_hash: str | None, root: str) -> dict:
    """id -> Record for the graph's pool, shared by every session (read-only), loaded once per data hash."""
    from g2is_core.workspace import Workspace

    return {r.id: r for r in (load_dataset(data_hash, Workspace(root)) or [])} if data_hash else {}


@st.cache_data(max_entries=4, show_spinner="Loading the layout and records")
def _frame(features_key: str, data_hash: str | None, root: str, highlight: tuple[str, ...], n: int,
           stamp: tuple = ()):  # noqa: ARG001  (stamp: the workspace's fingerprint; a new layout is a new key)
    from g2is_core.workspace import Workspace

    ws = Workspace(root)
    found = find_layout(features_key, ws)
    if found is None:
        return None, None
    coords, meta = found
    records = load_dataset(data_hash, ws) if data_hash else None
    if records is not None and len(records) != len(coords):
        records = None
    return map_frame(coords, records, highlight=set(highlight), hover_chars=0 if n > BIG else 120), meta


def _colours(values: list[str]) -> dict[str, str]:
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(values)}


def _map(df, colour_by: str, focus: int | None, g: InstructionGraph, visible, labels: bool = True) -> go.Figure:
    fig = go.Figure()
    shown = df[visible]
    size = marker_size(len(shown))
    if colour_by == "selection":
        groups = [("not selected", shown[~shown["selected"]], "#c7c7c7"), ("selected", shown[shown["selected"]], "#e45756")]
    else:
        cats = sorted(shown[colour_by].unique().tolist())
        cmap = _colours(cats)
        groups = [(c, shown[shown[colour_by] == c], cmap[c]) for c in cats]
    for name, part, colour in groups:
        fig.add_trace(go.Scattergl(x=part["x"], y=part["y"], mode="markers", name=html.escape(str(name)),
                                   marker={"size": size, "color": colour, "opacity": 0.75},
                                   customdata=part["node"], hovertext=part["hover"], hoverinfo="text"))
    if colour_by != "selection" and df["selected"].any():  # highlight, not filter
        sel = shown[shown["selected"]]
        fig.add_trace(go.Scattergl(x=sel["x"], y=sel["y"], mode="markers", name="selection",
                                   marker={"size": size + 4, "color": "rgba(0,0,0,0)",
                                           "line": {"width": 1.5, "color": "#111"}},
                                   customdata=sel["node"], hovertext=sel["hover"], hoverinfo="text"))
    if focus is not None:
        xs, ys = [], []
        fx, fy = df["x"].iat[focus], df["y"].iat[focus]
        for v in g.neighbors[focus]:
            xs += [fx, df["x"].iat[int(v)], None]
            ys += [fy, df["y"].iat[int(v)], None]
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", name="neighbour edges",
                                   line={"width": 1, "color": "#333"}, hoverinfo="skip"))
        fig.add_trace(go.Scattergl(x=[fx], y=[fy], mode="markers", name="focus",
                                   marker={"size": 14, "color": "#111", "symbol": "star"},
                                   customdata=[focus], hovertext=[df["hover"].iat[focus]], hoverinfo="text"))
    if labels and len(shown):
        by = "task" if colour_by == "selection" else colour_by
        for r in cluster_labels(shown["x"], shown["y"], shown[by]).itertuples():
            fig.add_annotation(x=r.x, y=r.y, text=html.escape(r.label), showarrow=False,
                               font={"size": 13, "color": "#111"}, bgcolor="rgba(255,255,255,0.7)")
    (x0, x1), (y0, y1) = fit_ranges(shown["x"], shown["y"]) if len(shown) else fit_ranges(df["x"], df["y"])
    fig.update_layout(height=620, margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend={"itemsizing": "constant"},
                      xaxis={"visible": False, "range": [x0, x1]}, yaxis={"visible": False, "range": [y0, y1]},
                      dragmode="pan", uirevision="map")
    return fig


def _record_view(df, records_by_id: dict, node: int, g: InstructionGraph) -> None:
    row = df.iloc[node]
    st.markdown(f"**Node {node}**")
    st.text(f"id: {row['id']}\nsource: {row['source']}\ntask: {row['task']}")
    if records_by_id:
        rec = records_by_id.get(row["id"])
        if rec is not None:
            for m in rec.messages:
                st.caption(m["role"])
                st.text(m["content"])
    nb = [{"rank": r, "node": int(v), "id": df["id"].iat[int(v)], "task": df["task"].iat[int(v)],
           "cosine": round(float(s), 4)} for r, (v, s) in enumerate(zip(g.neighbors[node], g.sims[node]))]
    st.caption(f"Its {g.k} neighbours (descending cosine; negative = conflicting knowledge)")
    st.dataframe(nb, hide_index=True, width="stretch", height=240)


st.title("Instruction graph")
st.caption("Nodes are pool examples; edge weights are cosine similarities of their gradient features "
           "(positive: aligned knowledge, negative: conflicting).")

ws = _ui.workspace()
_ui.pack_banner()
graphs = {str(e.path): e for e in readers.graphs(ws)}
if not graphs:
    stores = readers.train_store_keys(ws)
    _ui.empty_state(
        "No instruction graph yet. `g2is demo` computes gradient features of the built-in pool and walks its "
        "graph; " + ("or build the graph of a pool gradient store already in this workspace:" if stores else
                     "a graph of your own data needs its gradient store first (Data page)."),
        ["g2is demo"] + ([f"g2is graph build --train-store {stores[0]} --k 32"] if stores else []),
        note="“Demo: the whole chain on the embedded default” on the Runs page runs the demo too.")
    st.stop()

labels = {p: f"{e.path.name} · {e.meta.get('n')} nodes · k={e.meta.get('k')} · {e.meta.get('graph_kind', 'train')} · "
          f"{e.meta.get('produced_by', {}).get('created_utc', '')}" for p, e in graphs.items()}
path = st.selectbox("Graph", list(labels), format_func=labels.get, key="graph_pick")
entry = readers.graph(path)
g = _graph(path, entry.stamp())
data_hash = entry.data_hash
runs = [r for r in readers.selection_runs(ws) if data_hash and r.pool_data_hash == data_hash]
run_labels = {"": "(none)"} | {str(r.path): f"{r.method} for {r.target} · {r.meta.get('n_selected')} selected · "
                                             f"{r.path.name}" for r in runs}

c1, c2, c3 = st.columns([1, 1, 2])
colour_by = c1.radio("Colour by", ["task", "source", "selection"], horizontal=True, key="graph_colour")
hl_path = c2.selectbox("Highlight a selection", list(run_labels), format_func=run_labels.get, key="graph_hl")
highlight: tuple[str, ...] = ()
if hl_path:
    highlight = tuple(readers.selected_ids(hl_path))

df, lmeta = _frame(entry.features_key, data_hash, str(ws.root), highlight, g.n, readers.workspace_stamp(ws))
if df is None:
    keys = entry.train_store_keys
    _ui.empty_state("This graph has no cached 2-D layout yet; the map needs one (computed once, then cached). "
                    "This command computes it for the same stores; the page shows it when it is done.",
                    ["g2is graph build " + " ".join(f"--train-store {k}" for k in keys) + f" --k {g.k} --layout umap"]
                    if keys else [])
    st.stop()
records_known = df["source"].iat[0] != "(unknown)"
records_by_id = _records_by_id(data_hash, str(ws.root)) if records_known else {}

f1, f2 = c3.columns(2)
src_f = f1.multiselect("Sources", sorted(df["source"].unique()), key="graph_src")
task_f = f2.multiselect("Tasks", sorted(df["task"].unique()), key="graph_task")
visible = np.ones(len(df), bool)
if src_f:
    visible &= df["source"].isin(src_f).to_numpy()
if task_f:
    visible &= df["task"].isin(task_f).to_numpy()

# focus: a click on the map, ?focus=N (double click in the network view), or the number box
st.session_state.setdefault("graph_focus", None)
qp = st.query_params.get("focus")
if qp is not None and qp.isdigit() and int(qp) < g.n and st.session_state.get("_graph_qp") != qp:
    st.session_state["graph_focus"] = int(qp)
    st.session_state["_graph_qp"] = qp
event = st.session_state.get("graph_map")
if event and getattr(event, "selection", None) and event.selection.get("points"):
    pt = event.selection["points"][0]
    cd = pt.get("customdata")
    node = cd[0] if isinstance(cd, list) else cd
    if node is not None and st.session_state.get("_graph_last_click") != (node, pt.get("x"), pt.get("y")):
        st.session_state["graph_focus"] = int(node)
        st.session_state["_graph_last_click"] = (node, pt.get("x"), pt.get("y"))
focus = st.session_state["graph_focus"]
if focus is not None and not 0 <= focus < g.n:
    focus = st.session_state["graph_focus"] = None

keep = df["selected"].to_numpy().copy()
if focus is not None:
    keep[int(focus)] = True
    keep[g.neighbors[int(focus)]] = True
t1, t2 = st.columns(2)
show_labels = t2.toggle("Cluster labels", value=True, key="graph_labels",
                        help="The majority task (or source) of each cluster of the map, at its middle.")
draw_all = t1.toggle("Draw every point", value=False, key="graph_all",
                     help=f"Above {MAX_DRAWN:,} visible nodes the map draws a fixed subset plus the selection and "
                          "the focused neighbourhood; drawing all of them makes the page slower.")
drawn = visible.copy() if draw_all else display_mask(visible, keep, MAX_DRAWN)
note = "" if int(drawn.sum()) == int(visible.sum()) else f" ({int(drawn.sum()):,} drawn)"
st.caption(f"{int(visible.sum()):,} of {len(df):,} nodes shown{note} · layout: {lmeta.get('note', '')} · "
           f"{len(highlight)} highlighted · click a point to focus it")
left, right = st.columns([3, 2])
with left:
    fig = _map(df, colour_by, focus, g, drawn, labels=show_labels)
    st.plotly_chart(fig, key="graph_map", on_select="rerun", selection_mode="points", width="stretch",
                    config={"scrollZoom": True, "displaylogo": False})
with right:
    st.number_input("Focus node", min_value=0, max_value=g.n - 1, step=1, key="graph_focus",
                    placeholder="click a point, or type a node number")
    if focus is None:
        st.info("Click a point on the map (or type a node number) to see its record and neighbours.")
    else:
        _record_view(df, records_by_id, int(focus), g)

if focus is not None:
    st.subheader("Neighbourhood")
    h1, h2, h3, h4 = st.columns(4)
    hops = h1.slider("Hops", 1, 3, 1, key="graph_hops")
    cap = h2.slider("At most nodes", 20, netview.MAX_NODES, 120, step=10, key="graph_cap")
    per_node = h3.slider("Edges per node", 1, max(g.k, 2), min(3, g.k), key="graph_m",
                         help="Each node's strongest edges (highest cosine); the focused node keeps all of its own.")
    thr = h4.slider("Min cosine", -1.0, 1.0, -1.0, step=0.05, key="graph_thr",
                    help="Hide edges below this cosine (the focused node's own edges stay).")
    nodes = netview.khop(g.neighbors, int(focus), hops=hops, max_nodes=cap)
    cats = _colours(sorted(df["task"].unique().tolist()))
    # short labels (the node number); task, id and prompt on hover
    items = [{"id": v, "label": str(v), "color": cats.get(df["task"].iat[v], "#999"),
              "title": f"node {v} · {df['id'].iat[v]} · {df['task'].iat[v]}\n" + (
                  records_by_id[df["id"].iat[v]].prompt if df["id"].iat[v] in records_by_id else "")}
             for v in nodes]
    every = netview.edges_among(g.neighbors, g.sims, nodes)
    edges = netview.strongest_edges(every, per_node, threshold=None if thr <= -1 else thr, focus=int(focus))
    components.html(netview.network_html(items, edges, focus=int(focus), height=520), height=640, scrolling=True)
    st.caption(f"{len(nodes)} nodes, {len(edges)} of {len(every)} edges drawn (each node's {per_node} strongest"
               + (f", cosine ≥ {thr:.2f}" if thr > -1 else "") + ", and all of the focused node's). Colour: task; "
               "hover a node for its task and prompt. Drag, zoom; click a node for its record, double-click to "
               "focus it here.")

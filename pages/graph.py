"""Instruction graph: the top-k neighbour graph over pool gradient features (G2IS §3).

Layout only. The 2-D map reads a layout cached by `g2is graph build` (never computed here), the
table behind it comes from layout.map_frame, the neighbourhood from netview (pyvis, in-line JS), the
head signatures and their numbers from app.bridge (docs/bridge.md, "The graph and walk views").
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components

from g2is_core.app import bridge, netview, readers
from g2is_core.graph.knn import InstructionGraph
from g2is_core.graph.layout import (DISPLAY_MAX, cluster_labels, display_mask, find_layout, fit_ranges, map_frame,
                                    marker_size)
from g2is_core.selection import load_dataset
from pages import _heads_view, _ui

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac", "#1f77b4", "#2ca02c"]
BIG = 20_000  # above this many nodes, hover text carries no prompt (keeps the page light)
MAX_DRAWN = DISPLAY_MAX  # above this many visible nodes the browser gets a fixed subset (plus selection and focus)
BAND = "head signature"              # colour: the layer band holding most of a node's signature (app.bridge)
SIM = "similarity to target"         # colour: sum_i w_i cos(S_i(node), P_i), the ``heads`` score
BAND_COLOURS = ["#4c78a8", "#f58518", "#54a24b"]


@st.cache_data(max_entries=8, show_spinner="Colouring by head signature")
def _bands(root: str, keys: tuple[str, ...], stamp: float) -> list[str]:
    """[N] the words of each node's dominant layer band (app.bridge.pool_bands)."""
    pool = _heads_view.signatures(root, keys, "pool", stamp)
    L = pool.shape[0]
    return [bridge.band_label(int(b), L) for b in bridge.pool_bands(pool)]


@st.cache_data(max_entries=8, show_spinner="Comparing with the target's pattern")
def _similarity(root: str, keys: tuple[str, ...], stamp: float, target_keys: tuple[str, ...],
                target_stamp: float) -> np.ndarray:
    """[N] each node's cosine with the target's pattern (app.bridge.similarity_to_target)."""
    pool = _heads_view.signatures(root, keys, "pool", stamp)
    target = _heads_view.signatures(root, target_keys, "target", target_stamp)
    bridge.check_pair(pool, target)
    return bridge.similarity_to_target(pool, target.pattern())


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
           stamp: tuple = ()):  # noqa: ARG001  (stamp: the layouts' and datasets' fingerprint: a new one is a new key)
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


def _map(df, colour_by: str, focus: int | None, g: InstructionGraph, visible, labels: bool = True,
         palette: dict[str, str] | None = None) -> go.Figure:
    """The 2-D map; ``palette``: the colour of each category of ``colour_by`` in legend order (else by name)."""
    fig = go.Figure()
    shown = df[visible]
    size = marker_size(len(shown))
    if colour_by == "selection":
        groups = [("not selected", shown[~shown["selected"]], "#c7c7c7"), ("selected", shown[shown["selected"]], "#e45756")]
    elif colour_by == SIM:  # continuous: one trace, a colour bar
        groups = []
        fig.add_trace(go.Scattergl(x=shown["x"], y=shown["y"], mode="markers", name="cos to the target's pattern",
                                   marker={"size": size, "color": shown[SIM], "colorscale": "Viridis", "opacity": 0.8,
                                           "colorbar": {"title": {"text": "cos"}, "thickness": 10, "len": 0.5, "x": 0.0,
                                                        "xanchor": "left"}},
                                   customdata=shown["node"], hovertext=shown["hover"], hoverinfo="text"))
    else:
        present = set(shown[colour_by].unique().tolist())
        cats = [c for c in palette if c in present] if palette else sorted(present)
        cmap = palette or _colours(cats)
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
        by = "task" if colour_by in ("selection", SIM) else colour_by
        for r in cluster_labels(shown["x"], shown["y"], shown[by]).itertuples():
            fig.add_annotation(x=r.x, y=r.y, text=html.escape(r.label), showarrow=False,
                               font={"size": 13, "color": "#111"}, bgcolor="rgba(255,255,255,0.7)")
    (x0, x1), (y0, y1) = fit_ranges(shown["x"], shown["y"]) if len(shown) else fit_ranges(df["x"], df["y"])
    fig.update_layout(height=620, margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend={"itemsizing": "constant"},
                      xaxis={"visible": False, "range": [x0, x1]}, yaxis={"visible": False, "range": [y0, y1]},
                      dragmode="pan", uirevision="map")
    return fig


def _node_of(point: dict) -> int | None:
    """The node number a plotly selection point carries (its customdata), or None (an edge line)."""
    cd = point.get("customdata")
    node = cd[0] if isinstance(cd, list) and cd else cd
    return None if node is None or isinstance(node, list) else int(node)


def _node_heads(pool: bridge.Signatures, target: bridge.Signatures | None, node: int) -> None:
    """The focused node's [layer x head] signature, its dominant band and its cosine with the target's pattern."""
    z = pool.shown([node])[0]
    band = bridge.band_label(int(bridge.dominant_band(z[None])[0]), z.shape[0])
    st.plotly_chart(_heads_view.heatmap(z, f"Head signature of node {node} (layer x head)"), key="graph_node_heads",
                    width="stretch", config={"displaylogo": False})
    text = f"Most of its signature lies in the {band}." if band != "no signal" else "Its signature is all zero."
    if target is not None:
        cos = bridge.pattern_similarity([r[0] for r in pool.rows([node])], target.pattern(), pool.weights)
        text += f" Cosine with the target's pattern: {cos:.3f}."
    st.caption(text)


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

# head signatures of the graph's pool (docs/bridge.md): only when its stores carry them
pool_keys = tuple(entry.train_store_keys)
sig_stamp = bridge.signature_stamp(ws, pool_keys)
pool_sigs: bridge.Signatures | None = None
sig_note = ""
try:
    pool_sigs = _heads_view.signatures(str(ws.root), pool_keys, "pool", sig_stamp)
    if pool_sigs.n != g.n:
        pool_sigs, sig_note = None, (f"The head signatures of this graph's stores have {pool_sigs.n} rows but the "
                                     f"graph has {g.n} nodes; they cannot be shown.")
except ValueError as exc:  # MissingSignatures: no signatures (the sentence says how to get them)
    sig_note = f"Head signature views: {str(exc).rstrip('.')}."

c1, c2, c3 = st.columns([1, 1, 2])
hl_path = c2.selectbox("Highlight a selection", list(run_labels), format_func=run_labels.get, key="graph_hl")
highlight: tuple[str, ...] = ()
if hl_path:
    highlight = tuple(readers.selected_ids(hl_path))
target_keys: tuple[str, ...] = ()
if pool_sigs is not None:
    choices = bridge.target_choices(entry.meta, runs)
    hl_run = next((r for r in runs if str(r.path) == hl_path), None)
    hl_keys = tuple(hl_run.target_store_keys) if hl_run is not None else ()
    options = [()] + list(choices)
    # default: the highlighted run's target, else the first one known (none: index 0, "(none)")
    target_keys = c2.selectbox("Target's pattern", options, index=options.index(hl_keys) if hl_keys and hl_keys in
                               options else min(1, len(options) - 1),
                               format_func=lambda k: choices.get(k, "(none)"), key=f"graph_target_{hl_path}",
                               help="Compare head signatures with this target's activation pattern (the mean of "
                                    "its records' signatures; a selection run's target stores).")
target_sigs: bridge.Signatures | None = None
if target_keys:
    try:
        target_stamp = bridge.signature_stamp(ws, target_keys)
        target_sigs = _heads_view.signatures(str(ws.root), target_keys, "target", target_stamp)
        bridge.check_pair(pool_sigs, target_sigs)
    except ValueError as exc:  # MissingSignatures too: say why, show the rest
        target_sigs, target_keys = None, ()
        sig_note = f"The target's pattern cannot be shown: {str(exc).rstrip('.')}."
colours = ["task", "source", "selection"] + ([BAND] if pool_sigs is not None else []) + ([SIM] if target_keys else [])
colour_by = c1.radio("Colour by", colours, horizontal=True, key="graph_colour",
                     help=f"{BAND}: the layer band (early, middle, late third) holding most of a node's head "
                          f"signature; {SIM}: cosine of a node's signature with the target's pattern.")

df, lmeta = _frame(entry.features_key, data_hash, str(ws.root), highlight, g.n,
                   readers.workspace_stamp(ws, ("layouts", "datasets")))
if df is None:
    keys = entry.train_store_keys
    _ui.empty_state("This graph has no cached 2-D layout yet; the map needs one (computed once, then cached). "
                    "This command computes it for the same stores; the page shows it when it is done.",
                    ["g2is graph build " + " ".join(f"--train-store {k}" for k in keys) + f" --k {g.k} --layout umap"]
                    if keys else [])
    st.stop()
palette = None
if pool_sigs is not None:
    df = df.assign(**{BAND: _bands(str(ws.root), pool_keys, sig_stamp)})
    n_layers = pool_sigs.shape[0]
    if colour_by == BAND:  # bands in layer order, "no signal" grey
        palette = {bridge.band_label(b, n_layers): BAND_COLOURS[b % len(BAND_COLOURS)]
                   for b in range(len(bridge.layer_bands(n_layers)))}
        palette[bridge.band_label(bridge.NO_SIGNAL, n_layers)] = "#c7c7c7"
    if target_sigs is not None:
        df[SIM] = _similarity(str(ws.root), pool_keys, sig_stamp, target_keys, target_stamp)
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
chosen: list[int] = []  # a box or lasso selection on the map: its nodes (a click focuses one node instead)
picked = getattr(event, "selection", None) if event else None
if picked and picked.get("points") and (picked.get("box") or picked.get("lasso")):
    chosen = sorted({n for n in (_node_of(p) for p in picked["points"]) if n is not None and 0 <= n < g.n})
elif picked and picked.get("points"):
    pt = picked["points"][0]
    node = _node_of(pt)
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
    fig = _map(df, colour_by, focus, g, drawn, labels=show_labels, palette=palette)
    st.plotly_chart(fig, key="graph_map", on_select="rerun", selection_mode=("points", "box", "lasso"),
                    width="stretch", config={"scrollZoom": True, "displaylogo": False})
with right:
    st.number_input("Focus node", min_value=0, max_value=g.n - 1, step=1, key="graph_focus",
                    placeholder="click a point, or type a node number")
    if focus is None:
        st.info("Click a point on the map (or type a node number) to see its record and neighbours.")
    else:
        if pool_sigs is not None:
            _node_heads(pool_sigs, target_sigs, int(focus))
        _record_view(df, records_by_id, int(focus), g)

if sig_note:
    st.caption(sig_note)
if chosen and pool_sigs is not None:
    st.subheader(f"Head signature of the {len(chosen)} chosen nodes")
    patterns = pool_sigs.pattern(chosen)  # per checkpoint: the chosen set's activation pattern
    mean = bridge.combine(patterns, pool_sigs.weights)
    a, b, m = st.columns([2, 2, 1])
    a.plotly_chart(_heads_view.heatmap(mean, "mean of the chosen nodes"), key="graph_chosen_heads", width="stretch")
    if target_sigs is not None:
        tp = target_sigs.pattern()
        b.plotly_chart(_heads_view.heatmap(bridge.combine(tp, pool_sigs.weights), "the target's pattern"),
                       key="graph_target_heads", width="stretch")
        m.metric("Cosine", f"{bridge.pattern_similarity(patterns, tp, pool_sigs.weights):.3f}",
                 help="Of the chosen nodes' mean signature (their activation pattern) with the target's pattern "
                      "(checkpoints weighted as in the heads method). Each heatmap has its own colour scale.")
    else:
        b.caption("Choose a target's pattern above to compare with it.")
elif pool_sigs is not None:
    st.caption("Box- or lasso-select points on the map (its toolbar) to see their mean head signature"
               + (" against the target's pattern." if target_sigs is not None else "."))

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

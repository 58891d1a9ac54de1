"""The interactive network view of a focused neighbourhood (pyvis / vis-network), self-contained.

Two pure parts:
- which nodes and edges to show: :func:`khop` (a node and its k-hop out-neighbours in the top-k
  graph, capped), :func:`walk_subgraph` (a walk's nodes, its step edges and the kNN edges among
  them), :func:`edges_among` and :func:`strongest_edges` (each node's few strongest edges, so a
  dense neighbourhood stays readable);
- the HTML: :func:`network_html` builds a pyvis network with vis-network's JavaScript and CSS
  IN-LINE (``cdn_resources="in_line"``; no CDN is reachable here) and strips the template's remote
  Bootstrap tags, then checks that no ``http(s)://`` script or stylesheet is left.

Escaping: every label and title passes through :func:`html.escape` before it enters the page. Node
data is embedded as a JavaScript literal inside a ``<script>`` element, so an unescaped ``</script>``
in a record would end the script early; escaped, it is inert text.

Interaction: drag, zoom and hover (the title tooltip) come with vis-network. A click on a node
shows its record in the panel under the network; a double click asks the host page to focus that
node (``?focus=<node>`` on the top window; the Instruction graph page reads it).
"""
from __future__ import annotations

import html
import re
from collections import deque
from typing import Any, Iterable, Sequence

import numpy as np

MAX_NODES = 300
_REMOTE_TAG = re.compile(r"<(script|link)\b[^>]*(?:src|href)\s*=\s*[\"']?https?://[^>]*>(?:\s*</script>)?",
                         re.IGNORECASE | re.DOTALL)
_REMOTE_CHECK = re.compile(r"<(?:script|link)\b[^>]*(?:src|href)\s*=\s*[\"']?https?://", re.IGNORECASE)


# ----------------------------------------------------------------------------- which nodes
def khop(neighbors: np.ndarray, center: int, hops: int = 1, max_nodes: int = MAX_NODES,
         per_node: int | None = None) -> list[int]:
    """Breadth-first ``hops`` out-neighbourhood of ``center`` in a top-k graph ([N, k] neighbour lists).

    Each node contributes its first ``per_node`` (default all k) neighbours in descending similarity;
    the result is capped at ``max_nodes`` (BFS order: center first, then hop 1, hop 2, ...).
    """
    nb = np.asarray(neighbors)
    if not 0 <= center < nb.shape[0]:
        raise ValueError(f"node {center} is not in the graph (0..{nb.shape[0] - 1})")
    if hops < 0 or max_nodes < 1:
        raise ValueError("hops must be >= 0 and max_nodes >= 1")
    seen = {int(center): 0}
    out = [int(center)]
    q = deque([int(center)])
    while q and len(out) < max_nodes:
        u = q.popleft()
        if seen[u] >= hops:
            continue
        for v in nb[u][: per_node or nb.shape[1]]:
            v = int(v)
            if v not in seen:
                seen[v] = seen[u] + 1
                out.append(v)
                q.append(v)
                if len(out) >= max_nodes:
                    break
    return out


def edges_among(neighbors: np.ndarray, sims: np.ndarray, nodes: Iterable[int]) -> list[tuple[int, int, float]]:
    """Top-k edges (src, dst, cosine) whose both ends are in ``nodes``."""
    keep = set(int(n) for n in nodes)
    out = []
    for u in keep:
        for v, s in zip(neighbors[u], sims[u]):
            if int(v) in keep:
                out.append((u, int(v), float(s)))
    return sorted(out)


def strongest_edges(edges: Sequence[Sequence[Any]], m: int | None = 3, *, threshold: float | None = None,
                    focus: int | None = None, always: tuple[str, ...] = ("walk",)) -> list[tuple]:
    """The edges worth drawing: each node's ``m`` strongest, plus every edge of the focused node.

    edges: (src, dst, cosine[, kind]) as :func:`edges_among` gives them. An edge survives when it is
    among the ``m`` largest cosines of the edges touching either of its ends (ties broken by
    (src, dst), so the answer is deterministic), or when it touches ``focus``. ``m=None`` keeps every
    edge (before the threshold). ``threshold``: drop edges with cosine below it, except the focus's
    own (the user asked for that node; its edges are the point of the view). Edges whose kind is in
    ``always`` (a walk's own steps) are kept and do not count towards ``m``. Order of ``edges`` kept.

    Why: the 1-hop neighbourhood of a k=32 graph is about 33 nodes and 600+ edges, a hairball; the
    top few per node keep its clusters and bridges visible (each node still has at least one edge
    when m >= 1 and no threshold applies).
    """
    if m is not None and m < 0:
        raise ValueError(f"m must be >= 0 (got {m})")
    es = [tuple(e) for e in edges]
    fixed = {j for j, e in enumerate(es) if len(e) > 3 and e[3] in always}
    keep = set(range(len(es))) if m is None else set()
    if m is not None and m > 0:
        touching: dict[int, list[int]] = {}
        for j, e in enumerate(es):
            if j in fixed:
                continue
            touching.setdefault(int(e[0]), []).append(j)
            if int(e[1]) != int(e[0]):
                touching.setdefault(int(e[1]), []).append(j)
        for js in touching.values():
            js.sort(key=lambda j: (-float(es[j][2]), int(es[j][0]), int(es[j][1])))
            keep.update(js[:m])
    f = None if focus is None else int(focus)
    out = []
    for j, e in enumerate(es):
        own = j in fixed or (f is not None and f in (int(e[0]), int(e[1])))
        if own or (j in keep and (threshold is None or float(e[2]) >= threshold)):
            out.append(e)
    return out


def walk_subgraph(trajectory, neighbors: np.ndarray | None = None, sims: np.ndarray | None = None,
                  upto: int | None = None, max_nodes: int = MAX_NODES) -> tuple[list[int], list[tuple[int, int, float, str]]]:
    """A walk's nodes (selection order, the first ``upto`` steps) and edges: each step's move from the
    previous node ("walk", weighted by its similarity) plus kNN edges among the walk's nodes ("knn")."""
    t = trajectory.sort_values(["component", "step"], kind="stable") if len(trajectory) else trajectory
    if upto is not None:
        t = t.iloc[:upto]
    t = t.iloc[:max_nodes]
    nodes = [int(v) for v in t["node"]]
    edges: list[tuple[int, int, float, str]] = []
    prev = None
    for r in t.itertuples():
        if r.source != "anchor" and prev is not None:
            edges.append((prev, int(r.node), float(r.sim_prev), "walk"))
        prev = int(r.node)
    if neighbors is not None and sims is not None:
        walked = {(a, b) for a, b, _, _ in edges}
        edges += [(a, b, s, "knn") for a, b, s in edges_among(neighbors, sims, nodes) if (a, b) not in walked]
    return nodes, edges


# ----------------------------------------------------------------------------- the HTML
def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def network_html(nodes: Sequence[dict[str, Any]], edges: Sequence[Sequence[Any]], *, height: int = 520,
                 focus: int | None = None, physics: bool = True) -> str:
    """Self-contained HTML of an interactive network.

    nodes: dicts with ``id`` (int), ``label``, ``title`` (hover and click text), optional ``color``,
        ``group``, ``size``; label and title are escaped here.
    edges: (src, dst, weight[, kind]); kind "walk" is drawn thick, negative weights dashed red.
    """
    from pyvis.network import Network

    if len(nodes) > 2 * MAX_NODES:
        raise ValueError(f"{len(nodes)} nodes is too many for the network view; focus on fewer (at most {2 * MAX_NODES})")
    net = Network(height=f"{int(height)}px", width="100%", directed=True, cdn_resources="in_line", notebook=False)
    for n in nodes:
        kw = {"label": _esc(n.get("label", n["id"])), "title": _esc(n.get("title", "")),
              "color": n.get("color", "#4c78a8"), "size": float(n.get("size", 10))}
        if n.get("group") is not None:
            kw["group"] = _esc(n["group"])
        if focus is not None and int(n["id"]) == int(focus):
            kw.update(borderWidth=4, size=float(n.get("size", 10)) * 1.6)
        net.add_node(int(n["id"]), **kw)
    ids = {int(n["id"]) for n in nodes}
    for e in edges:
        a, b, w = int(e[0]), int(e[1]), float(e[2])
        kind = e[3] if len(e) > 3 else "knn"
        if a not in ids or b not in ids:
            continue
        net.add_edge(a, b, title=_esc(f"{kind} cos={w:.3f}"), value=max(abs(w), 0.05),
                     width=4 if kind == "walk" else 1, dashes=w < 0,
                     color="#d62728" if w < 0 else ("#ff7f0e" if kind == "walk" else "#999999"))
    net.toggle_physics(physics)
    page = net.generate_html(notebook=False)
    page = _REMOTE_TAG.sub("", page)
    page = page.replace("</body>", _CLICK_JS + "</body>", 1)
    if _REMOTE_CHECK.search(page):
        raise AssertionError("the network HTML still references a remote script or stylesheet")
    return page


def has_remote_resources(page: str) -> bool:
    """True when ``page`` loads a script or stylesheet from http(s) (nothing remote is reachable here)."""
    return bool(_REMOTE_CHECK.search(page))


# Shown under the network: the clicked node's record (titles are already escaped, so textContent
# of a decoded copy is used, never innerHTML of record text).
_CLICK_JS = """
<div id="g2is-record" style="clear:both;font-family:sans-serif;font-size:13px;white-space:pre-wrap;
     padding:6px;border-top:1px solid #ddd">Click a node to see its record; double-click to focus it.</div>
<script>
(function () {
  if (typeof network === "undefined") { return; }
  var box = document.getElementById("g2is-record");
  function decode(s) { var t = document.createElement("textarea"); t.innerHTML = s; return t.value; }
  network.on("click", function (p) {
    if (!p.nodes.length) { return; }
    var n = nodes.get(p.nodes[0]);
    box.textContent = decode(String(n.title || n.label || n.id));
  });
  network.on("doubleClick", function (p) {
    if (!p.nodes.length) { return; }
    try {
      var url = new URL(window.top.location.href);
      url.searchParams.set("focus", String(p.nodes[0]));
      window.top.location.href = url.toString();
    } catch (e) { box.textContent = "Focus node " + p.nodes[0] + " with the selector beside the map."; }
  });
})();
</script>
"""

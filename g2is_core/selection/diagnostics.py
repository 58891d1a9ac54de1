"""Why a selection looks the way it does: pure diagnostics of one selection, stored with every benchmark cell.

    composition     selected records per source and per task                     {"source": {s: n}, "task": {t: n}}
    hub statistics  the kNN graph's in-degree concentration (G2IS cells only)      in_degree_gini, top1_in_share, ...
    walk statistics budget, fill and fallbacks of the walk (walk cells only)        budget, filled, fill, fallbacks, ...
    overlap         Jaccard of two selections' ids                                  |A & B| / |A | B|

Hubs: in a top-k graph every node has out-degree k, so the in-degree says how often a node is someone's
neighbour. Gradient features share a common direction, which makes a few records neighbours of almost
everyone (docs/selection.md, "Hubs"); the walk, which moves along neighbour lists, then falls into them.
Two numbers measure it: the Gini coefficient of the in-degrees (0 = every node equally often a
neighbour; (N-1)/N = one node is everyone's), and the share of all N*k edges that point into the top 1%
of nodes by in-degree (0.01 without hubs). ``selected_top1_share`` is the share of the selection that
lies among those top-1% nodes.

Everything here takes arrays and records and returns plain JSON-able dicts (the registry's ``info``).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

TOP_FRACTION = 0.01  # "the top 1% of nodes" of the hub share


def gini(values: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of non-negative values: mean absolute difference over twice the mean,
    sum_ij |x_i - x_j| / (2 n^2 mean). 0 when all are equal; (n-1)/n when one holds everything; NaN
    for no values or an all-zero vector."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(x)
    if n == 0 or x.sum() <= 0:
        return math.nan
    if (x < 0).any():
        raise ValueError("the Gini coefficient needs non-negative values")
    i = np.arange(1, n + 1)
    return float(2.0 * (i * x).sum() / (n * x.sum()) - (n + 1.0) / n)


def top_share(values: Sequence[float] | np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the total held by the ceil(fraction * n) largest values (at least one)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if len(x) == 0 or x.sum() <= 0:
        return math.nan
    m = max(1, math.ceil(fraction * len(x)))
    return float(np.sort(x)[::-1][:m].sum() / x.sum())


def in_degrees(neighbors: np.ndarray, n: int | None = None) -> np.ndarray:
    """[N] how many nodes list each node among their k neighbours, from a [N, k] neighbour array."""
    nb = np.asarray(neighbors, dtype=np.int64)
    return np.bincount(nb.ravel(), minlength=n if n is not None else nb.shape[0])


def hub_stats(in_degree: np.ndarray, selected: Sequence[int] | np.ndarray = (),
              fraction: float = TOP_FRACTION) -> dict[str, Any]:
    """Hub concentration of a kNN graph from its in-degrees [N], and how much of ``selected`` (pool row
    indices) lies among its top-``fraction`` nodes."""
    deg = np.asarray(in_degree, dtype=np.int64)
    n = len(deg)
    m = max(1, math.ceil(fraction * n))
    top = set(np.argsort(-deg, kind="stable")[:m].tolist())
    sel = [int(i) for i in selected]
    return {"n_nodes": n, "n_edges": int(deg.sum()), "in_degree_gini": gini(deg), "top1_in_share": top_share(deg, fraction),
            "max_in_degree": int(deg.max()) if n else 0, "n_top": m,
            "selected_top1_share": (sum(1 for i in sel if i in top) / len(sel)) if sel else math.nan}


def walk_stats(components: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fill and fallbacks of a walk from its per-component rows (``WalkResult.components`` records):
    budget B, filled, fill = filled / B, fallbacks (re-anchorings), components and how many stopped short."""
    comps = list(components)
    budget = int(sum(int(c["budget"]) for c in comps))
    filled = int(sum(int(c["filled"]) for c in comps))
    return {"budget": budget, "filled": filled, "fill": filled / budget if budget else math.nan,
            "fallbacks": int(sum(int(c.get("fallbacks", 0)) for c in comps)), "components": len(comps),
            "stopped_short": int(sum(1 for c in comps if int(c["filled"]) < int(c["budget"])))}


def composition(records: Sequence[Any]) -> dict[str, dict[str, int]]:
    """Selected records counted per ``source`` and per ``task`` (most frequent first; missing = "?")."""
    out = {}
    for key in ("source", "task"):
        counts = Counter(str(getattr(r, key, None) or "?") for r in records)
        out[key] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """|A & B| / |A | B| of two selections' ids (NaN when both are empty)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else math.nan


def selection_diagnostics(sel: Any, pool: Sequence[Any]) -> dict[str, Any]:
    """The diagnostics of one :class:`~g2is_core.selection.runs.Selection` of ``pool``: composition always;
    walk statistics where the method walked (``extra["walk"]``); hub statistics where it built a kNN
    graph (``extra["in_degree"]``)."""
    chosen = [pool[int(i)] for i in sel.order]
    out: dict[str, Any] = {"n_selected": len(chosen), "budget": int(sel.budget), "composition": composition(chosen)}
    walk = sel.extra.get("walk")
    if walk is not None:
        out["walk"] = walk_stats(walk.components.to_dict(orient="records"))
    deg = sel.extra.get("in_degree")
    if deg is not None:
        out["hubs"] = hub_stats(deg, sel.order)
    return out

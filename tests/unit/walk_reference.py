"""A straightforward reference implementation of the G2IS walk (spec section 5), written for clarity.

Dense N x N similarity, Python loops, a full argsort at every fallback. Only for tests: the fast
walk in g2is_core.walk must make exactly the same choices and count the same rejections.
"""
from __future__ import annotations

import math

import numpy as np


def reference_budgets(B, weights):
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    raw = [B * x for x in w]
    base = [math.floor(r) for r in raw]
    rest = B - sum(base)
    for j in sorted(range(len(w)), key=lambda j: (-(raw[j] - base[j]), j))[:rest]:
        base[j] += 1
    return base


def reference_walk(X, components, weights, B, neighbors, delta=0.8, anchors_top=1000):
    """Returns one dict per selected node: node, source and rejection counts (nbr_*, scan_*)."""
    X = np.asarray(X, dtype=np.float64)
    G = X @ X.T  # dense cosine similarity (rows are unit vectors)
    bud = reference_budgets(B, weights)
    E: set[int] = set()
    steps = []
    for j, k in enumerate(np.asarray(components, dtype=np.float64)):
        if bud[j] == 0:
            continue
        k = k / np.linalg.norm(k)

        def cos_k(v):
            return float(v @ k) / float(np.linalg.norm(v))

        order = [int(i) for i in np.argsort(-(X @ k), kind="stable")]
        anchor = next((i for i in order[:anchors_top] if i not in E), None)
        if anchor is None:
            anchor = next((i for i in order if i not in E), None)
        if anchor is None:
            continue
        sel = [anchor]
        E.add(anchor)
        steps.append({"component": j, "node": anchor, "source": "anchor", "scan_excluded": order.index(anchor)})

        def verdict(z):
            if any(G[z, s] < 0 for s in sel):
                return "conflict"
            S = X[sel].sum(axis=0)
            if abs(cos_k(S + X[z])) < delta * abs(cos_k(S)):
                return "consistency"
            return "ok"

        def scan(candidates, prefix):
            counts = {f"{prefix}_excluded": 0, f"{prefix}_conflict": 0, f"{prefix}_consistency": 0}
            for z in candidates:
                z = int(z)
                v = "excluded" if z in E else verdict(z)
                if v == "ok":
                    return z, counts
                counts[f"{prefix}_{v}"] += 1
            return None, counts

        while len(sel) < bud[j]:
            pick, counts = scan(neighbors[sel[-1]], "nbr")
            src = "local"
            if pick is None:
                order = np.argsort(-(X @ k), kind="stable")  # full re-sort at every fallback: clear, slow
                pick, more = scan(order, "scan")
                counts.update(more)
                src = "fallback"
            if pick is None:
                break
            sel.append(pick)
            E.add(pick)
            steps.append({"component": j, "node": pick, "source": src, **counts})
    return steps

"""The study's tables over registry rows (issue 17; docs/study.md): paired differences with bootstrap intervals,
the per-cell selection diagnostics, and the overlap between methods' selections averaged over seeds.

Beside :mod:`.tables` rather than in it: these build on :mod:`.stats`, which itself reads :mod:`.tables`'s
metric rules (``primary_metric``, ``LOWER_IS_BETTER``), and a module pair must not import each other.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd

from .stats import BootstrapSettings, latest_done, paired_differences
from .tables import read_selection_ids


def paired_ci_table(rows: Iterable[dict[str, Any]], scores: dict[str, dict[str, Any]] | None = None,
                    metric: str | None = None, references: Sequence[str] = ("random", "less"),
                    n_boot: int | None = None) -> pd.DataFrame:
    """Seed-paired differences to ``references`` with 95% bootstrap intervals over questions and seeds,
    per target and pooled across targets (:func:`g2is_core.loop.stats.paired_differences`; ``scores``
    from :func:`g2is_core.loop.scores.load_scores`). A ``mark`` column holds "*" where the interval
    excludes zero."""
    st = BootstrapSettings() if n_boot is None else BootstrapSettings(n_boot=n_boot)
    tab = paired_differences(rows, scores, metric, references, st)
    tab["mark"] = tab["sig"].map(lambda s: "*" if s else "")
    return tab


def overlap_by_cell(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Jaccard overlap between every two methods' selections of the same (target, ratio, seed), averaged over
    seeds: one line per (experiment, target, ratio, method_a, method_b) with ``jaccard`` and ``n_seeds``."""
    by_cell: dict[tuple, dict[str, set[str]]] = {}
    for (e, t, m, r, s), row in latest_done(rows).items():
        ids = read_selection_ids(row.get("selection"))
        if ids:
            by_cell.setdefault((e, t, r, s), {})[m] = set(ids)
    acc: dict[tuple, list[float]] = {}
    for (e, t, r, _s), picks in by_cell.items():
        names = sorted(picks)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                u = picks[a] | picks[b]
                acc.setdefault((e, t, r, a, b), []).append(len(picks[a] & picks[b]) / len(u) if u else float("nan"))
    out = [{"experiment": e, "target": t, "ratio": r, "method_a": a, "method_b": b,
            "jaccard": sum(v) / len(v), "n_seeds": len(v)} for (e, t, r, a, b), v in sorted(acc.items())]
    return pd.DataFrame(out, columns=["experiment", "target", "ratio", "method_a", "method_b", "jaccard", "n_seeds"])


def diagnostics_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The per-cell selection diagnostics (:mod:`g2is_core.selection.diagnostics`, stored in each row's
    ``info``), averaged over seeds per (experiment, target, method, ratio): the share of the selection from
    its most frequent source, walk fill and fallbacks, the kNN graph's in-degree Gini and top-1% in-edge
    share, and the share of the selection among those top-1% hubs. Blank where a method has no walk/graph."""
    recs = []
    for (e, t, m, r, s), row in latest_done(rows).items():
        d = (row.get("info") or {}).get("diagnostics")
        if not d:
            continue
        src = d.get("composition", {}).get("source", {})
        n = sum(src.values())
        top_src, top_n = (max(src.items(), key=lambda kv: kv[1]) if src else ("", 0))
        walk, hubs = d.get("walk") or {}, d.get("hubs") or {}
        recs.append({"experiment": e, "target": t, "method": m, "ratio": r, "seed": s,
                     "top_source": top_src, "top_source_share": top_n / n if n else float("nan"),
                     "n_sources": len(src), "fill": walk.get("fill"), "fallbacks": walk.get("fallbacks"),
                     "in_degree_gini": hubs.get("in_degree_gini"), "top1_in_share": hubs.get("top1_in_share"),
                     "selected_top1_share": hubs.get("selected_top1_share")})
    cols = ["experiment", "target", "method", "ratio", "n_seeds", "top_source", "top_source_share", "n_sources",
            "fill", "fallbacks", "in_degree_gini", "top1_in_share", "selected_top1_share"]
    if not recs:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(recs)
    num = ["top_source_share", "n_sources", "fill", "fallbacks", "in_degree_gini", "top1_in_share",
           "selected_top1_share"]
    df[num] = df[num].astype(float)
    g = df.groupby(["experiment", "target", "method", "ratio"], dropna=False)
    out = g[num].mean().reset_index()
    out["n_seeds"] = g.size().to_numpy()
    out["top_source"] = g["top_source"].agg(lambda x: x.mode().iloc[0] if len(x.mode()) else "").to_numpy()
    return out[cols]

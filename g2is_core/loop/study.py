"""The study's tables over registry rows (issue 17; docs/study.md): paired differences with bootstrap intervals,
the per-cell selection diagnostics, and the overlap between methods' selections averaged over seeds.

Beside :mod:`.tables` rather than in it: these build on :mod:`.stats`, which itself reads :mod:`.tables`'s
metric rules (``primary_metric``, ``LOWER_IS_BETTER``), and a module pair must not import each other.
"""
from __future__ import annotations

from statistics import NormalDist
from typing import Any, Iterable, Sequence

import pandas as pd

from .stats import BASELINE_METHODS, POOLED, BootstrapSettings, latest_done, paired_differences
from .tables import LOWER_IS_BETTER, selection_ids, summary_table


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
        ids = selection_ids(row)
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


ABSOLUTE = "-"        # a grid column's reference that shows the metric itself (mean ± sd over seeds)


def _ratio_key(ratio: Any) -> float | None:
    return None if ratio is None or pd.isna(ratio) else round(float(ratio), 9)


def _target_means(rows: list[dict[str, Any]], target: str, metric: str) -> pd.DataFrame:
    """:func:`summary_table` of one target on ``metric`` (rows that fell back to another metric left out), with a
    ``key`` column: the ratio as :func:`_ratio_key` gives it (None for base and full data)."""
    tab = summary_table([r for r in rows if r.get("target") == target], metric)
    tab = tab[tab.metric == metric]
    return tab.assign(key=tab.ratio.map(_ratio_key))


def _mean_of(tab: pd.DataFrame, method: str, key: float | None) -> float:
    """The mean of ``method`` at ratio ``key`` in a :func:`_target_means` table (NaN where it did not run)."""
    hit = tab[(tab.method == method) & (tab.key.isna() if key is None else tab.key == key)]["mean"]
    return float(hit.iloc[0]) if len(hit) else float("nan")


def _fmt_cell(diff: float, low: float, high: float, sig: str) -> str:
    return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]" + (f" * {sig}" if sig else "")


def study_grid(rows: Iterable[dict[str, Any]], scores: dict[str, dict[str, Any]] | None,
               columns: Sequence[tuple[str, str, str]], methods: Sequence[str], ratio: float,
               n_boot: int | None = None) -> pd.DataFrame:
    """A methods x columns table of formatted cells, the layout of docs/study.md's tables.

    ``columns``: (target, metric, reference). reference ``"-"`` shows the metric itself ("mean ± sd" over seeds);
    otherwise the cell is the seed-paired difference method minus reference at ``ratio`` with its 95% bootstrap
    interval and the mark ("+0.955 [+0.375, +1.559] * better", :func:`paired_ci_table`), and the reference's own
    row shows its mean ± sd. Target ``"(pooled)"`` is the mean over the other columns' targets of the same metric
    and reference (their questions resampled within each) at the seeds they all have; a method that lacks some of
    them says "(k of n targets)", and one pooled over fewer seeds than its targets' columns show says "(n seeds)".
    ``base``, ``full`` (no ratio, no seeds) and the reference show their value in a difference column only where
    the table has no ``"-"`` column of that target and metric. A cell measured at fewer seeds than its column's most says how many ("(2 seeds)");
    a cell with no finished row says "not run". Rows reporting another metric than the asked one (measured before
    it existed) never fill its cells.
    """
    rows = list(rows)
    means: dict[tuple, tuple[int, float, float]] = {}
    for metric in {c[1] for c in columns}:
        tab = summary_table(rows, metric)
        for r in tab[tab.metric == metric].itertuples():
            means[(r.target, metric, r.method, _ratio_key(r.ratio))] = (int(r.n_seeds), float(r.mean), float(r.std))
    diffs: dict[tuple, Any] = {}
    for metric, ref in {(c[1], c[2]) for c in columns if c[2] != ABSOLUTE}:
        targets = {t for t, m, rf in columns if (m, rf) == (metric, ref) and t != POOLED}
        if not targets:   # a pooled column alone: every target that reports the metric
            targets = {t for (t, m, _meth, _r) in means if m == metric}
        tab = paired_ci_table([r for r in rows if r.get("target") in targets], scores, metric, (ref,), n_boot)
        for r in tab[(tab.metric == metric)].itertuples():
            if _ratio_key(r.ratio) == _ratio_key(ratio):
                diffs[(r.target, metric, ref, r.method)] = r
    shown = {(t, m) for t, m, rf in columns if rf == ABSOLUTE}   # (target, metric) with a column of its own means
    n_pooled = {(m, rf): len({t for t, m2, rf2 in columns if (m2, rf2) == (m, rf) and t != POOLED})
                for _, m, rf in columns}
    table: list[list[tuple[str, int]]] = []
    for j, (target, metric, ref) in enumerate(columns):
        cells: list[tuple[str, int]] = []
        table.append(cells)
        for meth in methods:
            if meth in BASELINE_METHODS or ref == ABSOLUTE or meth == ref:
                # a value, not a difference: in a difference column only where the table has no mean column for it
                if target == POOLED or (ref != ABSOLUTE and (target, metric) in shown):
                    cells.append(("", 0))
                    continue
                got = means.get((target, metric, meth, None if meth in BASELINE_METHODS else _ratio_key(ratio)))
                if got is None:
                    cells.append(("not run", 0))
                else:
                    n, mu, sd = got
                    cells.append((f"{mu:.3f}" + (f" ± {sd:.3f}" if n > 1 else ""), n))
            else:
                d = diffs.get((target, metric, ref, meth))
                if d is None:
                    cells.append(("not run", 0))
                    continue
                txt = _fmt_cell(d.mean_diff, d.ci_low, d.ci_high, d.sig)
                want = n_pooled[(metric, ref)]
                if target == POOLED and want and int(d.n_targets) < want:   # never a silent mean over fewer targets
                    txt += f" ({int(d.n_targets)} of {want} targets)"
                cells.append((txt, int(d.n_seeds)))
    out: dict[str, list[str]] = {}
    for j, (target, metric, ref) in enumerate(columns):
        # a pooled cell pairs only the seeds every pooled target has: compared with its targets' columns too
        peers = [k for k, c in enumerate(columns) if (c[1], c[2]) == (metric, ref)] if target == POOLED else [j]
        most = max((n for k in peers for _, n in table[k]), default=0)
        out[str(j)] = [txt + (f" ({n} seed{'s' if n > 1 else ''})" if 0 < n < most and m not in BASELINE_METHODS
                              else "") for (txt, n), m in zip(table[j], methods)]
    return pd.DataFrame(out, index=list(methods))


#: An effect of (z_0.975 + z_0.8) standard errors is found (its 95% interval excludes zero) 80% of the time; in
#: units of a 95% interval's half-width (z_0.975 standard errors): 2.80 / 1.96 = 1.43.
POWER_80 = (NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)) / NormalDist().inv_cdf(0.975)


def power_table(rows: Iterable[dict[str, Any]], scores: dict[str, dict[str, Any]] | None,
                cells: Sequence[tuple[str, str]], ratio: float, reference: str = "random",
                n_boot: int | None = None) -> pd.DataFrame:
    """What the study can tell apart, per (target, metric) of ``cells`` at ``ratio``: :func:`power_from_intervals`
    of the intervals to ``reference``. Targets a (target, metric) pair lacks are left out."""
    rows = list(rows)
    parts = []
    for target, metric in cells:
        tab = paired_ci_table([r for r in rows if r.get("target") == target], scores, metric, (reference,), n_boot)
        parts.append(tab[(tab.metric == metric) & (tab.target == target)
                         & tab.ratio.map(lambda x: _ratio_key(x) == _ratio_key(ratio))])
    return power_from_intervals(pd.concat(parts) if parts else pd.DataFrame(), rows, reference)


def power_from_intervals(ci: pd.DataFrame, rows: Iterable[dict[str, Any]], reference: str = "random") -> pd.DataFrame:
    """Per (target, metric, ratio) of an interval table (:func:`paired_ci_table`; its lines against ``reference``,
    pooled lines left out): over the methods, the median and widest half-width of their 95% intervals (a
    difference smaller than the half-width cannot be told from zero), the effect a method needs for its interval
    to exclude zero 80% of the time at the median width (``detectable_80``: (z_0.975 + z_0.8) standard errors, the
    standard error read from the half-width as half / z_0.975; a normal approximation), how many exclude zero, and
    the scale of the metric's movement: the reference minus the base model."""
    rows = list(rows)
    cols = ["target", "metric", "ratio", "n_methods", "n_seeds", "n_questions", "half_width_median", "half_width_max",
            "detectable_80", "n_excluding_zero", "reference_minus_base"]
    if ci.empty:
        return pd.DataFrame(columns=cols)
    ci = ci[(ci.reference == reference) & (ci.target != POOLED)]
    out = []
    for (target, metric, key), tab in ci.groupby([ci.target, ci.metric, ci.ratio.map(_ratio_key)], sort=False):
        half = (tab.ci_high - tab.ci_low) / 2
        means = _target_means(rows, target, metric)
        out.append({"target": target, "metric": metric, "ratio": tab.ratio.iloc[0], "n_methods": len(tab),
                    "n_seeds": int(tab.n_seeds.max()),
                    "n_questions": int(tab.n_questions.max()) if tab.n_questions.notna().any() else 0,
                    "half_width_median": float(half.median()), "half_width_max": float(half.max()),
                    "detectable_80": float(half.median()) * POWER_80,
                    "n_excluding_zero": int((tab.sig != "").sum()),
                    "reference_minus_base": _mean_of(means, reference, key) - _mean_of(means, "base", None)})
    return pd.DataFrame(out, columns=cols)


def anchors_table(rows: Iterable[dict[str, Any]], cells: Sequence[tuple[str, str]], ratio: float) -> pd.DataFrame:
    """Per (target, metric): the base model, random at ``ratio``, the trained method with the best mean at ``ratio``
    (random left out; in the metric's own direction) and full data, means over seeds (NaN where not run)."""
    rows = list(rows)
    out = []
    for target, metric in cells:
        tab = _target_means(rows, target, metric)
        trained = tab[(tab.key == _ratio_key(ratio)) & (tab.method != "random") & ~tab.method.isin(BASELINE_METHODS)]
        best = trained.sort_values("mean", ascending=metric in LOWER_IS_BETTER).head(1)
        out.append({"target": target, "metric": metric, "base": _mean_of(tab, "base", None),
                    "random": _mean_of(tab, "random", _ratio_key(ratio)),
                    "best_method": best.method.iloc[0] if len(best) else None,
                    "best": float(best["mean"].iloc[0]) if len(best) else float("nan"),
                    "best_seeds": int(best.n_seeds.iloc[0]) if len(best) else 0,
                    "most_seeds": int(trained.n_seeds.max()) if len(trained) else 0,
                    "full": _mean_of(tab, "full", None)})
    return pd.DataFrame(out, columns=["target", "metric", "base", "random", "best_method", "best", "best_seeds",
                                      "most_seeds", "full"])

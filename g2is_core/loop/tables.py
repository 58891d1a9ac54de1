"""Pure functions over run-registry rows: results tables with baselines beside every number.

The primary metric of a row is the first of PRIMARY its metrics hold (higher is better, except
NLL/perplexity). Deltas are against the random baseline at the same (target, ratio) averaged over
seeds, and against full-data training and the untrained base model for the same target.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

PRIMARY = ("accuracy", "em", "f1", "nll")
LOWER_IS_BETTER = {"nll", "ppl", "nll_answer"}


def primary_metric(metrics: dict[str, Any] | None, prefer: str | None = None) -> tuple[str | None, float | None]:
    """(name, value) of ``prefer`` when the row has it, else of the first of :data:`PRIMARY` it has."""
    for k in ((prefer,) if prefer else ()) + PRIMARY:
        if metrics and k in metrics and metrics[k] is not None:
            return k, float(metrics[k])
    return None, None


def available_metrics(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Metric names that finished rows report, primary ones first (for a metric picker)."""
    seen: list[str] = []
    for r in rows:
        for k in (r.get("metrics") or {}) if r.get("status") == "done" else ():
            if k not in seen and not k.startswith("n_"):
                seen.append(k)
    return sorted(seen, key=lambda k: (PRIMARY.index(k) if k in PRIMARY else len(PRIMARY), k))


def default_metric(rows: Sequence[dict[str, Any]]) -> str | None:
    """The metric a table opens on: the first available one whose values differ between rows (a metric
    that is 0.0 everywhere, like a small model's exact match, says nothing), else the first."""
    names = available_metrics(rows)
    compared = _compared(rows)
    for k in names:
        # across the selections: a metric where every method ties (a 135M model's exact match at 0.125
        # after each of them) does not separate them, even when it moved from the base model
        vals = {(r.get("metrics") or {}).get(k) for r in compared}
        if len(vals - {None}) > 1:
            return k
    return names[0] if names else None


def _config_without_seed(row: dict[str, Any]) -> str:
    """A row's configuration apart from its seed: rows that share it are seeds of one configuration."""
    cfg = {k: v for k, v in (row.get("config") or {}).items() if k != "seed"}
    return json.dumps(cfg, sort_keys=True, default=str)


def n_cut(metrics: dict[str, Any] | None) -> int:
    """Prompts of a row's evaluation cut to fit the scored length (the eval's and the extra loglik pass's)."""
    m = metrics or {}
    return int(sum(float(m.get(k) or 0) for k in ("n_truncated", "n_truncated_loglik")))


def _compared(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished rows whose methods a table compares: the selections (random included), or, in a table
    without two of them, every trained row."""
    done = [r for r in rows if r.get("status") == "done"]
    sel = [r for r in done if r.get("method") not in ("base", "full")]
    return sel if len(sel) >= 2 else [r for r in done if r.get("method") != "base"]


def metric_reason(rows: Sequence[dict[str, Any]], metric: str | None) -> str:
    """One sentence: why a table opens on ``metric`` (:func:`default_metric`'s choice, said to the user)."""
    names = available_metrics(rows)
    if metric is None:
        return "no metric recorded yet"
    flat = names[: names.index(metric)] if metric in names else []
    if flat:
        vals = {(r.get("metrics") or {}).get(flat[0]) for r in _compared(rows)} - {None}
        v = next(iter(vals), None)
        return (f"{flat[0]} is {v:.3g} for every selection method, so it cannot tell them apart; {metric} "
                "differs between them" if v is not None else f"{metric} is the first metric recorded")
    return f"{metric} differs between the selection methods" + (" (lower is better)" if metric in ("nll", "ppl") else "")


def rows_frame(rows: Iterable[dict[str, Any]], metric: str | None = None) -> pd.DataFrame:
    """One line per finished registry row: experiment, target, method, ratio, seed, metric, value.

    Rows of one (experiment, target, method, ratio) are averaged as seeds by :func:`summary_table`, so they
    must be seeds of ONE configuration. The registry returns only the current version of an edited spec
    (:meth:`~g2is_core.loop.registry.Registry.current_rows`); as a second guard, for rows without a recorded
    version, only the configuration of the most recently finished row of each (experiment, target, method,
    ratio) is kept (its seeds; the latest row per seed), never a mix of two.
    """
    done = [r for r in rows if r.get("status") == "done"]
    newest: dict[tuple, dict[str, Any]] = {}
    for r in done:
        k = (r["experiment"], r["target"], r["method"], r["ratio"])
        if k not in newest or (r.get("finished") or 0) >= (newest[k].get("finished") or 0):
            newest[k] = r
    config_of = {k: _config_without_seed(r) for k, r in newest.items()}
    latest: dict[tuple, dict[str, Any]] = {}
    for r in done:
        cell = (r["experiment"], r["target"], r["method"], r["ratio"])
        if _config_without_seed(r) != config_of[cell]:
            continue
        k = cell + (r["seed"],)
        if k not in latest or (r.get("finished") or 0) >= (latest[k].get("finished") or 0):
            latest[k] = r
    recs = []
    for r in latest.values():
        name, val = primary_metric(r.get("metrics"), metric)
        recs.append({"experiment": r["experiment"], "target": r["target"], "method": r["method"],
                     "ratio": r["ratio"], "seed": r["seed"], "metric": name, "value": val,
                     "n_train": (r.get("metrics") or {}).get("n_train"),
                     "n_eval": (r.get("metrics") or {}).get("n_eval"), "n_cut": n_cut(r.get("metrics")),
                     "train_s": (r.get("timings") or {}).get("train_s"),
                     "select_s": (r.get("timings") or {}).get("select_s"),
                     "selection": r.get("selection"), "train_dir": r.get("train_dir")})
    return pd.DataFrame(recs, columns=["experiment", "target", "method", "ratio", "seed", "metric", "value",
                                       "n_train", "n_eval", "n_cut", "train_s", "select_s", "selection",
                                       "train_dir"])


def summary_table(rows: Iterable[dict[str, Any]], metric: str | None = None) -> pd.DataFrame:
    """Mean and spread over seeds per (experiment, target, method, ratio), with deltas vs baselines.

    ``metric``: which metric to tabulate (default: each row's primary one). For NLL/perplexity lower
    is better, so a negative delta is an improvement there. ``n_cut``: the most prompts any seed's
    evaluation cut to fit the scored length (0: nothing was cut; the rows' ``n_truncated``).
    """
    df = rows_frame(rows, metric)
    cols = ["experiment", "target", "metric", "method", "ratio", "n_seeds", "mean", "std",
            "vs_random", "vs_full", "vs_base", "n_cut"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["ratio_key"] = df["ratio"].fillna(-1.0)
    g = df.groupby(["experiment", "target", "metric", "method", "ratio_key"], dropna=False)["value"]
    out = g.agg(n_seeds="count", mean="mean", std="std").reset_index()
    cut = df.groupby(["experiment", "target", "metric", "method", "ratio_key"], dropna=False)["n_cut"].max()
    out["n_cut"] = [int(cut.get((r.experiment, r.target, r.metric, r.method, r.ratio_key), 0)) for r in out.itertuples()]
    out["std"] = out["std"].fillna(0.0)

    def ref(row, method, same_ratio):
        # the same metric: rows that lack the asked one fall back to their primary metric (rows_frame), and a
        # reference measured partly before a metric existed would otherwise subtract another metric's mean
        m = out[(out.experiment == row.experiment) & (out.target == row.target) & (out.metric == row.metric)
                & (out.method == method)]
        if same_ratio:
            m = m[m.ratio_key == row.ratio_key]
        return float(m["mean"].iloc[0]) if len(m) else float("nan")

    out["vs_random"] = [r.mean - ref(r, "random", True) for r in out.itertuples()]
    out["vs_full"] = [r.mean - ref(r, "full", False) for r in out.itertuples()]
    out["vs_base"] = [r.mean - ref(r, "base", False) for r in out.itertuples()]
    out["ratio"] = out["ratio_key"].where(out["ratio_key"] >= 0, None)
    order = {"base": 0, "full": 1, "random": 2}
    out["_o"] = out["method"].map(lambda m: order.get(m, 3))
    out = out.sort_values(["experiment", "target", "ratio_key", "_o", "method"]).reset_index(drop=True)
    return out[cols]


def truncation_note(table: pd.DataFrame) -> str | None:
    """One sentence naming the rows of a :func:`summary_table` whose evaluation cut prompts, or None."""
    if table.empty or "n_cut" not in table or not (table["n_cut"] > 0).any():
        return None
    cut = table[table["n_cut"] > 0]
    where = ", ".join(f"{r.target}/{r.method}" + (f"@{r.ratio:g}" if r.ratio is not None and r.ratio == r.ratio else "")
                      + f" ({int(r.n_cut)})" for r in cut.itertuples())
    return (f"{int(cut['n_cut'].max())} prompt(s) were cut from the left to fit the scored length in: {where}; their "
            "scores are on shortened prompts. Give a larger eval max_length (capped at the model's context) or fewer "
            "shots to score them whole.")


def paired_vs_random(rows: Iterable[dict[str, Any]], metric: str | None = None) -> pd.DataFrame:
    """Seed-matched differences to the random baseline per (experiment, target, method, ratio).

    Seed s of a method and seed s of random share the training seed (random's draw differs), so
    ``method[s] - random[s]`` removes the training-seed part of the noise. ``better`` counts seeds
    where the method beats random in the metric's own direction (lower NLL, higher accuracy).
    """
    df = rows_frame(rows, metric)
    cols = ["experiment", "target", "metric", "method", "ratio", "n_pairs", "mean_diff", "min_diff", "max_diff",
            "better"]
    out = []
    if df.empty:
        return pd.DataFrame(columns=cols)
    rnd = df[df.method == "random"].set_index(["experiment", "target", "metric", "ratio", "seed"])["value"]
    for (e, t, m, meth, r), g in df[~df.method.isin(["random", "base", "full"])].groupby(
            ["experiment", "target", "metric", "method", "ratio"]):
        diffs = [v - rnd[(e, t, m, r, s)] for s, v in zip(g.seed, g.value) if (e, t, m, r, s) in rnd.index]
        if not diffs:
            continue
        sign = -1.0 if m in LOWER_IS_BETTER else 1.0
        out.append({"experiment": e, "target": t, "metric": m, "method": meth, "ratio": r, "n_pairs": len(diffs),
                    "mean_diff": sum(diffs) / len(diffs), "min_diff": min(diffs), "max_diff": max(diffs),
                    "better": sum(1 for d in diffs if sign * d > 0)})
    return pd.DataFrame(out, columns=cols)


def read_selection_ids(selection_dir: str | Path | None) -> list[str]:
    """Ordered selected record ids of a stored selection run (empty when absent)."""
    if not selection_dir:
        return []
    p = Path(selection_dir) / "selected_ids.json"
    if not p.exists():
        return []
    ids = json.loads(p.read_text(encoding="utf-8"))
    return [str(i) for i in ids]


def selection_ids(row: dict[str, Any]) -> list[str]:
    """The selected record ids of a registry row: from its selection folder, or, for a row imported from an
    archive (:mod:`.archive`: no folder on this machine), from the ids it carried (``info["selected_ids"]``)."""
    ids = read_selection_ids(row.get("selection"))
    return ids or [str(i) for i in ((row.get("info") or {}).get("selected_ids") or [])]


def selected_records(row: dict[str, Any]) -> pd.DataFrame | None:
    """``id`` and pool ``source`` of a registry row's selected records, in selection order: the sources from its
    selection folder's scores table, or those an archived row carried (``info["selected_sources"]``); None when
    neither is there (no selection, or a folder without its scores)."""
    ids = selection_ids(row)
    carried = (row.get("info") or {}).get("selected_sources")
    if ids and carried and len(carried) == len(ids):
        return pd.DataFrame({"id": ids, "source": [str(x) for x in carried]})
    p = Path(row["selection"]) / "scores.parquet" if row.get("selection") else None
    if not ids or p is None or not p.exists():
        return None
    sc = pd.read_parquet(p, columns=["id", "source"])
    of = dict(zip(sc["id"].astype(str), sc["source"].fillna("").astype(str)))
    return pd.DataFrame({"id": ids, "source": [of.get(i, "") for i in ids]})


def overlap_matrix(selections: dict[str, Sequence[str]]) -> pd.DataFrame:
    """Jaccard overlap between named selections (1 on the diagonal; 0 when either is empty)."""
    names = list(selections)
    sets = {n: set(selections[n]) for n in names}
    data = [[(len(sets[a] & sets[b]) / len(sets[a] | sets[b])) if (sets[a] | sets[b]) else 0.0 for b in names]
            for a in names]
    return pd.DataFrame(data, index=names, columns=names)


def composition(ids: Sequence[str], key_of: dict[str, str]) -> pd.Series:
    """Counts of selected ids by a key (source or task); unknown ids count as '?'."""
    return pd.Series([key_of.get(i, "?") for i in ids], dtype="object").value_counts()


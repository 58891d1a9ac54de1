"""Seed-paired differences between methods with bootstrap intervals over questions and seeds.

For a method m, a reference r (``random`` or ``less``), a target and a ratio, with seeds S and
questions Q shared by both (pairing: seed s of m with seed s of r, the same training seed; question q
with the same question id):

    d[s, q] = score_m[s, q] - score_r[s, q]                                   [S, Q]
    diff    = mean_s  sum_q w_q d[s, q] / sum_q w_q                            (w_q = 1, or answer tokens for nll)

which is exactly mean_s (metric_m[s] - metric_r[s]) of the registry's aggregates. Its 95% interval is a
percentile bootstrap over questions AND seeds (two-way): each of ``n_boot`` replicates draws Q
questions with replacement (the same draw for every seed: questions stay paired) and S seeds with
replacement, and recomputes ``diff``; the interval is the 2.5% and 97.5% quantiles of the replicates
(``np.quantile``, linear interpolation). With 3 seeds the seed draw is coarse (10 distinct multisets):
it widens the interval by the seed-to-seed spread instead of ignoring it.

Pooled across targets: ``mean_t diff_t`` over the targets that report the same metric (a pooled
accuracy-with-nll number would mean nothing), each target's questions resampled within the target,
one seed draw shared by all targets (seed s is the same training seed everywhere).

Fallback (``basis = "seeds"``): a cell recorded before per-question scores were kept, or a metric
without a per-question form (``ppl``), has only its aggregate. Then each target is a [S, 1] matrix of
aggregate differences and only seeds are resampled; with one seed there is no interval (NaN).

Mark: ``sig`` is "better" or "worse" when the interval excludes zero (the direction is the metric's
own: lower is better for nll/ppl), else empty. Random draws are seeded (``seed``): tables are
reproducible. Pure functions over registry rows and :mod:`.scores` records; nothing touches a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .tables import LOWER_IS_BETTER, primary_metric

POOLED = "(pooled)"
BASELINE_METHODS = ("base", "full")  # no ratio, no seed pairing: never a row of the paired table


@dataclass(frozen=True)
class BootstrapSettings:
    """How the intervals are drawn (every default written once, here)."""

    n_boot: int = field(default=2000, metadata={"help": "bootstrap replicates"})
    level: float = field(default=0.95, metadata={"help": "coverage of the percentile interval"})
    seed: int = field(default=0, metadata={"help": "seed of the resampling (tables are reproducible)"})


# ----------------------------------------------------------------------------- the bootstrap
def bootstrap_diff(blocks: Sequence[tuple[np.ndarray, np.ndarray | None]], settings: BootstrapSettings = BootstrapSettings(),
                   ) -> tuple[float, float, float]:
    """(estimate, low, high) of ``mean_t mean_s wmean_q D_t[s, q]`` for ``blocks`` = [(D_t [S, Q_t], w_t [Q_t] or
    None), ...] whose rows are the same S seeds in the same order.

    Replicate b draws, for each block in order, ``rng.integers(0, Q_t, (n_boot, Q_t))`` question indices,
    then ``rng.integers(0, S, (n_boot, S))`` seed indices shared by the blocks. A [S, 1] block (aggregates
    only) resamples seeds alone. With S = 1 and every Q_t = 1 there is nothing to resample: NaN bounds.
    """
    if not blocks:
        raise ValueError("no paired differences to bootstrap")
    mats = [np.atleast_2d(np.asarray(d, dtype=np.float64)) for d, _ in blocks]
    S = mats[0].shape[0]
    if any(m.shape[0] != S for m in mats):
        raise ValueError("every target must have the same seeds (rows) to be pooled")
    ws = [np.ones(m.shape[1]) if w is None else np.asarray(w, dtype=np.float64) for m, (_, w) in zip(mats, blocks)]
    for m, w in zip(mats, ws):
        if w.shape != (m.shape[1],) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be one non-negative number per question, not all zero")
    est = float(np.mean([np.mean(m @ w / w.sum()) for m, w in zip(mats, ws)]))
    if S == 1 and all(m.shape[1] == 1 for m in mats):
        return est, math.nan, math.nan
    rng = np.random.default_rng(settings.seed)
    B = int(settings.n_boot)
    per_target = []  # [B, S]: each seed's question-resampled weighted mean, per target
    for m, w in zip(mats, ws):
        Q = m.shape[1]
        qi = rng.integers(0, Q, size=(B, Q))
        out = np.empty((B, S))
        for a in range(0, B, 256):  # chunks bound the [S, b, Q] temporary
            idx = qi[a:a + 256]
            wq = w[idx]                                           # [b, Q]
            with np.errstate(invalid="ignore", divide="ignore"):  # a draw of only zero-weight questions: NaN
                out[a:a + 256] = ((m[:, idx] * wq[None]).sum(-1) / wq.sum(-1)[None]).T
        per_target.append(out)
    si = rng.integers(0, S, size=(B, S))
    rows = np.arange(B)[:, None]
    reps = np.mean([pt[rows, si].mean(axis=1) for pt in per_target], axis=0)  # [B]
    alpha = (1.0 - settings.level) / 2.0
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return est, math.nan, math.nan
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return est, float(lo), float(hi)


def significance(low: float, high: float, metric: str | None) -> str:
    """"better" / "worse" when [low, high] excludes zero (in the metric's own direction), else ""."""
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0.0 <= high:
        return ""
    up = low > 0.0
    return ("worse" if up else "better") if metric in LOWER_IS_BETTER else ("better" if up else "worse")


# ----------------------------------------------------------------------------- from registry rows
def latest_done(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The most recently finished row per (experiment, target, method, ratio, seed): the rule of
    :func:`g2is_core.loop.tables.rows_frame`, so this table and the summary read the same rows."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r.get("status") != "done":
            continue
        k = (r["experiment"], r["target"], r["method"], r["ratio"], r["seed"])
        if k not in latest or (r.get("finished") or 0) >= (latest[k].get("finished") or 0):
            latest[k] = r
    return latest


@dataclass
class _Cell:
    value: float
    scores: dict[str, Any] | None  # per-question record of the metric, or None


def _cells(rows, scores: Mapping[str, dict[str, Any]], metric: str | None):
    out: dict[tuple, tuple[str, _Cell]] = {}
    for (e, t, m, r, s), row in latest_done(rows).items():
        name, val = primary_metric(row.get("metrics"), metric)
        if name is None or val is None:
            continue
        q = scores.get(row.get("config_hash") or "")
        has = q is not None and name in (q.get("values") or {})
        out[(e, t, m, r, s)] = (name, _Cell(val, q if has else None))
    return out


def _pair_block(pairs: list[tuple[int, _Cell, _Cell]], metric: str):
    """[S, Q] differences and weights over the questions every pair shares, or None when any pair lacks
    per-question scores (the caller then uses the aggregates)."""
    if any(a.scores is None or b.scores is None for _, a, b in pairs):
        return None
    common = None
    for _, a, b in pairs:
        ids = set(a.scores["ids"]) & set(b.scores["ids"])
        common = ids if common is None else common & ids
    order = [q for q in pairs[0][2].scores["ids"] if q in common]  # the reference's question order
    if not order:
        return None
    D = np.empty((len(pairs), len(order)))
    W = np.zeros(len(order))
    for k, (_, a, b) in enumerate(pairs):
        pa = {q: i for i, q in enumerate(a.scores["ids"])}
        pb = {q: i for i, q in enumerate(b.scores["ids"])}
        va, vb = a.scores["values"][metric], b.scores["values"][metric]
        D[k] = [va[pa[q]] - vb[pb[q]] for q in order]
        wa = (a.scores.get("weights") or {}).get(metric)
        wb = (b.scores.get("weights") or {}).get(metric)
        # the same questions carry the same answer tokens under both models (averaged, were they to differ)
        ra = np.array([wa[pa[q]] for q in order]) if wa else np.ones(len(order))
        rb = np.array([wb[pb[q]] for q in order]) if wb else np.ones(len(order))
        W += 0.5 * (ra + rb)
    keep = np.isfinite(D).all(axis=0)  # a question some model could not score (no answer token) is left out
    if not keep.any():
        return None
    return D[:, keep], (W / len(pairs))[keep]


COLUMNS = ["experiment", "target", "metric", "method", "ratio", "reference", "n_targets", "n_seeds", "n_questions",
           "basis", "mean_diff", "ci_low", "ci_high", "sig"]


def paired_differences(rows: Iterable[dict[str, Any]], scores: Mapping[str, dict[str, Any]] | None = None,
                       metric: str | None = None, references: Sequence[str] = ("random", "less"),
                       settings: BootstrapSettings = BootstrapSettings(), pooled: bool = True) -> pd.DataFrame:
    """Seed-paired differences of every method to each reference, with bootstrap intervals.

    rows: registry rows (``Registry.rows``); scores: {config_hash: per-question record}
    (:func:`g2is_core.loop.scores.load_scores`; None = aggregates only). One line per (experiment, target,
    metric, method, ratio, reference), then one ``target = "(pooled)"`` line per (experiment, metric,
    method, ratio, reference) over the targets that have it (when ``pooled`` and there are >= 2).
    ``basis``: "questions x seeds" or "seeds" (module docstring). ``mean_diff`` is method minus reference.
    """
    rows = list(rows)
    cells = _cells(rows, scores or {}, metric)
    out: list[dict[str, Any]] = []
    blocks: dict[tuple, list[tuple[str, Any, Any, int, int, list[int]]]] = {}
    keys = sorted({(e, t, m, r) for (e, t, m, r, s) in cells if m not in BASELINE_METHODS and r is not None},
                  key=lambda k: (k[0], k[1], k[3], k[2]))
    for ref in references:
        for (e, t, m, r) in keys:
            if m == ref:
                continue
            # pairs by the metric both cells report: seeds measured before the asked metric existed fall back to
            # their primary one, and form a line of that metric apart (never one line mixing two metrics)
            by_name: dict[str, list[tuple[int, _Cell, _Cell]]] = {}
            for (e2, t2, m2, r2, s), (nm, cell) in sorted(cells.items(), key=lambda kv: kv[0][4]):
                if (e2, t2, m2, r2) != (e, t, m, r):
                    continue
                other = cells.get((e, t, ref, r, s))
                if other is None or other[0] != nm:
                    continue
                by_name.setdefault(nm, []).append((s, cell, other[1]))
            for name, pairs in sorted(by_name.items(), key=lambda kv: kv[0] != metric):
                pb = _pair_block(pairs, name)
                basis = "questions x seeds" if pb is not None else "seeds"
                D, W = pb if pb is not None else (np.array([[a.value - b.value] for _, a, b in pairs]), None)
                est, lo, hi = bootstrap_diff([(D, W)], settings)
                seeds = [s for s, _, _ in pairs]
                out.append({"experiment": e, "target": t, "metric": name, "method": m, "ratio": r, "reference": ref,
                            "n_targets": 1, "n_seeds": len(pairs), "n_questions": D.shape[1] if pb is not None else 0,
                            "basis": basis, "mean_diff": est, "ci_low": lo, "ci_high": hi,
                            "sig": significance(lo, hi, name)})
                blocks.setdefault((e, name, m, r, ref), []).append((t, D, W, pb is not None, seeds, pairs))
    if pooled:
        for (e, name, m, r, ref), parts in blocks.items():
            if len(parts) < 2:
                continue
            seeds = sorted(set.intersection(*(set(p[4]) for p in parts)))
            if not seeds:
                continue
            by_q = all(p[3] for p in parts)
            bl = []
            for t, D, W, _, ss, pairs in parts:
                rows_of = [ss.index(s) for s in seeds]
                if by_q:
                    bl.append((D[rows_of], W))
                else:
                    agg = np.array([[pairs[i][1].value - pairs[i][2].value] for i in rows_of])
                    bl.append((agg, None))
            est, lo, hi = bootstrap_diff(bl, settings)
            out.append({"experiment": e, "target": POOLED, "metric": name, "method": m, "ratio": r, "reference": ref,
                        "n_targets": len(parts), "n_seeds": len(seeds),
                        "n_questions": int(sum(b[0].shape[1] for b in bl)) if by_q else 0,
                        "basis": "questions x seeds" if by_q else "seeds", "mean_diff": est, "ci_low": lo,
                        "ci_high": hi, "sig": significance(lo, hi, name)})
    return pd.DataFrame(out, columns=COLUMNS)

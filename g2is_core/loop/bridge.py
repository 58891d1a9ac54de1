"""The closed loop of the bridge (docs/bridge.md, "The closed loop"; issue 16 item 5): what fine-tuning on a
selection did to the target's attention heads, and whether that, or the selection's head similarity, goes
with the score.

What the runner stores per benchmark cell (the registry row's ``info``; :func:`pattern_record`,
:func:`selection_head_similarity`), when the spec sets ``eval.head_pattern: n``:

- ``head_pattern``: the target's activation pattern AP(model) [L, H] (heads_method.md Eq. 2; gate route,
  fp32) of the cell's trained model -- and of the untrained base model, once per target -- on a fixed set
  of the target's selection examples: the first n of them, the same for every cell of the target.
- ``head_similarity`` (cells with a selection, when the spec's gradient stores carry head signatures)::

      hsim(S) = sum_i w_i cos( mean_{z in S} S_i(z), P_i )          P_i = mean_{v in target} S_i(v)

  S_i(z) the pool record's head signature at warmup checkpoint i, P_i the target's activation pattern on
  that checkpoint's model (what the ``heads`` method compares with), w_i the LESS checkpoint weights.
  The mean signature of a set is that set's activation pattern, so this is "how much the selection's
  own pattern looks like the target's".
- ``gradient_similarity`` (the same cells, from the same stores; the comparison item 6 asks for)::

      gsim(S) = sum_i w_i cos( mean_{z in S} u_i(z), mean_{v in target} u_i(v) )

  u_i the unit-norm LESS gradient features at checkpoint i: how much the selection's mean gradient points
  the target's way.

What is computed here, from those rows (pure functions, no model):

- the change of a cell: dAP(cell) = AP(cell) - AP(base of the same target) [L, H]; the base's is 0;
- its change similarity: cos(dAP(cell), mean over the full-data seeds of dAP(full)): did the selection
  move the target's heads the way training on everything did;
- the correlation of each x (head similarity, change similarity, gradient similarity) with the score over a target's cells
  with a selection (every method, ratio and seed; base and full are references, not points), Pearson
  and Spearman, with a two-sided permutation p-value (:func:`correlation_test`);
- whether head similarity goes with the score more strongly than gradient similarity does: |r_head| -
  |r_grad| over the same selections (cells merged per distinct selection, :func:`by_selection`: a
  deterministic method's seeds share one), with a paired bootstrap 95% interval (:func:`correlation_difference`).

Cells are few (methods x ratios x seeds of one target), so the p-value is what to read, not r alone;
cells of several ratios mix the budget into x and the score alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .spec import BASE
from .stats import latest_done
from .tables import primary_metric

PATTERN = "head_pattern"          # row info: the cell model's pattern of the target (pattern_record)
SIMILARITY = "head_similarity"    # row info: the selection's head similarity to the target's pattern
GRADIENT = "gradient_similarity"  # row info: the selection's gradient similarity to the target
X_HEADS = "head_similarity"       # the points' x columns
X_CHANGE = "change_similarity"
X_GRAD = "gradient_similarity"
X_LABELS = {X_HEADS: "head similarity of the selection to the target's pattern",
            X_GRAD: "gradient similarity of the selection to the target",
            X_CHANGE: "change similarity to the full-data model's change"}
CORRELATIONS = ("pearson", "spearman")
N_PERM = 9999
MIN_DIFF_POINTS = 6               # fewer cells: no interval for the head-vs-gradient difference


# ----------------------------------------------------------------------------- what the runner stores
def pattern_record(values: np.ndarray, ids: Sequence[str], *, n_kv_heads: int, max_length: int,
                   route: str = "gate") -> dict[str, Any]:
    """The row ``info`` entry of one cell's pattern: ``values`` [L, H] as nested lists of floats (JSON keeps a
    float64 exactly), the example ids it was measured on (in order), and how."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"an activation pattern is [layer, head]; got shape {v.shape}")
    return {"values": v.tolist(), "shape": list(v.shape), "ids": [str(i) for i in ids], "n": len(ids),
            "n_kv_heads": int(n_kv_heads), "max_length": int(max_length), "route": route,
            "what": "activation pattern of the target examples on this cell's model (heads_method.md Eq. 2), fp32"}


def row_pattern(row: dict[str, Any]) -> np.ndarray | None:
    """[L, H] float64 pattern a registry row carries, or None (a row recorded without ``eval.head_pattern``)."""
    rec = (row.get("info") or {}).get(PATTERN)
    return None if not rec else np.asarray(rec["values"], dtype=np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """cos of the flattened arrays; NaN when either is all zero (no direction to compare)."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"cannot compare arrays of {x.size} and {y.size} entries; measure them on the same model")
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / den) if den > 0 else float("nan")


def selection_head_similarity(train, target, ids: Sequence[str]) -> dict[str, Any]:
    """hsim(S) of the module doc for the selected pool ids ``ids``.

    ``train`` / ``target``: :class:`~g2is_core.selection.features.FeatureSet` of the pool and the target with
    ``signatures`` (one [N, L, H] array per checkpoint; weights = the LESS checkpoint weights)."""
    if train.signatures is None or target.signatures is None:
        raise ValueError("the head similarity of a selection needs head signatures in the pool and target stores")
    rows = _rows(train, ids)
    per = [cosine(np.asarray(train.signatures[c], np.float64)[rows].mean(0),
                  np.asarray(target.signatures[c], np.float64).mean(0)) for c in range(len(train.weights))]
    w = [float(x) for x in train.weights]
    return {"cosine": float(np.dot(w, per)), "per_checkpoint": per, "weights": w, "n_selected": len(rows),
            "what": "sum_i w_i cos(mean signature of the selection, target's pattern) at the warmup checkpoints"}


def selection_gradient_similarity(train, target, ids: Sequence[str]) -> dict[str, Any]:
    """gsim(S) of the module doc for the selected pool ids ``ids`` (``train`` / ``target``: FeatureSets)."""
    rows = _rows(train, ids)
    per = []
    for c in range(len(train.weights)):
        x = np.asarray(train.checkpoints[c], np.float64)[rows]
        v = np.asarray(target.checkpoints[c], np.float64)
        per.append(cosine(_unit(x).mean(0), _unit(v).mean(0)))
    w = [float(x) for x in train.weights]
    return {"cosine": float(np.dot(w, per)), "per_checkpoint": per, "weights": w, "n_selected": len(rows),
            "what": "sum_i w_i cos(mean unit gradient feature of the selection, the target's) at the warmup checkpoints"}


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def _rows(train, ids: Sequence[str]) -> np.ndarray:
    where = {i: k for k, i in enumerate(train.ids)}
    missing = [i for i in ids if i not in where]
    if missing or not ids:
        raise ValueError(f"{len(missing)} selected id(s) are not rows of the pool's features (e.g. {missing[:3]})"
                         if missing else "an empty selection has no similarity to the target")
    return np.sort(np.array([where[i] for i in ids]))


# ----------------------------------------------------------------------------- correlation and its null
@dataclass(frozen=True)
class CorrelationTest:
    """r of x with y over n points and its two-sided permutation p-value (NaN both when n < 3 or x or y is
    constant: there is no correlation to test)."""

    method: str
    r: float
    p: float
    n: int
    n_perm: int
    seed: int


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, method="average")


def correlation_test(x: Sequence[float], y: Sequence[float], method: str = "pearson", *, n_perm: int = N_PERM,
                     seed: int = 0) -> CorrelationTest:
    """Pearson (or Spearman: Pearson of the average ranks) correlation of ``x`` and ``y`` with a permutation
    p-value: y is shuffled ``n_perm`` times (numpy's generator seeded with ``seed``), and

        p = (1 + #{perm : |r_perm| >= |r|}) / (1 + n_perm)

    (two-sided; the observed order counts as one of the permutations, so p > 0). A tie within 1e-12 counts."""
    if method not in CORRELATIONS:
        raise ValueError(f"correlation {method!r}: use one of {', '.join(CORRELATIONS)}")
    if n_perm < 1:
        raise ValueError(f"n_perm={n_perm}: give at least one permutation")
    a, b = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"x has {a.size} values and y {b.size}; give one pair per point")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x and y must be finite; leave out the points without a value")
    n = a.size
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:  # (a constant's centred values need not be exactly 0)
        return CorrelationTest(method, float("nan"), float("nan"), n, n_perm, seed)
    if method == "spearman":
        a, b = _ranks(a), _ranks(b)
    a, b = a - a.mean(), b - b.mean()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    r = float(a @ b / den)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, n)), axis=1)       # [n_perm, n] uniform random orders
    null = (b[perms] @ a) / den                                # permuting b keeps its mean and norm
    p = (1 + int((np.abs(null) >= abs(r) - 1e-12).sum())) / (1 + n_perm)
    return CorrelationTest(method, r, p, n, n_perm, seed)


@dataclass(frozen=True)
class CorrelationDifference:
    """Does x1 go with y more strongly than x2 does: d = |r(x1, y)| - |r(x2, y)| over the same n points, with a
    percentile bootstrap 95% interval (points drawn with replacement, the same draw for both r's; replicates
    where a drawn x or y is constant are left out and counted). NaN when n < MIN_DIFF_POINTS (a bootstrap of
    fewer cells says little) or either r is undefined."""

    method: str
    r1: float
    r2: float
    d: float
    lo: float
    hi: float
    n: int
    n_boot: int
    n_used: int
    seed: int

    @property
    def excludes_zero(self) -> bool:
        return bool(np.isfinite(self.lo) and (self.lo > 0 or self.hi < 0))


def _corr_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row of a with the same row of b ([B, n] each); NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (a * b).sum(axis=1) / np.where(den > 1e-12, den, 1.0), np.nan)


def correlation_difference(x1: Sequence[float], x2: Sequence[float], y: Sequence[float], method: str = "pearson",
                           *, n_boot: int = 2000, seed: int = 0) -> CorrelationDifference:
    """|r(x1, y)| - |r(x2, y)| and its bootstrap interval (:class:`CorrelationDifference`); Spearman ranks each
    drawn sample anew. The question of docs/bridge.md: does head similarity predict the score better than
    gradient similarity does (x1 = head, x2 = gradient similarity, over the same cells)."""
    if method not in CORRELATIONS:
        raise ValueError(f"correlation {method!r}: use one of {', '.join(CORRELATIONS)}")
    a1, a2, b = (np.asarray(v, np.float64).ravel() for v in (x1, x2, y))
    if not (a1.shape == a2.shape == b.shape):
        raise ValueError(f"x1, x2 and y have {a1.size}, {a2.size} and {b.size} values; give one triple per point")
    if not (np.isfinite(a1).all() and np.isfinite(a2).all() and np.isfinite(b).all()):
        raise ValueError("x1, x2 and y must be finite; leave out the points without a value")
    n, nan = a1.size, float("nan")

    def rs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u1, u2, v = a1[idx], a2[idx], b[idx]
        if method == "spearman":
            from scipy.stats import rankdata

            u1, u2, v = (rankdata(w, method="average", axis=1) for w in (u1, u2, v))
        return _corr_rows(u1, v), _corr_rows(u2, v)

    r1, r2 = (float(r[0]) for r in rs(np.arange(n)[None, :])) if n >= 3 else (nan, nan)
    if n < MIN_DIFF_POINTS or not (np.isfinite(r1) and np.isfinite(r2)):
        return CorrelationDifference(method, r1, r2, nan, nan, nan, n, n_boot, 0, seed)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    b1, b2 = rs(idx)
    d = np.abs(b1) - np.abs(b2)
    d = d[np.isfinite(d)]
    lo, hi = (float(q) for q in np.percentile(d, [2.5, 97.5])) if d.size else (nan, nan)
    return CorrelationDifference(method, r1, r2, abs(r1) - abs(r2), lo, hi, n, n_boot, int(d.size), seed)


def by_selection(points: pd.DataFrame) -> pd.DataFrame:
    """The points with one line per distinct selection: cells of one ratio whose head and gradient similarities
    are equal (a deterministic method picks the same records at every training seed, and an ablation whose check
    never fired picks what the method picks; only the training differs) become one point with their mean score,
    ``n_cells`` and the methods joined by "=" in ``method``. The cells of such a selection are not independent
    draws of x, so a correlation over cells counts each selection several times and its p-value is too small;
    over selections it is not."""
    if points.empty:
        return points.assign(n_cells=pd.Series(dtype=int))
    key = points[[X_HEADS, X_GRAD]].astype(float).round(12).astype(str).agg("|".join, axis=1)
    g = points.assign(_key=key).groupby(["ratio", "_key"], sort=False, dropna=False)
    out = g.agg(method=("method", lambda m: "=".join(dict.fromkeys(map(str, m)))), score=("score", "mean"),
                **{X_HEADS: (X_HEADS, "first"), X_GRAD: (X_GRAD, "first")},
                n_cells=("score", "size")).reset_index().drop(columns="_key")
    return out[["method", "ratio", "score", X_HEADS, X_GRAD, "n_cells"]]


# ----------------------------------------------------------------------------- one target's closed loop
@dataclass
class TargetLoop:
    """The closed loop of one target: the change heatmaps and the points of the two scatters.

    ``changes``: label -> dAP [L, H] averaged over the label's seeds, for the full-data model and every
    selection (label = method, or "method @ ratio" when the target has several ratios), in row order.
    ``points``: one line per cell with a selection: method, ratio, seed, score, head_similarity,
    change_similarity, gradient_similarity (NaN where a row lacks it), config_hash.
    ``tests``: x column -> correlation -> :class:`CorrelationTest` over the points where x is known.
    ``versus``: correlation -> :class:`CorrelationDifference` of head vs gradient similarity over the distinct
    selections where both are known (does the head side go with the score more strongly).
    ``selections``/``selection_tests``: the points merged per distinct selection (:func:`by_selection`) and the
    head and gradient similarity's correlation tests over them: the honest n when methods are deterministic.
    ``notes``: sentences about rows left out, and why.
    """

    target: str
    metric: str | None
    shape: tuple[int, int]
    changes: dict[str, np.ndarray]
    points: pd.DataFrame
    tests: dict[str, dict[str, CorrelationTest]]
    notes: list[str] = field(default_factory=list)
    versus: dict[str, CorrelationDifference] = field(default_factory=dict)
    selections: pd.DataFrame | None = None            # :func:`by_selection` of the points
    selection_tests: dict[str, dict[str, CorrelationTest]] = field(default_factory=dict)  # over those

    @property
    def zmax(self) -> float:
        """The largest |dAP| over the heatmaps: one symmetric colour scale for all of them."""
        return max((float(np.abs(c).max()) for c in self.changes.values()), default=0.0)


def loop_targets(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Targets of finished rows that carry a head pattern, in row order (none for rows recorded before)."""
    out: list[str] = []
    for r in latest_done(rows).values():
        if row_pattern(r) is not None and r["target"] not in out:
            out.append(r["target"])
    return out


def closed_loop(rows: Iterable[dict[str, Any]], target: str, metric: str | None = None, *, n_perm: int = N_PERM,
                seed: int = 0) -> TargetLoop | None:
    """The closed loop of ``target`` over finished registry rows (each experiment's latest row per cell, as the
    tables read them); None when none of its rows carries a pattern. ``metric``: the score (each row's
    primary metric when it lacks it, as in the tables)."""
    done = [r for r in latest_done(rows).values() if r["target"] == target]
    with_p = [r for r in done if row_pattern(r) is not None]
    if not with_p:
        return None
    notes: list[str] = []
    bases = [r for r in with_p if r["method"] == BASE]
    base = bases[-1] if bases else None
    ref = base["info"][PATTERN] if base is not None else None
    shape = tuple(ref["shape"]) if ref else tuple(with_p[0]["info"][PATTERN]["shape"])
    if base is None:
        notes.append("The base model's pattern is missing (its row has none): no change can be computed; "
                     "run the spec's base cell with eval.head_pattern on.")

    def change(r: dict[str, Any]) -> np.ndarray | None:
        rec = r["info"][PATTERN]
        if ref is None:
            return None
        if rec["ids"] != ref["ids"] or rec["shape"] != ref["shape"] or rec.get("max_length") != ref.get("max_length"):
            notes.append(f"{r['method']} (ratio {r['ratio']}, seed {r['seed']}): its pattern was measured on other "
                         "examples or settings than the base model's, so it is left out.")
            return None
        return row_pattern(r) - row_pattern(base)

    deltas = {r["config_hash"]: change(r) for r in with_p}
    full = [deltas[r["config_hash"]] for r in with_p if r["method"] == "full"
            and deltas[r["config_hash"]] is not None]
    full_change = np.mean(full, axis=0) if full else None
    if ref is not None and full_change is None:
        notes.append("No full-data model with a pattern: the change similarity is not defined.")
    sel = [r for r in done if r["method"] not in (BASE, "full")]
    several = len({r["ratio"] for r in sel}) > 1

    def label(r: dict[str, Any]) -> str:
        return f"{r['method']} @ {r['ratio']:g}" if several and r["ratio"] is not None else str(r["method"])

    groups: dict[str, list[np.ndarray]] = {}
    for r in with_p:
        d = deltas[r["config_hash"]]
        if r["method"] != BASE and d is not None:
            groups.setdefault(label(r), []).append(d)
    changes = {k: np.mean(v, axis=0) for k, v in groups.items()}
    points = []
    # One metric for every point: the asked one where any cell reports it, else the first cell's primary one. A
    # cell without it (measured before the metric existed) is left out, never scored by another metric.
    asked = metric if metric and any(metric in (r.get("metrics") or {}) for r in sel) else None
    used_metric = asked or next((primary_metric(r.get("metrics"), metric)[0] for r in sel), None)
    lacking = 0
    for r in sel:
        score = (r.get("metrics") or {}).get(used_metric) if used_metric else None
        lacking += score is None
        d = deltas.get(r["config_hash"])
        hs = ((r.get("info") or {}).get(SIMILARITY) or {}).get("cosine")
        gs = ((r.get("info") or {}).get(GRADIENT) or {}).get("cosine")
        points.append({"method": r["method"], "ratio": r["ratio"], "seed": r["seed"],
                       "score": np.nan if score is None else score,
                       X_HEADS: np.nan if hs is None else float(hs),
                       X_CHANGE: cosine(d, full_change) if d is not None and full_change is not None else np.nan,
                       X_GRAD: np.nan if gs is None else float(gs), "config_hash": r["config_hash"]})
    pts = pd.DataFrame(points, columns=["method", "ratio", "seed", "score", X_HEADS, X_CHANGE, X_GRAD, "config_hash"])
    tests: dict[str, dict[str, CorrelationTest]] = {}
    for x in X_LABELS:
        ok = pts[np.isfinite(pts[x].astype(float)) & np.isfinite(pts["score"].astype(float))]
        tests[x] = {m: correlation_test(ok[x], ok["score"], m, n_perm=n_perm, seed=seed) for m in CORRELATIONS}
    both = pts[np.isfinite(pts[X_HEADS].astype(float)) & np.isfinite(pts[X_GRAD].astype(float))
               & np.isfinite(pts["score"].astype(float))]
    sels = by_selection(both)
    versus = {m: correlation_difference(sels[X_HEADS], sels[X_GRAD], sels["score"], m, seed=seed)
              for m in CORRELATIONS}
    sel_tests = {x: {m: correlation_test(sels[x], sels["score"], m, n_perm=n_perm, seed=seed) for m in CORRELATIONS}
                 for x in (X_HEADS, X_GRAD)}
    if lacking and used_metric:
        notes.append(f"{lacking} of {len(sel)} trained cells do not report {used_metric} (measured before it existed; "
                     "`g2is bench remeasure SPEC` adds it) and are left out.")
    if sel and pts[X_HEADS].isna().all():
        notes.append("No selection carries a head similarity: the spec's gradient stores have no head signatures "
                     "(it lists no gradient method), so only the change similarity is shown.")
    return TargetLoop(target, used_metric or metric, (int(shape[0]), int(shape[1])), changes, pts, tests,
                      list(dict.fromkeys(notes)), versus, sels, sel_tests)

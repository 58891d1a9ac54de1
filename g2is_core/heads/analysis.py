"""The paper's analyses of activation patterns, as pure functions on numpy arrays.

Nothing here touches a model: inputs are [layer, head] patterns (or stacks of them) and every
function is tested on small hand-made matrices. See heads_method.md sections 2 and 3 for what
each number means and the pitfalls it guards against (raw patterns shrink with the loss, any two
raw patterns correlate through layer structure, so normalised patterns and nulls are reported).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np


# ----------------------------------------------------------------------------- per task
def normalise(p: np.ndarray) -> np.ndarray:
    """The pattern scaled to sum 1 (raw patterns shrink as the loss falls; heads_method.md 3)."""
    p = np.asarray(p, dtype=np.float64)
    s = p.sum()
    if s <= 0:
        raise ValueError("cannot normalise a pattern whose entries sum to zero or less")
    return p / s


def change(before: np.ndarray, after: np.ndarray, *, normalised: bool = False) -> np.ndarray:
    """dAP = after - before ([layer, head]); of the sum-1 patterns when ``normalised``."""
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if b.shape != a.shape:
        raise ValueError(f"patterns of different shapes {b.shape} and {a.shape}; were they measured on the same model?")
    return normalise(a) - normalise(b) if normalised else a - b


def gini(x: np.ndarray) -> float:
    """Gini coefficient of the (non-negative) entries: 0 = all equal, -> 1 = one entry holds all.

    G = sum_i (2i - n - 1) x_(i) / (n sum x), x sorted ascending, i = 1..n.
    """
    v = np.sort(np.asarray(x, np.float64).ravel())
    if v.size == 0 or v.sum() <= 0:
        raise ValueError("the Gini coefficient needs non-negative entries with a positive sum")
    if v[0] < 0:
        raise ValueError("the Gini coefficient is defined here for non-negative entries (use |dAP|)")
    n = v.size
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * v).sum() / (n * v.sum()))


def cv(x: np.ndarray) -> float:
    """Coefficient of variation of the entries: population std / mean."""
    v = np.asarray(x, np.float64).ravel()
    m = v.mean()
    if m == 0:
        raise ValueError("the coefficient of variation is undefined for a zero mean")
    return float(v.std() / m)


def top_heads(p: np.ndarray, k: int = 10, *, by_abs: bool = True) -> list[tuple[int, int, float]]:
    """The k heads with the largest (absolute) value: [(layer, head, value)], largest first."""
    a = np.asarray(p, np.float64)
    key = np.abs(a) if by_abs else a
    flat = np.argsort(-key.ravel(), kind="stable")[:k]
    return [(int(f // a.shape[1]), int(f % a.shape[1]), float(a.ravel()[f])) for f in flat]


def task_summary(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Finding 1 per task: concentration (Gini, CV) before and after SFT, and the size of the change."""
    d = change(before, after)
    dn = change(before, after, normalised=True)
    return {"gini_before": gini(before), "gini_after": gini(after), "cv_before": cv(before), "cv_after": cv(after),
            "sum_before": float(np.sum(before)), "sum_after": float(np.sum(after)),
            "change_l1": float(np.abs(d).sum()), "change_norm_l1": float(np.abs(dn).sum()),
            "corr_before_after": pearson(before, after)}


# ----------------------------------------------------------------------------- similarity
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the flattened entries (nan if either is constant)."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def _rank(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, method="average")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the flattened entries (ties get average ranks)."""
    return pearson(_rank(np.asarray(a).ravel()), _rank(np.asarray(b).ravel()))


def jaccard_topk(a: np.ndarray, b: np.ndarray, k: int = 10, *, by_abs: bool = True) -> float:
    """|top-k heads of a  n  top-k heads of b| / |union| (heads ranked by absolute value)."""
    sa = {(l, h) for l, h, _ in top_heads(a, k, by_abs=by_abs)}
    sb = {(l, h) for l, h, _ in top_heads(b, k, by_abs=by_abs)}
    return len(sa & sb) / len(sa | sb) if sa | sb else float("nan")


SIMILARITIES = {"pearson": pearson, "spearman": spearman, "jaccard": jaccard_topk}


def similarity_matrix(patterns: Mapping[str, np.ndarray], method: str = "pearson", *, k: int = 10) -> np.ndarray:
    """[task, task] similarity of the given patterns (in the mapping's order); diagonal = self."""
    if method not in SIMILARITIES:
        raise ValueError(f"similarity {method!r}: use one of {', '.join(SIMILARITIES)}")
    fn = SIMILARITIES[method]
    names = list(patterns)
    n = len(names)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = patterns[names[i]], patterns[names[j]]
            out[i, j] = out[j, i] = fn(a, b, k) if method == "jaccard" else fn(a, b)
    return out


@dataclass
class NoiseFloor:
    """Similarity of one task with itself across replicates (seeds or disjoint sample sets),
    next to the similarity between different tasks. Task specificity needs within > between."""

    within: dict[str, float]                 # task -> mean similarity of its replicates
    between: float                           # mean similarity over pairs of different tasks
    between_values: list[float] = field(default_factory=list)

    @property
    def within_mean(self) -> float:
        v = [x for x in self.within.values() if np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")


def noise_floor(replicates: Mapping[str, Sequence[np.ndarray]], method: str = "pearson", *, k: int = 10) -> NoiseFloor:
    """Within-task similarity (pairs of replicates of a task) and between-task similarity (pairs of
    replicates of different tasks, replicate index matched where possible)."""
    fn = SIMILARITIES[method]

    def sim(a, b):
        return fn(a, b, k) if method == "jaccard" else fn(a, b)

    within = {}
    for t, reps in replicates.items():
        pairs = [sim(reps[i], reps[j]) for i in range(len(reps)) for j in range(i + 1, len(reps))]
        within[t] = float(np.mean(pairs)) if pairs else float("nan")
    names = list(replicates)
    between = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ri, rj = replicates[names[i]], replicates[names[j]]
            for r in range(min(len(ri), len(rj))):
                between.append(sim(ri[r], rj[r]))
    return NoiseFloor(within, float(np.mean(between)) if between else float("nan"), between)


# ----------------------------------------------------------------------------- composition
@dataclass
class CompositionFit:
    """y ~ intercept + sum_j coef_j x_j over heads (one observation per head)."""

    method: str
    names: list[str]
    coef: np.ndarray
    intercept: float
    r2: float
    adj_r2: float
    n: int

    def as_dict(self) -> dict:
        return {"method": self.method, "coef": dict(zip(self.names, map(float, self.coef))),
                "intercept": self.intercept, "r2": self.r2, "adj_r2": self.adj_r2, "n": self.n}


def _design(basics: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(basics)
    if not names:
        raise ValueError("the composition regression needs at least one basic-task pattern")
    X = np.stack([np.asarray(basics[n], np.float64).ravel() for n in names], 1)   # [heads, tasks]
    return names, X


def _fit(y: np.ndarray, X: np.ndarray, method: str) -> tuple[np.ndarray, float, float]:
    """(coef [p], intercept, R^2) of y on X with an intercept."""
    n = len(y)
    if method == "ols":
        A = np.column_stack([np.ones(n), X])
        beta, *_ = np.linalg.lstsq(A, y, rcond=None)
        c0, coef = float(beta[0]), beta[1:]
    elif method == "nnls":
        from scipy.optimize import nnls

        # Non-negative weights, free intercept (as the difference of two non-negative columns).
        A = np.column_stack([X, np.ones(n), -np.ones(n)])
        beta, _ = nnls(A, y)
        coef, c0 = beta[:-2], float(beta[-2] - beta[-1])
    else:
        raise ValueError(f"regression {method!r}: use 'ols' or 'nnls'")
    res = y - (c0 + X @ coef)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((res ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return coef, c0, r2


def adjusted_r2(r2: float, n: int, p: int) -> float:
    """1 - (1 - R^2) (n - 1) / (n - p - 1), p predictors besides the intercept."""
    return 1.0 - (1.0 - r2) * (n - 1) / (n - p - 1) if n - p - 1 > 0 else float("nan")


def fit_composition(target: np.ndarray, basics: Mapping[str, np.ndarray], method: str = "ols") -> CompositionFit:
    """Regress vec(target) on vec(basic_j) over heads (finding 2), OLS or non-negative LS."""
    names, X = _design(basics)
    y = np.asarray(target, np.float64).ravel()
    if X.shape[0] != y.size:
        raise ValueError(f"target has {y.size} heads, basics have {X.shape[0]}; measure them on the same model")
    coef, c0, r2 = _fit(y, X, method)
    return CompositionFit(method, names, coef, c0, r2, adjusted_r2(r2, y.size, X.shape[1]), y.size)


@dataclass
class PermutationNull:
    observed: float
    null: np.ndarray          # [n_perm] R^2 under shuffled head order of the basics
    p_value: float            # (1 + #{null >= observed}) / (1 + n_perm)

    @property
    def null_mean(self) -> float:
        return float(self.null.mean())

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.null, q))


def permutation_null(target: np.ndarray, basics: Mapping[str, np.ndarray], method: str = "ols", *,
                     n_perm: int = 1000, seed: int = 0) -> PermutationNull:
    """R^2 of the fit when the head order of the basic patterns is shuffled (rows of the design
    permuted jointly: the basics keep their mutual structure, their link to the target is cut)."""
    names, X = _design(basics)
    y = np.asarray(target, np.float64).ravel()
    _, _, obs = _fit(y, X, method)
    rng = np.random.default_rng(seed)
    null = np.array([_fit(y, X[rng.permutation(len(y))], method)[2] for _ in range(n_perm)])
    p = (1 + int((null >= obs - 1e-12).sum())) / (1 + n_perm)
    return PermutationNull(obs, null, p)


# ----------------------------------------------------------------------------- convergence
def convergence(patterns: np.ndarray, *, normalised: bool = True) -> dict[str, np.ndarray]:
    """Finding 3: for patterns [step, layer, head], Pearson correlation and MSE of each step's
    pattern with the final one (sum-1 patterns when ``normalised``; MSE is then x 1e6 -- see
    ``mse_scale`` -- to keep numbers readable)."""
    P = np.asarray(patterns, np.float64)
    if normalised:
        P = np.stack([normalise(p) for p in P])
    final = P[-1]
    scale = 1e6 if normalised else 1.0
    return {"corr": np.array([pearson(p, final) for p in P]),
            "mse": np.array([float(((p - final) ** 2).mean()) * scale for p in P]),
            "mse_scale": np.array(scale)}


def relative_change(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> float:
    """||after - before|| / ||before|| over all given tensors together (Frobenius)."""
    num = sum(float(((np.asarray(after[k], np.float64) - np.asarray(before[k], np.float64)) ** 2).sum()) for k in before)
    den = sum(float((np.asarray(before[k], np.float64) ** 2).sum()) for k in before)
    return float(np.sqrt(num / den)) if den > 0 else float("nan")

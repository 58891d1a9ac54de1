"""Core knowledge of the target and the G2IS gradient walk (spec g2is_method.md, sections 4 and 5).

Core knowledge (section 4): PCA of the target features Y [M, d]; keep the smallest K whose
cumulative explained-variance ratio EXCEEDS the threshold (default 0.5); components k_1..k_K are
unit vectors, weights are the explained-variance ratios renormalised over the kept components.
Faithful mode is every option off. Component signs follow scikit-learn's PCA (>= 1.5: the entry of
largest magnitude of each component is positive), since the reference code uses sklearn and
anchors are picked by SIGNED similarity, so the sign convention changes the selection.

Options (spec "pitfalls"), and our decisions where the spec is OPEN:
- ``align_signs``: flip k_j so that <k_j, mean(Y)> >= 0.
- ``add_mean``: add the normalised mean target direction as a component. Its weight is the share
  of the uncentred energy it carries, M |mu|^2 / sum_i |y_i|^2 (exact split: sum |y_i|^2 =
  M |mu|^2 + sum |y_i - mu|^2); the kept PCs share the rest in proportion to their ratios.
  Components are then ordered by weight (highest first).
- ``centred=False``: SVD of Y itself (no centring); ratios are the shares of sum |y_i|^2.
- M = 1 (one target example), or all target rows identical: centred PCA has no variance. We raise
  a ValueError that says to use ``centred=False`` (the component is then the example's direction)
  unless ``add_mean`` is on, in which case the core is the mean direction alone.
- The reference's "fraction of components" mode computed from d instead of M is not offered.

The walk (section 5), faithful: budgets B_j by largest remainder; for each component j in order,
with a global exclusion set E (everything selected so far):
1. anchor = the first of the ``anchors_top`` (1000) pool examples of highest signed similarity
   <x, k_j> not in E, else the best-scoring example not in E. (Both branches pick the first not-in-E
   example of the same order; the trajectory's ``rank`` column says whether it lay in the top pool.)
2. from the last added node s*, take the first neighbour z (descending similarity) not in E that
   passes (a) no conflict: <x_z, x_s> >= 0 for every s selected for THIS component, and
   (b) consistency: |cos(S + x_z, k_j)| >= delta |cos(S, k_j)|, S = sum of this component's
   selected features;
3. else fall back to the first example not in E, in descending <x, k_j>, that passes (a) and (b);
4. else the component stops short (no relaxation; the under-fill is recorded).

Implementation notes (why it is fast and still exact):
- each component's signed order is sorted once (stable: ties by index); a cursor skips the prefix
  that is entirely in E (E only grows). A fallback still rescans from that cursor, because a node
  that failed consistency earlier may pass now that S has changed;
- a conflict failure is permanent within a component (the set of selected nodes only grows, so
  min_s <x_z, x_s> only falls), hence per node we keep a running min and sum of its dot products
  with the component's selected set, folded in lazily (only the members added since the node was
  last looked at), with a matrix product over a chunk of candidates;
- every similarity is computed in float64 from the (float32) features, so decisions agree with a
  dense reference implementation (tests/unit/test_walk.py) up to float64 rounding.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import workspace as ws
from ..linalg import check_finite_rows

SOURCES = ("anchor", "local", "fallback")


@dataclass(frozen=True)
class TrajectoryStep:
    """One selected node of the walk: a row of ``trajectory.parquet`` (the field order is the column order).

    The ``nbr_*`` counts are candidates passed over in s*'s neighbour list before this pick, the
    ``scan_*`` counts those passed over in the component's signed order (the anchor scan, or the
    fallback scan); each by reason: already in E, conflict (a), consistency (b).
    """

    component: int
    """j, the core-knowledge component this node was selected for."""
    step: int
    """0, 1, 2, ... within the component; step 0 is the anchor."""
    node: int
    """the pool row index of the selected record."""
    source: str
    """how it was found: "anchor", "local" (a neighbour of s*) or "fallback" (the signed-order scan)."""
    rank: int
    """the node's position in the component's signed order (descending <x, k_j>, ties by index)."""
    proj: float
    """signed similarity <x, k_j>."""
    sim_prev: float
    """cosine with the previous node s* (NaN for an anchor)."""
    consistency_before: float
    """signed cos(S, k_j) before adding the node (NaN for an anchor: S is empty)."""
    consistency_after: float
    """signed cos(S + x, k_j) after adding it."""
    nbr_excluded: int
    """neighbours of s* skipped because they were already selected (in E)."""
    nbr_conflict: int
    """neighbours of s* rejected by the no-conflict check (a)."""
    nbr_consistency: int
    """neighbours of s* rejected by the consistency check (b)."""
    scan_excluded: int
    """signed-order rows skipped because they were already in E."""
    scan_conflict: int
    """signed-order rows rejected by the no-conflict check (a)."""
    scan_consistency: int
    """signed-order rows rejected by the consistency check (b)."""

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, c) for c in TRAJECTORY_COLUMNS)


TRAJECTORY_COLUMNS = tuple(f.name for f in fields(TrajectoryStep))


# ----------------------------------------------------------------------------- core knowledge
@dataclass
class CoreKnowledge:
    """The target's core-knowledge directions.

    components: [K, d] float64, unit rows, highest weight first.
    weights:    [K] float64, non-negative, summing to 1 (the walk's budget shares).
    explained:  [K] share of the target's variance (centred, or uncentred energy) each explains.
    kinds:      K labels, "pc" (a principal component) or "mean" (the mean target direction).
    cumulative: cumulative explained-variance ratio of the kept PCs (compared with the threshold).
    n_target:   M, the number of target examples.
    """

    components: np.ndarray
    weights: np.ndarray
    explained: np.ndarray
    kinds: list[str] = field(default_factory=list)
    cumulative: float = float("nan")
    n_target: int = 0
    config: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def summary(self) -> dict[str, Any]:
        return {"K": self.k, "weights": [float(w) for w in self.weights],
                "explained": [float(e) for e in self.explained], "kinds": list(self.kinds),
                "cumulative": float(self.cumulative), "n_target": int(self.n_target), "config": dict(self.config)}


def _sklearn_signs(vt: np.ndarray) -> np.ndarray:
    """sklearn >= 1.5 ``svd_flip(u_based_decision=False)``: largest-|.| entry of each row positive."""
    idx = np.argmax(np.abs(vt), axis=1)
    signs = np.sign(vt[np.arange(len(vt)), idx])
    signs[signs == 0] = 1.0
    return vt * signs[:, None]


def core_knowledge(target: np.ndarray, variance: float = 0.5, align_signs: bool = False, add_mean: bool = False,
                   centred: bool = True) -> CoreKnowledge:
    """Core-knowledge components of target features ``target`` [M, d] (spec section 4).

    K = the smallest number of components whose cumulative explained-variance ratio exceeds
    ``variance`` (strictly, as sklearn's ``PCA(n_components=variance)``), at most the number of
    components with non-zero variance.
    """
    y = np.asarray(target, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 1:
        raise ValueError(f"target features must be a 2-D array [M, d] with M >= 1; got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("target features contain NaN or inf; recompute or drop those rows")
    if not 0.0 < variance < 1.0:
        raise ValueError(f"variance threshold must be in (0, 1); got {variance}")
    m, d = y.shape
    mu = y.mean(axis=0)
    cfg = {"variance": float(variance), "align_signs": bool(align_signs), "add_mean": bool(add_mean),
           "centred": bool(centred)}
    a = y - mu if centred else y
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    energy = s ** 2
    total = energy.sum()
    # components whose variance is rounding noise are not directions of the target
    nonzero = int((energy > max(total, 1e-300) * 1e-12).sum()) if total > 0 else 0

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    if nonzero == 0:
        if centred and add_mean and np.linalg.norm(mu) > 0:
            return CoreKnowledge(unit(mu)[None, :], np.ones(1), np.ones(1), ["mean"], 0.0, m, cfg)
        why = "a single target example" if m == 1 else "target examples that are all identical"
        raise ValueError(f"centred PCA of {why} has no variance, so there are no components; use the uncentred "
                         "SVD (centred=False / --uncentred) or add the mean direction (add_mean=True / --add-mean)")
    ratio = energy[:nonzero] / total
    cum = np.cumsum(ratio)
    n_keep = min(int(np.searchsorted(cum, variance, side="right")) + 1, nonzero)
    comps = _sklearn_signs(vt[:n_keep])
    comps = comps / np.linalg.norm(comps, axis=1, keepdims=True)
    if align_signs:
        flip = comps @ mu < 0
        comps[flip] *= -1.0
    explained = ratio[:n_keep].copy()
    kinds = ["pc"] * n_keep
    weights = explained / explained.sum()
    if add_mean and np.linalg.norm(mu) > 0:
        # share of the uncentred energy carried by the mean: sum|y|^2 = M|mu|^2 + sum|y - mu|^2.
        # The mean gets that share as its weight, the kept components split the rest by their ratios.
        # (With centred=False the mean overlaps the first direction; allowed, rarely useful.)
        share = m * float(mu @ mu) / float((y ** 2).sum())
        explained = np.concatenate([[share], explained * (1.0 - share) if centred else explained])
        weights = np.concatenate([[share], weights * (1.0 - share)])
        comps = np.vstack([unit(mu)[None, :], comps])
        kinds = ["mean"] + kinds
        order = np.argsort(-weights, kind="stable")
        explained, weights, comps, kinds = explained[order], weights[order], comps[order], [kinds[i] for i in order]
    return CoreKnowledge(comps, weights, explained, kinds, float(cum[n_keep - 1]), m, cfg)


# ----------------------------------------------------------------------------- budgets
def budgets(B: int, weights: Sequence[float]) -> list[int]:
    """Split B over components: floor(B * w_j), remainder to the largest fractional parts.

    Weights are renormalised to sum 1 and the arithmetic is exact (fractions), so the result sums
    to B exactly; ties in the fractional part go to the lower component index.
    """
    if int(B) != B or B < 0:
        raise ValueError(f"budget must be a whole number >= 0; got {B!r}")
    w = [float(x) for x in weights]
    if not w or any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero; got {w}")
    fw = [Fraction(x) for x in w]
    tot = sum(fw)
    raw = [int(B) * x / tot for x in fw]
    base = [math.floor(r) for r in raw]
    rest = int(B) - sum(base)
    by_frac = sorted(range(len(w)), key=lambda j: (-(raw[j] - base[j]), j))
    for j in by_frac[:rest]:
        base[j] += 1
    return base


# ----------------------------------------------------------------------------- walk result
@dataclass
class WalkResult:
    """The outcome of a walk.

    selected:   [n_sel] int64 row indices in selection order (component by component).
    components: one row per component: component, kind, weight, budget, filled, fallbacks, stop
                ("filled" | "no candidate passes" | "pool exhausted" | "zero budget"), and for a
                component that stopped short, scan_conflict / scan_consistency of its last, failed scan.
    trajectory: one row per selected node (columns :data:`TRAJECTORY_COLUMNS`): ``rank`` is the
                node's position in the component's signed order, ``proj`` its signed similarity
                <x, k_j>, ``sim_prev`` its cosine with the previous node s* (NaN for an anchor),
                ``consistency_*`` the signed cos(S, k_j) before / after adding it, and the
                ``nbr_*`` / ``scan_*`` counts are candidates passed over in the neighbour list /
                in the global order, by reason (already excluded, conflict, consistency).
    """

    selected: np.ndarray
    components: Any  # pandas.DataFrame
    trajectory: Any  # pandas.DataFrame
    config: dict = field(default_factory=dict)
    core: CoreKnowledge | None = None

    @property
    def budget(self) -> int:
        return int(self.config.get("B", int(self.components["budget"].sum())))

    def summary(self) -> str:
        fills = ", ".join(f"c{r.component} {r.filled}/{r.budget}" for r in self.components.itertuples())
        return f"selected {len(self.selected)} / {self.budget} (fill per component: {fills})"

    def save(self, directory: str | Path, inputs: dict[str, Any] | None = None) -> Path:
        """Write selected_ids.json, trajectory.parquet (+ core_components.npy) and, last, sidecar.json."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        ws.write_json(d / "selected_ids.json", [int(i) for i in self.selected])
        with ws.atomic_path(d / "trajectory.parquet") as tmp:
            self.trajectory.to_parquet(tmp, index=False)
        if self.core is not None:
            ws.write_npy(d / "core_components.npy", np.asarray(self.core.components, dtype=np.float64))
        extra = {"n_selected": int(len(self.selected)), "components": self.components.to_dict(orient="records"),
                 "core": None if self.core is None else self.core.summary()}
        ws.write_sidecar(d, "g2is_walk", self.config, inputs=inputs, extra=extra)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "WalkResult":
        import pandas as pd

        d = Path(directory)
        meta = ws.read_sidecar(d)
        selected = np.asarray(ws.read_json(d / "selected_ids.json"), dtype=np.int64)
        traj = pd.read_parquet(d / "trajectory.parquet")
        comps = pd.DataFrame(meta.get("components", []))
        core = None
        if meta.get("core") and (d / "core_components.npy").exists():
            c = meta["core"]
            core = CoreKnowledge(np.load(d / "core_components.npy", allow_pickle=False), np.asarray(c["weights"]),
                                 np.asarray(c["explained"]), list(c["kinds"]), c["cumulative"], c["n_target"],
                                 c.get("config", {}))
        return cls(selected, comps, traj, meta.get("config", {}), core)


def replay(trajectory) -> np.ndarray:
    """The selection (ordered row indices) a trajectory describes; checks it is well formed."""
    t = trajectory.sort_values(["component", "step"], kind="stable")
    for c, grp in t.groupby("component", sort=True):
        steps = grp["step"].to_numpy()
        if not np.array_equal(steps, np.arange(len(steps))):
            raise ValueError(f"trajectory of component {c} has steps {steps[:10].tolist()}..., not 0, 1, 2, ...")
        if grp["source"].iloc[0] != "anchor" or (grp["source"].iloc[1:] == "anchor").any():
            raise ValueError(f"trajectory of component {c} must start with its anchor and have only one")
    sel = t["node"].to_numpy(np.int64)
    if len(np.unique(sel)) != len(sel):
        raise ValueError("trajectory selects a node twice; it is not a valid walk")
    return sel


# ----------------------------------------------------------------------------- the walk
class _Component:
    """Per-component state: the selected set and lazily folded dot-product caches."""

    def __init__(self, x: np.ndarray, sq: np.ndarray, kj: np.ndarray, proj: np.ndarray, cap: int,
                 conflict: bool = True, consistency: bool = True):
        n, d = x.shape
        self.conflict, self.consistency = conflict, consistency  # the checks (a) and (b); off = ablation
        self.x, self.sq, self.kj, self.proj = x, sq, kj, proj
        self.sel_mat = np.empty((cap, d), np.float64)   # features of the selected nodes
        self.m = 0
        self.s_vec = np.zeros(d, np.float64)           # S, the sum of selected features
        self.mindot = np.full(n, np.inf)               # min_s <x_z, x_s> over folded members
        self.sumdot = np.zeros(n)                      # sum_s <x_z, x_s> over folded members
        self.upto = np.zeros(n, np.int64)              # members folded so far, per node

    def cos_s(self) -> float:
        """Signed cos(S, k_j) (k_j is a unit vector)."""
        return float(self.s_vec @ self.kj) / math.sqrt(float(self.s_vec @ self.s_vec))

    def add(self, z: int) -> None:
        xz = self.x[z].astype(np.float64)
        self.sel_mat[self.m] = xz
        self.m += 1
        self.s_vec += xz

    def _fold(self, c: np.ndarray) -> None:
        u = self.upto[c]
        lo = int(u.min())
        if lo >= self.m:
            return
        dots = self.x[c].astype(np.float64) @ self.sel_mat[lo:self.m].T  # [|c|, m - lo]
        if (u == lo).all():
            self.mindot[c] = np.minimum(self.mindot[c], dots.min(axis=1))
            self.sumdot[c] += dots.sum(axis=1)
        else:
            fresh = np.arange(lo, self.m)[None, :] >= u[:, None]
            self.mindot[c] = np.minimum(self.mindot[c], np.where(fresh, dots, np.inf).min(axis=1))
            self.sumdot[c] += np.where(fresh, dots, 0.0).sum(axis=1)
        self.upto[c] = self.m

    def check(self, c: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For candidates ``c`` (not in E): (conflict_ok, consistency_ok, cos(S + x_z, k_j))."""
        # a conflict failure is final within the component (only then may a failed node's sums go stale)
        alive = c[self.mindot[c] >= 0] if self.conflict else c
        if len(alive):
            self._fold(alive)
        conflict_ok = self.mindot[c] >= 0 if self.conflict else np.ones(len(c), bool)
        ss = float(self.s_vec @ self.s_vec)
        sk = float(self.s_vec @ self.kj)
        after = (sk + self.proj[c]) / np.sqrt(np.maximum(ss + 2.0 * self.sumdot[c] + self.sq[c], 1e-300))
        consistency_ok = np.abs(after) >= threshold if self.consistency else np.ones(len(c), bool)
        return conflict_ok, consistency_ok, after


def _first_pass(state: _Component, cands: np.ndarray, threshold: float, first: int = 4):
    """First candidate (in the given order) passing both checks, and the counts passed over.

    Candidates are checked lazily: the first ``first`` of them, then the rest (usually the first
    free neighbour passes, and checking costs a product with the component's selected set).
    Returns (position or -1, n_conflict, n_consistency, cos_after at the pick).
    """
    n_conf = n_cons = 0
    for lo, hi in ((0, first), (first, len(cands))):
        part = cands[lo:hi]
        if len(part) == 0:
            continue
        ok_conf, ok_cons, after = state.check(part, threshold)
        ok = ok_conf & ok_cons
        hit = int(np.argmax(ok)) if ok.any() else -1
        upto = hit if hit >= 0 else len(part)
        n_conf += int((~ok_conf[:upto]).sum())
        n_cons += int((ok_conf[:upto] & ~ok_cons[:upto]).sum())
        if hit >= 0:
            return lo + hit, n_conf, n_cons, float(after[hit])
    return -1, n_conf, n_cons, float("nan")


def _project(x: np.ndarray, comps: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(x @ comps.T [N, K], row squared norms [N]) in float64 for float32 x [N, d], in one pass
    through a reused float64 block (no N x d float64 temporary)."""
    n = x.shape[0]
    proj = np.empty((n, comps.shape[0]), np.float64)
    sq = np.empty(n, np.float64)
    buf = np.empty((min(rows, n), x.shape[1]), np.float64)
    for a in range(0, n, rows):
        b = buf[:min(rows, n - a)]
        np.copyto(b, x[a:a + rows])
        np.matmul(b, comps.T, out=proj[a:a + len(b)])
        sq[a:a + len(b)] = np.einsum("ij,ij->i", b, b)
    return proj, sq


def _blas_threads():
    """Run numpy's BLAS on one thread for the walk: its products are small (a few candidates x the
    component's selected set), where threads only add overhead, and on a busy machine a
    multi-threaded OpenBLAS spin-waits and runs 10-50x slower."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional; without it BLAS keeps its own thread count
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def walk(train: np.ndarray, core: CoreKnowledge, neighbors: np.ndarray, B: int | None = None, *,
         ratio: float | None = None, delta: float = 0.8, anchors_top: int = 1000, chunk: int = 256,
         max_chunk: int = 16384, conflict: bool = True, consistency: bool = True) -> WalkResult:
    """The G2IS gradient walk (spec section 5, faithful).

    Args:
        train: [N, d] pool features, rows L2-normalised.
        core: the target's core knowledge (components [K, d], weights [K]).
        neighbors: [N, k] int, each node's neighbours in descending similarity (from build_knn).
        B: total budget; or ``ratio`` (B = floor(ratio * N)).
        delta: consistency factor (0.8 in the paper).
        anchors_top: size of the anchor pool (1000 in the reference).
        chunk, max_chunk: the fallback scans the signed order in chunks growing from ``chunk`` to
            ``max_chunk`` (speed only; the result does not depend on them).
        conflict, consistency: apply the no-conflict check (a) / the consistency check (b). Both on is
            the walk as specified; turning one off is the paper's ablation (the walk without that check).
    """
    with _blas_threads():
        return _walk(train, core, neighbors, B, ratio=ratio, delta=delta, anchors_top=anchors_top, chunk=chunk,
                     max_chunk=max_chunk, conflict=conflict, consistency=consistency)


def _walk(train, core, neighbors, B, *, ratio, delta, anchors_top, chunk, max_chunk, conflict=True,
          consistency=True) -> WalkResult:
    """Body of :func:`walk` (under the BLAS thread limit)."""
    import pandas as pd

    x = np.asarray(train)
    if x.ndim != 2:
        raise ValueError(f"train features must be a 2-D array [N, d]; got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    check_finite_rows(x, "train features of the walk")
    n, d = x.shape
    nbrs = np.asarray(neighbors)
    if nbrs.ndim != 2 or nbrs.shape[0] != n:
        raise ValueError(f"neighbors must be [N, k] with N={n} rows; got shape {nbrs.shape}")
    if nbrs.size and (nbrs.min() < 0 or nbrs.max() >= n):
        raise ValueError("neighbors hold indices outside 0..N-1; rebuild the graph for these features")
    nbrs = nbrs.astype(np.int64, copy=False)
    comps = np.atleast_2d(np.asarray(core.components, dtype=np.float64))
    if comps.shape[1] != d:
        raise ValueError(f"core components have d={comps.shape[1]} but train features have d={d}; "
                         "use features from the same gradient store (same projection seed and dimension)")
    if B is None:
        if ratio is None:
            raise ValueError("give a budget B or a ratio")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1]; got {ratio}")
        B = int(math.floor(ratio * n))
    if not 1 <= int(B) <= n:
        raise ValueError(f"budget B={B} must be between 1 and N={n}; raise the ratio or the count")
    if not delta >= 0:
        raise ValueError(f"delta must be >= 0; got {delta}")
    B = int(B)
    t0 = time.perf_counter()
    bud = budgets(B, core.weights)
    units = comps / np.linalg.norm(comps, axis=1, keepdims=True)
    proj_all, sq = _project(x, units)
    in_e = np.zeros(n, bool)
    selected: list[int] = []
    rows: list[TrajectoryStep] = []
    comp_rows: list[dict] = []
    kinds = list(core.kinds) if core.kinds else ["pc"] * len(comps)

    for j, kj in enumerate(comps):
        info = {"component": j, "kind": kinds[j], "weight": float(core.weights[j]), "budget": int(bud[j]),
                "filled": 0, "fallbacks": 0, "stop": "filled",
                "scan_conflict": 0, "scan_consistency": 0}
        comp_rows.append(info)
        if bud[j] == 0:
            info["stop"] = "zero budget"
            continue
        kj = units[j]
        proj = np.ascontiguousarray(proj_all[:, j])
        order = np.argsort(-proj, kind="stable")  # once per component; ties by index
        rank_of = np.empty(n, np.int64)
        rank_of[order] = np.arange(n)
        state = _Component(x, sq, kj, proj, bud[j], conflict=conflict, consistency=consistency)
        cursor = 0

        def advance(c: int) -> int:
            while c < n and in_e[order[c]]:
                # skip runs of excluded nodes with a vectorised look-ahead
                w = order[c:c + 4096]
                free = np.flatnonzero(~in_e[w])
                if len(free):
                    return c + int(free[0])
                c += len(w)
            return c

        cursor = advance(cursor)
        if cursor >= n:
            info["stop"] = "pool exhausted"
            continue
        z = int(order[cursor])
        state.add(z)
        in_e[z] = True
        selected.append(z)
        rows.append(TrajectoryStep(component=j, step=0, node=z, source="anchor", rank=cursor, proj=proj[z],
                                   sim_prev=np.nan, consistency_before=np.nan, consistency_after=state.cos_s(),
                                   nbr_excluded=0, nbr_conflict=0, nbr_consistency=0,
                                   scan_excluded=cursor, scan_conflict=0, scan_consistency=0))
        filled = 1
        while filled < bud[j]:
            prev = selected[-1]
            before = state.cos_s()
            threshold = delta * abs(before)
            # 2. local: the neighbour list of s*
            nl = nbrs[prev]
            free = ~in_e[nl]
            cands = nl[free]
            hit, n_conf, n_cons, after = _first_pass(state, cands, threshold)
            if hit >= 0:
                z = int(cands[hit])
                pos_in_list = int(np.flatnonzero(free)[hit])
                counts = {"nbr_excluded": pos_in_list - n_conf - n_cons, "nbr_conflict": n_conf,
                          "nbr_consistency": n_cons, "scan_excluded": 0, "scan_conflict": 0, "scan_consistency": 0}
                source = "local"
            else:
                nb_counts = {"nbr_excluded": int((~free).sum()), "nbr_conflict": n_conf, "nbr_consistency": n_cons}
                # 3. fallback: scan the signed order from the cursor, in growing chunks
                cursor = advance(cursor)
                p, size, s_conf, s_cons, z = cursor, chunk, 0, 0, -1
                while p < n:
                    w = order[p:p + size]
                    c = w[~in_e[w]]
                    hit, a, b, after = _first_pass(state, c, threshold)
                    s_conf, s_cons = s_conf + a, s_cons + b
                    if hit >= 0:
                        z = int(c[hit])
                        break
                    p += len(w)
                    size = min(max_chunk, size * 2)
                if z < 0:
                    info["stop"] = "no candidate passes"
                    info["scan_conflict"], info["scan_consistency"] = s_conf, s_cons
                    break
                counts = {**nb_counts, "scan_excluded": int(rank_of[z]) - s_conf - s_cons, "scan_conflict": s_conf,
                          "scan_consistency": s_cons}
                source = "fallback"
                info["fallbacks"] += 1
            sim_prev = float(x[z].astype(np.float64) @ x[prev].astype(np.float64))
            state.add(z)
            in_e[z] = True
            selected.append(z)
            rows.append(TrajectoryStep(component=j, step=filled, node=z, source=source, rank=int(rank_of[z]),
                                       proj=proj[z], sim_prev=sim_prev, consistency_before=before,
                                       consistency_after=after, **counts))
            filled += 1
        info["filled"] = filled

    traj = pd.DataFrame.from_records([r.as_tuple() for r in rows], columns=list(TRAJECTORY_COLUMNS))
    if traj.empty:
        traj = traj.astype({"component": "int64", "step": "int64", "node": "int64", "source": "object"})
    traj = traj.astype({"component": "int32", "step": "int32", "node": "int64", "rank": "int64",
                        **{c: "int64" for c in TRAJECTORY_COLUMNS if c.startswith(("nbr_", "scan_"))},
                        **{c: "float64" for c in ("proj", "sim_prev", "consistency_before", "consistency_after")}})
    comp_df = pd.DataFrame(comp_rows)
    cfg = {"B": B, "N": n, "d": d, "k": int(nbrs.shape[1]), "delta": float(delta), "anchors_top": int(anchors_top),
           "ratio": None if ratio is None else float(ratio), "budgets": [int(b) for b in bud],
           "seconds": round(time.perf_counter() - t0, 4),
           **({} if conflict else {"conflict_check": False}), **({} if consistency else {"consistency_check": False})}
    return WalkResult(np.asarray(selected, dtype=np.int64), comp_df, traj, cfg, core)

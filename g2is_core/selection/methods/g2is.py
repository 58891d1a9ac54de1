"""``g2is``: the G2IS gradient walk (Zhao et al. 2025; spec g2is_method.md), and THE G2IS pipeline that
``g2is walk``, ``g2is select --method g2is`` and ``g2is graph build`` all run:

    features -> [centre on the pool mean] -> kNN graph (cached by graph_key) -> core knowledge -> walk
    (graph build: the same without the walk, plus the target's core nodes and the 2-D layout)

:class:`G2isOptions` is the one place the G2IS settings and their defaults are written: the
``select`` method reads it, and both commands generate their flags from its fields. There is one
validation (:func:`check_options`, before any work) and one cache key (:func:`graph_key`).

- features: :meth:`FeatureSet.combined` (one unit feature per record, the LESS checkpoint-weighted
  cosine as inner product), or :func:`centred_pair` with ``pool_centre`` (docs/selection.md, "Hubs").
- graph: top-k cosine neighbours (:mod:`g2is_core.graph.knn`), cached in ``graphs/<graph_key>``;
  the key is (features key, k, search method), plus the core's identity for a mixed graph.
- core knowledge: PCA of the target features (:func:`g2is_core.graph.walk.core_knowledge`).
- walk: :func:`g2is_core.graph.walk.walk`. The score of a pool record is its signed similarity to
  the component it was selected for (the max over components for the others).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ... import workspace as ws_mod
from ...graph.knn import METHODS as KNN_METHODS
from ...workspace import Workspace, hash_config
from ..budget import walk_budget
from ..features import FeatureSet, centred_pair, pair_features
from ..registry import Context, Scored, data_hash, option, register

LAYOUTS = ("umap", "pca", "none")


@dataclass
class G2isOptions:
    k: int = option(32, "neighbours per node in the kNN graph")
    graph: str = option("exact", "kNN search: exact, hnsw or ivf", choices=KNN_METHODS)
    delta: float = option(0.8, "consistency factor delta of the walk")
    pca_variance: float = option(0.5, "keep the fewest components whose explained variance exceeds this")
    anchors_top: int = option(1000, "anchor pool size")
    align_signs: bool = option(False, "fix: flip components towards the mean target feature (faithful: off)")
    add_mean: bool = option(False, "fix: add the mean target direction as a component (faithful: off)")
    centred: bool = option(True, "faithful: centred PCA; False = uncentred SVD", negative="uncentred",
                           negative_help="uncentred SVD of the target features instead of PCA (faithful: centred)")
    cache: bool = option(True, "reuse (and save) the kNN graph in the workspace, keyed by the features")
    pool_centre: bool = option(False, "ours: subtract the pool's mean feature from pool and target features before "
                                      "the graph, core knowledge and walk (removes the direction every gradient "
                                      "shares, which makes a few records hubs of the kNN graph; faithful: off)")


# ---------------------------------------------------------------------------- the one validation
def check_options(o: G2isOptions, train: FeatureSet, target: FeatureSet | None = None) -> None:
    """Every check of the pipeline's settings against its inputs, before any work. Errors are sentences
    that name the command-line flag (the Python option has the same name, with underscores)."""
    if target is not None:
        pair_features(train, target)
    n = train.n
    if o.graph not in KNN_METHODS:
        raise ValueError(f"--graph must be one of {', '.join(KNN_METHODS)}; got {o.graph!r}")
    if isinstance(o.k, bool) or int(o.k) != o.k or not 1 <= o.k < n:
        raise ValueError(f"--k {o.k} must be between 1 and N-1 = {n - 1}; use a smaller k")
    if not o.delta >= 0:  # NaN fails too
        raise ValueError(f"--delta must be >= 0; got {o.delta}")
    if not 0.0 < o.pca_variance < 1.0:
        raise ValueError(f"--pca-variance must be in (0, 1); got {o.pca_variance}")
    if int(o.anchors_top) != o.anchors_top or o.anchors_top < 1:
        raise ValueError(f"--anchors-top must be a whole number >= 1; got {o.anchors_top}")


# ---------------------------------------------------------------------------- the stages
def g2is_features(train: FeatureSet, target: FeatureSet | None, pool_centre: bool) -> tuple[np.ndarray, Any, str]:
    """(x [N, D] pool, y [M, D] target or None, the key of x): unit rows, centred on the pool mean
    with ``pool_centre`` (then under a key of their own, so every cache tells the two apart)."""
    if pool_centre:
        x, y = centred_pair(train, target if target is not None else train)
        return x, (y if target is not None else None), hash_config({"features": train.key, "pool_centre": True})
    return train.combined(), (None if target is None else target.combined()), train.key


def g2is_core(y: np.ndarray, o: G2isOptions):
    """The target's core knowledge under the options (spec section 4)."""
    from ...graph.walk import core_knowledge

    return core_knowledge(y, o.pca_variance, align_signs=o.align_signs, add_mean=o.add_mean, centred=o.centred)


def core_part(target: FeatureSet, o: G2isOptions) -> dict[str, Any]:
    """What a mixed graph's core nodes depend on, for :func:`graph_key` (the fixes only when on, so a
    faithful graph keeps the key it always had)."""
    part: dict[str, Any] = {"core": target.key, "pca_variance": o.pca_variance}
    defaults = G2isOptions()
    for name in ("align_signs", "add_mean", "centred"):
        if getattr(o, name) != getattr(defaults, name):
            part[name] = getattr(o, name)
    return part


def graph_key(features_key: str, k: int, method: str, core: dict[str, Any] | None = None) -> str:
    """THE cache key of an instruction graph: features key, k and search method (+ the core's identity
    for a mixed graph). The train graph of ``select`` and ``graph build`` without targets share it."""
    return hash_config({"features": features_key, "k": int(k), "method": method, **(core or {})})


def graph_dir(ws: Workspace, key: str) -> Path:
    return ws.root / "graphs" / key


def instruction_graph(x: np.ndarray, features_key: str, o: G2isOptions, ws: Workspace | None, *,
                      ids: Sequence[str] | None = None, core=None, core_key: dict[str, Any] | None = None):
    """The instruction graph of ``x`` [N, D]: (graph, its directory or None, whether it came from the cache).

    With a workspace and ``o.cache`` a finished graph under :func:`graph_key` is loaded; a mixed graph
    (``core`` given) not yet cached reuses the cached train graph's kNN lists and only adds its core
    edges. Nothing is saved here (callers save last, after whatever else belongs to the graph)."""
    from ...graph.knn import InstructionGraph, attach_core, build_graph

    plain = None if ws is None else graph_dir(ws, graph_key(features_key, o.k, o.graph))
    d = plain if core is None or ws is None else graph_dir(ws, graph_key(features_key, o.k, o.graph, core_key))

    def cached(p: Path | None):
        if p is None or not o.cache or not ws.is_complete(p):
            return None
        g = InstructionGraph.load(p)
        return g if g.n == x.shape[0] and g.k == o.k else None

    g = cached(d)
    if g is not None:
        return g, d, True
    g = cached(plain) if core is not None else None
    if g is not None:
        return attach_core(g, x, core), d, False
    return build_graph(x, int(o.k), o.graph, ids=list(ids) if ids is not None else None, core=core), d, False


# ---------------------------------------------------------------------------- the pipeline
@dataclass
class G2isRun:
    """What :func:`run_g2is` returns: the walk, a score for every pool row [N] (pool order), and the graph."""

    walk: Any                # graph.walk.WalkResult
    scores: np.ndarray
    graph_dir: Path | None
    graph_seconds: float
    features_key: str
    in_degree: np.ndarray | None = None  # [N] how often each pool row is a kNN neighbour (hub diagnostics)


def run_g2is(train: FeatureSet, target: FeatureSet, budget: int, o: G2isOptions, *,
             workspace: Workspace | None = None, data_hash: str | None = None, conflict: bool = True,
             consistency: bool = True) -> G2isRun:
    """The whole pipeline: features -> [centre] -> core knowledge -> kNN graph (cached in ``workspace``
    when given and ``o.cache``) -> walk of ``budget`` records. ``conflict`` / ``consistency`` off: the
    walk without that check (the paper's ablation, methods/g2is_ablation.py)."""
    from ...graph.walk import walk

    check_options(o, train, target)
    x, y, key = g2is_features(train, target, o.pool_centre)
    core = g2is_core(y, o)  # before the graph: a target without variance fails before any cost
    ws = workspace if o.cache else None
    t0 = time.perf_counter()
    g, gdir, from_cache = instruction_graph(x, key, o, ws, ids=train.ids)
    if ws is not None and not from_cache:
        g.save(gdir, inputs={"features_key": key, "train_store_keys": train.keys, "data_hash": data_hash})
    t_graph = time.perf_counter() - t0
    res = walk(x, core, g.neighbors, budget, delta=o.delta, anchors_top=o.anchors_top, conflict=conflict,
               consistency=consistency)
    # score: signed similarity to the selected record's own component; the max over components otherwise
    proj = np.asarray(core.components, dtype=np.float64) @ x.T.astype(np.float64)  # [K, N]
    scores = proj.max(axis=0)
    traj = res.trajectory
    if len(traj):
        scores[traj["node"].to_numpy()] = traj["proj"].to_numpy()
    # in-degrees of the train-train lists (hub diagnostics: selection/diagnostics.py)
    deg = np.bincount(np.asarray(g.neighbors, dtype=np.int64).ravel(), minlength=x.shape[0])
    return G2isRun(res, scores, gdir if ws is not None else None, t_graph, key, deg)


@register("g2is", "G2IS: the gradient walk over the instruction graph from the target's core knowledge",
          G2isOptions, needs=("features",))
def g2is_method(ctx: Context, budget: int, o: G2isOptions) -> Scored:
    return walk_method(ctx, budget, o, "g2is")


def walk_method(ctx: Context, budget: int, o: G2isOptions, name: str, **switches: bool) -> Scored:
    """The body of every walk method (g2is and its ablations): ``switches`` turn a check of the walk off
    (``conflict=False``, ``consistency=False``: :func:`run_g2is`)."""
    train, target = ctx.need_features(name)
    return walk_scored(run_g2is(train, target, budget, o, workspace=ctx.ws if o.cache else None,
                                data_hash=data_hash(ctx.pool), **switches))


def walk_scored(run: G2isRun) -> Scored:
    """What a walk method returns: the walk's order, every row's score, the walk, the graph's in-degrees."""
    return Scored(run.walk.selected, run.scores, {"walk": run.walk,
                                                  "graph_dir": None if run.graph_dir is None else str(run.graph_dir),
                                                  "graph_seconds": round(run.graph_seconds, 3),
                                                  "in_degree": run.in_degree})


def walk_feature_files(train_path: str | Path, target_path: str | Path, out: str | Path, o: G2isOptions, *,
                       ratio: float | None = None, count: int | None = None,
                       workspace: Workspace | None = None) -> G2isRun:
    """``g2is walk``: the pipeline on feature matrices in ``.npy`` files [N, d] and [M, d]; writes the
    walk (selected row indices, trajectory, sidecar last) to ``out``. Graphs are cached only in a
    ``workspace`` given explicitly: the command otherwise writes nothing outside ``out``."""
    train = FeatureSet.from_npy(train_path, "train features")
    target = FeatureSet.from_npy(target_path, "target features")
    budget = walk_budget(train.n, ratio, count)
    run = run_g2is(train, target, budget, o, workspace=workspace)
    run.walk.config.update({**dataclasses.asdict(o), "uncentred": not o.centred, "count": count,
                            "graph_seconds": round(run.graph_seconds, 3)})
    inputs = {"train_features": {"path": str(train_path), "sha256": ws_mod.hash_file(train_path)},
              "target_features": {"path": str(target_path), "sha256": ws_mod.hash_file(target_path)}}
    run.walk.save(out, inputs=inputs)
    return run


def build_graph_artifact(train_stores: Sequence[Any], target_stores: Sequence[Any] | None = None,
                         o: G2isOptions | None = None, *, layout: str = "umap", pool: list | None = None,
                         workspace: Workspace | None = None) -> tuple[Path, dict[str, Any]]:
    """``g2is graph build``: the pipeline without the walk. The instruction graph of the stores' features
    (mixed with the target's core knowledge when target stores are given) saved under ``graphs/``,
    its 2-D layout cached (unless ``layout="none"``), the pool records saved for the pages.

    Returns (graph directory, summary: n, k, kind, graph_seconds[, layout_seconds], cached)."""
    from ...graph.layout import layout as cached_layout
    from ..datasets import save_dataset

    o = o or G2isOptions()
    if layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    ws = workspace or Workspace()
    train = FeatureSet.from_stores(train_stores)
    dhash = (train_stores[0].meta.get("inputs") or {}).get("data_hash")
    if pool is not None:
        if [r.id for r in pool] != train.ids:
            raise ValueError("the --pool records are not the ones the train store was extracted from (ids or order "
                             "differ); give the same data spec as to `g2is grads`")
        dhash = data_hash(pool)
        save_dataset(pool, ws)
    target = FeatureSet.from_stores(target_stores, "target") if target_stores else None
    if target is not None:
        pair_features(train, target, train_stores, target_stores)
    check_options(o, train, target)
    x, y, key = g2is_features(train, target, o.pool_centre)
    core = None if y is None else g2is_core(y, o)
    t0 = time.perf_counter()
    g, d, from_cache = instruction_graph(x, key, o, ws, ids=train.ids, core=core,
                                         core_key=None if target is None else core_part(target, o))
    summary: dict[str, Any] = {"n": g.n, "k": g.k, "kind": g.kind, "graph_seconds": round(time.perf_counter() - t0, 3),
                               "cached": from_cache}
    if layout != "none":
        t1 = time.perf_counter()
        cached_layout(x, key, ws, ids=train.ids, method=layout)
        summary["layout_seconds"] = round(time.perf_counter() - t1, 3)
    if not from_cache:  # the graph's sidecar is the last file written: a graph listed has its layout
        g.save(d, inputs={"features_key": key, "train_store_keys": train.keys, "data_hash": dhash,
                          "target_store_keys": None if target is None else target.keys, "layout": layout})
    return d, summary

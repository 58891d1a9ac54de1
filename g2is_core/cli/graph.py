"""``g2is graph build`` and ``g2is select``: the instruction graph (+ its cached 2-D layout) and every
selection method from the command line.

    g2is graph build --train-store KEY_OR_DIR [...] [--target-store ...] [--pool builtin:pool] \\
                     [--k 32] [--method exact|hnsw|ivf] [--layout umap|pca|none]
    g2is select --method less|g2is|random|embedding|bm25|repr --pool builtin:pool \\
                --targets builtin:targets:add_reverse (--ratio 0.05 | --count 72) \\
                [--train-store ... --target-store ...] [--option key=value ...] [--out DIR]

Data specs are :class:`g2is_core.data.spec.DataSpec` texts (README.md, "Naming data"): a file or folder,
``builtin:pool``, ``builtin:targets[:NAME]``, ``shared:PATH``, ...
Stores are gradient-store directories or their keys under ``<workspace>/grads``; give one per
warmup checkpoint (their LESS weights come from the store sidecars). Outputs go to the workspace
(kinds ``graphs``, ``layouts``, ``selections``) and are listed on the app's pages.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any


def _open_stores(specs: list[str] | None) -> list[Any]:
    from ..features.store import GradientStore
    from ..workspace import Workspace

    out = []
    for s in specs or []:
        p = Path(s).expanduser()
        if not p.is_dir():
            p = Workspace().root / "grads" / s
        if not p.is_dir():
            raise FileNotFoundError(f"no gradient store at {s}; give a store directory or its key under "
                                    "<workspace>/grads (see the Data page or `g2is grads`)")
        out.append(GradientStore.open(p))
    return out


def _parse_options(method: str, pairs: list[str] | None) -> dict[str, Any]:
    from ..selection.core import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {', '.join(METHODS)}")
    fields = {f.name: f for f in dataclasses.fields(METHODS[method].options)}
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--option {pair!r}: give key=value with a key of method {method!r}: "
                             f"{', '.join(fields) or 'none'}")
        default = fields[key].default
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                val: Any = raw.lower() in ("true", "1", "yes")
            elif isinstance(default, int):
                val = int(raw)
            elif isinstance(default, float):
                val = float(raw)
            else:
                val = raw
        except ValueError:
            raise ValueError(f"--option {pair!r}: {key} takes a {type(default).__name__}") from None
        out[key] = val
    return out


# ----------------------------------------------------------------------------- graph build
def build_and_save_graph(train_stores: list[Any], target_stores: list[Any] | None = None, *, k: int = 32,
                         method: str = "exact", layout: str = "umap", pool: list | None = None,
                         pca_variance: float = 0.5, workspace=None) -> tuple[Path, dict[str, Any]]:
    """Build the instruction graph of the stores' features (mixed with the target's core knowledge when
    target stores are given), save it under ``graphs/``, cache its layout and the pool records.

    Returns (graph directory, summary)."""
    from ..graph.knn import build_graph
    from ..graph.layout import layout as compute_layout_cached
    from ..selection.core import FeatureSet, pair_features, save_dataset
    from ..graph.walk import core_knowledge
    from ..workspace import Workspace, hash_config

    ws = workspace or Workspace()
    train = FeatureSet.from_stores(train_stores)
    data_hash = (train_stores[0].meta.get("inputs") or {}).get("data_hash")
    if pool is not None:
        from ..data.loaders import data_hash as dh

        if [r.id for r in pool] != train.ids:
            raise ValueError("the --pool records are not the ones the train store was extracted from (ids or order "
                             "differ); give the same data spec as to `g2is grads`")
        data_hash = dh(pool)
        save_dataset(pool, ws)
    core = None
    core_key = None
    if target_stores:
        target = FeatureSet.from_stores(target_stores)
        pair_features(train, target, train_stores, target_stores)
        core = core_knowledge(target.combined(), pca_variance)
        core_key = target.key
    x = train.combined()
    if not 1 <= k < len(x):
        raise ValueError(f"--k {k} must be between 1 and N-1 = {len(x) - 1}")
    t0 = time.perf_counter()
    g = build_graph(x, k, method, ids=train.ids, core=core)
    t_graph = time.perf_counter() - t0
    key = {"features": train.key, "k": int(k), "method": method}
    if core_key:
        key.update(core=core_key, pca_variance=pca_variance)
    d = ws.root / "graphs" / hash_config(key)
    summary: dict[str, Any] = {"n": g.n, "k": g.k, "kind": g.kind, "graph_seconds": round(t_graph, 3)}
    if layout != "none":
        t1 = time.perf_counter()
        compute_layout_cached(x, train.key, ws, ids=train.ids, method=layout)
        summary["layout_seconds"] = round(time.perf_counter() - t1, 3)
    g.save(d, inputs={"features_key": train.key, "train_store_keys": train.keys, "data_hash": data_hash,
                      "target_store_keys": None if core_key is None else target.keys, "layout": layout})
    return d, summary


def _graph_build(args: argparse.Namespace) -> int:
    from ..data.spec import DataSpec
    from ..runtime import apply_thread_policy

    apply_thread_policy()
    train = _open_stores(args.train_store)
    target = _open_stores(args.target_store)
    pool = DataSpec.parse(args.pool).fill(fmt=args.fmt, seed=args.data_seed).load().records if args.pool else None
    d, s = build_and_save_graph(train, target, k=args.k, method=args.method, layout=args.layout, pool=pool,
                                pca_variance=args.pca_variance)
    print(f"graph ({s['kind']}) of {s['n']} nodes, k={s['k']}: built in {s['graph_seconds']}s"
          + (f", layout in {s['layout_seconds']}s" if "layout_seconds" in s else "") + f" -> {d}")
    return 0


# ----------------------------------------------------------------------------- select
def _select(args: argparse.Namespace) -> int:
    from ..data.spec import DataSpec
    from ..runtime import apply_thread_policy
    from ..selection.core import SelectionRun, select

    apply_thread_policy()
    opts = _parse_options(args.method, args.option)
    if args.ratio is None and args.count is None:
        raise ValueError("give --ratio (a fraction in (0, 1]) or --count (a number of records)")
    p, t = (DataSpec.parse(x).fill(fmt=args.fmt, seed=args.data_seed).load() for x in (args.pool, args.targets))
    pool, pool_desc, targets, target_desc = p.records, p.description, t.records, t.description
    sel = select(args.method, pool, targets, ratio=None if args.count is not None else args.ratio, count=args.count,
                 train_stores=_open_stores(args.train_store), target_stores=_open_stores(args.target_store), **opts)
    sel.inputs.update({"pool": pool_desc, "targets": target_desc})
    run = SelectionRun.save(sel, pool, out_dir=args.out, name=args.name or "")
    short = "" if len(sel) == sel.budget else f" (budget {sel.budget}: the walk stopped short)"
    print(f"{args.method}: selected {len(sel)} of {len(pool)} records{short} in "
          f"{sel.timings['method_seconds']:.1f}s -> {run.dir}")
    if args.json:
        print(json.dumps({"dir": str(run.dir), "ids": sel.ids[:20], "n": len(sel)}, indent=2))
    return 0


def register(sub: Any) -> None:
    from ..selection.core import METHODS

    g = sub.add_parser("graph", help="build the instruction graph (kNN over gradient features) and its 2-D layout")
    gsub = g.add_subparsers(dest="graph_cmd", metavar="ACTION", required=True)
    b = gsub.add_parser("build", help="top-k cosine graph of a pool's gradient features (+ UMAP layout, cached)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--train-store", action="append", required=True,
                   help="pool gradient store (directory or key); repeat once per checkpoint")
    b.add_argument("--target-store", action="append",
                   help="target gradient store(s): adds the target's core-knowledge nodes (a mixed graph)")
    b.add_argument("--pool", help="the pool's data spec (e.g. builtin:pool), saved so the pages can show records")
    b.add_argument("--fmt", help="loader format of --pool")
    b.add_argument("--data-seed", type=int, default=0, help="seed of the built-in suite")
    b.add_argument("--k", type=int, default=32, help="neighbours per node (default 32)")
    b.add_argument("--method", choices=["exact", "hnsw", "ivf"], default="exact", help="kNN search (default exact)")
    b.add_argument("--pca-variance", type=float, default=0.5, help="core knowledge: explained-variance threshold")
    b.add_argument("--layout", choices=["umap", "pca", "none"], default="umap",
                   help="2-D layout for the map (default umap; computed once, cached by the features)")
    b.set_defaults(func=_graph_build)

    s = sub.add_parser("select", help="select training data with one method (" + ", ".join(METHODS) + ")",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--method", required=True, choices=list(METHODS))
    s.add_argument("--pool", required=True, help="pool data spec (file, folder or builtin:pool)")
    s.add_argument("--targets", required=True, help="target data spec (file, folder or builtin:targets[:NAME])")
    s.add_argument("--fmt", help="loader format for files")
    s.add_argument("--data-seed", type=int, default=0, help="seed of the built-in suite")
    s.add_argument("--ratio", type=float, default=None, help="fraction of the pool to select, in (0, 1]")
    s.add_argument("--count", type=int, default=None, help="number of records to select (overrides --ratio)")
    s.add_argument("--train-store", action="append", help="pool gradient store(s), one per checkpoint (g2is, less)")
    s.add_argument("--target-store", action="append", help="target gradient store(s), same checkpoints (g2is, less)")
    s.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. delta=0.8, k=32, reduce=mean, model=tiny (repeatable)")
    s.add_argument("--name", help="a label for the run (shown in the app)")
    s.add_argument("--out", type=Path, help="output directory (default <workspace>/selections/<key>)")
    s.add_argument("--json", action="store_true", help="also print the first ids as JSON")
    s.set_defaults(func=_select)

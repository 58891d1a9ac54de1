"""Hubs in the instruction graph of an experiment's pool: who the k nearest neighbours are, with the
gradient features as they are (faithful G2IS) and centred on the pool mean (``pool_centre``).

    python bench/graph_hubness.py bench/specs/real_data.yaml [--k 32]

Reads the spec's cached gradient stores (run `g2is bench features SPEC` first). Prints, per source file
of the pool: its share of the pool, its share of all k-NN in-edges (a hub source takes far more than
its share), the fraction of its records' neighbours from the same source, and the mean cosine of its
records to the rest of the pool; once for the raw features and once centred.
"""
from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from g2is_core.loop.experiment import load_pool, load_target
from g2is_core.loop.runner import gradient_stores
from g2is_core.loop.spec import load_spec
from g2is_core.selection import FeatureSet, centred_pair
from g2is_core.workspace import Workspace


def source_file(record_id: str) -> str:
    parts = record_id.split(":")
    return parts[0] if parts[0].startswith("t0") or len(parts) < 3 else parts[1]


def knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k], s


def report(x: np.ndarray, srcs: np.ndarray, k: int, label: str) -> None:
    nb, s = knn(x, k)
    off = np.where(np.isinf(s), np.nan, s)
    indeg = Counter(srcs[nb.ravel()])
    share = Counter(srcs)
    print(f"\n{label}: mean cosine between pool records {np.nanmean(off):.3f}")
    print(f"{'source':<44} {'pool':>6} {'in-edges':>9} {'same-source nbrs':>17} {'mean cos':>9}")
    for src, n in sorted(share.items()):
        rows = srcs == src
        print(f"{src:<44} {n / len(srcs):>6.3f} {indeg[src] / nb.size:>9.3f} "
              f"{np.mean(srcs[nb[rows]] == src):>17.2f} {np.nanmean(off[rows]):>9.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--k", type=int, default=32, help="neighbours per node (G2IS default 32)")
    a = ap.parse_args(argv)
    spec = load_spec(a.spec)
    pool = load_pool(spec.pool)
    t = spec.targets[0]  # the pool stores are the same for every target; any target's stores pair with them
    st = gradient_stores(spec, pool, load_target(t.select, t.n_select, seed=0), Workspace())
    train, target = FeatureSet.from_stores(st["train_stores"]), FeatureSet.from_stores(st["target_stores"])
    srcs = np.array([source_file(r.id) for r in pool])
    print(f"{spec.name}: {len(pool)} pool records, {len(st['train_stores'])} checkpoints, k={a.k}")
    report(train.combined(), srcs, a.k, "raw features (faithful)")
    report(centred_pair(train, target)[0], srcs, a.k, "centred on the pool mean (pool_centre)")


if __name__ == "__main__":
    main()

"""``g2is walk``: the G2IS gradient walk on feature matrices (.npy), from the command line.

    g2is walk --train-features A.npy --target-features B.npy --ratio 0.01 --delta 0.8 \\
              --pca-variance 0.5 --k 32 --out DIR [--count N] [--graph exact|hnsw|ivf] \\
              [--align-signs] [--add-mean] [--uncentred]

Writes DIR/selected_ids.json (row indices of A, in selection order), DIR/trajectory.parquet and
DIR/sidecar.json (last). Bad input raises ValueError with a sentence saying what to do; the main
CLI turns it into a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .. import workspace as ws


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``walk`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("walk", help="select training rows with the G2IS gradient walk over feature matrices",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-features", required=True, type=Path, help="pool features [N, d] (.npy)")
    p.add_argument("--target-features", required=True, type=Path, help="target features [M, d] (.npy)")
    p.add_argument("--ratio", type=float, default=0.01,
                   help="budget B = floor(ratio * N), ratio in (0, 1] (default 0.01)")
    p.add_argument("--count", type=int, default=None, help="budget as a number of rows (overrides --ratio)")
    p.add_argument("--delta", type=float, default=0.8, help="consistency factor delta (default 0.8)")
    p.add_argument("--pca-variance", type=float, default=0.5,
                   help="keep the fewest components whose explained variance exceeds this (default 0.5)")
    p.add_argument("--k", type=int, default=32, help="neighbours per node in the kNN graph (default 32)")
    p.add_argument("--graph", choices=("exact", "hnsw", "ivf"), default="exact", help="kNN search (default exact)")
    p.add_argument("--anchors-top", type=int, default=1000, help="anchor pool size (default 1000)")
    p.add_argument("--align-signs", action="store_true", help="flip components towards the mean target feature")
    p.add_argument("--add-mean", action="store_true", help="add the mean target direction as a component")
    p.add_argument("--uncentred", action="store_true", help="uncentred SVD instead of PCA")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.set_defaults(func=run)
    return p


def _load(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{what} file {path} does not exist; check the path")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{what} file {path} is not a readable .npy array ({exc}); save it with numpy.save") from exc
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{what} in {path} must be a non-empty 2-D array [rows, d]; got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what} in {path} must hold floats; got dtype {a.dtype}")
    return a


def run(args: argparse.Namespace) -> int:
    """Run the walk described by parsed arguments; prints a one-line summary. Returns 0."""
    from ..graph.knn import build_knn
    from ..linalg import unit_rows
    from ..runtime import apply_thread_policy
    from ..graph.walk import core_knowledge, walk

    apply_thread_policy()
    if args.count is None and not 0.0 < args.ratio <= 1.0:
        raise ValueError(f"--ratio must be in (0, 1]; got {args.ratio}")
    if args.delta < 0:
        raise ValueError(f"--delta must be >= 0; got {args.delta}")
    if not 0.0 < args.pca_variance < 1.0:
        raise ValueError(f"--pca-variance must be in (0, 1); got {args.pca_variance}")
    train = _load(args.train_features, "train features")
    target = _load(args.target_features, "target features")
    n, d = train.shape
    if target.shape[1] != d:
        raise ValueError(f"train features have d={d} but target features have d={target.shape[1]}; "
                         "both must come from the same gradient store (same projection seed and dimension)")
    if not 1 <= args.k < n:
        raise ValueError(f"--k {args.k} must be between 1 and N-1 = {n - 1}; use a smaller k")
    budget = args.count if args.count is not None else int(np.floor(args.ratio * n))
    if not 1 <= budget <= n:
        raise ValueError(f"the budget is {budget} rows but must be between 1 and N={n}; "
                         "raise --ratio or give --count")
    x = unit_rows(train, zero="raise", what=f"train features ({args.train_features})")
    y = unit_rows(target, zero="raise", what=f"target features ({args.target_features})")

    t0 = time.perf_counter()
    core = core_knowledge(y, args.pca_variance, align_signs=args.align_signs, add_mean=args.add_mean,
                          centred=not args.uncentred)
    nbrs, _ = build_knn(x, args.k, args.graph)
    t1 = time.perf_counter()
    res = walk(x, core, nbrs, budget, delta=args.delta, anchors_top=args.anchors_top)
    t2 = time.perf_counter()
    res.config.update({"graph": args.graph, "pca_variance": args.pca_variance, "count": args.count,
                       "align_signs": args.align_signs, "add_mean": args.add_mean, "uncentred": args.uncentred,
                       "graph_seconds": round(t1 - t0, 3)})
    inputs = {"train_features": {"path": str(args.train_features), "sha256": ws.hash_file(args.train_features)},
              "target_features": {"path": str(args.target_features), "sha256": ws.hash_file(args.target_features)}}
    res.save(args.out, inputs=inputs)
    print(f"walk: {res.summary()}; K={core.k}; graph {args.graph} k={args.k} {t1 - t0:.1f}s, "
          f"walk {t2 - t1:.1f}s -> {args.out}")
    return 0

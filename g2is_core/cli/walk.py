"""``g2is walk``: the G2IS gradient walk on feature matrices (.npy), from the command line.

    g2is walk --train-features A.npy --target-features B.npy --ratio 0.01 --delta 0.8 \\
              --pca-variance 0.5 --k 32 --out DIR [--count N] [--graph exact|hnsw|ivf] \\
              [--align-signs] [--add-mean] [--uncentred] [--pool-centre] [--workspace WS]

The pipeline is the one of ``g2is select --method g2is``
(:func:`g2is_core.selection.methods.g2is.walk_feature_files`); its flags are generated from
:class:`~g2is_core.selection.methods.g2is.G2isOptions`. Writes DIR/selected_ids.json (row indices of
A, in selection order), DIR/trajectory.parquet and DIR/sidecar.json (last); the kNN graph is cached
only in a --workspace given. Bad input raises ValueError with a sentence saying what to do; the main
CLI turns it into a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import fraction, out_dir, positive_int

COMMANDS = {"walk": "select training rows with the G2IS gradient walk over feature matrices"}
# What `g2is walk --help` says (the module docstring above is for developers).
DESCRIPTION = """\
Select training rows with the G2IS gradient walk, straight from two feature matrices saved as .npy:
the pool's [N, d] and the target's [M, d]. The same walk as `g2is select --method g2is`, which starts
from data and gradient stores instead. Writes OUT/selected_ids.json (pool row indices, in selection
order), OUT/trajectory.parquet and OUT/sidecar.json.

example:
  g2is walk --train-features pool.npy --target-features target.npy --ratio 0.05 --out walk-out
"""


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``walk`` subcommand to an argparse subparsers object."""
    from ..selection.methods.g2is import G2isOptions
    from ..selection.registry import add_option_arguments

    p = subparsers.add_parser("walk", help=COMMANDS["walk"],
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-features", required=True, type=Path, help="pool features [N, d] (.npy)")
    p.add_argument("--target-features", required=True, type=Path, help="target features [M, d] (.npy)")
    p.add_argument("--ratio", type=fraction, default=0.01,
                   help="budget B = floor(ratio * N), ratio in (0, 1] (default 0.01)")
    p.add_argument("--count", type=positive_int, default=None, help="budget as a number of rows (overrides --ratio)")
    add_option_arguments(p, G2isOptions)
    p.add_argument("--workspace", type=Path, default=None,
                   help="cache the kNN graph in this workspace (default: none, nothing is written outside --out)")
    p.add_argument("--out", required=True, type=out_dir, help="output directory")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the walk described by parsed arguments; prints a one-line summary. Returns 0."""
    from ..runtime import apply_thread_policy
    from ..selection.methods.g2is import G2isOptions, walk_feature_files
    from ..selection.registry import options_from_args
    from ..workspace import Workspace

    for flag, f in (("--train-features", args.train_features), ("--target-features", args.target_features)):
        if not f.is_file():  # said before torch loads (the thread policy imports it)
            raise ValueError(f"{flag} {f}: no such file; give a feature matrix saved as .npy")
    apply_thread_policy()
    o = options_from_args(G2isOptions, args)
    r = walk_feature_files(args.train_features, args.target_features, args.out, o, ratio=args.ratio, count=args.count,
                           workspace=None if args.workspace is None else Workspace(args.workspace))
    print(f"walk: {r.walk.summary()}; K={r.walk.core.k}; graph {o.graph} k={o.k} {r.graph_seconds:.1f}s, "
          f"walk {r.walk.config['seconds']:.1f}s -> {args.out}")
    return 0

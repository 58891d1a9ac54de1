"""``g2is graph build`` and ``g2is select``: the instruction graph (+ its cached 2-D layout) and every
selection method from the command line.

    g2is graph build --train-store KEY_OR_DIR [...] [--target-store ...] [--pool builtin:pool] \\
                     [--k 32] [--graph exact|hnsw|ivf] [--pool-centre] [--layout umap|pca|none]
    g2is select --method less|g2is|random|embedding|bm25|repr --pool builtin:pool \\
                --targets builtin:targets:add_reverse (--ratio 0.05 | --count 72) \\
                [--train-store ... --target-store ...] [--option key=value ...] [--out DIR]

``graph build`` is the G2IS pipeline of ``select --method g2is`` without the walk
(:func:`g2is_core.selection.methods.g2is.build_graph_artifact`); its flags are generated from
:class:`~g2is_core.selection.methods.g2is.G2isOptions` (``--method`` is the older spelling of
``--graph``), and ``select`` takes the same settings as ``--option key=value``.

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
from pathlib import Path
from typing import Any

from ._common import fraction, out_dir, positive_int

# What `--help` says (the module docstring above is for developers).
BUILD_DESCRIPTION = """\
Build the instruction graph: each pool record linked to its k nearest neighbours by the cosine
similarity of its gradient features, and the 2-D map the Instruction graph page draws. Both are
cached in the workspace. The stores come from `g2is grads` (the Data page lists their keys); give one
per warmup checkpoint, and --pool so the pages can show the records behind the nodes.

example:
  g2is graph build --train-store KEY --pool builtin:pool
"""
SELECT_DESCRIPTION = """\
Select a fraction (--ratio) or a number (--count) of pool records for a target with one method; the
run is saved in the workspace and listed on the Walk page. --pool and --targets are data specs
(README 'Naming data'): a file or folder, builtin:pool, builtin:targets:add_reverse, shared:PATH.
g2is and less also need gradient stores (`g2is grads`) for the pool and the target.

example:
  g2is select --method bm25 --pool builtin:pool --targets builtin:targets:add_reverse --ratio 0.05
"""

COMMANDS = {"graph": "build the instruction graph (kNN over gradient features) and its 2-D layout",
            "select": "select training data with one method (g2is, less, random, ...: `g2is select --help` lists them)"}


def _open_stores(specs: list[str] | None) -> list[Any]:
    from ..features.store import GradientStore

    return [GradientStore.find(s) for s in specs or []]


def _graph_build(args: argparse.Namespace) -> int:
    from ..data.spec import DataSpec
    from ..runtime import apply_thread_policy
    from ..selection.methods.g2is import G2isOptions, build_graph_artifact
    from ..selection.registry import options_from_args

    # inputs first: a wrong store or spec is said before torch loads (the thread policy imports it)
    pool = DataSpec.parse(args.pool).fill(fmt=args.fmt, seed=args.data_seed).load().records if args.pool else None
    train, target = _open_stores(args.train_store), _open_stores(args.target_store)
    apply_thread_policy()
    d, s = build_graph_artifact(train, target, options_from_args(G2isOptions, args), layout=args.layout, pool=pool)
    print(f"graph ({s['kind']}) of {s['n']} nodes, k={s['k']}: " + ("cached" if s["cached"] else f"built in {s['graph_seconds']}s")
          + (f", layout in {s['layout_seconds']}s" if "layout_seconds" in s else "") + f" -> {d}")
    return 0


# ----------------------------------------------------------------------------- select
def _select(args: argparse.Namespace) -> int:
    from ..data.spec import DataSpec
    from ..runtime import apply_thread_policy
    from ..selection import SelectionRun, select
    from ..selection.registry import options_from_strings

    opts = options_from_strings(args.method, args.option)
    if args.ratio is None and args.count is None:
        raise ValueError("give --ratio (a fraction in (0, 1]) or --count (a number of records)")
    # inputs first: a wrong spec or store is said before torch loads (the thread policy imports it)
    p, t = (DataSpec.parse(x).fill(fmt=args.fmt, seed=args.data_seed).load() for x in (args.pool, args.targets))
    pool, pool_desc, targets, target_desc = p.records, p.description, t.records, t.description
    train, target = _open_stores(args.train_store), _open_stores(args.target_store)
    apply_thread_policy()
    from ..progress import cli_progress

    with cli_progress(f"select {args.method}") as cb:
        sel = select(args.method, pool, targets, ratio=None if args.count is not None else args.ratio,
                     count=args.count, train_stores=train, target_stores=target, progress=cb, **opts)
    sel.inputs.update({"pool": pool_desc, "targets": target_desc})
    run = SelectionRun.save(sel, pool, out_dir=args.out, name=args.name or "")
    short = "" if len(sel) == sel.budget else f" (budget {sel.budget}: the walk stopped short)"
    print(f"{args.method}: selected {len(sel)} of {len(pool)} records{short} in "
          f"{sel.timings['method_seconds']:.1f}s -> {run.dir}")
    if args.json:
        print(json.dumps({"dir": str(run.dir), "ids": sel.ids[:20], "n": len(sel)}, indent=2))
    return 0


def register(sub: Any) -> None:
    from ..selection import METHODS
    from ..selection.methods.g2is import LAYOUTS, G2isOptions
    from ..selection.registry import add_option_arguments

    g = sub.add_parser("graph", help=COMMANDS["graph"])
    gsub = g.add_subparsers(dest="graph_cmd", metavar="ACTION", required=True)
    b = gsub.add_parser("build", help="top-k cosine graph of a pool's gradient features (+ UMAP layout, cached)",
                        description=BUILD_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--train-store", action="append", required=True,
                   help="pool gradient store (directory or key); repeat once per checkpoint")
    b.add_argument("--target-store", action="append",
                   help="target gradient store(s): adds the target's core-knowledge nodes (a mixed graph)")
    b.add_argument("--pool", help="the pool's data spec (e.g. builtin:pool), saved so the pages can show records")
    b.add_argument("--fmt", help="loader format of --pool")
    b.add_argument("--data-seed", type=int, default=0, help="seed of the built-in suite")
    # the G2IS settings (the walk's are unused here); --method is the older spelling of --graph
    add_option_arguments(b, G2isOptions, aliases={"graph": ["--method"]})
    b.add_argument("--layout", choices=LAYOUTS, default=LAYOUTS[0],
                   help="2-D layout for the map (default umap; computed once, cached by the features)")
    b.set_defaults(func=_graph_build)

    s = sub.add_parser("select", help="select training data with one method (" + ", ".join(METHODS) + ")",
                       description=SELECT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--method", required=True, choices=list(METHODS),
                   help="selection method (g2is and less need gradient stores: --train-store, --target-store)")
    s.add_argument("--pool", required=True, help="pool data spec (file, folder or builtin:pool)")
    s.add_argument("--targets", required=True, help="target data spec (file, folder or builtin:targets[:NAME])")
    s.add_argument("--fmt", help="loader format for files")
    s.add_argument("--data-seed", type=int, default=0, help="seed of the built-in suite")
    s.add_argument("--ratio", type=fraction, default=None, help="fraction of the pool to select, in (0, 1]")
    s.add_argument("--count", type=positive_int, default=None, help="number of records to select (overrides --ratio)")
    s.add_argument("--train-store", action="append", help="pool gradient store(s), one per checkpoint (g2is, less)")
    s.add_argument("--target-store", action="append", help="target gradient store(s), same checkpoints (g2is, less)")
    s.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option (a field of its options dataclass), e.g. delta=0.8, k=32, pool_centre=true, "
                        "reduce=mean, model=tiny (repeatable); g2is: "
                        + ", ".join(f.name for f in dataclasses.fields(G2isOptions)))
    s.add_argument("--name", help="a label for the run (shown in the app)")
    s.add_argument("--out", type=out_dir, help="output directory (default <workspace>/selections/<key>)")
    s.add_argument("--json", action="store_true", help="also print the first ids as JSON")
    s.set_defaults(func=_select)

"""Precision of every selection method on the built-in pool, per composite target (docs/selection.md).

    G2IS_THREADS=2 python bench/precision_builtin.py --model default --ratios 0.05 0.1 \\
        --out docs/precision_builtin.md

Pool: ``tasks.make_pool(seed)`` (1440 records: 9 tasks x 120 + 360 distractors). Targets:
``tasks.make_targets(seed, n_per_target)`` (dev split, disjoint from the pool). A pool record is
relevant to composite C when it is C's own task or one of its ingredients
(``pool.relevant_ids(C)``; 360 of 1440 = 25% for every composite, the random baseline).

Gradient features: the LESS warmup (features.warmup.WarmupConfig defaults: 5% of the pool, 4 epochs,
LoRA r=8) on the pool, then train (Adam) features of the pool and target (SGD) features of all
targets at the chosen checkpoints, d = --dim. Everything is cached in the workspace, so a second
run only re-selects. Prints the markdown tables and writes them to --out.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("G2IS_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-per-target", type=int, default=24)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.05, 0.1])
    ap.add_argument("--checkpoints", default="all", help="'all' or comma-separated warmup epochs")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--random-seeds", type=int, default=5, help="random: mean precision over this many seeds")
    ap.add_argument("--methods", default="random,bm25,embedding,repr,less,g2is,g2is-fixed")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from g2is_core.features.extract import FeatureConfig, extract_store
    from g2is_core.features.projection import ProjectorConfig
    from g2is_core.features.warmup import WarmupConfig, warmup
    from g2is_core.data import tasks
    from g2is_core.data.loaders import data_hash
    from g2is_core.models.loading import load_model
    from g2is_core.runtime import apply_thread_policy
    from g2is_core.selection import FeatureSet, precision, select
    from g2is_core.workspace import Workspace

    apply_thread_policy()
    ws = Workspace()
    pool = tasks.make_pool(args.seed)
    targets = tasks.make_targets(args.seed, args.n_per_target)
    names = sorted(targets)
    methods = args.methods.split(",")
    timings: dict[str, float] = {}
    feats: dict[str, tuple] = {}

    if any(m in ("less", "g2is", "g2is-fixed") for m in methods):
        t0 = time.perf_counter()
        loaded = load_model(args.model)
        recs = list(pool.records)
        w = warmup(loaded, recs, WarmupConfig(), data_hash=data_hash(recs), workspace=ws,
                   progress=lambda f, m: log(f"warmup {f:.0%} {m}"))
        timings["warmup"] = time.perf_counter() - t0
        epochs = [c.epoch for c in w.checkpoints] if args.checkpoints == "all" else [int(e) for e in args.checkpoints.split(",")]
        all_t = [r for n in names for r in targets[n]]
        proj = ProjectorConfig(dim=args.dim)
        tr_stores, tg_stores = [], []
        t0 = time.perf_counter()
        for e in epochs:
            tr_stores.append(extract_store(loaded, recs, w, e, FeatureConfig(kind="adam"), proj,
                                           data_hash=data_hash(recs), data_source="builtin:pool", workspace=ws,
                                           progress=lambda f, m: log(f"pool {m}")))
            tg_stores.append(extract_store(loaded, all_t, w, e, FeatureConfig(kind="sgd"), proj,
                                           data_hash=data_hash(all_t), data_source="builtin:targets", workspace=ws,
                                           progress=lambda f, m: log(f"targets {m}")))
        timings["gradient features"] = time.perf_counter() - t0
        train_fs = FeatureSet.from_stores(tr_stores)
        tg_ids = tg_stores[0].ids
        for n in names:
            rows = np.array([tg_ids.index(r.id) for r in targets[n]])
            feats[n] = (train_fs, FeatureSet([np.asarray(s.features[rows]) for s in tg_stores],
                                             np.asarray([s.weight for s in tg_stores]), [tg_ids[i] for i in rows],
                                             [f"{s.dir.name}:{n}" for s in tg_stores]))
        del loaded

    rows_any: dict[tuple, float] = {}
    rows_own: dict[tuple, float] = {}
    sizes: dict[tuple, int] = {}
    for m in methods:
        t0 = time.perf_counter()
        for n in names:
            rel = pool.relevant_ids(n)
            own = {r.id for r in pool.records if r.task == n}
            for ratio in args.ratios:
                if m == "random":
                    sels = [select("random", pool, targets[n], ratio=ratio, seed=s, workspace=ws).ids
                            for s in range(args.random_seeds)]
                else:
                    kw = {}
                    if m in ("less", "g2is", "g2is-fixed"):
                        kw = {"train_features": feats[n][0], "target_features": feats[n][1]}
                    if m == "g2is-fixed":
                        kw.update(align_signs=True, add_mean=True)
                    if m == "repr":
                        kw["model"] = args.model
                    sels = [select(m.replace("-fixed", ""), pool, targets[n], ratio=ratio, workspace=ws, **kw).ids]
                rows_any[m, n, ratio] = float(np.mean([precision(s, rel) for s in sels]))
                rows_own[m, n, ratio] = float(np.mean([precision(s, own) for s in sels]))
                sizes[m, n, ratio] = len(sels[0])
        timings[m] = time.perf_counter() - t0
        log(f"{m}: done in {timings[m]:.1f}s")

    def table(vals: dict, title: str) -> str:
        cols = [(n, r) for r in args.ratios for n in names]
        head = "| method | " + " | ".join(f"{n} @{r:.0%}" for n, r in cols) + " | mean |"
        sep = "|---|" + "---:|" * (len(cols) + 1)
        lines = [f"**{title}**", "", head, sep]
        for m in methods:
            v = [vals[m, n, r] for n, r in cols]
            short = [f"{x:.3f}" + ("*" if sizes[m, n, r] < int(r * len(pool)) else "") for x, (n, r) in zip(v, cols)]
            lines.append(f"| {m} | " + " | ".join(short) + f" | {np.mean(v):.3f} |")
        return "\n".join(lines)

    base_any = len(pool.relevant_ids(names[0])) / len(pool)
    base_own = sum(1 for r in pool.records if r.task == names[0]) / len(pool)
    out = [
        f"Pool: {len(pool)} records (seed {args.seed}); targets: {args.n_per_target} dev examples per composite; "
        f"model `{args.model}`; gradient features d={args.dim}, checkpoints {args.checkpoints}.",
        "",
        table(rows_any, f"Precision: own task or an ingredient (relevance > 0; random expectation {base_any:.3f})"),
        "",
        table(rows_own, f"Precision: the composite's own task only (relevance 2; random expectation {base_own:.3f})"),
        "",
        "`*`: the walk selected fewer than B records (a component stopped short); precision is over what it selected.",
        "",
        "Wall-clock seconds (2 shared CPU cores): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + ".",
    ]
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

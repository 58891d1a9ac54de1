"""Benchmark: kNN graph build (exact / approximate) and the G2IS walk, on clustered random features.

    G2IS_THREADS=2 python bench/bench_graph_walk.py                 # N = 10k and 100k, d = 1024, k = 32
    python bench/bench_graph_walk.py --sizes 10000 --reference-n 5000

Data: a Gaussian mixture of unit cluster centres plus isotropic noise (per-cluster noise scale in
[1, 2], i.e. within-cluster cosine about 0.2-0.5, across clusters about 0), L2-normalised: closer to
gradient features than uniform random vectors, whose neighbours are meaningless in d = 1024.
Targets: exact N=100k < 2 min; approximate recall@32 >= 0.95 and faster than exact; walk at
N=100k, 1% budget < 10 s. The 100k run is heavy on a shared 2-core machine: run it rarely.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("G2IS_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))

import numpy as np  # noqa: E402

from g2is_core.graph.knn import build_knn, knn_recall  # noqa: E402
from g2is_core.linalg import unit_rows  # noqa: E402
from g2is_core.graph.walk import core_knowledge, walk  # noqa: E402


def mixture(n: int, d: int, clusters: int, seed: int, m_target: int = 16, target_clusters: int = 3):
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((clusters, d)), zero="raise")
    scale = rng.uniform(1.0, 2.0, clusters).astype(np.float32)
    x = np.empty((n, d), np.float32)
    lab = rng.integers(0, clusters, n)
    for a in range(0, n, 8192):
        lb = lab[a:a + 8192]
        noise = rng.standard_normal((len(lb), d), dtype=np.float32) / np.sqrt(d)
        x[a:a + len(lb)] = centres[lb] + noise * scale[lb, None]
    tl = rng.choice(clusters, target_clusters, replace=False)[rng.integers(0, target_clusters, m_target)]
    y = centres[tl] + rng.standard_normal((m_target, d), dtype=np.float32) / np.sqrt(d) * scale[tl, None]
    return unit_rows(x, zero="raise"), unit_rows(y, zero="raise")


class Clock:
    """Wall and process-CPU seconds of one call. On a shared machine the CPU seconds (divided by
    the threads used) say what the code costs; the wall time says what another process left us."""

    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu

    def __float__(self) -> float:
        return self.wall

    def __format__(self, spec: str) -> str:
        return f"{format(self.wall, spec)} s (cpu {self.cpu:.1f} s)"


def timed(fn, *a, **kw):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    return out, Clock(time.perf_counter() - t, time.process_time() - c)


def bench_graph(n: int, d: int, k: int, methods: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = mixture(n, d, clusters=max(20, n // 500), seed=n)
    print(f"\n== graph: N={n} d={d} k={k} (threads {os.environ.get('G2IS_THREADS')}, load average "
          f"{os.getloadavg()[0]:.1f})", flush=True)
    (exact, esims), t_exact = timed(build_knn, x, k, "exact")
    print(f"exact fp32     {t_exact:8.1f}   recall 1.0000 (reference)", flush=True)
    for m in methods:
        if m == "bf16":
            (nb, _), t = timed(build_knn, x, k, "exact", precision="bf16")
            same = float((nb == exact).all(axis=1).mean())
            print(f"exact bf16     {t:8.1f}   recall {knn_recall(nb, exact):.4f}   rows identical to fp32 {same:.4f}",
                  flush=True)
        else:
            (nb, _), t = timed(build_knn, x, k, m)
            print(f"{m:<14} {t:8.1f}   recall {knn_recall(nb, exact):.4f}   speed-up x{float(t_exact) / float(t):.1f}",
                  flush=True)
    return x, y, exact


def bench_walk(x: np.ndarray, y: np.ndarray, nbrs: np.ndarray, ratio: float) -> None:
    core = core_knowledge(y, 0.5)
    res, t = timed(walk, x, core, nbrs, ratio=ratio)
    src = res.trajectory["source"].value_counts().to_dict()
    print(f"walk N={len(x)} ratio={ratio}: {t:.2f}   K={core.k}   {res.summary()}   steps {src}", flush=True)


def bench_reference(n: int, d: int, k: int, ratios: list[float]) -> None:
    from walk_reference import reference_walk

    x, y = mixture(n, d, clusters=max(20, n // 500), seed=7)
    nbrs, _ = build_knn(x, k)
    core = core_knowledge(y, 0.5)
    for ratio in ratios:
        B = int(np.floor(ratio * n))
        fast, t_fast = timed(walk, x, core, nbrs, B)
        ref, t_ref = timed(reference_walk, x, core.components, core.weights, B, nbrs)
        same = fast.selected.tolist() == [s["node"] for s in ref]
        src = fast.trajectory["source"].value_counts().to_dict()
        print(f"reference N={n} ratio={ratio}: fast {t_fast:.2f}, dense reference {t_ref:.2f} "
              f"(x{float(t_ref) / float(t_fast):.0f}), identical selection: {same}, steps {src}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--methods", nargs="+", default=["bf16", "hnsw", "ivf"])
    ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--reference-n", type=int, default=5000)
    ap.add_argument("--reference-ratios", type=float, nargs="+", default=[0.01, 0.05])
    args = ap.parse_args()
    for n in args.sizes:
        x, y, exact = bench_graph(n, args.d, args.k, args.methods)
        bench_walk(x, y, exact, args.ratio)
        del x, y, exact
    if args.reference_n:
        bench_reference(args.reference_n, args.d, args.k, args.reference_ratios)


if __name__ == "__main__":
    main()

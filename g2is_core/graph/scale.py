"""The instruction graph at scale: an approximate kNN index chosen from N, d and memory, built and
searched in bounded chunks straight from a feature memmap, with recall measured on a sample.

:func:`g2is_core.graph.knn.build_knn` holds the whole feature matrix (and, for exact search, tiles of
X X^T); that is right up to ~10^5 rows. Past that, :func:`knn_streaming` reads the rows from the
store's memmap ``chunk`` rows at a time, for training (a sample), adding and searching, so the
only O(N) allocations are the index itself and the [N, k] result.

Choice of index (:func:`plan_index`), FAISS, inner product on unit rows = cosine:

- ``ivf-flat`` when the full vectors fit in the memory budget (``N d 4`` bytes is at most half of
  it): IndexIVFFlat with ``nlist`` ~ 4 sqrt(N) (power of two), trained on ``32 nlist`` sampled rows,
  ``nprobe`` = 8. Similarities come out exact (the stored vectors are the full floats); only the
  candidate set is approximate. Why not HNSW here: measured on this machine at N = 100k, d = 256,
  k = 16 (clustered data), HNSW (M 32, efSearch 64) took 83 s for recall 0.94 where IVF-Flat
  (nlist 1024, nprobe 8) took 30 s for recall 0.997; the all-points self-join favours IVF.
- ``ivf-pq`` otherwise: IndexIVFPQ with ``d / 8`` sub-quantisers of 8 bits (d/8 bytes per row), the
  ``rerank`` = 4k best PQ candidates re-scored exactly against the memmap rows, so the returned
  similarities are exact cosines again.

Rows the index returns fewer than k neighbours for are completed by exact search over the
memmap. Recall is measured with :func:`sample_recall`: exact top-k of a random sample of rows by a
streamed brute force.
"""
from __future__ import annotations

import math
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Progress, no_progress

KINDS = ("ivf-flat", "ivf-pq")


@dataclass(frozen=True)
class IndexPlan:
    """An approximate index and its parameters (see the module doc for how they are chosen)."""

    kind: str                 # "ivf-flat" | "ivf-pq"
    nlist: int                # inverted lists (coarse centroids)
    nprobe: int               # lists searched per query
    train_rows: int           # rows sampled to train the coarse (and PQ) quantiser
    pq_m: int = 0             # ivf-pq: sub-quantisers (bytes per row)
    rerank: int = 0           # ivf-pq: PQ candidates re-scored exactly per row
    est_bytes: int = 0        # estimated memory of the index + result
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_index(n: int, d: int, k: int, memory_bytes: int, *, kind: str | None = None) -> IndexPlan:
    """Pick the index for N rows of dimension d, k neighbours and a memory budget (bytes)."""
    if n < 2 or k >= n:
        raise ValueError(f"k={k} neighbours need more than k rows; got N={n}")
    nlist = max(16, min(1 << round(math.log2(max(16.0, 4 * math.sqrt(n)))), n // 32))
    result = n * k * 12  # int64 ids + float32 sims
    flat = n * d * 4 + nlist * d * 4 + result
    pq_m = max(1, d // 8)
    while d % pq_m:
        pq_m -= 1
    pq = n * (pq_m + 8) + nlist * d * 4 + 256 * d * 4 + result
    if kind is None:
        kind = "ivf-flat" if flat <= memory_bytes // 2 else "ivf-pq"
    if kind not in KINDS:
        raise ValueError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "ivf-flat":
        return IndexPlan("ivf-flat", nlist, min(nlist, 8), min(n, 32 * nlist), est_bytes=flat,
                         reason=f"full vectors ({n * d * 4 / 2**30:.2f} GiB) fit in half the budget "
                                f"({memory_bytes / 2**30:.1f} GiB)")
    return IndexPlan("ivf-pq", nlist, min(nlist, 16), min(n, max(32 * nlist, 256 * 64)), pq_m=pq_m,
                     rerank=min(n - 1, 4 * k), est_bytes=pq,
                     reason=f"full vectors ({n * d * 4 / 2**30:.2f} GiB) exceed half the budget; "
                            f"{pq_m} bytes per row, exact re-rank from the memmap")


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rows(x, a: int, b: int) -> np.ndarray:
    return np.ascontiguousarray(x[a:b], dtype=np.float32)


def knn_streaming(x, k: int, plan: IndexPlan | None = None, *, memory_bytes: int = 8 << 30, chunk: int = 65536,
                  seed: int = 0, threads: int | None = None,
                  progress: Progress = no_progress) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Approximate top-k cosine neighbours of every row of ``x`` [N, d] (unit rows; a memmap is read in chunks).

    Returns (neighbors [N, k] int64, sims [N, k] float32 exact cosines, rows sorted descending,
    ties by index, self excluded; info: plan, seconds per stage, rows completed exactly).
    """
    import faiss

    from .knn import _sort_rows
    from ..runtime import configured_threads

    faiss.omp_set_num_threads(threads or configured_threads())
    n, d = x.shape
    plan = plan or plan_index(n, d, k, memory_bytes)
    info: dict[str, Any] = {"plan": plan.to_dict()}
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, plan.train_rows, replace=False)) if plan.train_rows < n else np.arange(n)
    train = np.concatenate([_rows(x, 0, 0)] + [np.asarray(x[sample[a:a + chunk]], np.float32)
                                               for a in range(0, len(sample), chunk)])
    if plan.kind == "ivf-flat":
        nbrs, sims = _ivf_self_join(x, k, plan, train, chunk=chunk, seed=seed, info=info, progress=progress)
    else:
        nbrs, sims = _ivf_pq(x, k, plan, train, chunk=chunk, seed=seed, info=info, progress=progress)
    t3 = time.perf_counter()
    short = np.flatnonzero((nbrs < 0).any(axis=1))
    if len(short):
        nbrs[short], sims[short] = exact_topk(x, short, k, chunk=chunk)
    info["complete_s"] = round(time.perf_counter() - t3, 2)
    info["completed_exactly"] = int(len(short))
    nbrs, sims = _sort_rows(nbrs, sims)
    info["total_s"] = round(time.perf_counter() - t0, 2)
    return nbrs, sims, info


def _ivf_self_join(x, k: int, plan: IndexPlan, train: np.ndarray, *, chunk: int, seed: int, info: dict,
                   progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """All-rows kNN with inverted lists, searched LIST BY LIST with one matrix product per list.

    Rows are assigned to their nearest of ``nlist`` spherical k-means centroids and copied, in list
    order, to a temporary memmap. The queries of list L are scored exactly (one GEMM) against the
    rows of the ``nprobe`` lists whose centroids are nearest to L's centroid (L included). That is
    IVF-Flat with the probe set chosen per list instead of per query (a query near its list's edge
    may miss a list its own probe would take: the recall is measured, not assumed), and it turns
    N small scans into nlist BLAS products: at N = 1M on 2 cores, minutes instead of tens of
    minutes (docs/scaling.md). Memory: the [N, k] result, the assignment, one list's scores.
    """
    import shutil

    import faiss

    n, d = x.shape
    t0 = time.perf_counter()
    km = faiss.Kmeans(d, plan.nlist, niter=10, seed=seed, spherical=True, verbose=False)
    km.train(train)
    cent = km.centroids.astype(np.float32)
    quant = faiss.IndexFlatIP(d)
    quant.add(cent)
    info["train_s"] = round(time.perf_counter() - t0, 2)
    progress(0.1, f"trained {plan.nlist} lists on {len(train)} rows")
    t1 = time.perf_counter()
    assign = np.empty(n, np.int64)
    for a in range(0, n, chunk):
        assign[a:a + chunk] = quant.search(_rows(x, a, min(n, a + chunk)), 1)[1][:, 0]
    order = np.argsort(assign, kind="stable")
    starts = np.zeros(plan.nlist + 1, np.int64)
    np.cumsum(np.bincount(assign, minlength=plan.nlist), out=starts[1:])
    del assign
    tmp = Path(tempfile.mkdtemp(prefix="g2is-ivf-"))
    try:
        xs = np.lib.format.open_memmap(tmp / "by_list.npy", mode="w+", dtype=np.float32, shape=(n, d))
        for a in range(0, n, chunk):
            idx = order[a:a + chunk]
            srt = np.argsort(idx)
            block = np.empty((len(idx), d), np.float32)
            block[srt] = np.asarray(x[idx[srt]], np.float32)   # ascending reads from the source memmap
            xs[a:a + len(idx)] = block
        xs.flush()
        info["add_s"] = round(time.perf_counter() - t1, 2)
        progress(0.3, "rows copied in list order")
        t2 = time.perf_counter()
        probe = np.argsort(-(cent @ cent.T), axis=1, kind="stable")[:, :plan.nprobe]
        nbrs = np.full((n, k), -1, np.int64)
        sims = np.full((n, k), -np.inf, np.float32)
        with _one_blas_thread():  # small GEMMs: a spinning multi-threaded OpenBLAS is 6x slower here
            _join_lists(xs, order, starts, probe, k, nbrs, sims, progress)
        del xs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["search_s"] = round(time.perf_counter() - t2, 2)
    info["index_bytes"] = int(n * 8 + plan.nlist * d * 4)   # assignment order + centroids (rows stay on disk)
    return nbrs, sims


def _one_blas_thread():
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _join_lists(xs, order, starts, probe, k, nbrs, sims, progress) -> None:
    n = len(order)
    for L in range(len(probe)):
        a, b = starts[L], starts[L + 1]
        if a == b:
            continue
        lists = probe[L]
        cand = np.concatenate([xs[starts[j]:starts[j + 1]] for j in lists])
        pos = np.concatenate([np.arange(starts[j], starts[j + 1]) for j in lists])
        s = xs[a:b] @ cand.T                                        # [|L|, candidates]
        own = np.flatnonzero(pos == a)
        if len(own):                                                # self, when L is among its probes
            s[np.arange(b - a), own[0] + np.arange(b - a)] = -np.inf
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        v = np.take_along_axis(s, part, 1)
        ids = order[pos[part]]
        ids[~np.isfinite(v)] = -1
        rows = order[a:b]
        nbrs[rows, :kk], sims[rows, :kk] = ids, v
        if L % 256 == 0:
            progress(0.3 + 0.7 * b / n, f"searched {b}/{n} rows")


def _ivf_pq(x, k: int, plan: IndexPlan, train: np.ndarray, *, chunk: int, seed: int, info: dict,
            progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """FAISS IndexIVFPQ (d/8 bytes per row), the ``rerank`` best PQ candidates re-scored exactly from ``x``."""
    import faiss

    n, d = x.shape
    t0 = time.perf_counter()
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, plan.nlist, plan.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = 10
    index.train(train)
    info["train_s"] = round(time.perf_counter() - t0, 2)
    progress(0.1, f"trained ivf-pq ({plan.nlist} lists) on {len(train)} rows")
    t1 = time.perf_counter()
    for a in range(0, n, chunk):
        index.add(_rows(x, a, min(n, a + chunk)))
        progress(0.1 + 0.3 * min(n, a + chunk) / n, f"added {min(n, a + chunk)}/{n} rows")
    info["add_s"] = round(time.perf_counter() - t1, 2)
    index.nprobe = plan.nprobe
    t2 = time.perf_counter()
    nbrs = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        q = _rows(x, a, b)
        _, I = index.search(q, plan.rerank + 1)
        I = np.where(I == np.arange(a, b)[:, None], -1, I)
        D = _exact_scores(x, q, I)
        top = np.argsort(-D, axis=1, kind="stable")[:, :k]
        nbrs[a:b] = np.take_along_axis(I, top, 1)
        sims[a:b] = np.take_along_axis(D, top, 1)
        progress(0.4 + 0.6 * b / n, f"searched {b}/{n} rows")
    info["search_s"] = round(time.perf_counter() - t2, 2)
    info["index_bytes"] = int(n * (plan.pq_m + 8) + plan.nlist * d * 4)
    return nbrs, sims


def _exact_scores(x, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """<q_i, x[cand_ij]> for candidates [m, c] (-1 = none), rows gathered from ``x`` in sorted order."""
    flat = cand.ravel()
    ok = flat >= 0
    uniq, inv = np.unique(flat[ok], return_inverse=True)
    rows = np.asarray(x[uniq], np.float32)
    out = np.full(flat.shape, -np.inf, np.float32)
    qi = np.repeat(np.arange(len(q)), cand.shape[1])[ok]
    out[ok] = np.einsum("ij,ij->i", q[qi], rows[inv])
    return out.reshape(cand.shape)


def exact_topk(x, rows: np.ndarray, k: int, *, chunk: int = 32768) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (self excluded) of the given rows against ALL rows of ``x``, streaming ``x`` in chunks.

    Returns ([len(rows), k] int64, float32), rows sorted descending, ties by index.
    """
    from .knn import _sort_rows

    rows = np.asarray(rows, np.int64)
    n = x.shape[0]
    q = np.asarray(x[np.sort(rows)], np.float32)[np.argsort(np.argsort(rows))]
    best_v = np.full((len(rows), k), -np.inf, np.float32)
    best_i = np.full((len(rows), k), -1, np.int64)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        s = q @ _rows(x, a, b).T                               # [m, chunk]
        hit = (rows >= a) & (rows < b)
        s[np.flatnonzero(hit), rows[hit] - a] = -np.inf         # self
        kk = min(k, b - a)
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cv = np.concatenate([best_v, np.take_along_axis(s, part, 1)], 1)
        ci = np.concatenate([best_i, part + a], 1)
        top = np.argpartition(-cv, k - 1, axis=1)[:, :k]
        best_v, best_i = np.take_along_axis(cv, top, 1), np.take_along_axis(ci, top, 1)
    return _sort_rows(best_i, best_v)


def sample_recall(x, nbrs: np.ndarray, k: int | None = None, *, n_queries: int = 2000, seed: int = 0,
                  chunk: int = 32768) -> tuple[float, np.ndarray]:
    """Recall@k of ``nbrs`` [N, >=k] on ``n_queries`` random rows against their exact top-k (streamed brute force).

    Returns (recall, the query rows).
    """
    from .knn import knn_recall

    n = x.shape[0]
    k = k or nbrs.shape[1]
    q = np.sort(np.random.default_rng(seed).choice(n, min(n_queries, n), replace=False))
    exact, _ = exact_topk(x, q, k, chunk=chunk)
    return knn_recall(nbrs[q, :k], exact), q

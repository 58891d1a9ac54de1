"""Streaming approximate kNN over a memmap: index choice from N and memory, exact completion, recall."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from g2is_core.graph.knn import build_knn, knn_recall
from g2is_core.graph.scale import exact_topk, knn_streaming, plan_index, sample_recall


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((max(4, n // 100), d))
    x = c[rng.integers(0, len(c), n)] + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_plan_index_follows_memory():
    assert plan_index(1_000_000, 256, 16, 16 << 30).kind == "ivf-flat"
    small = plan_index(1_000_000, 256, 16, 1 << 30)
    assert small.kind == "ivf-pq" and small.pq_m == 32 and small.rerank == 64
    assert plan_index(1_000_000, 256, 16, 16 << 30).nlist == 4096
    with pytest.raises(ValueError, match="more than k"):
        plan_index(10, 4, 10, 1 << 30)


def test_exact_topk_streams_to_the_exact_graph():
    x = _clustered(700, 24)
    ex, es = build_knn(x, 8, "exact")
    rows = np.array([5, 0, 699, 123])
    i, s = exact_topk(x, rows, 8, chunk=97)                 # chunks straddle the rows
    assert np.array_equal(i, ex[rows]) and np.allclose(s, es[rows], atol=1e-6)


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-pq"])
def test_knn_streaming_on_a_memmap(tmp_path, kind):
    x = _clustered(3000, 32, seed=1)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    feats = np.load(tmp_path / "f.npy", mmap_mode="r")      # fp16 memmap, as a gradient store holds
    exact, _ = build_knn(np.asarray(feats, np.float32), 10, "exact")
    plan = plan_index(len(x), 32, 10, 1 << 30, kind=kind)
    if kind == "ivf-pq":  # 4 bytes per row on 3000 rows is a crude code: re-rank more candidates
        plan = replace(plan, rerank=60)
    nb, sims, info = knn_streaming(feats, 10, plan, chunk=700, threads=1)
    assert nb.shape == (3000, 10) and (nb >= 0).all() and not (nb == np.arange(3000)[:, None]).any()
    assert knn_recall(nb, exact) >= 0.9
    # similarities are exact cosines of the returned neighbours, sorted descending
    xf = np.asarray(feats, np.float32)
    assert np.allclose(sims, np.einsum("id,ikd->ik", xf, xf[nb]), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-7).all()
    r, q = sample_recall(feats, nb, n_queries=300)
    assert abs(r - knn_recall(nb[q], exact[q])) < 1e-12 and info["plan"]["kind"] == kind

"""kNN search, the InstructionGraph artefact and its statistics."""
import os

os.environ.setdefault("G2IS_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from g2is_core.graph.knn import (InstructionGraph, build_graph, build_knn, core_neighbors,  # noqa: E402
                             estimate_recall, graph_stats, knn_recall)
from g2is_core.graph.walk import core_knowledge  # noqa: E402
from g2is_core.linalg import unit_rows  # noqa: E402


def brute_force(x, k):
    s = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


def random_unit(n, d, seed=0):
    return unit_rows(np.random.default_rng(seed).standard_normal((n, d)), zero="raise")


@pytest.mark.parametrize("n, d, k, block", [(500, 16, 7, 64), (301, 8, 1, 100), (257, 32, 20, 4096)])
def test_exact_equals_brute_force(n, d, k, block):
    x = random_unit(n, d, seed=n)
    nb, sims = build_knn(x, k, "exact", block=block)
    want_nb, want_s = brute_force(x, k)
    assert nb.dtype == np.int64 and sims.dtype == np.float32 and nb.shape == (n, k)
    assert (nb == want_nb).all()
    assert np.allclose(sims, want_s, atol=1e-6)
    assert (nb != np.arange(n)[:, None]).all()                     # self excluded
    assert (np.diff(sims, axis=1) <= 0).all()                      # descending


def test_exact_ties_by_index_and_duplicates_kept():
    # rows 1, 2, 3 are identical: each is the others' nearest neighbour, self excluded, ties by index
    x = unit_rows(np.array([[1, 0], [0, 1], [0, 1], [0, 1], [1, 1]], dtype=np.float32), zero="raise")
    nb, sims = build_knn(x, 2)
    assert nb[1].tolist() == [2, 3] and nb[2].tolist() == [1, 3] and nb[3].tolist() == [1, 2]
    assert np.allclose(sims[1], 1.0)


def test_bf16_candidates_rescored_in_fp32():
    x = random_unit(600, 32, seed=3)
    nb, sims = build_knn(x, 10, precision="bf16", block=128)
    want_nb, want_s = brute_force(x, 10)
    assert knn_recall(nb, want_nb) >= 0.99
    exact_vals = np.take_along_axis(x.astype(np.float64) @ x.T.astype(np.float64), nb, 1)
    assert np.allclose(sims, exact_vals, atol=1e-6)                # similarities are fp32, not bf16


def test_exact_device_auto_cpu_and_cuda():
    # "auto" (the default) is the CPU here unless CUDA is present; the CPU answer is the brute force either way,
    # and a CUDA device, where present, gives the same neighbours up to float rounding of near-ties
    import torch

    x = random_unit(400, 16, seed=5)
    want_nb, want_s = brute_force(x, 8)
    nb, sims = build_knn(x, 8, device="cpu", block=128)
    assert (nb == want_nb).all() and np.allclose(sims, want_s, atol=1e-6)
    nb_auto, sims_auto = build_knn(x, 8, block=128, precision="bf16")
    assert knn_recall(nb_auto, want_nb) >= 0.99 and sims_auto.dtype == np.float32
    if torch.cuda.is_available():
        nb_gpu, sims_gpu = build_knn(x, 8, device="cuda", block=128)
        assert knn_recall(nb_gpu, want_nb) >= 0.999 and np.allclose(sims_gpu, want_s, atol=1e-5)
    else:
        with pytest.raises(ValueError, match="no CUDA device"):
            build_knn(x, 8, device="cuda")


def test_hnsw_recall_on_random_data():
    pytest.importorskip("faiss")
    x = random_unit(2000, 32, seed=1)
    exact, _ = build_knn(x, 10)
    approx, sims = build_knn(x, 10, "hnsw")
    assert knn_recall(approx, exact) >= 0.95
    assert (approx != np.arange(2000)[:, None]).all() and (np.diff(sims, axis=1) <= 0).all()


def test_estimate_recall_on_a_sample():
    x = random_unit(800, 16, seed=6)
    exact, _ = build_knn(x, 6)
    assert estimate_recall(x, exact, n_sample=200) == 1.0
    shuffled = exact.copy()
    shuffled[:, -3:] = (exact[:, -3:] + 1) % 800           # half of each row replaced by (mostly) wrong nodes
    assert 0.4 < estimate_recall(x, shuffled, n_sample=200) < 0.6


def test_ivf_recall_with_enough_probes():
    pytest.importorskip("faiss")
    x = random_unit(2000, 16, seed=2)
    exact, _ = build_knn(x, 8)
    approx, _ = build_knn(x, 8, "ivf", nlist=16, nprobe=16)        # every list probed: exact
    assert knn_recall(approx, exact) >= 0.999


def test_knn_recall_known_values():
    e = np.array([[1, 2], [0, 2], [0, 1]])
    assert knn_recall(e, e) == 1.0
    assert knn_recall(np.array([[2, 1], [2, 0], [1, 0]]), e) == 1.0  # order within a row ignored
    assert knn_recall(np.array([[1, 0], [0, 1], [2, 1]]), e) == pytest.approx(3 / 6)  # one hit per row
    with pytest.raises(ValueError):
        knn_recall(e[:, :1], e)


def test_bad_inputs():
    x = random_unit(10, 4)
    with pytest.raises(ValueError, match="k < N"):
        build_knn(x, 10)
    with pytest.raises(ValueError, match="method"):
        build_knn(x, 3, "annoy")
    with pytest.raises(ValueError, match="NaN"):
        unit_rows(np.array([[1.0, np.nan], [1.0, 0.0]]), zero="raise")
    with pytest.raises(ValueError, match="zeros"):
        unit_rows(np.array([[0.0, 0.0], [1.0, 0.0]]), zero="raise")


def test_core_neighbors_use_signed_similarity():
    x = unit_rows(np.array([[1, 0], [-1, 0], [0.5, 0.5], [0, 1]], dtype=np.float32), zero="raise")
    nb, s = core_neighbors(x, np.array([[-1.0, 0.0]]), 2)
    assert nb.tolist() == [[1, 3]] and np.allclose(s, [[1.0, 0.0]])


def test_graph_save_load_round_trip(tmp_path):
    x = random_unit(200, 16, seed=4)
    ids = [f"rec-{i}" for i in range(200)]
    g = build_graph(x, 5, ids=ids)
    g.save(tmp_path / "g", inputs={"features": "sha"})
    edges = pd.read_parquet(tmp_path / "g" / "edges.parquet")
    assert list(edges.columns) == ["src", "dst", "sim", "rank", "type"]
    assert str(edges["src"].dtype) == "int64" and str(edges["dst"].dtype) == "int64"
    assert str(edges["sim"].dtype) == "float32" and str(edges["rank"].dtype) == "int16"
    assert set(edges["type"]) == {"train-train"} and len(edges) == 1000
    back = InstructionGraph.load(tmp_path / "g")
    assert (back.neighbors == g.neighbors).all() and (back.sims == g.sims).all()
    assert back.ids == ids and back.k == 5 and back.method == "exact" and back.kind == "train"


def test_mixed_graph_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    x = random_unit(300, 8, seed=5)
    core = core_knowledge(rng.standard_normal((6, 8)), 0.7)
    g = build_graph(x, 4, core=core, core_k=6)
    assert g.kind == "mixed" and g.core_neighbors.shape == (core.k, 6)
    proj = x.astype(np.float64) @ core.components.T.astype(np.float64)
    assert (g.core_neighbors[:, 0] == proj.argmax(axis=0)).all()
    g.save(tmp_path / "m")
    edges = pd.read_parquet(tmp_path / "m" / "edges.parquet")
    ct = edges[edges["type"] == "core-train"]
    assert len(ct) == core.k * 6 and set(ct["src"]) == set(range(300, 300 + core.k))
    back = InstructionGraph.load(tmp_path / "m")
    assert back.kind == "mixed" and back.ids == list(range(300))
    assert (back.core_neighbors == g.core_neighbors).all()
    assert np.allclose(back.core_components, core.components, atol=1e-6)
    assert np.allclose(back.core_weights, core.weights)


def test_graph_stats_hand_graph():
    # 4 nodes, k = 2; node 3 is nobody's neighbour; one negative edge
    nb = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    sims = np.array([[0.9, 0.5], [0.9, 0.4], [0.5, 0.4], [0.1, -0.2]], dtype=np.float32)
    st = graph_stats(InstructionGraph(nb, sims, method="exact"))
    assert st["in_degree"]["max"] == 3 and st["in_degree"]["zero"] == 1 and st["in_degree"]["mean"] == 2.0
    assert st["in_degree"]["top"][0] == [0, 3]
    assert st["sim"]["frac_negative"] == pytest.approx(1 / 8)
    assert st["sim"]["quantiles"]["1.0"] == pytest.approx(0.9) and st["sim"]["quantiles"]["0.0"] == pytest.approx(-0.2)
    assert st["sim"]["mean_by_rank"] == pytest.approx([0.6, 0.275])
    # reverse edges present: 0<->1, 0<->2, 1<->2 (6 of 8 edges); 3->0 and 3->1 are not reciprocated
    assert st["reciprocity"] == pytest.approx(6 / 8)
    assert sum(st["in_degree"]["hist"]["counts"]) == 4

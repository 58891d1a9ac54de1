"""The graph and walk views of the bridge (docs/bridge.md, "The graph and walk views"), without Streamlit.

Readers: the head signatures of a graph's pool or a run's pool and target, through their gradient stores
(:func:`store_signatures`; the keys are the ``train_store_keys`` / ``target_store_keys`` the graph and the
run record). Pure functions: what the Instruction graph and Walk pages colour, draw and plot with.

Checkpoints combine as in the ``heads`` method (:mod:`g2is_core.selection.methods.heads`). With the pool's
LESS checkpoint weights w_i (normalised to sum 1), S_i(z) [L, H] a record's signature at checkpoint i and
P_i the target's pattern there (the mean of the target records' S_i)::

    similarity(z)        = sum_i w_i cos(S_i(z), P_i)              the ``heads`` score (unit, all heads)
    similarity(set)      = sum_i w_i cos(mean_{z in set} S_i(z), P_i)   the set's activation pattern vs P
    shown signature      = sum_i w_i S_i(z)                          [L, H], what a heatmap draws

The mean of a set's signatures is the set's activation pattern exactly (docs/bridge.md), so "the
selection's running signature" is the activation pattern of the records chosen so far. A zero signature
has cosine 0 with everything (as in ``heads``).

Layer band (the graph's categorical colour): the layers are split into three consecutive bands (early,
middle, late; ``numpy.array_split``, so 30 layers give 0-9, 10-19, 20-29) and a record's band is the one
holding most of its shown signature's mass (sum of the band's values; signatures are non-negative), ties
to the earlier band; a record with an all-zero signature has band -1 ("no signal").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..workspace import SIDECAR, Workspace, read_sidecar

STORES = "grads"           # features.store.KIND
N_BANDS = 3
BAND_NAMES = ("early", "middle", "late")
NO_SIGNAL = -1


class MissingSignatures(ValueError):
    """The stores a view needs are absent or carry no head signatures; the message says how to get them."""


@dataclass(frozen=True)
class Signatures:
    """Head signatures of one side (a pool, or a target), one array per warmup checkpoint.

    per_checkpoint: C arrays [N, L, H] (read-only memmaps; row r is record ``ids[r]``, the graph's node r)
    weights:        [C] LESS checkpoint weights, normalised to sum 1 (equal when a store records none)
    ids:            N record ids, row order
    keys:           C gradient store keys
    """

    per_checkpoint: tuple[Any, ...]
    weights: np.ndarray
    ids: tuple[str, ...]
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shapes = {tuple(np.shape(s)) for s in self.per_checkpoint}
        if not self.per_checkpoint or len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"head signatures must be one [N, L, H] array per checkpoint; got shapes {sorted(shapes)}")
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (len(self.per_checkpoint),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"checkpoint weights must be {len(self.per_checkpoint)} non-negative numbers, not all 0")
        object.__setattr__(self, "weights", w / w.sum())
        if len(self.ids) != self.n:
            raise ValueError(f"{len(self.ids)} ids for {self.n} signature rows")

    @classmethod
    def from_arrays(cls, arrays: np.ndarray | Sequence[np.ndarray], weights: Sequence[float] | None = None,
                    ids: Sequence[str] | None = None) -> "Signatures":
        """From one [N, L, H] array or a list of them (one per checkpoint); ids "0".."N-1" by default."""
        arrs = [np.asarray(arrays)] if isinstance(arrays, np.ndarray) and arrays.ndim == 3 else \
            [np.asarray(a) for a in arrays]
        n = arrs[0].shape[0] if arrs and np.ndim(arrs[0]) == 3 else 0
        return cls(tuple(arrs), np.ones(len(arrs)) if weights is None else np.asarray(weights, float),
                   tuple(str(i) for i in (ids if ids is not None else range(n))))

    @property
    def n(self) -> int:
        return int(np.shape(self.per_checkpoint[0])[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(L, H): layers and query heads."""
        L, H = np.shape(self.per_checkpoint[0])[1:]
        return int(L), int(H)

    def rows(self, idx) -> list[np.ndarray]:
        """C arrays [n, L, H] float64: the rows ``idx`` (an index array, a list or a slice) per checkpoint."""
        sel = idx if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64)
        return [np.asarray(s[sel], dtype=np.float64) for s in self.per_checkpoint]

    def shown(self, idx) -> np.ndarray:
        """[n, L, H] float64: sum_i w_i S_i of the rows ``idx`` (what a heatmap draws)."""
        return combine(self.rows(idx), self.weights)

    def pattern(self, idx=None) -> list[np.ndarray]:
        """C arrays [L, H]: the mean signature of the rows ``idx`` (all rows when None) at each checkpoint,
        i.e. their activation pattern. An empty set is refused (it has no pattern)."""
        sel = np.arange(self.n) if idx is None else idx
        if not isinstance(sel, slice) and len(np.atleast_1d(sel)) == 0:
            raise ValueError("no records chosen; a set's mean signature needs at least one record")
        return [r.mean(axis=0) for r in self.rows(sel)]


# ----------------------------------------------------------------------------- readers
def signature_stamp(ws: Workspace, keys: Iterable[str]) -> float:
    """A number that changes when one of the stores' sidecars changes (the pages' cache key)."""
    out = 0.0
    for k in keys:
        p = ws.root / STORES / k / SIDECAR
        out += p.stat().st_mtime if p.exists() else -1.0
    return out


def store_signatures(ws: Workspace, keys: Sequence[str], side: str = "pool") -> Signatures:
    """The head signatures of the gradient stores ``keys`` (one per checkpoint; a graph's or run's
    ``train_store_keys``, or a run's ``target_store_keys``) in ``ws``, with their LESS weights.

    Raises :class:`MissingSignatures` with a sentence saying what to run when no store is recorded, a store
    is not in the workspace or carries no signatures; ValueError when the stores disagree (records, setting).
    Never writes (a read-only workspace is fine)."""
    from ..features.store import GradientStore, check_same_side

    keys = [str(k) for k in keys]
    kind = "train" if side == "pool" else "target"
    how = (f"extract the {side} with `g2is grads ... --kind {kind} --head-signatures` (the same data, warmup and "
           "projector)" + (", then build the graph from those stores (`g2is graph build --train-store ...`)"
                           if side == "pool" else ", then select again from those stores"))
    if not keys:
        raise MissingSignatures(f"no {side} gradient store is recorded for this artefact (it was made from feature "
                                f"arrays), so there are no head signatures to show; {how}")
    stores = []
    for k in keys:
        d = ws.root / STORES / k
        if not (d / SIDECAR).exists():
            raise MissingSignatures(f"the {side} gradient store {k} is not in this workspace (or the features were "
                                    f"given as arrays), so there are no head signatures to show; {how}")
        if not read_sidecar(d).get("head_signatures"):  # before opening: opening checks features.npy's sha256
            raise MissingSignatures(f"the {side} gradient store {k} has no head signatures; {how}")
        stores.append(GradientStore.open(d))
    check_same_side(stores, side)
    ids = stores[0].ids
    for s in stores[1:]:
        if s.ids != ids:
            raise ValueError(f"the {side} gradient stores {stores[0].dir.name} and {s.dir.name} hold different "
                             "records; use stores extracted from the same data")
    weights = [s.weight for s in stores]
    if any(w is None for w in weights):  # as FeatureSet.from_stores: no LESS weight, equal weights
        weights = [1.0] * len(stores)
    return Signatures(tuple(s.head_signatures() for s in stores), np.asarray(weights, float), tuple(ids),
                      tuple(keys))


def target_choices(graph_meta: dict[str, Any] | None, runs: Iterable[Any]) -> dict[tuple[str, ...], str]:
    """{target store keys: label} of the targets whose pattern a page can compare against: the graph's own
    (``g2is graph build --target-store``) and each selection run's recorded ``target_store_keys`` (runs
    newest first; one entry per distinct set of keys, labelled by the first run that used it)."""
    out: dict[tuple[str, ...], str] = {}
    own = ((graph_meta or {}).get("inputs") or {}).get("target_store_keys")
    if own:
        out[tuple(own)] = "the graph's target"
    for r in runs:
        keys = ((r.meta.get("inputs") or {}).get("target_store_keys")) or []
        if keys and tuple(keys) not in out:
            out[tuple(keys)] = f"{r.target} (as selected by {r.method}, {r.path.name})"
    return out


def check_pair(pool: Signatures, target: Signatures) -> None:
    """Raise ValueError when pool and target signatures cannot be compared checkpoint by checkpoint."""
    if len(pool.per_checkpoint) != len(target.per_checkpoint):
        raise ValueError(f"the pool has {len(pool.per_checkpoint)} checkpoint(s) but the target "
                         f"{len(target.per_checkpoint)}; compare stores of the same warmup checkpoints")
    if pool.shape != target.shape:
        raise ValueError(f"pool signatures are {pool.shape} (layer, head) but the target's are {target.shape}; "
                         "extract both from the same model")


# ----------------------------------------------------------------------------- pure numbers
def combine(per_checkpoint: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """sum_i w_i x_i over checkpoints (any common shape), float64."""
    out = np.zeros(np.shape(per_checkpoint[0]), np.float64)
    for x, w in zip(per_checkpoint, weights):
        out += float(w) * np.asarray(x, dtype=np.float64)
    return out


def _cosine_rows(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[n] cosine of each row of ``a`` [n, ...] with ``p`` [...]; 0 where either is all zero."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    dot = a @ p
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(p)
    return np.divide(dot, den, out=np.zeros_like(dot), where=den > 0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two signatures or patterns (any common shape); 0 when one is all zero."""
    return float(_cosine_rows(np.asarray(a)[None], b)[0])


def pattern_similarity(patterns: Sequence[np.ndarray], target: Sequence[np.ndarray], weights: np.ndarray) -> float:
    """sum_i w_i cos(patterns_i, target_i): a set's pattern against the target's, per checkpoint [L, H]."""
    return float(sum(float(w) * cosine(a, b) for a, b, w in zip(patterns, target, weights)))


def similarity_to_target(pool: Signatures, target: Sequence[np.ndarray], block: int = 8192) -> np.ndarray:
    """[N] float64: sum_i w_i cos(S_i(z), P_i) for every pool row (the ``heads`` score with ``unit`` and all
    heads), blocked over rows. ``target``: C patterns [L, H] (:meth:`Signatures.pattern` of the target)."""
    if len(target) != len(pool.per_checkpoint):
        raise ValueError(f"{len(target)} target pattern(s) for {len(pool.per_checkpoint)} pool checkpoint(s)")
    out = np.zeros(pool.n, np.float64)
    for r0 in range(0, pool.n, block):
        for s, p, w in zip(pool.rows(slice(r0, r0 + block)), target, pool.weights):
            out[r0: r0 + len(s)] += w * _cosine_rows(s, p)
    return out


def layer_bands(n_layers: int, n_bands: int = N_BANDS) -> list[range]:
    """The consecutive layer bands (``numpy.array_split`` of the layers; 30 layers: 0-9, 10-19, 20-29)."""
    if n_layers < 1:
        raise ValueError("a signature needs at least one layer")
    return [range(int(c[0]), int(c[-1]) + 1) for c in np.array_split(np.arange(n_layers), min(n_bands, n_layers))]


def band_label(band: int, n_layers: int) -> str:
    """Words for a band index of :func:`dominant_band` ("early layers 0-9", ..., "no signal")."""
    if band == NO_SIGNAL:
        return "no signal"
    bands = layer_bands(n_layers)
    r = bands[band]
    name = BAND_NAMES[band] if len(bands) == N_BANDS else f"band {band}"
    return f"{name} layers {r.start}-{r.stop - 1}"


def dominant_band(signatures: np.ndarray) -> np.ndarray:
    """[n] int: for each signature of ``signatures`` [n, L, H], the layer band (:func:`layer_bands`) holding
    most of its mass, ties to the earlier band; -1 (:data:`NO_SIGNAL`) for an all-zero signature."""
    s = np.asarray(signatures, dtype=np.float64)
    mass = np.stack([s[:, r.start: r.stop, :].sum(axis=(1, 2)) for r in layer_bands(s.shape[1])], axis=1)  # [n, B]
    out = np.argmax(mass, axis=1).astype(np.int64)
    out[~np.any(s.reshape(len(s), -1) != 0, axis=1)] = NO_SIGNAL
    return out


def pool_bands(pool: Signatures, block: int = 8192) -> np.ndarray:
    """[N] int: :func:`dominant_band` of every pool row's shown signature, blocked over rows."""
    return np.concatenate([dominant_band(pool.shown(slice(r0, r0 + block))) for r0 in range(0, pool.n, block)]) \
        if pool.n else np.zeros(0, np.int64)


def check_nodes(pool: Signatures, nodes: Sequence[int], ids: Sequence[str] | None = None) -> np.ndarray:
    """``nodes`` as an int array after checking they are rows of ``pool`` (and, when ``ids`` are given, that
    row ``nodes[t]`` is record ``ids[t]``: a walk on other stores' rows must not be read silently)."""
    v = np.asarray(nodes, dtype=np.int64)
    if len(v) and (v.min() < 0 or v.max() >= pool.n):
        raise ValueError(f"node {int(v.max() if v.max() >= pool.n else v.min())} is not a row of the signatures "
                         f"(0..{pool.n - 1}); the stores are not the ones this graph or walk was built on")
    if ids is not None:
        bad = [t for t, (r, i) in enumerate(zip(v, ids)) if pool.ids[int(r)] != str(i)]
        if bad:
            t = bad[0]
            raise ValueError(f"step {t}: node {int(v[t])} is record {pool.ids[int(v[t])]!r} in the signatures' stores "
                             f"but {ids[t]!r} in the walk; the stores are not the ones the walk was run on")
    return v


def walk_similarity(pool: Signatures, nodes: Sequence[int], target: Sequence[np.ndarray],
                    components: Sequence[int] | None = None):
    """Per step of a walk (``nodes`` in replay order: by component, then step), against the target's
    patterns ``target`` (C arrays [L, H]): DataFrame with one row per step,

    - ``t``: 1, 2, ... (steps taken, the Walk page's replay slider)
    - ``added``: sum_i w_i cos(S_i(added record), P_i)
    - ``running``: sum_i w_i cos(mean of S_i over the records chosen so far, P_i): the selection's activation
      pattern so far against the target's
    - ``component_running``: the same over the records of this step's component so far (when ``components``)
    """
    import pandas as pd

    v = check_nodes(pool, nodes)
    T = len(v)
    comp = np.zeros(T, np.int64) if components is None else np.asarray(components, dtype=np.int64)
    if len(comp) != T:
        raise ValueError(f"{len(comp)} components for {T} steps")
    added = np.zeros(T)
    running = np.zeros(T)
    crunning = np.zeros(T)
    counts = np.arange(1, T + 1, dtype=np.float64)[:, None, None]
    for s, p, w in zip(pool.rows(v), target, pool.weights):                  # s: [T, L, H]
        added += w * _cosine_rows(s, p)
        running += w * _cosine_rows(np.cumsum(s, axis=0) / counts, p)          # scale-free: the mean's cosine
        for c in np.unique(comp):
            m = comp == c
            part = s[m]
            crunning[m] += w * _cosine_rows(np.cumsum(part, axis=0) / np.arange(1, len(part) + 1)[:, None, None], p)
    out = pd.DataFrame({"t": np.arange(1, T + 1), "node": v, "added": added, "running": running})
    if components is not None:
        out["component"] = comp
        out["component_running"] = crunning
    return out

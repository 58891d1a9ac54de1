"""Gradient features as the selection methods read them: :class:`FeatureSet` (one [N, d] matrix per
warmup checkpoint with its LESS weight) and the pairing of pool and target features.

Several checkpoints enter G2IS as ONE feature per example, concat_i sqrt(w_i) x_i(z) with every x_i
unit norm: its norm is 1 and the inner product of two such features is sum_i w_i cos(x_i, x'_i),
i.e. exactly the LESS checkpoint-weighted cosine; with one checkpoint it is the checkpoint's own
feature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..linalg import NonFiniteError, bad_rows, unit_rows
from ..workspace import hash_array, hash_config


@dataclass
class FeatureSet:
    """Gradient features of a record set at one or more warmup checkpoints.

    checkpoints: C arrays [N, d] (memmaps are fine; rows in the order of ``ids``).
    weights:     [C] LESS checkpoint weights (normalised to sum 1 here).
    ids:         N record ids, row order.
    keys:        C content keys (gradient store keys, or array hashes); they key every cache.
    unit:        the rows are already L2-normalised float32 (:meth:`from_npy`), so :meth:`combined`
                 uses them as they are: normalising a unit float32 row again can move it by an ulp,
                 and the walk on user matrices must stay the walk on ``unit_rows(zero="raise")``'s rows.
    signatures:  None, or C arrays [N, L, H]: each record's head signature at each checkpoint (the
                 stores' ``head_signatures()``; docs/bridge.md), read by the ``heads`` methods.
    """

    checkpoints: list[Any]
    weights: np.ndarray
    ids: list[str]
    keys: list[str]
    unit: bool = False
    signatures: list[Any] | None = None

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
        if self.signatures is not None:
            sh = {tuple(np.shape(s)) for s in self.signatures}
            if len(self.signatures) != len(self.checkpoints) or len(sh) != 1 or len(next(iter(sh))) != 3 \
                    or next(iter(sh))[0] != self.n:
                raise ValueError(f"head signatures must be one [N={self.n}, L, H] array per checkpoint "
                                 f"({len(self.checkpoints)}); got {len(self.signatures)} of shapes {sorted(sh)}")

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
                    weights: Sequence[float] | None = None,
                    signatures: np.ndarray | Sequence[np.ndarray] | None = None) -> "FeatureSet":
        arrs = [np.asarray(arrays)] if isinstance(arrays, np.ndarray) and np.ndim(arrays) == 2 else [np.asarray(a) for a in arrays]
        n = arrs[0].shape[0]
        keys = [hash_config({"sha256": hash_array(a)}) for a in arrs]
        if signatures is not None:  # one [N, L, H] array (one checkpoint) or a list of them
            signatures = ([np.asarray(signatures)] if isinstance(signatures, np.ndarray) and np.ndim(signatures) == 3
                          else [np.asarray(s) for s in signatures])
        return cls(arrs, np.ones(len(arrs)) if weights is None else np.asarray(weights, float),
                   [str(i) for i in (ids if ids is not None else range(n))], keys, signatures=signatures)

    @classmethod
    def from_npy(cls, path: str | Path, what: str = "features") -> "FeatureSet":
        """One checkpoint's features from a user's ``.npy`` file [N, d] (``g2is walk``), ids "0".."N-1".

        The file must hold a non-empty 2-D float array without NaN/inf or all-zero rows (as a gradient
        store's: :func:`check_store_rows`). Rows are L2-normalised once (``unit``)."""

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{what} file {path} does not exist; check the path")
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{what} file {path} is not a readable .npy array ({exc}); save it with numpy.save") from exc
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{what} in {path} must be a non-empty 2-D array [rows, d]; got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{what} in {path} must hold floats; got dtype {a.dtype}")
        x = unit_rows(a, zero="raise", what=f"{what} ({path})")
        return cls([x], np.ones(1), [str(i) for i in range(len(x))], [hash_config({"sha256": hash_array(x)})],
                   unit=True)

    @classmethod
    def from_stores(cls, stores: Sequence[Any], side: str = "pool") -> "FeatureSet":
        """From :class:`g2is_core.features.store.GradientStore` objects, one per checkpoint (weights from their
        sidecars). They must come from one extraction setting (:func:`~g2is_core.features.store.check_same_side`;
        ``side`` names them in the message) and hold finite, non-zero rows (:func:`check_store_rows`)."""
        from ..features.store import check_same_side

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
        check_same_side(stores, side)
        for s in stores:
            check_store_rows(s)
        weights = [s.weight for s in stores]
        if any(w is None for w in weights):
            weights = [1.0] * len(stores)  # a store without a LESS weight: equal weights
        # head signatures ride along when every store has them (the ``heads`` methods say when they are missing)
        sigs = [s.head_signatures() for s in stores] if all(getattr(s, "has_head_signatures", False) for s in stores) \
            else None
        return cls([s.features for s in stores], np.asarray(weights, float), list(ids), [s.dir.name for s in stores],
                   signatures=sigs)

    def combined(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """[n, C*d] float32: concat_i sqrt(w_i) x_i / |x_i| (unit rows; inner product = weighted cosine)."""
        parts = []
        for x, w in zip(self.checkpoints, self.weights):
            a = np.asarray(x if rows is None else x[rows], dtype=np.float32)
            parts.append((a if self.unit else unit_rows(a, zero="keep")) * np.float32(math.sqrt(w)))
        return np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0])


def check_store_rows(store: Any) -> None:
    """Raise :class:`~g2is_core.linalg.NonFiniteError` naming the store and the records when a store's feature
    rows hold NaN/inf or are all zeros: the graph would give such a node -inf or arbitrary neighbours and the
    walk would select from them (stores written before the extraction refused them can hold some).
    Reads the memmap in blocks."""
    nonfinite, zero = bad_rows(store.features)
    for rows, what in ((nonfinite, "NaN or inf"), (zero, "all zeros (no direction)")):
        if len(rows):
            ids = store.ids
            who = ", ".join(repr(ids[int(i)]) for i in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise NonFiniteError(f"gradient store {store.dir}: {len(rows)} of {len(store)} feature rows are {what} "
                                 f"(records {who}); extract the store again (after a new warmup if its loss "
                                 "diverged, with a larger --max-length if the windows were empty)")


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


def pair_features(train: FeatureSet, target: FeatureSet, train_stores: Sequence[Any] = (),
                  target_stores: Sequence[Any] = ()) -> None:
    """Check that train and target features can be compared checkpoint by checkpoint."""
    if train.dim != target.dim:
        raise ValueError(f"train features have d={train.dim} but target features have d={target.dim}; extract both "
                         "with the same projector (seed and dim)")
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

"""``heads`` and ``heads-hybrid``: select the pool records whose head signature looks like the target's
activation pattern (the bridge between data and heads; docs/bridge.md).

Every record z of a gradient store extracted with ``--head-signatures`` carries, per warmup checkpoint
i, its head signature S_i(z) [L, H] = |dLoss(z)/dgate[l, h]| (heads_method.md Eq. 2 for one sample,
taken in the feature pass: :mod:`g2is_core.features.extract`). The target's pattern is the mean of
the target records' signatures, P_i = mean_v S_i(v): exactly the activation pattern AP of the target
set on that checkpoint's model. Then::

    heads         score(z) = sum_i w_i sim(T(S_i(z))[K_i], T(P_i)[K_i])
    heads-hybrid  score(z) = weight * zs(heads(z)) + (1 - weight) * zs(less(z))

- w_i: the LESS checkpoint weights (mean learning rate of the epoch), as in ``less``.
- T, sim (option ``normalise``): ``raw`` -- no transform, sim = dot product (keeps each record's
  scale, which grows with its loss: high-loss records score high); ``unit`` -- sim = cosine (the
  shape of the pattern, not its size; the spec's "patterns shrink as the loss falls" pitfall);
  ``layer-z`` -- each layer's H values z-scored (mean 0, std 1 over the layer's heads), then cosine:
  removes the layer-level structure through which any two raw patterns correlate (heads_method.md
  section 3), leaving which heads WITHIN a layer stand out.
- K_i (option ``top_k``): all L x H heads (0), or the k heads with the largest target activation
  P_i (ties by head order), chosen on the raw pattern before T. T is applied over all heads first,
  so ``layer-z`` still standardises against the whole layer.
- zs(.): standardised over the pool, (s - mean) / std (a constant score becomes 0), so the weight
  mixes two scores of unit spread whatever their units; ``less`` is :func:`.less.less_scores`.

A record whose signature is all zero (no response token left) has cosine 0 (``unit``, ``layer-z``)
or dot 0 (``raw``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..features import FeatureSet
from ..registry import Context, Scored, option, register, top_order
from .less import less_scores

NORMALISE = ("raw", "unit", "layer-z")


@dataclass
class HeadsOptions:
    normalise: str = option("unit", "raw: dot product of the signatures as measured (keeps the loss scale); unit: "
                            "cosine (the pattern's shape); layer-z: each layer's heads z-scored, then cosine",
                            choices=list(NORMALISE))
    top_k: int = option(0, "compare only the k heads with the largest target activation (0 = all heads)")
    block: int = option(8192, "pool rows per block (memory ~ block x L x H floats)")


@dataclass
class HybridOptions:
    weight: float = option(0.5, "weight of the head score; 1 - weight goes to the LESS gradient score (both "
                           "standardised over the pool)")
    normalise: str = option("unit", "the head score's normalisation: raw, unit or layer-z (see method heads)",
                            choices=list(NORMALISE))
    top_k: int = option(0, "the head score compares only the k heads with the largest target activation (0 = all)")
    block: int = option(8192, "pool rows per block")


def _transform(x: np.ndarray, how: str) -> np.ndarray:
    """[n, L, H] -> [n, L, H] float64: T of the module doc (``raw`` and ``unit`` leave values as they are)."""
    x = np.asarray(x, dtype=np.float64)
    if how != "layer-z":
        return x
    mu = x.mean(axis=2, keepdims=True)
    sd = x.std(axis=2, keepdims=True)
    return np.divide(x - mu, sd, out=np.zeros_like(x), where=sd > 0)


def target_pattern(target: FeatureSet, checkpoint: int = 0) -> np.ndarray:
    """[L, H] the target's activation pattern at a checkpoint: the mean of its records' signatures."""
    return np.asarray(target.signatures[checkpoint], dtype=np.float64).mean(axis=0)


def top_heads(pattern: np.ndarray, k: int) -> np.ndarray:
    """Flat indices (l * H + h) of the ``k`` heads with the largest values of ``pattern`` [L, H] (0 = all),
    largest first, ties by head order."""
    flat = np.asarray(pattern, dtype=np.float64).reshape(-1)
    if k <= 0:
        return np.arange(flat.size)
    return np.lexsort((np.arange(flat.size), -flat))[:k]


def head_scores(train: FeatureSet, target: FeatureSet, normalise: str = "unit", top_k: int = 0,
                block: int = 8192) -> np.ndarray:
    """[N] float64: the ``heads`` score of every pool row (module doc), blocked over pool rows."""
    if normalise not in NORMALISE:
        raise ValueError(f"normalise {normalise!r}: use one of {', '.join(NORMALISE)}")
    out = np.zeros(train.n, np.float64)
    for i, w in enumerate(train.weights):
        p = target_pattern(target, i)
        if not np.any(p):
            raise ValueError("the target's head signatures are all zero (no target record has a response token "
                             "left?); check the target records and extract them again")
        keep = top_heads(p, top_k)
        pt = _transform(p[None], normalise).reshape(-1)[keep]                  # [K]
        pn = np.linalg.norm(pt)
        sig = train.signatures[i]
        for r0 in range(0, train.n, block):
            s = _transform(sig[r0: r0 + block], normalise)
            s = s.reshape(s.shape[0], -1)[:, keep]                               # [rows, K]
            dot = s @ pt                                                         # [rows]
            if normalise != "raw":  # cosine; a zero row (or a zero pattern after T) gives 0
                den = np.linalg.norm(s, axis=1) * pn
                dot = np.divide(dot, den, out=np.zeros_like(dot), where=den > 0)
            out[r0: r0 + block] += w * dot
    return out


def standardise(s: np.ndarray) -> np.ndarray:
    """(s - mean) / std over the pool; a constant score becomes all zeros."""
    s = np.asarray(s, dtype=np.float64)
    sd = s.std()
    return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)


def _need_signatures(ctx: Context, name: str, top_k: int, block: int) -> tuple[FeatureSet, FeatureSet]:
    train, target = ctx.need_features(name)
    if train.signatures is None or target.signatures is None:
        which = "pool" if train.signatures is None else "target"
        raise ValueError(f"method {name!r} needs head signatures in the {which} gradient stores; extract both pool "
                         "and target stores with `g2is grads --head-signatures`")
    lh, lh_t = np.shape(train.signatures[0])[1:], np.shape(target.signatures[0])[1:]
    if lh != lh_t:
        raise ValueError(f"pool signatures are {lh} (layer, head) but the target's are {lh_t}; extract both from the "
                         "same model")
    if top_k < 0 or top_k > lh[0] * lh[1]:
        raise ValueError(f"top_k={top_k}: give 0 (all heads) up to {lh[0] * lh[1]} (the model's L x H heads)")
    if block < 1:
        raise ValueError(f"block={block}: give a positive number of rows")
    return train, target


def _extra(target: FeatureSet, o: Any) -> dict[str, Any]:
    L, H = np.shape(target.signatures[0])[1:]
    used = top_heads(target_pattern(target, len(target.weights) - 1), o.top_k) if o.top_k else []
    return {"heads": {"normalise": o.normalise, "top_k": o.top_k, "shape": [int(L), int(H)],
                      "top_heads_last_checkpoint": [f"L{int(j) // H}H{int(j) % H}" for j in used]}}


@register("heads", "similarity of each record's head signature to the target's activation pattern (raw, unit or "
          "layer-z; optionally the top-k target heads)", HeadsOptions, needs=("features", "head_signatures"))
def heads_method(ctx: Context, budget: int, o: HeadsOptions) -> Scored:
    train, target = _need_signatures(ctx, "heads", o.top_k, o.block)
    s = head_scores(train, target, o.normalise, o.top_k, o.block)
    return Scored(top_order(s, budget), s, _extra(target, o))


@register("heads-hybrid", "weight x z(head-pattern score) + (1 - weight) x z(LESS gradient score)", HybridOptions,
          needs=("features", "head_signatures"))
def heads_hybrid_method(ctx: Context, budget: int, o: HybridOptions) -> Scored:
    if not 0.0 <= o.weight <= 1.0:
        raise ValueError(f"weight={o.weight}: give a number from 0 (LESS only) to 1 (heads only)")
    train, target = _need_signatures(ctx, "heads-hybrid", o.top_k, o.block)
    subtasks = [t.subtask or t.task for t in ctx.targets]
    if len(subtasks) != target.n:
        raise ValueError(f"the target features have {target.n} rows but there are {len(subtasks)} target records; "
                         "use a gradient store extracted from these target records")
    h = head_scores(train, target, o.normalise, o.top_k, o.block)
    g = less_scores(train, target, subtasks, o.block)
    s = o.weight * standardise(h) + (1.0 - o.weight) * standardise(g)
    return Scored(top_order(s, budget), s, {**_extra(target, o), "weight": o.weight})

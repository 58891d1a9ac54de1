"""The G2IS paper's ablation (Zhao et al. 2025, its ablation table: "removing the graph cost 4.85 GSM8K
points"), as three named methods, each the ``g2is`` pipeline with one part taken out:

    g2is-score           the core-knowledge score alone, no graph, no walk: the top B pool records by
                         score(z) = max_j <x_z, k_j> (``reduce: max``, the score ``g2is`` gives every
                         record) or by sum_j w_j <x_z, k_j> (``reduce: weighted``, the core as one direction)
    g2is-noconflict      the walk without the no-conflict check (a): a neighbour may have a negative
                         cosine with records already selected for its component
    g2is-noconsistency   the walk without the consistency check (b): a neighbour may turn the component's
                         running sum away from k_j

Our reading where the paper is OPEN: "without the graph" keeps the same features, the same core
knowledge (section 4) and its options, and replaces only the walk by a ranking; it selects exactly B
(there is nothing left to fail). The two walk ablations keep everything else, including the fallback
scan (which then applies the one remaining check). Their options are ``g2is``'s own
(:class:`~g2is_core.selection.methods.g2is.G2isOptions`), so ``pool_centre`` and the fixes combine with
the ablations in a spec variant (``{name: ..., method: g2is-noconflict, options: {pool_centre: true}}``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Context, Scored, option, register, top_order
from .g2is import G2isOptions, g2is_core, g2is_features, walk_method


_G2IS = G2isOptions()  # the core-knowledge options share g2is's defaults (written once, in G2isOptions)


@dataclass
class G2isScoreOptions:
    pca_variance: float = option(_G2IS.pca_variance, "keep the fewest core components whose explained variance "
                                                     "exceeds this")
    align_signs: bool = option(_G2IS.align_signs, "fix: flip components towards the mean target feature "
                                                  "(faithful: off)")
    add_mean: bool = option(_G2IS.add_mean, "fix: add the mean target direction as a component (faithful: off)")
    centred: bool = option(_G2IS.centred, "faithful: centred PCA; False = uncentred SVD", negative="uncentred",
                           negative_help="uncentred SVD of the target features instead of PCA (faithful: centred)")
    pool_centre: bool = option(_G2IS.pool_centre, "ours: subtract the pool's mean feature first (as g2is's "
                                                  "pool_centre)")
    reduce: str = option("max", "max: a record's best signed similarity to any component (g2is's score); "
                                "weighted: sum of its signed similarities weighted by the components' weights",
                         choices=("max", "weighted"))


@register("g2is-score", "G2IS ablation: the core-knowledge score alone (top B by signed similarity to the "
          "target's core components; no graph, no walk)", G2isScoreOptions, needs=("features",))
def g2is_score_method(ctx: Context, budget: int, o: G2isScoreOptions) -> Scored:
    if o.reduce not in ("max", "weighted"):
        raise ValueError(f"reduce must be 'max' or 'weighted'; got {o.reduce!r}")
    if not 0.0 < o.pca_variance < 1.0:
        raise ValueError(f"pca_variance must be in (0, 1); got {o.pca_variance}")
    train, target = ctx.need_features("g2is-score")
    x, y, _ = g2is_features(train, target, o.pool_centre)
    core = g2is_core(y, G2isOptions(pca_variance=o.pca_variance, align_signs=o.align_signs, add_mean=o.add_mean,
                                    centred=o.centred))
    proj = np.asarray(core.components, dtype=np.float64) @ np.asarray(x, dtype=np.float64).T  # [K, N]
    scores = proj.max(axis=0) if o.reduce == "max" else np.asarray(core.weights, dtype=np.float64) @ proj
    return Scored(top_order(scores, budget), scores, {"core": core.summary()})


@register("g2is-noconflict", "G2IS ablation: the gradient walk without the no-conflict check",
          G2isOptions, needs=("features",))
def g2is_noconflict_method(ctx: Context, budget: int, o: G2isOptions) -> Scored:
    return walk_method(ctx, budget, o, "g2is-noconflict", conflict=False)


@register("g2is-noconsistency", "G2IS ablation: the gradient walk without the consistency check",
          G2isOptions, needs=("features",))
def g2is_noconsistency_method(ctx: Context, budget: int, o: G2isOptions) -> Scored:
    return walk_method(ctx, budget, o, "g2is-noconsistency", consistency=False)

"""``random``: a seeded uniform sample, the baseline every method must beat."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Context, Scored, option, register, top_order


@dataclass
class RandomOptions:
    seed: int = option(0, "seed of the draw; the same seed gives the same selection")


@register("random", "a seeded uniform sample (the baseline every method must beat)", RandomOptions)
def random_method(ctx: Context, budget: int, o: RandomOptions) -> Scored:
    u = np.random.default_rng(o.seed).random(len(ctx.pool))
    return Scored(top_order(u, budget), u)

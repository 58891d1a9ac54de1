"""``less``: LESS (Xia et al. 2024, spec section 2), max over target subtasks of the checkpoint-weighted
mean cosine between a pool record's gradient features and the target's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...linalg import unit_rows
from ..features import FeatureSet
from ..registry import Context, Scored, option, register, top_order


@dataclass
class LessOptions:
    block: int = option(4096, "pool rows per block of the matmul (memory ~ block x (d + M) floats)")


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
def less_method(ctx: Context, budget: int, o: LessOptions) -> Scored:
    train, target = ctx.need_features("less")
    subtasks = [t.subtask or t.task for t in ctx.targets]
    if len(subtasks) != target.n:
        raise ValueError(f"the target features have {target.n} rows but there are {len(subtasks)} target records; "
                         "use a gradient store extracted from these target records")
    s = less_scores(train, target, subtasks, o.block)
    return Scored(top_order(s, budget), s, {"subtasks": sorted(set(subtasks))})

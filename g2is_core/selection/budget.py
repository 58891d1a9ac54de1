"""The selection budget B: how many pool records a method may select.

``ratio`` in (0, 1] gives B = floor(ratio * N) (at least 1 record, else an error), or ``count`` in
1..N. The walk may select fewer than B (a component stops short, spec section 5); the shortfall is
recorded in the run, never padded silently.
"""
from __future__ import annotations

import math


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


def walk_budget(n: int, ratio: float | None = None, count: int | None = None) -> int:
    """B under ``g2is walk``'s rule: ``count`` when given (it wins over ``ratio``, which has a default
    there), else floor(ratio * N) with ratio in (0, 1]; B must lie in 1..N. Errors name the flags."""
    if count is None:
        if ratio is None or not 0.0 < ratio <= 1.0:  # NaN fails the comparison too
            raise ValueError(f"--ratio must be in (0, 1]; got {ratio}")
        count = int(math.floor(ratio * n))
    if not 1 <= count <= n:
        raise ValueError(f"the budget is {count} rows but must be between 1 and N={n}; raise --ratio or give --count")
    return int(count)
